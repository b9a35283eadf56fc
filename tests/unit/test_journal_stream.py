"""Replay as a stream: records decoded in batches, the id prefix found before it matters."""

from __future__ import annotations

import pytest

from jobqueue._events import Event, ScheduleAdded, ScheduleRemoved, Submitted
from jobqueue._journal import (
    BATCH,
    JournalDamaged,
    JournalError,
    batches,
    decode_events,
    encode_event,
    scan,
)
from jobqueue._snapshot import replay
from jobqueue._state import QueueState


def schedule_churn(count: int) -> list[Event]:
    """``count`` events that are not submits (a schedule added and removed, again and again)."""
    events: list[Event] = []
    for index in range(count // 2):
        events.append(ScheduleAdded("s", "n", None, 60.0, None, "UTC", "default", 0, None, 1.0))
        events.append(ScheduleRemoved("s"))
        assert index >= 0
    return events


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 5])
def test_batches_are_in_order_and_full_but_the_last(count: int) -> None:
    payloads = [bytes([n]) for n in range(count)]
    made = list(batches(payloads, 2))
    assert [p for batch in made for p in batch] == payloads
    assert all(len(batch) == 2 for batch in made[:-1])
    assert all(1 <= len(batch) <= 2 for batch in made)


@pytest.mark.parametrize("before", [0, 10, BATCH + 10, 3 * BATCH])
def test_the_id_prefix_is_known_before_the_first_submit_is_applied(before: int) -> None:
    events = [
        *schedule_churn(before),
        Submitted("p-1", "n", None, 1),
        Submitted("p-2", "n", None, 2),
    ]
    state = QueueState()
    assert replay(state, [encode_event(e) for e in events], 0.0) == len(events)
    assert state.id_prefix == "p-"
    # Ids go on from the journal's, and the store's fast path for fresh ids holds.
    assert state.submit("n", None, 1.0)[0].id == "p-3"
    assert len(state) == 3


def test_a_batch_decodes_as_its_records_do_one_by_one() -> None:
    events: list[Event] = [
        Submitted(f"p-{n}", "n", b'{"n":%d}' % n if n % 2 else n, n) for n in range(50)
    ]
    payloads = [encode_event(e, 12.5) for e in events]
    assert decode_events(payloads, 12.5) == events
    assert [decode_events([p], 12.5)[0] for p in payloads] == events


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b'["Completed",2,"p-1",null]', "raw values do not match"),
        (b'["Completed",0,"p-1",null]\n[1]', "mask does not name"),
        (b'["Completed",6,"p-1",null]\n[1]', "raw values do not match"),
        (b'{"job_id":"p-1"}', "not an array"),
        (b'["Completed",', "not JSON"),
    ],
)
def test_a_record_that_is_not_laid_out_right_is_refused(payload: bytes, why: str) -> None:
    good = encode_event(Submitted("p-1", "n", None, 1))
    with pytest.raises(ValueError, match=why):
        decode_events([good, payload, good])
    with pytest.raises(JournalError, match=why):
        replay(QueueState(), [good, payload], 0.0)


def test_a_segment_of_another_format_version_is_named_as_such() -> None:
    with pytest.raises(JournalDamaged, match="journal format 1, which this version does not"):
        scan(b"jobqueue-journal 1\n" + bytes(30), "dir/x.jqj")
