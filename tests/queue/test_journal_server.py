"""A server with a journal: restarts keep jobs, runs cut short count, flushes gate replies."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from jobqueue import Client, RequestError, serve_queue
from jobqueue._cli import main as cli_main
from jobqueue._events import Assigned, Completed, Event, Submitted
from jobqueue._job import JobRecord
from jobqueue._journal import (
    MAGIC,
    JournalDamaged,
    JournalError,
    encode_event,
    frame,
    segment_name,
)
from jobqueue._journal_writer import Journal
from jobqueue._server import QueueService
from jobqueue._state import QueueState
from jobqueue.testing import RunningQueue, open_test_queue
from tests.helpers import RawConnection, park, take

Raw = Callable[[RunningQueue], AbstractAsyncContextManager[Any]]


async def test_jobs_survive_a_restart(tmp_path: Path, raw_connection: Raw) -> None:
    journal = str(tmp_path)
    async with open_test_queue(journal=journal, max_attempts=1) as queue:
        client = queue.client
        first = await client.submit("n", {"a": [1, "é"]}, key="k1")
        urgent = await client.submit("n", "two", priority=5)
        later = await client.submit("n", None, run_at=time.time() + 3600)
        waiting = [await client.submit("n", i) for i in range(3)]
        cancelled = await client.submit("n", 5)
        await client.cancel(cancelled)
        async with raw_connection(queue) as worker:
            job = await worker.request({"type": "request_job"})
            assert job["job_id"] == urgent
            reply = await worker.request(
                {"type": "job_complete", "job_id": urgent, "attempt": 1, "result": [1]}
            )
            assert reply["type"] == "ok"
            job = await worker.request({"type": "request_job"})
            assert job["job_id"] == first
            # The worker vanishes with the job: it fails (one attempt only).
    async with open_test_queue(journal=journal, max_attempts=1) as queue:
        client = queue.client
        done = await client.status(urgent)
        assert (done.state, done.result) == ("completed", [1])
        lost = await client.status(first)
        assert (lost.state, lost.attempt) == ("failed", 1)
        assert lost.error is not None
        assert lost.error["type"] == "WorkerLost"
        assert (await client.status(later)).state == "scheduled"
        assert (await client.status(cancelled)).state == "cancelled"
        assert await client.submit("n", None, key="k1") == first
        new = await client.submit("n", None)
        assert new.rpartition("-")[0] == first.rpartition("-")[0]  # ids go on, same prefix
        async with raw_connection(queue) as worker:
            order = [(await worker.request({"type": "request_job"}))["job_id"] for _ in range(4)]
        assert order == [*waiting, new]
        stats = await client.stats()
        assert stats.totals["submitted"] == 8


async def test_a_smaller_byte_retention_applies_after_replay(
    tmp_path: Path, raw_connection: Raw
) -> None:
    journal = str(tmp_path)
    # Each job holds 102 bytes of payload and 102 of result once completed.
    async with open_test_queue(journal=journal) as queue:
        ids = [await queue.client.submit("n", "p" * 100) for _ in range(3)]
        async with raw_connection(queue) as worker:
            for job_id in ids:
                assert (await worker.request({"type": "request_job"}))["job_id"] == job_id
                reply = await worker.request(
                    {"type": "job_complete", "job_id": job_id, "attempt": 1, "result": "r" * 100}
                )
                assert reply["type"] == "ok"
    async with open_test_queue(journal=journal, finished_retention_bytes=500) as queue:
        with pytest.raises(RequestError, match="unknown_job"):
            await queue.client.status(ids[0])
        kept = [await queue.client.status(job_id) for job_id in ids[1:]]
        assert [(job.state, job.result) for job in kept] == [("completed", "r" * 100)] * 2
    # The forgetting was journaled: a restart without the limit does not bring it back.
    async with open_test_queue(journal=journal) as queue:
        with pytest.raises(RequestError, match="unknown_job"):
            await queue.client.status(ids[0])
        assert (await queue.client.stats()).jobs["completed"] == 2


def write_journal(directory: Path, events: list[Event]) -> None:
    """A journal as a server that was SIGKILLed would have left it (times as wall clock)."""
    data = MAGIC + b"".join(frame(encode_event(event)) for event in events)
    (directory / segment_name(1)).write_bytes(data)


async def test_runs_cut_short_by_a_crash_are_lost_attempts(
    tmp_path: Path, raw_connection: Raw
) -> None:
    wall = time.time()
    write_journal(
        tmp_path,
        [
            Submitted("old-1", "n", None, 1),
            Submitted("old-2", "n", None, 2),
            Submitted("old-3", "n", None, 3),
            Submitted("old-4", "n", None, 4, not_before=wall + 3600),
            Submitted("old-5", "n", None, 5, not_before=wall - 10),
            Assigned("old-1", 1, "w", wall + 30),
            Assigned("old-2", 1, "w", wall + 30),
        ],
    )
    async with open_test_queue(journal=str(tmp_path)) as queue:
        client = queue.client
        for job_id in ("old-1", "old-2"):
            info = await client.status(job_id)
            assert (info.state, info.attempt) == ("pending", 1)
            assert info.error is not None
            assert info.error["type"] == "WorkerLost"
        assert (await client.stats()).totals["reassigned"] == 2
        assert (await client.status("old-4")).state == "scheduled"  # deadline kept
        async with raw_connection(queue) as old_worker, raw_connection(queue) as new_worker:
            # The worker that ran old-2 before the crash reports it: too late.
            reply = await old_worker.request(
                {"type": "job_complete", "job_id": "old-2", "attempt": 1, "result": None}
            )
            assert (reply["type"], reply["code"]) == ("error", "not_leased")
            # Back in line in their original places, ahead of later jobs;
            # old-5's time passed while the server was down.
            got = [await new_worker.request({"type": "request_job"}) for _ in range(4)]
            assert [(j["job_id"], j["attempt"]) for j in got] == [
                ("old-1", 2),
                ("old-2", 2),
                ("old-3", 1),
                ("old-5", 1),
            ]
            reply = await old_worker.request(
                {"type": "job_complete", "job_id": "old-1", "attempt": 1, "result": None}
            )
            assert reply["code"] == "not_leased"


async def test_a_second_server_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    async with open_test_queue(journal=str(tmp_path)) as queue:
        await queue.client.submit("n")
        with pytest.raises(JournalError, match="in use by another server") as info:
            await serve_queue(0, journal=str(tmp_path))
        assert str(os.getpid()) in str(info.value)
        # The first one is unharmed.
        assert (await queue.client.stats()).jobs["pending"] == 1
    # Released when the first one stops.
    async with open_test_queue(journal=str(tmp_path)) as queue:
        assert (await queue.client.stats()).jobs["pending"] == 1


async def test_a_journal_path_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("not a journal")
    with pytest.raises(JournalError, match=f"cannot use journal {path}: it is not a directory"):
        await serve_queue(0, journal=str(path))
    assert path.read_text() == "not a journal"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(encode_event(Completed("elsewhere-9", None, time.time())), id="unknown-job"),
        # Checksums hold, a field does not: as a bug or a hand edit would leave it.
        pytest.param(
            b'["Submitted",0,"elsewhere-2","n",null,"two","default",0,5,null,null,1.0]',
            id="text-seq",
        ),
    ],
)
async def test_a_record_that_does_not_replay_refuses_the_start_by_file_and_offset(
    tmp_path: Path, bad: bytes
) -> None:
    first = encode_event(Submitted("elsewhere-1", "n", None, 1, "default", 0, 5, at=time.time()))
    later = encode_event(Submitted("elsewhere-3", "n", None, 3, "default", 0, 5, at=time.time()))
    segment = tmp_path / segment_name(1)
    segment.write_bytes(MAGIC + frame(first) + frame(bad) + frame(later))
    with pytest.raises(JournalDamaged) as info:
        await serve_queue(0, journal=str(tmp_path))
    assert (info.value.path, info.value.offset) == (str(segment), len(MAGIC) + len(frame(first)))
    assert "a record that does not replay" in str(info.value)
    assert f"jobqueue journal repair {tmp_path}" in str(info.value)
    # What the refusal says to do works: the record before the damage is kept.
    assert cli_main(["journal", "repair", str(tmp_path)]) == 0
    async with open_test_queue(journal=str(tmp_path)) as queue:
        assert (await queue.client.status("elsewhere-1")).state == "pending"
        assert (await queue.client.stats()).jobs["pending"] == 1


@pytest.mark.parametrize("collecting", [True, False])
def test_restored_jobs_are_not_left_young_to_the_collector(
    tmp_path: Path, collecting: bool
) -> None:
    """Recovery's collector pass happens before the server serves, not in its first seconds.

    Replay runs with the collector off, so every restored job would stay in
    the young generations; the first collections after the server opened
    would then walk them all (twice, about 0.3 s each at 10**6 jobs, while
    clients wait). A program that turned the collector off gets no pass.
    """
    count = 5000
    write_journal(tmp_path, [Submitted(f"p-{i}", "n", None, i) for i in range(1, count + 1)])
    was_enabled = gc.isenabled()
    gc.collect()
    if not collecting:
        gc.disable()
    journal = Journal(str(tmp_path))
    try:
        state = QueueState()
        journal.open(state, 0.0)
        young = sum(isinstance(o, JobRecord) for g in (0, 1) for o in gc.get_objects(g))
        assert gc.isenabled() == collecting
    finally:
        journal.close()
        if was_enabled:
            gc.enable()
    assert len(state) == count
    assert young == (0 if collecting else count)


class GatedDisk:
    """A write seam whose flushes wait for the test to open a gate."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.flushes = 0
        self.flushing = threading.Event()
        self.gate = threading.Event()

    def __call__(self, fd: int, data: bytes | None) -> None:
        if data is not None:
            self.writes.append(data)
            os.write(fd, data)
            return
        self.flushing.set()
        assert self.gate.wait(60)  # longer than any test waits for a reply
        os.fdatasync(fd)
        self.flushes += 1


