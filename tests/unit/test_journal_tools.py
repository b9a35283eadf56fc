"""``jobqueue journal check`` and ``repair``: damage reported with file and offset, and cut away."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from jobqueue._cli import main
from jobqueue._events import Completed, Event, ScheduleAdded
from jobqueue._journal import (
    MAGIC,
    JournalDamaged,
    JournalError,
    encode_event,
    frame,
    read_journal,
    segment_name,
)
from jobqueue._journal_disk import lock_directory
from jobqueue._journal_recover import recover
from jobqueue._snapshot import capture, encode_snapshot, replay
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


def test_an_obsolete_segment_is_not_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A segment a later snapshot replaces is removed unread at start, damaged or not."""
    events = events_of(6, 120)
    (old,) = write(tmp_path, events)
    damaged = bytearray(old)
    damaged[len(MAGIC) + 20] ^= 0x10
    (tmp_path / segment_name(1)).write_bytes(bytes(damaged))
    snapshot = MAGIC + b"".join(frame(p) for p in encode_snapshot(capture(state_from(events))))
    (tmp_path / segment_name(2)).write_bytes(snapshot)
    status, out = run(capsys, "journal", "check", str(tmp_path))
    assert (status, "DAMAGED" in out) == (0, False), out
    assert "obsolete" in out
    assert run(capsys, "journal", "repair", str(tmp_path)) == (
        0,
        f"journal {tmp_path} is clean; nothing to repair\n",
    )
    assert (tmp_path / segment_name(2)).read_bytes() == snapshot
    q = support.new_state()
    recover(str(tmp_path), q, 0.0)
    assert support.view(q) == support.view(state_from(events))


def check_and_start_name(
    capsys: pytest.CaptureFixture[str], segment: Path, offset: int, why: str
) -> None:
    """``journal check`` and a server's start both name the damage: file, offset, why."""
    status, out = run(capsys, "journal", "check", str(segment.parent))
    assert status == 1
    assert f"{segment} at byte {offset}: {why}" in out
    with pytest.raises(JournalDamaged) as info:
        recover(str(segment.parent), support.new_state(), 0.0)
    assert (info.value.path, info.value.offset) == (str(segment), offset)


def _submitted(
    job_id: bytes = b'"p-1"',
    at: bytes = b"1.0",
    options: bytes = b'"default",0,3',
    run: bytes = b"null,null",
) -> bytes:
    return b'["Submitted",0,' + job_id + b',"n",null,1,' + options + b"," + run + b"," + at + b"]"


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (_submitted(at=b"9" * 400), "OverflowError: int too large to convert to float"),
        (_submitted(job_id=b"null"), "a job's id must be text and its seq an integer"),
        (
            encode_event(
                ScheduleAdded("s", "j", None, 60.0, None, "UTC", "default", "x", None, 1e9)  # type: ignore[arg-type]
            ),
            "a schedule's priority must be an integer",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "RecursionError: "),
        # Types the codec would refuse, which only fail later in a running server.
        (_submitted(at=b"NaN"), "a submit's time must be a finite number, not nan"),
        (_submitted(options=b'"",0,3'), "a job's queue must be non-empty text"),
        (_submitted(options=b'"default","high",3'), "a job's priority must be an integer"),
        (_submitted(options=b'"default",0,"3"'), "a job's max_attempts must be an integer"),
        (_submitted(options=b'"default",0,0'), "a job's max_attempts must be an integer"),
        (_submitted(run=b"NaN,null"), "a job's start time must be a finite number, not nan"),
        (_submitted(run=b"null,7"), "a job's key must be text, not 7"),
    ],
    ids=[
        "huge-time",
        "null-id",
        "text-priority",
        "deep",
        "nan-time",
        "empty-queue",
        "text-job-priority",
        "text-attempts",
        "no-attempts",
        "nan-start",
        "int-key",
    ],
)
def test_whatever_a_record_fails_with_it_is_named_as_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: bytes, why: str
) -> None:
    events = events_of(7, 60)
    good = [encode_event(e) for e in events]
    segment = tmp_path / segment_name(1)
    segment.write_bytes(MAGIC + b"".join(frame(p) for p in [*good, bad, *good[:1]]))
    offset = len(MAGIC) + sum(len(frame(p)) for p in good)
    check_and_start_name(capsys, segment, offset, f"a record that does not replay: {why}")


@pytest.mark.parametrize("tamper", ["no-lease", "lease-of-a-pending-job", "running-without-run"])
def test_a_snapshot_whose_running_jobs_do_not_add_up_is_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: str
) -> None:
    q = support.new_state()
    running, _ = q.submit("n", None, 1.0)
    waiting, _ = q.submit("n", None, 1.0)
    assert q.assign("w", 2.0) is not None
    header, *jobs = encode_snapshot(capture(q))
    leases = f'"leases":["{running.id}"]'.encode()
    assert leases in header
    if tamper == "no-lease":
        header = header.replace(leases, b'"leases":[]')
    elif tamper == "lease-of-a-pending-job":
        header = header.replace(leases, f'"leases":["{running.id}","{waiting.id}"]'.encode())
    else:  # the running job's record cut before its run's fields: no worker, no lease
        jobs = [j.partition(b',1,"w",')[0] + b"]" if b'"running"' in j else j for j in jobs]
    segment = tmp_path / segment_name(1)
    segment.write_bytes(MAGIC + b"".join(frame(p) for p in [header, *jobs]))
    check_and_start_name(capsys, segment, len(MAGIC), "a snapshot that does not restore")


def test_a_first_submit_without_an_id_is_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first submit also gives the journal's id prefix: found before the prefix is."""
    segment = tmp_path / segment_name(1)
    segment.write_bytes(MAGIC + frame(_submitted(job_id=b"null")))
    why = "a record that does not replay: a job's id must be"
    check_and_start_name(capsys, segment, len(MAGIC), why)


def test_a_segment_that_is_not_a_file_is_refused_not_waited_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, events_of(8, 20))
    os.mkfifo(tmp_path / segment_name(2))  # reading it would wait for a writer forever
    for action in ("check", "repair"):
        assert main(["journal", action, str(tmp_path)]) == 1
        assert f"{segment_name(2)} is not a regular file" in capsys.readouterr().err
    with pytest.raises(JournalError, match="is not a regular file"):
        recover(str(tmp_path), support.new_state(), 0.0)


def test_start_removes_a_compaction_s_leftover_and_nothing_else(tmp_path: Path) -> None:
    (data,) = write(tmp_path, events_of(9, 20))
    leftover = tmp_path / f"{segment_name(2)}.tmp"
    leftover.write_bytes(data[:100])
    others = [tmp_path / "notes.tmp", tmp_path / "x.tmp"]
    others[0].write_text("mine")
    others[1].mkdir()
    recover(str(tmp_path), support.new_state(), 0.0)
    assert not leftover.exists()
    assert all(other.exists() for other in others)


def test_a_schedule_longer_than_todays_limit_still_replays(tmp_path: Path) -> None:
    # Servers before the 200-character limit on a configured schedule's
    # texts journaled longer ones: their journals must still open.
    name = "n" * 300
    write(tmp_path, [ScheduleAdded(name, "job", None, 60.0, None, "UTC", "default", 0, None, 1e9)])
    q = support.new_state()
    recover(str(tmp_path), q, 0.0)
    entry = q.schedules.get(name)
    assert entry is not None
    assert entry.schedule.job == "job"
