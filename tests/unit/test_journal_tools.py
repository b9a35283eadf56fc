"""``jobqueue journal check`` and ``repair``: damage reported with file and offset, and cut away."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from jobqueue._cli import main
from jobqueue._events import Completed, Event
from jobqueue._journal import MAGIC, encode_event, frame, read_journal, segment_name
from jobqueue._journal_disk import lock_directory
from jobqueue._snapshot import replay
from jobqueue._state import QueueState
from tests.unit import journal_support as support


def events_of(seed: int, steps: int) -> list[Event]:
    events: list[Event] = []
    q = support.new_state()
    q.on_event = events.append
    support.lifecycle(q, random.Random(seed), steps)
    return events


def write(directory: Path, *chunks: list[Event]) -> list[bytes]:
    """One segment per chunk; returns each segment's bytes."""
    written = []
    for number, chunk in enumerate(chunks, 1):
        data = MAGIC + b"".join(frame(encode_event(e)) for e in chunk)
        (directory / segment_name(number)).write_bytes(data)
        written.append(data)
    return written


def state_of(directory: Path) -> QueueState:
    q = support.new_state()
    replay(q, read_journal(str(directory)).payloads, 0.0)
    return q


def state_from(events: list[Event]) -> QueueState:
    q = support.new_state()
    replay(q, [encode_event(e) for e in events], 0.0)
    return q


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().out


def test_a_clean_journal_checks_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = events_of(1, 150)
    write(tmp_path, events[:40], events[40:])
    status, out = run(capsys, "journal", "check", str(tmp_path))
    assert status == 0
    assert f"{len(events)} records to replay" in out
    assert f"{segment_name(1)}: " in out
    assert run(capsys, "journal", "repair", str(tmp_path)) == (
        0,
        f"journal {tmp_path} is clean; nothing to repair\n",
    )


def test_damage_is_named_and_repair_keeps_what_is_before_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = events_of(2, 200)
    first, _ = write(tmp_path, events[:60], events[60:])
    # Flip a bit inside record 30 of the first segment.
    offset = len(MAGIC)
    for event in events[:30]:
        offset += len(frame(encode_event(event)))
    damaged = bytearray(first)
    damaged[offset + 20] ^= 0x10
    (tmp_path / segment_name(1)).write_bytes(bytes(damaged))
    status, out = run(capsys, "journal", "check", str(tmp_path))
    assert status == 1
    assert f"DAMAGED: {tmp_path / segment_name(1)} at byte {offset}" in out
    status, out = run(capsys, "journal", "repair", str(tmp_path))
    assert status == 0
    assert f"kept 30 records ({offset} bytes)" in out
    aside = [name for name in os.listdir(tmp_path) if name.startswith("damaged-")]
    assert len(aside) == 1
    moved = sorted(os.listdir(tmp_path / aside[0]))
    assert moved == [f"{segment_name(1)}.from-{offset}", segment_name(2)]
    # Nothing is lost: what was cut off is kept aside, byte for byte.
    assert (tmp_path / segment_name(1)).read_bytes() + (
        tmp_path / aside[0] / f"{segment_name(1)}.from-{offset}"
    ).read_bytes() == bytes(damaged)
    assert run(capsys, "journal", "check", str(tmp_path))[0] == 0
    assert support.view(state_of(tmp_path)) == support.view(state_from(events[:30]))


def test_a_record_that_does_not_replay_is_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = events_of(3, 100)
    bad: list[Event] = [*events[:10], Completed("nobody", None), *events[10:]]
    write(tmp_path, bad)
    offset = len(MAGIC) + sum(len(frame(encode_event(e))) for e in events[:10])
    status, out = run(capsys, "journal", "check", str(tmp_path))
    assert status == 1
    assert f"at byte {offset}: a record that does not replay" in out
    assert run(capsys, "journal", "repair", str(tmp_path))[0] == 0
    assert support.view(state_of(tmp_path)) == support.view(state_from(events[:10]))


def test_a_torn_tail_is_clean_and_repair_cuts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = events_of(4, 80)
    (data,) = write(tmp_path, events)
    (tmp_path / segment_name(1)).write_bytes(data + frame(b'["Promoted",0,"x"]')[:7])
    status, out = run(capsys, "journal", "check", str(tmp_path))
    assert status == 0
    assert "torn tail of 7 bytes" in out
    assert run(capsys, "journal", "repair", str(tmp_path))[0] == 0
    assert (tmp_path / segment_name(1)).read_bytes() == data


def test_a_journal_in_use_is_not_touched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, events_of(5, 20))
    held = lock_directory(str(tmp_path))
    try:
        for action in ("check", "repair"):
            status = main(["journal", action, str(tmp_path)])
            assert status == 1
            assert "in use by another server" in capsys.readouterr().err
    finally:
        os.close(held)
