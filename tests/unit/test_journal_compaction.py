"""Compaction: a snapshot restores the state field by field, and keeps the journal small."""

from __future__ import annotations

import copy
import os
import random
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import trio

from jobqueue._config import QueueRules
from jobqueue._events import Event
from jobqueue._journal import MAGIC, JournalError, encode_event, frame, read_journal
from jobqueue._journal_disk import PREPARED_BYTES
from jobqueue._journal_writer import Journal
from jobqueue._json import stored_form
from jobqueue._snapshot import Capture, capture, captured, encode_snapshot, is_snapshot, replay
from jobqueue._state import QueueState
from tests.unit import journal_support as support


def replayed(payloads: list[bytes]) -> QueueState:
    q = support.new_state()
    q.id_prefix = ""
    replay(q, payloads, 0.0)
    return q


@pytest.mark.parametrize("seed", range(8))
def test_a_snapshot_restores_the_state_field_by_field(seed: int) -> None:
    rng = random.Random(seed)
    q = support.new_state()
    now = support.lifecycle(q, rng, 300)
    payloads = list(encode_snapshot(capture(q)))
    assert is_snapshot(payloads[0])
    restored = replayed(payloads)
    assert support.view(restored) == support.view(q)
    # Both go on alike: the same ids, the same order, the same decisions.
    restored.rng.setstate(q.rng.getstate())
    support.lifecycle(q, random.Random(seed + 100), 200, now)
    support.lifecycle(restored, random.Random(seed + 100), 200, now)
    assert support.view(restored) == support.view(q)


@pytest.mark.parametrize("seed", range(6))
def test_a_snapshot_then_events_replay_to_the_same_state(seed: int) -> None:
    rng = random.Random(seed)
    q = support.new_state()
    now = support.lifecycle(q, rng, 250)
    at_capture = copy.deepcopy(support.view(q))  # its runs change in place
    events: list[Event] = []
    with captured(q) as snapshot:
        q.on_event = events.append
        support.lifecycle(q, rng, 250, now)
        # The capture is of the moment it was taken, however the state moved on.
        payloads = list(encode_snapshot(snapshot))
    assert support.view(replayed(payloads)) == at_capture
    payloads += [encode_event(e) for e in events]
    assert support.view(replayed(payloads)) == support.view(q)


def test_a_snapshot_cut_short_is_refused() -> None:
    q = support.new_state()
    support.lifecycle(q, random.Random(1), 200)
    payloads = list(encode_snapshot(capture(q)))
    assert len(payloads) > 3
    with pytest.raises(JournalError, match="not whole"):
        replayed(payloads[:-2])


def test_a_snapshots_job_records_keep_their_layout() -> None:
    # Key and not_before live in the run, not the record, but a snapshot
    # writes every field where it always has: these bytes are what the
    # version that kept them in the record wrote for the same state.
    rules = QueueRules(max_attempts=3, retry_delay=0.5)
    q = QueueState(rules=rules, id_prefix="g-")
    q.submit("n", stored_form({"a": 1}), 1.0, key="k1")
    q.submit("n", 7, 1.0, delay=5.0, key="k2")
    q.submit("n", None, 1.0, delay=5.0)
    q.submit("m", stored_form("s"), 1.5, queue="q", priority=3, max_attempts=2)
    job = q.assign("w", 2.0, "worker", ["default"])
    assert job is not None
    q.fail(job.id, job.worker, job.attempt, "E", "boom", 2.5)  # retried after a backoff
    job = q.assign("w", 3.0, "worker", ["q"])
    assert job is not None
    q.report_progress(job.id, job.worker, None, 0.5, stored_form("half"), 3.5)
    q.tick(6.5)  # the delayed jobs and the retry come due
    payloads = list(encode_snapshot(capture(q), 1000.0))
    assert payloads[1:] == [
        b'["$",4,"g-1","n",null,1,"default",0,3,"k1","pending",null,1001.0,1,"w","worker",'
        b'1032.0,1002.0,null,null,null,{"type":"E","message":"boom"}]\n{"a":1}',
        b'["$",0,"g-2","n",7,2,"default",0,3,"k2","pending",null,1001.0]',
        b'["$",0,"g-3","n",null,3,"default",0,3,null,"pending",null,1001.0]',
        b'["$",131076,"g-4","m",null,4,"q",3,2,null,"running",null,1001.5,1,"w","worker",'
        b'1033.5,1003.0,0.5,null]\n"s"\n"half"',
    ]
    restored = QueueState(rules=rules)
    replay(restored, payloads, 1000.0)
    assert support.view(restored) == support.view(q)
    # Restored jobs share their options as live ones do.
    assert restored.get("g-1").options is restored.get("g-3").options
    # A delayed job's run held only its time: gone once it came due.
    assert (restored.get("g-3").run, q.get("g-3").run) == (None, None)
    keyed = q.get("g-2").run
    assert keyed is not None
    assert (keyed.key, keyed.not_before) == ("k2", None)