@asynccontextmanager
async def gated_server(
    path: Path, disk: GatedDisk
) -> AsyncIterator[tuple[Journal, Callable[[], Awaitable[trio.abc.Stream]]]]:
    """A server journaling through ``disk``, and how to open a stream to it."""
    service = QueueService(journal=str(path))
    assert service.journal is not None
    journal = service.journal = Journal(str(path), write=disk)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)

        async def connect() -> trio.abc.Stream:
            client_end, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(service.handle_stream, server_end)
            return client_end

        yield journal, connect
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def opened_at_exit(disk: GatedDisk) -> AsyncIterator[None]:
    """Open the gate on the way out, first: a failed test must not leave a flush stuck."""
    try:
        yield
    finally:
        disk.gate.set()


@asynccontextmanager
async def gated_queue(path: Path, disk: GatedDisk) -> AsyncIterator[Callable[[], Any]]:
    async with gated_server(path, disk) as (_, connect):
        yield lambda: Client.connect("memory", 0, connect=connect)


async def test_replies_wait_for_the_flush_and_one_flush_covers_many(tmp_path: Path) -> None:
    disk = GatedDisk()
    async with (
        gated_queue(tmp_path, disk) as connect,
        connect() as first,
        connect() as second,
        connect() as third,
        connect() as fourth,
        trio.open_nursery() as nursery,
    ):
        disk.gate.set()
        await second.submit("warm-up")  # the journal's start-up writes are done
        disk.writes.clear()
        disk.gate.clear()
        disk.flushing.clear()
        acknowledged: list[str] = []

        async def submit(client: Client, name: str) -> None:
            acknowledged.append(await client.submit(name))

        nursery.start_soon(submit, first, "a")
        await trio.to_thread.run_sync(disk.flushing.wait)
        # The flush is under way: its submit is not acknowledged, but the
        # coordinator serves on, and a read that changed nothing is answered.
        assert (await second.stats()).jobs["pending"] == 2
        for client, name in ((second, "b"), (third, "c"), (fourth, "d")):
            nursery.start_soon(submit, client, name)
        await trio.testing.wait_all_tasks_blocked()
        assert acknowledged == []
        flushes = disk.flushes
        disk.gate.set()
    assert len(acknowledged) == 4
    # One flush for "a", one for the three that came while it ran.
    assert disk.flushes - flushes == 2
    assert [w.count(b'["Submitted",') for w in disk.writes] == [1, 3]


