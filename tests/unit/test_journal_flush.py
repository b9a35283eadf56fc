"""When the flusher flushes, and which replies wait for it (``fsync="always"``)."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from jobqueue._commands import Connection, Outgoing
from jobqueue._journal import MAGIC
from jobqueue._journal_disk import write_or_flush
from jobqueue._journal_writer import LAZY_FLUSH_SECONDS, Journal
from jobqueue._replies import JobAssigned, JobsAssigned, JobSubmitted, NoJob, Ok
from jobqueue._state import QueueState


class CountingDisk:
    """A write seam that notes when (in trio's clock) each write and flush was made."""

    def __init__(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.flushes: list[float] = []
        self.writes: list[float] = []
        self.flushed = threading.Event()
        self.wrote = threading.Event()

    def __call__(self, fd: int, data: bytes | None) -> None:
        try:
            now = trio.current_time()  # in trio's thread: close() at the end
        except RuntimeError:
            # Asked of trio while the flusher waits for this thread: no
            # deadline is pending then, so the mock clock cannot have jumped.
            now = trio.from_thread.run_sync(trio.current_time, trio_token=self.token)
        if data is not None:
            os.write(fd, data)
            self.writes.append(now)
            self.wrote.set()
            return
        os.fdatasync(fd)
        self.flushes.append(now)
        self.flushed.set()

    async def next_flush(self) -> float:
        """Wait until a flush not yet waited for has been made; return when it was.

        The mock clock cannot end this wait (it is a thread's): a flush
        that never comes fails the test after 30 real seconds.
        """
        assert await trio.to_thread.run_sync(self.flushed.wait, 30.0), "no flush came"
        self.flushed.clear()
        return self.flushes[-1]


@asynccontextmanager
async def running_journal(
    path: Path, disk: CountingDisk, fsync: str = "always"
) -> AsyncIterator[tuple[Journal, QueueState]]:
    """A journal flushing ``state``'s events, its start-up writes done.

    A first event is written and flushed, so the space the next records go
    into is prepared (:class:`OpenSegment` flushes the zeros too).
    """
    state = QueueState()
    journal = Journal(str(path), fsync, write=disk)
    journal.open(state, trio.current_time())
    journal.start(state, trio.current_time())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        state.submit("warm-up", None, trio.current_time())
        await journal.wait_idle()
        disk.flushed.clear()
        yield journal, state
        nursery.cancel_scope.cancel()


def connection(number: int) -> tuple[Connection, trio.MemoryReceiveChannel[list[Outgoing] | None]]:
    send, receive = trio.open_memory_channel[list[Outgoing] | None](100)
    return Connection(number, f"peer-{number}", send), receive


def assigned(job_id: str) -> JobAssigned:
    return JobAssigned(job_id, "n", None, 1, 30.0)


async def test_events_no_reply_waits_for_are_flushed_within_the_bound(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    disk = CountingDisk()
    async with running_journal(tmp_path, disk) as (journal, state):
        flushes = len(disk.flushes)
        start = trio.current_time()
        state.submit("n", None, start)
        await trio.sleep(LAZY_FLUSH_SECONDS / 2)
        assert len(disk.flushes) == flushes  # waiting for an acknowledgement to share a flush
        assert not journal.idle
        assert await disk.next_flush() - start == pytest.approx(LAZY_FLUSH_SECONDS)
        assert len(disk.flushes) == flushes + 1


async def test_events_after_a_quiet_spell_are_flushed_within_the_bound(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # The flusher task sleeps while nothing is buffered, and is not woken by
    # an acknowledgement's flush: the first event after either must still
    # be flushed within the bound.
    disk = CountingDisk()
    conn, _ = connection(1)
    async with running_journal(tmp_path, disk) as (journal, state):

        async def flushed_lazily() -> None:
            start = trio.current_time()
            state.submit("n", None, start)  # no reply waits for it
            assert await disk.next_flush() - start == pytest.approx(LAZY_FLUSH_SECONDS)

        await trio.sleep(1)
        await flushed_lazily()
        journal.begin()
        job, _ = state.submit("n", None, trio.current_time())
        assert journal.hold(conn, [JobSubmitted(job.id)])
        acknowledged = trio.current_time()
        assert await disk.next_flush() == acknowledged
        await journal.wait_idle()
        await flushed_lazily()
        await trio.sleep(1)
        await flushed_lazily()


async def test_an_acknowledgement_during_the_lazy_wait_is_flushed_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    disk = CountingDisk()
    conn, replies = connection(1)
    async with running_journal(tmp_path, disk) as (journal, state):
        journal.begin()
        job, _ = state.submit("n", None, trio.current_time())
        state.assign("w", trio.current_time())
        assert not journal.hold(conn, [assigned(job.id)])  # it promises nothing
        await trio.sleep(LAZY_FLUSH_SECONDS / 2)
        flushes = len(disk.flushes)
        journal.begin()
        submitted, _ = state.submit("n", None, trio.current_time())
        assert journal.hold(conn, [JobSubmitted(submitted.id)])
        acknowledged = trio.current_time()
        assert await disk.next_flush() == acknowledged  # not at the end of the lazy wait
        assert len(disk.flushes) == flushes + 1  # one flush for both commands' events
        await journal.wait_idle()
        assert replies.receive_nowait() == [JobSubmitted(submitted.id)]


async def test_waiting_for_idle_flushes_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    disk = CountingDisk()
    async with running_journal(tmp_path, disk) as (journal, state):
        state.submit("n", None, trio.current_time())
        start = trio.current_time()
        await journal.wait_idle()
        assert disk.flushes[-1] == start


@pytest.mark.parametrize("fsync", ["never", "interval"])
async def test_without_always_nothing_waits_lazily(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, fsync: str
) -> None:
    disk = CountingDisk()
    async with running_journal(tmp_path, disk, fsync) as (_, state):
        disk.wrote.clear()
        start = trio.current_time()
        state.submit("n", None, start)
        await trio.to_thread.run_sync(disk.wrote.wait)
        assert disk.writes[-1] == start  # written as soon as the flusher runs


async def test_which_replies_wait_is_decided_by_their_kind(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    disk = CountingDisk()
    worker, to_worker = connection(1)
    producer, to_producer = connection(2)
    async with running_journal(tmp_path, disk) as (journal, state):
        journal.begin()
        job, _ = state.submit("n", None, trio.current_time())
        state.assign(worker.id, trio.current_time())
        # The same command's replies: the assignment goes, the acknowledgement waits.
        assert not journal.hold(worker, [assigned(job.id)])
        assert not journal.hold(worker, [JobsAssigned((assigned(job.id),), 30.0)])
        assert not journal.hold(worker, [NoJob()])
        assert journal.hold(producer, [JobSubmitted(job.id)])
        # Behind a held reply, even one that promises nothing waits: order is kept.
        journal.begin()
        assert journal.hold(producer, [NoJob()])
        # A command that applied no events: a read answered at once.
        journal.begin()
        assert not journal.hold(worker, [Ok()])
        await journal.wait_idle()
        assert to_producer.receive_nowait() == [JobSubmitted(job.id)]
        assert to_producer.receive_nowait() == [NoJob()]
        with pytest.raises(trio.WouldBlock):
            to_worker.receive_nowait()  # sent by the coordinator itself, not by the journal


async def test_a_reply_owed_to_a_report_waits_whatever_its_kind(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    disk = CountingDisk()
    worker, to_worker = connection(1)
    async with running_journal(tmp_path, disk) as (journal, state):
        state.submit("n", None, trio.current_time())
        await journal.wait_idle()
        # A report with fetch: the fetch blocks (nothing pending) ...
        journal.begin()
        job = state.assign(worker.id, trio.current_time())
        assert job is not None
        assert job.run is not None
        state.complete(job.id, worker.id, job.run.attempt, None, trio.current_time())
        journal.owe(worker)
        # ... and is answered by a later command that applied no events.
        journal.begin()
        assert journal.hold(worker, [NoJob()])
        await journal.wait_idle()
        assert to_worker.receive_nowait() == [NoJob()]
        # Once the report is on disk nothing more is owed.
        journal.begin()
        state.submit("n", None, trio.current_time())
        assert not journal.hold(worker, [NoJob()])


async def test_a_held_reply_hands_its_flush_to_the_disk_thread_itself(tmp_path: Path) -> None:
    # hold() starts the flush: no task has to be scheduled first, so the
    # write reaches the disk thread while trio's thread is still busy.
    flushed = threading.Event()

    def disk(fd: int, data: bytes | None) -> None:
        write_or_flush(fd, data)
        if data is None:
            flushed.set()

    state = QueueState()
    journal = Journal(str(tmp_path), "always", write=disk)
    journal.open(state, trio.current_time())
    journal.start(state, trio.current_time())
    conn, replies = connection(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        state.submit("warm-up", None, trio.current_time())
        await journal.wait_idle()
        flushed.clear()
        journal.begin()
        job, _ = state.submit("n", None, trio.current_time())
        assert journal.hold(conn, [JobSubmitted(job.id)])
        assert flushed.wait(10)  # blocks trio's thread: no task runs meanwhile
        await journal.wait_idle()
        assert replies.receive_nowait() == [JobSubmitted(job.id)]
        nursery.cancel_scope.cancel()


def compacting_at_once(
    path: Path, disk: Callable[[int, bytes | None], None]
) -> tuple[QueueState, Journal]:
    """A fresh state journaled to ``path`` through ``disk``; its flusher compacts at once."""
    state = QueueState()
    journal = Journal(str(path), "always", write=disk, compact_min_bytes=1)
    journal.open(state, trio.current_time())
    journal.start(state, trio.current_time())
    return state, journal


async def test_replies_are_released_while_compaction_keeps_failing(tmp_path: Path) -> None:
    # A compaction that fails must not hold up the flushes behind it: they
    # go on, and the compaction is tried again after each.
    compactions = 0

    def disk(fd: int, data: bytes | None) -> None:
        nonlocal compactions
        if data is not None and data.startswith(MAGIC):  # a snapshot's first chunk
            compactions += 1
            raise OSError(errno.ENOSPC, "no room for a snapshot")
        write_or_flush(fd, data)

    state, journal = compacting_at_once(tmp_path, disk)
    conn, replies = connection(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        with trio.fail_after(10):
            for _ in range(3):
                journal.begin()
                job, _ = state.submit("n", None, trio.current_time())
                assert journal.hold(conn, [JobSubmitted(job.id)])
                assert await replies.receive() == [JobSubmitted(job.id)]
        assert compactions >= 2
        assert journal.compactions == 0
        nursery.cancel_scope.cancel()


class SnapshotGate:
    """A write seam that holds a compaction's snapshot at a gate; ``fail_flushes`` fail."""

    def __init__(self) -> None:
        self.snapshot_waiting = threading.Event()
        self.gate = threading.Event()
        self.fail_flushes = 0

    def __call__(self, fd: int, data: bytes | None) -> None:
        if data is not None and data.startswith(MAGIC):  # a snapshot's first chunk
            self.snapshot_waiting.set()
            assert self.gate.wait(30)
        if data is None and self.fail_flushes:
            self.fail_flushes -= 1
            raise OSError(errno.EIO, "the disk hiccuped")
        write_or_flush(fd, data)


def replayed(path: Path) -> QueueState:
    """The state a server restarted on a copy of ``path``, as it is now, would have."""
    copy = path.parent / f"{path.name}-copy"
    shutil.copytree(path, copy)
    (copy / "lock").unlink()
    state = QueueState()
    again = Journal(str(copy))
    again.open(state, 0.0)
    again.close()
    shutil.rmtree(copy)
    return state


async def test_a_reply_waits_for_its_flush_not_for_a_compaction(tmp_path: Path) -> None:
    disk = SnapshotGate()
    path = tmp_path / "journal"
    state, journal = compacting_at_once(path, disk)
    conn, replies = connection(1)
    before, _ = state.submit("before", None, trio.current_time())  # buffered at the capture
    async with trio.open_nursery() as nursery:
        try:
            nursery.start_soon(journal.run)  # compacts at once (compact_min_bytes=1)
            await trio.to_thread.run_sync(disk.snapshot_waiting.wait, 30.0)
            journal.begin()
            job, _ = state.submit("during", None, trio.current_time())
            assert journal.hold(conn, [JobSubmitted(job.id)])
            with trio.fail_after(30):
                assert await replies.receive() == [JobSubmitted(job.id)]
            assert journal.compactions == 0  # the snapshot is still at the gate
            # A crash now: the old segment is the journal, and has both jobs.
            assert {j.name for j in replayed(path).pending_in_order()} == {"before", "during"}
        finally:
            disk.gate.set()
        await journal.wait_idle()
        assert journal.compactions >= 1
        # After it: the new segment, snapshot and the event flushed meanwhile.
        assert {j.name for j in replayed(path).pending_in_order()} == {"before", "during"}
        assert len([n for n in os.listdir(path) if n.endswith(".jqj")]) == 1
        nursery.cancel_scope.cancel()
    assert before.id != job.id


async def test_a_flush_failing_during_a_compaction_abandons_it_and_loses_nothing(
    tmp_path: Path,
) -> None:
    disk = SnapshotGate()
    path = tmp_path / "journal"
    state, journal = compacting_at_once(path, disk)
    conn, replies = connection(1)
    async with trio.open_nursery() as nursery:
        try:
            nursery.start_soon(journal.run)
            await trio.to_thread.run_sync(disk.snapshot_waiting.wait, 30.0)
            disk.fail_flushes = 1
            journal.begin()
            job, _ = state.submit("during", None, trio.current_time())
            assert journal.hold(conn, [JobSubmitted(job.id)])
            with trio.fail_after(30):
                await journal.wait_failing()
            assert replies.statistics().current_buffer_used == 0  # not acknowledged
        finally:
            disk.gate.set()
        # The compaction gives up (its tail would miss what the failed flush
        # held); the flusher writes it again, and the reply goes out.
        with trio.fail_after(30):
            assert await replies.receive() == [JobSubmitted(job.id)]
        await journal.wait_idle()
        assert not journal.failing
        assert {j.name for j in replayed(path).pending_in_order()} == {"during"}
        nursery.cancel_scope.cancel()


async def test_a_compaction_is_not_starved_by_acknowledgements_that_keep_coming(
    tmp_path: Path,
) -> None:
    # Slow flushes and four connections that submit again as soon as they
    # are answered: every flush ends with replies waiting for the next. The
    # compaction's last step waits for the flush under way, and must not
    # find another started in its place every time.
    class SlowFlushes(SnapshotGate):
        def __call__(self, fd: int, data: bytes | None) -> None:
            if data is None:
                time.sleep(0.005)
            super().__call__(fd, data)

    disk = SlowFlushes()
    state, journal = compacting_at_once(tmp_path, disk)

    async def produce(number: int) -> None:
        conn, replies = connection(number)
        while True:
            journal.begin()
            job, _ = state.submit("n", None, trio.current_time())
            if journal.hold(conn, [JobSubmitted(job.id)]):
                assert await replies.receive() == [JobSubmitted(job.id)]
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        try:
            nursery.start_soon(journal.run)
            await trio.to_thread.run_sync(disk.snapshot_waiting.wait, 30.0)
            for number in range(1, 5):
                nursery.start_soon(produce, number)
            await trio.sleep(0.05)  # flushes go on meanwhile
        finally:
            disk.gate.set()
        with trio.fail_after(10):
            # The journal has no event for a compaction's end; its counter is polled.
            while journal.compactions == 0:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
