"""Segments written into prepared space: zeros after the last record are room, not damage."""

from __future__ import annotations

import logging
import os
import random
import time
import types
from pathlib import Path

import pytest
import trio

from jobqueue._cli import main
from jobqueue._events import Event
from jobqueue._journal import (
    MAGIC,
    JournalDamaged,
    encode_event,
    frame,
    scan,
    segment_name,
    segments,
)
from jobqueue._journal_disk import PREPARED_BYTES
from jobqueue._journal_writer import Journal
from jobqueue._state import QueueState
from tests.unit import journal_support as support
from tests.unit.test_journal_format import boundaries, record_lifecycle

SPARE = 300


def zeros_at_end(data: bytes) -> int:
    return len(data) - len(data.rstrip(b"\0"))


def test_a_record_torn_in_prepared_space_is_cut_at_every_byte_offset() -> None:
    _, _events, data = record_lifecycle(1, 60)
    ends = boundaries(data)
    # The writer flushes a segment's first line before it prepares space.
    for cut in range(len(MAGIC), len(data) + 1):
        segment = data[:cut] + bytes(SPARE)
        found = scan(segment)
        complete = [end for end in ends if end <= cut]
        assert len(found.payloads) == len(complete), cut
        good = complete[-1] if complete else len(MAGIC)
        assert (found.end, found.torn) == (good, len(segment) - good), cut
        assert found.spare == zeros_at_end(segment[good:]), cut


def test_unused_prepared_space_is_no_torn_record() -> None:
    _, events, data = record_lifecycle(2, 20)
    found = scan(data + bytes(SPARE))
    assert (len(found.payloads), found.end, found.torn, found.spare) == (
        len(events),
        len(data),
        SPARE,
        SPARE,
    )


def test_a_flipped_bit_in_a_prepared_segment_is_detected() -> None:
    _, _events, data = record_lifecycle(3, 25)
    starts = [len(MAGIC), *boundaries(data)[:-1]]
    for byte in range(len(MAGIC), len(data)):
        for bit in range(8):
            damaged = bytearray(data + bytes(SPARE))
            damaged[byte] ^= 1 << bit
            with pytest.raises(JournalDamaged) as info:
                scan(bytes(damaged), "dir/x.jqj")
            assert info.value.offset == max(s for s in starts if s <= byte)


@pytest.fixture
def no_wall_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's clock reads the state's: times are written unshifted, so compare exactly."""
    fake = types.SimpleNamespace(time=lambda: 0.0, perf_counter=time.perf_counter)
    monkeypatch.setattr("jobqueue._journal_writer.time", fake)


async def journaled_lifecycle(directory: Path) -> tuple[QueueState, Journal]:
    """A random lifecycle journaled into ``directory`` by the real writer."""
    q = support.new_state()
    journal = Journal(str(directory))
    journal.open(q, 0.0)
    journal.start(q, 0.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        support.lifecycle(q, random.Random(5), 200)
        await journal.wait_idle()
        nursery.cancel_scope.cancel()
    return q, journal


@pytest.mark.usefixtures("no_wall_offset")
def test_restart_on_prepared_space_is_silent_and_keeps_every_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    q, journal = trio.run(journaled_lifecycle, tmp_path)
    [(_, path)] = segments(str(tmp_path))
    assert os.path.getsize(path) > journal.size  # the records, then zeros
    assert os.path.getsize(path) <= journal.size + PREPARED_BYTES
    with caplog.at_level(logging.INFO, "jobqueue.journal"):
        again = support.new_state()
        reopened = Journal(str(tmp_path))
        reopened.open(again, 0.0)
        reopened.close()
    assert support.view(again) == support.view(q)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # The prepared space is given back at start and prepared again when written.
    assert os.path.getsize(path) == journal.size

    # A record torn inside prepared space: cut, with its bytes counted.
    size = journal.size
    record = frame(b'["Promoted",0,"p-1"]')
    with open(path, "r+b") as file:
        file.seek(size)
        file.write(record[:10] + bytes(SPARE))
    caplog.clear()
    with caplog.at_level(logging.WARNING, "jobqueue.journal"):
        again = support.new_state()
        reopened = Journal(str(tmp_path))
        reopened.open(again, 0.0)
        reopened.close()
    assert support.view(again) == support.view(q)
    assert [
        f"cut off {len(record[:10].rstrip(bytes(1)))} bytes" in r.getMessage()
        for r in caplog.records
    ] == [True]
    assert os.path.getsize(path) == size


def test_check_and_repair_take_prepared_space_for_room(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events: list[Event] = []
    q = support.new_state()
    q.on_event = events.append
    support.lifecycle(q, random.Random(8), 80)
    data = MAGIC + b"".join(frame(encode_event(e)) for e in events)
    path = tmp_path / segment_name(1)
    path.write_bytes(data + bytes(SPARE))
    assert main(["journal", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{len(events)} records to replay" in out
    assert "torn" not in out
    # A record torn inside that space is reported as torn, and repair leaves it to start-up.
    path.write_bytes(data + frame(b'["Promoted",0,"p-1"]')[:9] + bytes(SPARE))
    assert main(["journal", "check", str(tmp_path)]) == 0
    assert f"torn tail of {9 + SPARE} bytes" in capsys.readouterr().out
