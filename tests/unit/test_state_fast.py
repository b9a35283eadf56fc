"""The state machine's written-out paths, held to the generic code they stand for.

Every job is submitted, assigned and completed, so those steps have paths of
their own (``JobStore._assign_first`` and ``_complete_running`` for the
generic ``_move``). Here a state with them and a state without them are
driven through the same random lifecycle and must end the same, field by
field, having emitted the same events; and an event either refuses, both
refuse it in the same words.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobqueue._config import QueueRules
from jobqueue._events import Assigned, Completed, Event, Submitted
from jobqueue._job import InvalidTransition, JobRecord
from jobqueue._state import QueueState
from tests.unit import journal_support as support


class GenericState(QueueState):
    """A state whose moves all go through the generic ``_move``."""

    def _assign_first(self, job_id: str) -> JobRecord:
        return self._move(job_id, "assign")

    def _complete_running(self, job_id: str) -> JobRecord:
        return self._move(job_id, "complete")


def _pair(seed: int = 0, **rules: Any) -> tuple[QueueState, QueueState, list[Event], list[Event]]:
    base = {"lease_timeout": 3.0, "retry_delay": 0.5, "max_attempts": 3, "finished_retention": 6}
    fast_events: list[Event] = []
    generic_events: list[Event] = []
    fast = QueueState(
        rules=QueueRules(**{**base, **rules}),
        id_prefix="p-",
        rng=random.Random(seed),
        on_event=fast_events.append,
    )
    generic = GenericState(
        rules=QueueRules(**{**base, **rules}),
        id_prefix="p-",
        rng=random.Random(seed),
        on_event=generic_events.append,
    )
    return fast, generic, fast_events, generic_events


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 3]))
def test_the_written_out_moves_leave_the_state_the_generic_ones_leave(
    seed: int, max_attempts: int
) -> None:
    fast, generic, fast_events, generic_events = _pair(seed, max_attempts=max_attempts)
    support.lifecycle(fast, random.Random(seed), 150)
    support.lifecycle(generic, random.Random(seed), 150)
    assert fast_events == generic_events
    assert support.view(fast) == support.view(generic)


def _refusal(q: QueueState, event: Event) -> str:
    with pytest.raises(InvalidTransition) as caught:
        q.apply(event)
    return str(caught.value)


def test_an_impossible_assignment_or_completion_is_refused_in_the_generic_words() -> None:
    fast, generic, _, _ = _pair()
    for q in (fast, generic):
        for seq in (1, 2, 3):
            q.apply(Submitted(f"p-{seq}", "n", None, seq, "default", 0, 3, None, None, 1.0))
        q.apply(Assigned("p-1", "w", "w", 10.0, 1.0))
        q.apply(Completed("p-1", None, 2.0))
        q.apply(Assigned("p-2", "w", "w", 10.0, 2.0))
    for event in (
        Assigned("p-9", "w", "w", 10.0, 3.0),  # no such job
        Assigned("p-2", "w", "w", 10.0, 3.0),  # running already
        Assigned("p-1", "w", "w", 10.0, 3.0),  # completed
        Completed("p-9", None, 3.0),
        Completed("p-3", None, 3.0),  # pending
        Completed("p-1", None, 3.0),  # completed already
    ):
        assert _refusal(fast, event) == _refusal(generic, event)
    assert support.view(fast) == support.view(generic)


def test_an_assignment_of_a_job_not_first_in_line_is_refused_in_the_generic_words() -> None:
    fast, generic, _, _ = _pair()
    for q in (fast, generic):
        for seq in (1, 2):
            q.apply(Submitted(f"p-{seq}", "n", None, seq, "default", 0, 3, None, None, 1.0))
    event = Assigned("p-2", "w", "w", 10.0, 3.0)
    assert _refusal(fast, event) == _refusal(generic, event)
    assert support.view(fast) == support.view(generic)