async def test_an_unflushed_submit_is_not_acknowledged(tmp_path: Path) -> None:
    disk = GatedDisk()
    async with gated_queue(tmp_path, disk) as connect, connect() as client:
        disk.gate.set()
        await client.submit("warm-up")
        disk.gate.clear()
        with trio.move_on_after(0.2) as waited:
            await client.submit("never flushed")
        assert waited.cancelled_caught
        disk.gate.set()


class Replies:
    """A raw connection's replies, read into a list as they arrive."""

    def __init__(self, conn: RawConnection) -> None:
        self.conn = conn
        self.got: list[dict[str, Any]] = []
        self.arrived = trio.Event()

    async def read(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self.got.append(await self.conn.read_reply())
            self.arrived.set()
            self.arrived = trio.Event()

    async def count(self, n: int) -> list[dict[str, Any]]:
        """Wait until ``n`` replies have arrived; return them."""
        while len(self.got) < n:
            await self.arrived.wait()
        return self.got


async def flush_held(disk: GatedDisk) -> None:
    """Wait until a flush is stuck at the closed gate and nothing else can move."""
    await trio.to_thread.run_sync(disk.flushing.wait)
    await trio.testing.wait_all_tasks_blocked()


async def test_an_assignment_leaves_before_the_flush_its_submit_waits_for(
    tmp_path: Path,
) -> None:
    disk = GatedDisk()
    async with (
        gated_server(tmp_path, disk) as (journal, connect),
        Client.connect("memory", 0, connect=connect) as producer,
        trio.open_nursery() as nursery,
        opened_at_exit(disk),
    ):
        worker = RawConnection(await connect())
        disk.gate.set()
        await producer.submit("warm-up")
        await take(worker)
        await journal.wait_idle()
        disk.gate.clear()
        disk.flushing.clear()
        await park(producer, worker, wait=30, waiting=1)
        acknowledged: list[str] = []

        async def submit() -> None:
            acknowledged.append(await producer.submit("a"))

        nursery.start_soon(submit)
        with trio.fail_after(5):
            job = await worker.read_reply()
        # The worker has its job; the producer's submit waits for the disk.
        assert job["type"] == "job_assigned"
        await flush_held(disk)
        assert acknowledged == []
        disk.gate.set()
    assert acknowledged == [job["job_id"]]


@pytest.mark.parametrize("blocked", [False, True], ids=["job-pending", "fetch-blocks"])
async def test_a_report_with_fetch_is_answered_only_once_on_disk(
    tmp_path: Path, blocked: bool
) -> None:
    disk = GatedDisk()
    async with (
        gated_server(tmp_path, disk) as (journal, connect),
        Client.connect("memory", 0, connect=connect) as producer,
        trio.open_nursery() as nursery,
        opened_at_exit(disk),
    ):
        worker = RawConnection(await connect())
        replies = Replies(worker)
        disk.gate.set()
        await producer.submit("first")
        job = await take(worker)
        if not blocked:
            await producer.submit("next")
        await journal.wait_idle()
        disk.gate.clear()
        disk.flushing.clear()
        await worker.send(
            {
                "type": "job_complete",
                "job_id": job["job_id"],
                "attempt": job["attempt"],
                "fetch": {"wait": 30},
            }
        )
        await nursery.start(replies.read)
        if blocked:
            # The completion is flushed (lazily: no reply waits yet) while
            # the fetch waits; then a job arrives and answers the report.
            await flush_held(disk)
            assert (await producer.stats()).waiting_workers == 1
            nursery.start_soon(producer.submit, "next")
        await flush_held(disk)
        # The reply is a job_assigned, yet it acknowledges the completion.
        assert replies.got == []
        disk.gate.set()
        with trio.fail_after(5):
            [reply] = await replies.count(1)
        assert reply["type"] == "job_assigned"
        assert (await producer.status(job["job_id"])).state == "completed"
        nursery.cancel_scope.cancel()


async def test_a_connection_s_replies_keep_their_order_behind_a_held_one(
    tmp_path: Path,
) -> None:
    disk = GatedDisk()
    async with (
        gated_server(tmp_path, disk) as (journal, connect),
        Client.connect("memory", 0, connect=connect) as producer,
        trio.open_nursery() as nursery,
        opened_at_exit(disk),
    ):
        conn = RawConnection(await connect())
        replies = Replies(conn)
        disk.gate.set()
        await producer.submit("warm-up")
        await journal.wait_idle()
        disk.gate.clear()
        disk.flushing.clear()
        await nursery.start(replies.read)
        await conn.send({"type": "submit_job", "name": "n"})
        await flush_held(disk)
        # A second request, a second command: its assignment would go out
        # at once, but the submit's acknowledgement ahead of it is held.
        await conn.send({"type": "request_job"})
        await trio.testing.wait_all_tasks_blocked()
        assert replies.got == []
        disk.gate.set()
        with trio.fail_after(5):
            got = await replies.count(2)
        assert [reply["type"] for reply in got] == ["job_submitted", "job_assigned"]
        nursery.cancel_scope.cancel()


async def compactions_while_submitting(
    journal: Path, caplog: pytest.LogCaptureFixture, **options: Any
) -> int:
    caplog.clear()
    with caplog.at_level("INFO", logger="jobqueue.journal"):
        async with open_test_queue(journal=str(journal), **options) as queue:
            batch = [{"name": "n", "payload": "x" * 1000}] * 50
            for _ in range(40):
                await queue.client.submit_many(batch)
    return sum("compacted to" in record.getMessage() for record in caplog.records)


async def test_compact_ratio_sets_how_often_the_journal_compacts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 2,000 pending jobs of about 1 KiB, 2 MiB of records. The journal
    # compacts at 256 KiB whatever the ratio; then at 100x the snapshot
    # (25 MiB: never here), or at 1.1x of it, every few batches.
    rare = await compactions_while_submitting(tmp_path / "rare", caplog, compact_ratio=100)
    often = await compactions_while_submitting(tmp_path / "often", caplog, compact_ratio=1.1)
    assert rare == 1
    assert often >= 3
