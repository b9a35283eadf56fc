"""Disk trouble: changes are refused by name, nothing unflushed is acknowledged, reads go on."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from jobqueue import Client, Job, RequestError, Worker
from jobqueue._journal_writer import Journal
from jobqueue._server import QueueService
from jobqueue._state import QueueState
from tests.helpers import wait_until


class FlakyDisk:
    """A write seam that fails (``ENOSPC``) while ``broken`` is set.

    Attributes:
        broken: Set by the test: every write (or, with ``flushes_only``,
            every flush) then fails.
        failed: Set by the seam each time it fails.
    """

    def __init__(self, *, flushes_only: bool = False) -> None:
        self.broken = threading.Event()
        self.failed = threading.Event()
        self.flushes_only = flushes_only
        self.failures = 0

    def __call__(self, fd: int, data: bytes | None) -> None:
        if self.broken.is_set() and (data is None or not self.flushes_only):
            self.failures += 1
            self.failed.set()
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        if data is None:
            os.fdatasync(fd)
        else:
            os.write(fd, data)


@asynccontextmanager
async def flaky_queue(
    path: Path, disk: FlakyDisk, fsync: str = "always"
) -> AsyncIterator[tuple[Journal, Callable[[], Any]]]:
    service = QueueService(journal=str(path), fsync=fsync)
    journal = service.journal = Journal(str(path), fsync, 0.05, write=disk)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)

        async def connect() -> trio.abc.Stream:
            client_end, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(service.handle_stream, server_end)
            return client_end

        yield journal, lambda: Client.connect("memory", 0, connect=connect)
        nursery.cancel_scope.cancel()


def replayed(path: Path) -> QueueState:
    state = QueueState()
    journal = Journal(str(path))
    journal.open(state, 0.0)
    journal.close()
    return state


async def failed(disk: FlakyDisk) -> None:
    disk.failed.clear()
    await trio.to_thread.run_sync(disk.failed.wait)


@pytest.mark.parametrize("flushes_only", [False, True])
async def test_a_failing_disk_refuses_changes_and_acknowledges_nothing_unflushed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, flushes_only: bool
) -> None:
    disk = FlakyDisk(flushes_only=flushes_only)
    async with (
        flaky_queue(tmp_path, disk) as (journal, connect),
        connect() as first,
        connect() as second,
        trio.open_nursery() as nursery,
    ):
        kept = await first.submit("before")
        acknowledged: list[str] = []

        async def submit() -> None:
            acknowledged.append(await first.submit("during"))

        disk.broken.set()
        nursery.start_soon(submit)
        await journal.wait_failing()
        assert journal.figures().failing  # jobqueue_journal_failing 1
        await trio.testing.wait_all_tasks_blocked()
        # The change made before the failure was noticed is not acknowledged...
        assert acknowledged == []
        # ...later changes are refused by name, and change nothing...
        with pytest.raises(RequestError) as refused:
            await second.submit("refused")
        assert refused.value.code == "journal_unavailable"
        for change in (second.cancel(kept), second.delete(kept), second.retry(kept)):
            with pytest.raises(RequestError) as refused:
                await change
            assert refused.value.code == "journal_unavailable"
        # ...and reads go on, saying why.
        stats = await second.stats()
        assert stats.jobs["pending"] == 2
        assert stats.journal is not None
        assert stats.journal["failing"] is True
        assert "No space left on device (injected)" in stats.journal["error"]
        assert (await second.status(kept)).state == "pending"
        # It keeps retrying, with a growing delay, while the disk fails.
        await failed(disk)
        await failed(disk)
        assert acknowledged == []
        disk.broken.clear()
        await journal.wait_idle()
        assert not journal.failing
        assert not journal.figures().failing
        assert (await second.stats()).journal == {
            "fsync": "always",
            "bytes": journal.size,
            "compactions": 0,
            "failing": False,
            "error": None,
        }
        await trio.testing.wait_all_tasks_blocked()
        assert len(acknowledged) == 1
        # Recovered by itself: changes are accepted again.
        after = await second.submit("after")
    # Everything acknowledged is on disk, and nothing refused is.
    names = sorted(job.name for job in replayed(tmp_path)._jobs.values())
    assert names == ["after", "before", "during"]
    assert after


async def test_refused_while_failing_with_fsync_never_too(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    disk = FlakyDisk()
    async with flaky_queue(tmp_path, disk, fsync="never") as (journal, connect), connect() as c:
        await c.submit("before")
        # Written before the disk breaks: its write, done by the journal's
        # thread whenever it gets to it, would otherwise race the break.
        await journal.wait_idle()
        disk.broken.set()
        await c.submit("buffered")  # not held: never promised to be on disk
        await journal.wait_failing()
        with pytest.raises(RequestError) as refused:
            await c.submit("refused")
        assert refused.value.code == "journal_unavailable"
        assert (await c.stats()).jobs["pending"] == 2
        disk.broken.clear()
        await journal.wait_idle()
        await c.submit("after")
    names = sorted(job.name for job in replayed(tmp_path)._jobs.values())
    assert names == ["after", "before", "buffered"]


async def test_a_failed_compaction_loses_nothing(tmp_path: Path) -> None:
    disk = FlakyDisk()
    async with flaky_queue(tmp_path, disk) as (journal, connect), connect() as c:
        ids = [await c.submit("n", i) for i in range(5)]
        disk.broken.set()
        assert not await journal.compact()
        assert [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] == []
        disk.broken.clear()
        ids.append(await c.submit("n", 5))
        assert await journal.compact()
        ids.append(await c.submit("n", 6))
    state = replayed(tmp_path)
    assert sorted(state._jobs) == sorted(ids)
    assert [n for n in os.listdir(tmp_path) if n.endswith(".jqj")] == ["00000000000000000002.jqj"]


@asynccontextmanager
async def flaky_worker_queue(
    path: Path, disk: FlakyDisk
) -> AsyncIterator[tuple[Journal, Client, Callable[..., Worker]]]:
    """A flaky queue (``fsync="never"``: refusals come at once), a client, and a worker maker."""
    service = QueueService(journal=str(path), fsync="never")
    journal = service.journal = Journal(str(path), "never", 0.05, write=disk)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)

        async def connect() -> trio.abc.Stream:
            client_end, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(service.handle_stream, server_end)
            return client_end

        def worker(handlers: dict[str, Any], **options: Any) -> Worker:
            return Worker("memory", 0, handlers=handlers, connect=connect, **options)

        async with Client.connect("memory", 0, connect=connect) as client:
            yield journal, client, worker
        nursery.cancel_scope.cancel()


async def break_disk(journal: Journal, disk: FlakyDisk, client: Client) -> None:
    """Make the journal fail: break the disk, then write something to it.

    A write of the worker's (a heartbeat's lease, an assignment) may come
    between the wait for idle and the submit, and fail first: the submit
    is then refused, which shows the failure as well.
    """
    await journal.wait_idle()
    disk.broken.set()
    try:
        await client.submit("written-while-failing")
    except RequestError as exc:
        if exc.code != "journal_unavailable":
            raise
    await journal.wait_failing()


@pytest.mark.parametrize("prefetch", [1, 4, "auto"])
async def test_a_completion_refused_while_the_disk_fails_is_sent_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, prefetch: int | str
) -> None:
    # journal_unavailable changes nothing and passes: the worker keeps the
    # job (heartbeating it) and reports it again, rather than fail it or drop
    # it to run again once its lease expires.
    disk = FlakyDisk()
    running = trio.Event()
    go = trio.Event()

    async def work(job: Job) -> str:
        running.set()
        await go.wait()
        return f"done {job.payload}"

    # (No fail_after around the queue's start: the autojump clock jumps
    # while the journal's thread opens it.)
    async with (
        flaky_worker_queue(tmp_path, disk) as (journal, client, worker_for),
        trio.open_nursery() as nursery,
    ):
        job_id = await client.submit("work", 1, max_attempts=1)
        # (No job_timeout: virtual time races on while the journal's thread writes.)
        worker = worker_for({"work": work}, prefetch=prefetch, job_timeout=None)
        await nursery.start(worker.run)
        await running.wait()
        await break_disk(journal, disk, client)
        go.set()
        # Refused, and refused again, for longer than a lease.
        await trio.sleep(60)
        assert (await client.status(job_id)).state == "running"
        disk.broken.clear()
        await journal.wait_idle()
        done = await client.wait(job_id)
        nursery.cancel_scope.cancel()
    assert (done.state, done.attempt, done.result) == ("completed", 1, "done 1")
    stats = worker.statistics()
    assert (stats.completed, stats.failed, stats.lost) == (1, 0, 0)


async def test_a_drain_gives_back_jobs_once_the_disk_writes_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # release_job is refused with journal_unavailable too: the jobs not
    # started must stay held (heartbeated) until it is taken, not be dropped
    # to expire (and fail for good, with one attempt) while the disk is down.
    disk = FlakyDisk()
    running = trio.Event()
    go = trio.Event()

    async def work(job: Job) -> str:
        running.set()
        await go.wait()
        return f"done {job.payload}"

    async with (
        flaky_worker_queue(tmp_path, disk) as (journal, client, worker_for),
        trio.open_nursery() as nursery,
    ):
        ids = [await client.submit("work", n, max_attempts=1) for n in range(3)]
        worker = worker_for({"work": work}, prefetch=3, job_timeout=None)
        await nursery.start(worker.run)
        await running.wait()
        await break_disk(journal, disk, client)
        # (No deadline to speak of: virtual time races on while the journal's
        # thread writes, by thousands of seconds on a busy machine.)
        worker.drain(timeout=1e9)
        # Refused, and refused again, for longer than a lease.
        await trio.sleep(60)
        for job_id in ids:
            assert (await client.status(job_id)).state == "running"
        disk.broken.clear()
        await journal.wait_idle()
        await wait_until(lambda: worker.statistics().given_back == 2)
        for job_id in ids[1:]:
            info = await client.status(job_id)
            assert (info.state, info.attempts_spent) == ("pending", 0), info
        go.set()
        first = await client.wait(ids[0])
        nursery.cancel_scope.cancel()
    assert (first.state, first.result) == ("completed", "done 0")
    stats = worker.statistics()
    assert (stats.completed, stats.given_back, stats.lost) == (1, 2, 0)