def test_a_segment_that_starts_with_a_snapshot_stands_alone(tmp_path: Path) -> None:
    q = support.new_state()
    events: list[Event] = []
    q.on_event = events.append
    support.lifecycle(q, random.Random(2), 200)
    (tmp_path / "00000000000000000001.jqj").write_bytes(
        MAGIC + b"".join(frame(encode_event(e)) for e in events)
    )
    snapshot = MAGIC + b"".join(frame(p) for p in encode_snapshot(capture(q)))
    (tmp_path / "00000000000000000002.jqj").write_bytes(snapshot)
    reading = read_journal(str(tmp_path))
    assert reading.obsolete == [str(tmp_path / "00000000000000000001.jqj")]
    assert reading.snapshot_size == len(snapshot)
    assert support.view(replayed(reading.payloads)) == support.view(q)


# -- the writer, in a temporary directory -------------------------------------------


@pytest.fixture
def no_wall_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's clock reads the state's: times are written unshifted, so compare exactly."""
    fake = types.SimpleNamespace(time=lambda: 0.0, perf_counter=time.perf_counter)
    monkeypatch.setattr("jobqueue._journal_writer.time", fake)


def journal_bytes(directory: Path) -> int:
    return sum(
        os.path.getsize(directory / name) for name in os.listdir(directory) if name.endswith(".jqj")
    )


def reopen(directory: Path) -> QueueState:
    again = support.new_state()
    journal = Journal(str(directory))
    journal.open(again, 0.0)
    journal.close()
    return again


@pytest.mark.usefixtures("no_wall_offset")
async def test_compaction_keeps_the_state_and_bounds_the_size(tmp_path: Path) -> None:
    q = support.new_state(finished_retention=20)
    journal = Journal(str(tmp_path), compact_min_bytes=32 * 1024, compact_ratio=4.0)
    journal.open(q, 0.0)
    journal.start(q, 0.0)
    rng = random.Random(7)
    largest = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        now = 1.0
        for round_ in range(300):
            # About 20 jobs a round pass through; some stay behind, live.
            now = support.lifecycle(q, rng, 10, now)
            for _ in range(20):
                q.submit("n", stored_form({"round": round_, "pad": "x" * 40}), now)
                job = q.assign("v", now, "name", ["default"])
                assert job is not None
                q.complete(job.id, "v", None, stored_form([1, 2]), now)
            await journal.wait_idle()
            largest = max(largest, journal.size)
            # The segment holds the records and zeros prepared for more.
            assert journal.size <= journal_bytes(tmp_path) <= journal.size + PREPARED_BYTES
        assert q.totals["submitted"] > 6000
        assert journal.compactions >= 5
        # Bounded: under the trigger, plus what one flush can add.
        bound = max(journal.compact_min_bytes, journal.compact_ratio * journal.snapshot_size)
        assert largest < bound + 64 * 1024
        assert len([n for n in os.listdir(tmp_path) if n.endswith(".jqj")]) == 1
        assert read_journal(str(tmp_path)).size == journal.size
        nursery.cancel_scope.cancel()
    assert support.view(reopen(tmp_path)) == support.view(q)


@pytest.mark.usefixtures("no_wall_offset")
async def test_a_compaction_covers_the_events_still_buffered(tmp_path: Path) -> None:
    q = support.new_state()
    journal = Journal(str(tmp_path))
    journal.open(q, 0.0)
    journal.start(q, 0.0)
    support.lifecycle(q, random.Random(3), 300, 1.0)
    # Nothing flushed (the flusher is not even running): the snapshot alone
    # makes it all durable.
    assert journal.durable < journal.appended
    assert await journal.compact()
    assert journal.durable == journal.appended
    journal.close()
    assert sorted(os.listdir(tmp_path)) == ["00000000000000000002.jqj", "lock"]
    assert support.view(reopen(tmp_path)) == support.view(q)


@pytest.mark.parametrize("seed", range(3))
def test_a_capture_encoded_in_a_thread_while_the_state_changes_is_of_its_moment(
    seed: int,
) -> None:
    # As compaction does: the coordinator changes records while a thread
    # encodes them. The thread stops after the header until the first
    # changes are made, so some always fall while it encodes (it could
    # otherwise finish before this thread looks); then a tiny switch
    # interval interleaves the two finely.
    rng = random.Random(seed)
    q = support.new_state(finished_retention=400)
    now = support.lifecycle(q, rng, 1500)
    at_capture = copy.deepcopy(support.view(q))
    payloads: list[bytes] = []
    header_out, changed = threading.Event(), threading.Event()

    def encode(snapshot: Capture) -> None:
        for payload in encode_snapshot(snapshot):
            payloads.append(payload)
            if len(payloads) == 1:
                header_out.set()
                changed.wait(30)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with captured(q) as snapshot:
            encoder = threading.Thread(target=encode, args=(snapshot,))
            encoder.start()
            assert header_out.wait(30)
            now = support.lifecycle(q, rng, 50, now)
            changed.set()
            while encoder.is_alive():
                now = support.lifecycle(q, rng, 5, now)
            encoder.join()
    finally:
        changed.set()
        sys.setswitchinterval(interval)
    assert len(snapshot.kept) > 0  # records did change while it was encoded
    assert support.view(replayed(payloads)) == at_capture
