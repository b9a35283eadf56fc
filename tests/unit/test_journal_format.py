"""The journal's format, pure: records, checksums, torn tails, damage, replay."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import attrs
import pytest

from jobqueue._events import (
    Assigned,
    AttemptFailed,
    Cancelled,
    Completed,
    Event,
    Forgotten,
    LeaseExtended,
    Progressed,
    Promoted,
    Released,
    Revived,
    ScheduleAdded,
    ScheduleFired,
    ScheduleRemoved,
    Submitted,
)
from jobqueue._journal import (
    EVENT_TYPES,
    MAGIC,
    JournalDamaged,
    decode_all,
    decode_event,
    encode_event,
    frame,
    id_prefix_of,
    read_journal,
    scan,
    segment_name,
)
from jobqueue._state import QueueState
from tests.unit import journal_support as support

OFFSET = 1_700_000_000.0  # wall clock minus monotonic clock, exact in binary


def one_of_each() -> list[Event]:
    return [
        Submitted("p-1", "n", b'{"a":[1,"\xc3\xa9"]}', 1, "q", 3, 4, 12.5, "k"),
        Submitted("p-2", "n", 7, 2),
        Promoted("p-1"),
        Assigned("p-1", 3, "w", 40.25),
        Assigned("p-2", "worker", None, 41.0),
        LeaseExtended("p-1", 50.0),
        Progressed("p-1", 0.5, b'"half"', 60.0),
        Progressed("p-1", None, None, 61.0),
        Completed("p-1", b"[1,2]"),
        Completed("p-2", None),
        AttemptFailed("p-3", "error", "ValueError", "bad", 99.5),
        AttemptFailed("p-3", "lease_expired", "LeaseExpired", "gone", None, True),
        Cancelled("p-3"),
        Revived("p-3"),
        Released("p-2"),
        Forgotten("p-3"),
        ScheduleAdded("s", "n", b'{"a":1}', 60.0, None, "UTC", "q", 2, 3, 1.7e9),
        ScheduleAdded("c", "n", None, None, "0 9 * * *", "Europe/Paris", "default", 0, None, 5.5),
        ScheduleFired("s", 1_700_000_060.0),
        ScheduleRemoved("s"),
    ]


@pytest.mark.parametrize("offset", [0.0, OFFSET, -5.0])
def test_every_event_kind_round_trips(offset: float) -> None:
    events = one_of_each()
    assert {type(e) for e in events} == set(EVENT_TYPES.values())
    for event in events:
        again = decode_event(encode_event(event, offset), offset)
        assert again == event
        for field in attrs.fields(type(event)):
            assert type(getattr(again, field.name)) is type(getattr(event, field.name))


def test_times_are_written_as_wall_clock() -> None:
    payload = encode_event(Submitted("p-1", "n", None, 1, not_before=12.5), OFFSET)
    assert str(OFFSET + 12.5).encode() in payload
    # After a restart the monotonic clock started elsewhere: same wall-clock moment.
    assert decode_event(payload, OFFSET + 1000.0) == Submitted(
        "p-1", "n", None, 1, not_before=12.5 - 1000.0
    )


def test_raw_values_are_written_verbatim() -> None:
    payload = encode_event(Completed("p-1", b'{"x":"\xc3\xa9"}'))
    assert payload.endswith(b'\n{"x":"\xc3\xa9"}')


def test_a_record_of_an_unknown_event_is_refused() -> None:
    with pytest.raises(ValueError, match="no known event"):
        decode_event(b'["Exploded",0,"x"]')
    with pytest.raises(ValueError, match="more fields"):
        decode_event(b'["Promoted",0,"x",1]')
    with pytest.raises(ValueError, match="does not fit"):
        decode_event(b'["Promoted",0]')
    # One of the events a replay builds without its __init__, lacking fields.
    with pytest.raises(ValueError, match="does not fit"):
        decode_event(b'["Submitted",0,"x"]')


# -- a real journal ----------------------------------------------------------------------


def record_lifecycle(seed: int, steps: int) -> tuple[QueueState, list[Event], bytes]:
    """Run a random lifecycle; return the state, its events and their segment."""
    events: list[Event] = []
    q = support.new_state()
    q.on_event = events.append
    support.lifecycle(q, random.Random(seed), steps)
    # Offset 0: at 1.7e9 s a float resolves only 0.24 us, so a shifted time
    # comes back within that, not equal; the round-trip tests cover the shift.
    data = MAGIC + b"".join(frame(encode_event(e)) for e in events)
    return q, events, data


def replay(payloads: list[bytes], **rules: Any) -> QueueState:
    events = list(decode_all(payloads, 0.0))
    q = support.new_state(**rules)
    q.id_prefix = id_prefix_of(events) or ""
    for event in events:
        q.apply(event)
    return q


@pytest.mark.parametrize("seed", range(6))
def test_replay_rebuilds_the_state_field_by_field(seed: int) -> None:
    q, events, data = record_lifecycle(seed, 400)
    assert {type(e) for e in events} == set(EVENT_TYPES.values())
    found = scan(data)
    assert found.torn == 0
    assert found.end == len(data)
    assert len(found.payloads) == len(events)
    replayed = replay(found.payloads)
    assert replayed.id_prefix == "p-"
    assert support.view(replayed) == support.view(q)
    # And both go on alike.
    assert replayed.submit("n", None, 1e6)[0].id == q.submit("n", None, 1e6)[0].id


def boundaries(data: bytes) -> list[int]:
    """Where each record ends."""
    ends = []
    offset = len(MAGIC)
    while offset < len(data):
        offset += 12 + int.from_bytes(data[offset : offset + 4], "little")
        ends.append(offset)
    return ends


def test_a_torn_tail_is_cut_at_every_byte_offset() -> None:
    q, _events, data = record_lifecycle(1, 60)
    ends = boundaries(data)
    assert ends[-1] == len(data)
    for cut in range(len(data) + 1):
        found = scan(data[:cut])
        complete = [end for end in ends if end <= cut]
        assert len(found.payloads) == len(complete), cut
        good = complete[-1] if complete else (len(MAGIC) if cut >= len(MAGIC) else 0)
        assert (found.end, found.torn) == (good, cut - good), cut
    # The longest prefix replays to the same state.
    assert support.view(replay(scan(data).payloads)) == support.view(q)


def test_a_tail_of_zeros_is_torn_not_damage() -> None:
    _, events, data = record_lifecycle(2, 20)
    found = scan(data + bytes(100))
    assert (len(found.payloads), found.end, found.torn) == (len(events), len(data), 100)


def test_a_flipped_bit_anywhere_is_detected() -> None:
    _, _events, data = record_lifecycle(3, 25)
    starts = [len(MAGIC), *boundaries(data)[:-1]]
    assert len(data) > 500
    for byte in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[byte] ^= 1 << bit
            with pytest.raises(JournalDamaged) as info:
                scan(bytes(damaged), "dir/x.jqj")
            # It names the file and the record the bit is in.
            record_start = max([0, *(s for s in starts if s <= byte)])
            assert info.value.offset == (0 if byte < len(MAGIC) else record_start)
            assert "dir/x.jqj" in str(info.value)
            assert f"at byte {info.value.offset}" in str(info.value)


def write_segments(tmp_path: Path, chunks: list[bytes]) -> None:
    for number, chunk in enumerate(chunks, 1):
        (tmp_path / segment_name(number)).write_bytes(chunk)


def test_segments_are_read_in_order(tmp_path: Path) -> None:
    events = one_of_each()
    records = [frame(encode_event(e)) for e in events]
    write_segments(tmp_path, [MAGIC + b"".join(records[:5]), MAGIC + b"".join(records[5:])])
    (tmp_path / "lock").write_bytes(b"")
    reading = read_journal(str(tmp_path))
    assert [decode_event(p) for p in reading.payloads] == events
    assert reading.last == (2, os.path.join(str(tmp_path), segment_name(2)))
    assert reading.torn == 0


def test_only_the_last_segment_may_be_torn(tmp_path: Path) -> None:
    records = [frame(encode_event(e)) for e in one_of_each()]
    write_segments(tmp_path, [MAGIC + records[0] + records[1][:5], MAGIC + records[2]])
    with pytest.raises(JournalDamaged, match=segment_name(1)):
        read_journal(str(tmp_path))
    write_segments(tmp_path, [MAGIC + records[0], MAGIC + records[2] + records[3][:5]])
    reading = read_journal(str(tmp_path))
    assert (len(reading.payloads), reading.torn) == (2, 5)
