"""``release_job`` in the pure state machine: time passed in, no trio, no sockets.

A job given back by its lease holder goes back in line at its original place,
and the run is not counted: ``attempt`` keeps the released run's number (so
every run's number stays unique for the lease check) and the budget starts one
run later. Replaying the events rebuilds the same state.
"""

from __future__ import annotations

import pickle
from typing import Any

import attrs
import pytest

from jobqueue._config import QueueRules
from jobqueue._errors import RuleError
from jobqueue._events import Event, Released
from jobqueue._job import JobRecord, JobState
from jobqueue._state import QueueState


def new_state(**rules: Any) -> tuple[QueueState, list[Event]]:
    events: list[Event] = []
    return QueueState(rules=QueueRules(**rules), on_event=events.append), events


def submit(q: QueueState, now: float = 0.0, **options: Any) -> JobRecord:
    job, new = q.submit("n", None, now, **options)
    assert new
    return job


def order(q: QueueState) -> list[str]:
    """The order a copy of ``q`` hands its pending jobs out in."""
    on_event, q.on_event = q.on_event, None
    try:
        copied = pickle.loads(pickle.dumps(q))
    finally:
        q.on_event = on_event
    out = []
    while (job := copied.assign("someone", 1e9)) is not None:
        out.append(job.id)
    return out


def test_holder_gives_a_job_back_to_its_original_place() -> None:
    q, _ = new_state()
    first, second, third = (submit(q) for _ in range(3))
    assert q.assign("w", 1.0) is first
    assert order(q) == [second.id, third.id]
    assert q.give_back("w", [(first.id, 1)], 2.0) == [first]
    assert first.state is JobState.PENDING
    # Ahead of the jobs submitted after it, as a requeued job would be.
    assert order(q) == [first.id, second.id, third.id]
    assert q.held_by("w") == []
    assert q.counts()["running"] == 0
    assert q.counts()["pending"] == 3


def test_release_spends_no_attempt() -> None:
    q, _ = new_state()
    job = submit(q, max_attempts=1)
    assert q.assign("w", 0.0) is job
    assert job.attempts_left == 0
    q.give_back("w", [(job.id, 1)], 1.0)
    # The status shows the released run's number, unchanged by the release,
    # no error, and the whole budget.
    assert (job.attempt, job.attempts_left, job.error) == (1, 1, None)
    # Released again and again: still never spends the one attempt it has.
    for attempt in (2, 3):
        assert q.assign("w", 2.0) is job
        assert job.attempt == attempt  # a new number for every run: unique
        q.give_back("w", [(job.id, attempt)], 2.0)
        assert job.attempts_left == 1
    # The one real run it has left fails it for good.
    assert q.assign("w", 3.0) is job
    q.fail(job.id, "w", 4, "E", "boom", 4.0)
    assert job.state is JobState.FAILED


def test_a_late_report_from_the_released_run_is_refused() -> None:
    # attempt numbers stay unique: the same connection taking the job again
    # cannot have the released run's report taken for the new run's.
    q, _ = new_state()
    job = submit(q)
    q.assign("w", 0.0)
    q.give_back("w", [(job.id, 1)], 0.0)
    assert q.assign("w", 0.0) is job
    with pytest.raises(RuleError) as info:
        q.complete(job.id, "w", 1, "stale", 0.0)
    assert info.value.code == "not_leased"
    q.complete(job.id, "w", 2, "fresh", 0.0)
    assert job.result == "fresh"


@pytest.mark.parametrize(
    ("who", "attempt", "code"),
    [
        ("other", 1, "not_leased"),
        ("other", None, "not_leased"),
        ("w", 2, "not_leased"),
    ],
)
def test_only_the_holder_may_release(who: str, attempt: int | None, code: str) -> None:
    q, events = new_state()
    job = submit(q)
    q.assign("w", 0.0)
    before = len(events)
    with pytest.raises(RuleError) as info:
        q.give_back(who, [(job.id, attempt)], 1.0)
    assert info.value.code == code
    assert len(events) == before
    assert (job.state, job.worker, job.attempt) == (JobState.RUNNING, "w", 1)


def test_release_of_jobs_not_running_is_refused() -> None:
    q, _ = new_state()
    pending = submit(q)
    scheduled = submit(q, delay=10.0)
    done = submit(q)
    with pytest.raises(RuleError) as info:
        q.give_back("w", [("nope", None)], 0.0)
    assert info.value.code == "unknown_job"
    for job in (pending, scheduled):
        with pytest.raises(RuleError) as info:
            q.give_back("w", [(job.id, None)], 0.0)
        assert info.value.code == "not_leased"
    q.assign("w", 0.0)  # pending
    assert q.assign("w", 0.0) is done
    q.complete(done.id, "w", 1, None, 0.0)
    with pytest.raises(RuleError) as info:
        q.give_back("w", [(done.id, 1)], 0.0)
    assert info.value.code == "not_leased"
    assert "already completed" in info.value.message


def test_a_batch_is_all_or_nothing() -> None:
    q, events = new_state()
    jobs = [submit(q) for _ in range(3)]
    for job in jobs:
        assert q.assign("w", 0.0) is job
    q.cancel(jobs[1].id, 0.5)
    before = len(events)
    with pytest.raises(RuleError) as info:
        q.give_back("w", [(job.id, 1) for job in jobs], 1.0)
    assert info.value.code == "not_leased"
    assert info.value.message.startswith("job 1: ")
    assert len(events) == before
    assert [job.state for job in (jobs[0], jobs[2])] == [JobState.RUNNING] * 2
    # Listing a job twice is refused too, before anything changes.
    with pytest.raises(RuleError) as info:
        q.give_back("w", [(jobs[0].id, 1), (jobs[0].id, 1)], 1.0)
    assert info.value.message.startswith("job 1: ")
    assert q.give_back("w", [(jobs[2].id, 1), (jobs[0].id, 1)], 1.0) == [jobs[2], jobs[0]]
    assert order(q) == [jobs[0].id, jobs[2].id]


def test_release_is_one_event_and_replays() -> None:
    q, events = new_state(lease_timeout=5.0)
    jobs = [submit(q, priority=p) for p in (0, 5, 0)]
    assert q.assign("w", 1.0) is jobs[1]
    assert q.assign("w", 1.0) is jobs[0]
    q.give_back("w", [(jobs[1].id, 1), (jobs[0].id, 1)], 2.0)
    assert events[-2:] == [Released(jobs[1].id), Released(jobs[0].id)]
    assert q.assign("v", 3.0) is jobs[1]
    q.give_back("v", [(jobs[1].id, None)], 4.0)

    replayed = QueueState(rules=q.rules)
    for event in events:
        replayed.apply(event)
    for job in jobs:
        assert attrs.asdict(replayed.get(job.id), recurse=False) == attrs.asdict(job, recurse=False)
    assert order(replayed) == order(q) == [jobs[1].id, jobs[0].id, jobs[2].id]
    assert replayed.counts() == q.counts()
    assert replayed.queue_counts() == q.queue_counts()
    assert dict(replayed.totals) == dict(q.totals)


def test_release_ends_the_lease_and_its_deadline() -> None:
    q, _ = new_state(lease_timeout=5.0)
    job = submit(q)
    q.assign("w", 0.0)
    assert q.next_deadline() == 5.0
    q.give_back("w", [(job.id, 1)], 1.0)
    assert q.next_deadline() == float("inf")
    assert q.tick(100.0) == []  # nothing to expire
    assert job.state is JobState.PENDING
