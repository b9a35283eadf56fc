"""The journal on disk: opened (:mod:`._journal_recover`), then appended to with group commit.

The coordinator never waits for the disk. Each event is encoded into a
buffer as it is applied (:meth:`Journal.append`); the buffer goes to the
journal's own thread (:class:`~jobqueue._journal_disk.DiskThread`), which
writes it and, with ``fsync="always"``, flushes it (``fdatasync``). One
flush covers every event since the last one, from every connection: group
commit. Replies that acknowledge a change must not leave before the events
behind them are on disk, so while events are waiting for a flush the
coordinator gives its replies to :meth:`Journal.hold` instead of the
connection's outbox. ``hold`` hands the buffer to the thread at once when
no flush is under way; the callback the thread schedules in trio's thread
when a flush is done puts the replies it covers in their outboxes, in
order, and starts the next flush if replies wait for it. A job handed to
a worker acknowledges nothing, so its reply goes out at once, and events
that no held reply waits for are flushed by the flusher task after a
little while (``LAZY_FLUSH_SECONDS``) unless an acknowledgement's flush
takes them first.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING
from zlib import crc32

import trio

from ._events import Event
from ._journal import (
    JournalError,
    encode_generic,
    pack_crc,
    pack_length_crc,
    segment_chunks,
    segment_name,
    segments,
)
from ._journal_disk import (
    DiskThread,
    NewSegment,
    OpenSegment,
    fsync_directory,
    lock_directory,
    write_or_flush,
)
from ._journal_fast import FAST
from ._journal_recover import recover
from ._metrics import FLUSH_BUCKETS, Histogram, JournalFigures
from ._replies import JobAssigned, JobsAssigned, NoJob
from ._snapshot import captured, encode_snapshot

if TYPE_CHECKING:
    from ._commands import Connection, Outgoing
    from ._state import QueueState

log = logging.getLogger("jobqueue.journal")

#: Longest wait between attempts to write after the disk failed.
_MAX_RETRY_DELAY = 5.0
#: Compaction starts once the journal holds this many bytes, or
#: ``COMPACT_RATIO`` times its last snapshot, whichever is more.
COMPACT_MIN_BYTES = 256 << 10
COMPACT_RATIO = 4.0
#: The interpreter's switch interval (seconds) while a snapshot is encoded.
#: The encoding thread holds the GIL but for its writes, and trio's thread
#: needs it back after every system call: at Python's 5 ms a request took
#: 20-40 ms while a large snapshot was encoded, at 0.5 ms it takes what it
#: takes otherwise (the encoding itself about a third longer).
ENCODING_SWITCH_INTERVAL = 0.0005
#: With ``fsync="always"``, the longest that events no held reply waits for
#: (a job handed to a worker) stay in the buffer before a flush of their own:
#: until then they wait to share the next acknowledgement's flush.
LAZY_FLUSH_SECONDS = 0.005
#: The reply kinds that acknowledge no change: a job handed to a worker
#: promises nothing to anyone (lost with the server, it runs again), and
#: ``no_job`` reports that nothing changed. Every other kind (``job_submitted``,
#: ``jobs_submitted``, the ``ok`` of a report, release, delete, heartbeat or
#: progress, the job a cancel or retry returns, an error, ...) waits for the
#: flush that covers the events applied before it.
PROMISE_NOTHING: frozenset[type[object]] = frozenset({JobAssigned, JobsAssigned, NoJob})


class Journal:
    """One server's journal directory: locked, replayed, appended to.

    Args:
        directory: Where the segments live; created if missing.
        fsync: ``always``, ``interval`` or ``never`` (``ServerConfig.fsync``).
        fsync_interval: Seconds between flushes with ``interval``.
        write: The seam through which every write goes (tests inject
            failures here): ``write(fd, data)`` then, when flushing,
            ``write(fd, None)``.
        compact_min_bytes: Compact once the journal holds at least this
            many bytes, and ...
        compact_ratio: ... this many times the size of its last snapshot.
            The journal thus stays under about ``compact_ratio`` times the
            live state (plus ``compact_min_bytes``), however many jobs pass.
    """

    def __init__(
        self,
        directory: str,
        fsync: str = "always",
        fsync_interval: float = 1.0,
        *,
        write: Callable[[int, bytes | None], None] | None = None,
        compact_min_bytes: int = COMPACT_MIN_BYTES,
        compact_ratio: float = COMPACT_RATIO,
    ) -> None:
        self.directory = directory
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self._write = write or write_or_flush
        self._segment: OpenSegment | None = None
        self._lock_fd = -1
        self._buffer = bytearray()
        #: Wakes the flusher task while it waits for work; with ``always`` it
        #: sleeps in :attr:`_lazy_wait` instead.
        self._wake = trio.Event()
        #: Events appended, and of those, the ones known to be on disk.
        self.appended = 0
        self.durable = 0
        #: The error of the last failed write, ``None`` while writes succeed.
        self.failure: OSError | None = None
        self._held: deque[tuple[int, Connection, list[Outgoing] | None]] = deque()
        self._held_by: dict[int, int] = {}
        #: Connections whose next reply acknowledges a report whatever its
        #: kind (:meth:`owe`), with the events it must wait for.
        self._owed: dict[int, int] = {}
        #: Set when a flush should not wait (someone waits for :attr:`idle`),
        #: to wake the flusher task from its lazy wait.
        self._hurry = trio.Event()
        #: A reply is held (or someone waits for :attr:`idle`) for events not
        #: yet handed to the disk: the next flush starts as soon as it can.
        self._urgent = False
        #: A write is in the disk thread (one at a time).
        self._flushing = False
        #: When the last flush started (trio's clock).
        self._last_start = 0.0
        #: The flusher task's lazy wait, while it waits (see :meth:`_wait_lazily`).
        self._lazy_wait: trio.CancelScope | None = None
        #: Whether every write so far was flushed (``interval``), and when the last flush was.
        self._synced = True
        self._last_sync = 0.0
        self._retry_delay = 0.1
        self._offset = 0.0
        self._replayed = 0
        self._begun = 0
        self._replay_seconds = 0.0
        self.compact_min_bytes = compact_min_bytes
        self.compact_ratio = compact_ratio
        #: The last segment's number; bytes in the live segments; bytes of the last snapshot.
        self._number = 0
        self.size = 0
        self.snapshot_size = 0
        #: Compactions done since start, and the seconds they took in all.
        self.compactions = 0
        self._compaction_seconds = 0.0
        #: How long each successful write took, and the bytes written since start.
        self._flush_seconds = Histogram(FLUSH_BUCKETS)
        self._written = 0
        self._state: QueueState | None = None
        self._compacting = False
        #: While a compaction writes its snapshot: the events appended since
        #: its capture that flushes have written to the old segment (the new
        #: one gets them after the snapshot), and how many bytes at the front
        #: of the buffer came before the capture.
        self._tail: bytearray | None = None
        self._cut = 0
        #: A compaction's last step: the new segment takes its place. No
        #: flush may start meanwhile.
        self._switching = False
        #: The last compaction failed: the next is tried after the next flush.
        self._compaction_failed = False
        self._progress = trio.Event()
        #: Replies wait for the flush only when every change is flushed before it is acknowledged.
        self._holds = fsync == "always"
        self._disk: DiskThread | None = None

    # -- start ------------------------------------------------------------------------

    def open(self, state: QueueState, now: float) -> None:
        """Lock the directory, replay it into ``state``, and open it for appending.

        ``state`` must be fresh. Blocking: run it in a thread, then
        :meth:`start` in trio's.

        Raises:
            JournalError: the directory is locked by another server, damaged,
                or cannot be read or written.
        """
        self._offset = time.time() - now
        if os.path.lexists(self.directory) and not os.path.isdir(self.directory):
            raise JournalError(f"cannot use journal {self.directory}: it is not a directory")
        try:
            os.makedirs(self.directory, exist_ok=True)
            self._lock_fd = lock_directory(self.directory)
            recovered = recover(self.directory, state, self._offset)
            self._number = recovered.number
            self._segment = OpenSegment(recovered.fd, recovered.end, self._write)
            self.size, self.snapshot_size = recovered.size, recovered.snapshot_size
            self._replayed, self._replay_seconds = recovered.replayed, recovered.seconds
        except BaseException as exc:
            self.close()
            if isinstance(exc, OSError):
                raise JournalError(f"cannot use journal {self.directory}: {exc}") from exc
            raise

    def start(self, state: QueueState, now: float) -> None:
        """Journal ``state``'s changes from now on; recover the runs the restart cut short.

        Called in trio's thread, after :meth:`open` (which may run in a
        worker thread: it only reads and replays).
        """
        state.on_event = self.append
        self._state = state
        # Runs cut short by the restart count as attempts, and their jobs go
        # back in line in their original place; then today's retention.
        lost = 0
        for worker, _ in list(state.holders()):
            lost += len(state.release(worker, now))
        state._enforce_retention()
        log.info(
            "journal %s: replayed %d events in %.2fs; %d jobs (%d runs cut short by the restart)",
            self.directory,
            self._replayed,
            self._replay_seconds,
            len(state),
            lost,
        )

    def close(self) -> None:
        """Write what is buffered (best effort) and release the directory."""
        if self._segment is not None:
            rest = bytes(self._buffer)
            if self._segment.close(rest) and rest:
                self._buffer.clear()
                self.durable = self.appended
            self._segment = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- the coordinator's side (never blocks) ---------------------------------------

    def append(self, event: Event) -> None:
        """Buffer ``event`` for the next flush (``QueueState.on_event``).

        Once an event, so :func:`~jobqueue._journal.encode_event` and
        :func:`~jobqueue._journal.frame_into` are written out here. Only
        the event that starts a buffer concerns the flusher task. With
        ``always``, while the task sleeps in its lazy wait and no flush is
        under way, the wait gets its deadline, ``LAZY_FLUSH_SECONDS`` from
        now, and the task sleeps until then; an acknowledgement's flush that
        takes the event first lifts it (:meth:`_wait_lazily`). Otherwise it is
        woken through :attr:`_wake` (with ``never`` and ``interval``), or
        looks at the buffer when its loop comes round.
        """
        fast = FAST.get(type(event))
        payload = None if fast is None else fast(event, self._offset)
        if payload is None:
            payload = encode_generic(event, self._offset)
        buffer = self._buffer
        if not buffer:
            lazy_wait = self._lazy_wait
            if lazy_wait is None:
                self._wake.set()
            elif not self._flushing:
                lazy_wait.deadline = trio.current_time() + LAZY_FLUSH_SECONDS
        head = pack_length_crc(len(payload), crc32(payload))
        buffer += head
        buffer += pack_crc(crc32(head))
        buffer += payload
        self.appended += 1

    @property
    def failing(self) -> bool:
        """Whether the last write failed (the coordinator then refuses changes)."""
        return self.failure is not None

    def begin(self) -> None:
        """The coordinator starts a command (see :meth:`hold`)."""
        self._begun = self.appended

    def owe(self, conn: Connection) -> None:
        """The reply that answers ``conn``'s request acknowledges the change just applied.

        For a report with ``fetch``: its reply is the fetch's
        (``job_assigned``, ``jobs_assigned`` or ``no_job``, a kind that
        otherwise acknowledges nothing), now or, if the fetch blocks, in a
        later command; either way it must wait for the report's events.
        """
        if self._holds:
            self._owed[conn.id] = self.appended

    def hold(self, conn: Connection, replies: list[Outgoing] | None) -> bool:
        """Keep ``replies`` until the events so far are on disk; ``False``: send now.

        The reply kinds decide (:data:`PROMISE_NOTHING`): replies wait for
        the flush when the command that produced them applied events (a
        submit, a completion, an assignment, a lease lost) and one of them
        acknowledges a change. A read that changed nothing, or a job handed
        to a worker, goes out at once, even while a flush for other
        connections is under way. Two exceptions keep the promise: a reply
        that answers a report (:meth:`owe`) waits for the report's events,
        and a connection whose earlier replies are held has its later ones
        held too, so they never overtake each other.
        """
        if not self._holds:
            return False
        held_by = self._held_by
        key = conn.id
        if key not in held_by:
            owed = self._owed
            if replies is None:  # the connection is gone: nothing to acknowledge
                if owed:
                    owed.pop(key, None)
                return False
            mark = owed.get(key) if owed else None
            if mark is not None and mark <= self.durable:
                del owed[key]
                mark = None
            if mark is None:
                appended = self.appended
                if appended == self._begun or appended == self.durable:
                    return False
                for reply in replies:
                    if type(reply) not in PROMISE_NOTHING:
                        break
                else:
                    return False
        elif replies is None:
            self._owed.pop(key, None)
        self._held.append((self.appended, conn, replies))
        held_by[key] = held_by.get(key, 0) + 1
        self._urgent = True
        if self._can_start():
            # At once, not when the coordinator's step ends: the rest of the
            # step (other replies written, a worker woken) runs while the
            # disk works, and its events go with the next flush.
            self._start()
        return True

    def _can_start(self) -> bool:
        # Not while a flush is under way (one at a time) or a compaction
        # puts its new segment in place, nor while the flusher task waits to
        # retry after a failure or is about to compact. While a compaction
        # writes its snapshot, flushes go on to the old segment.
        return (
            not self._flushing
            and self._disk is not None  # run() has begun (it starts what is urgent)
            and not self._switching
            and self.failure is None
            and not self._compaction_due()
        )

    # -- the flusher ------------------------------------------------------------------

    async def run(self) -> None:
        """Flush what no held reply hurries, retry after failures, compact; until cancelled.

        The flushes that held replies wait for are started in trio's thread
        without this task, by :meth:`hold` or, when one is under way, by the
        callback that ends it (:meth:`_flushed`): waking a task for them put
        a scheduling round on every acknowledgement's path.
        """
        self._disk = DiskThread(trio.lowlevel.current_trio_token())
        self._last_sync = trio.current_time()
        try:
            await self._run()
        finally:
            # The thread may be using the segment's file, which close() must
            # not pull from under it: wait for the flush under way, if any.
            with trio.CancelScope(shield=True):
                while self._flushing:
                    await self._progress.wait()
            self._disk.stop()
            self.close()

    def _start(self) -> None:
        """Hand the buffer to the disk thread (trio's thread; no flush under way).

        The disk thread's callback (:meth:`_flushed`) runs in trio's thread
        as soon as the write is done, and releases the replies it covers.
        """
        disk, segment = self._disk, self._segment
        assert disk is not None, "run() starts the disk thread"
        assert segment is not None, "open() opens the segment"
        data, self._buffer = self._buffer, bytearray()
        covered = self.appended
        now = trio.current_time()
        sync = self.fsync == "always" or (
            self.fsync == "interval" and now >= self._last_sync + self.fsync_interval
        )
        self._flushing = True
        self._urgent = False
        self._last_start = now
        if self._lazy_wait is not None:
            self._lazy_wait.deadline = math.inf
        # During a compaction, what follows the capture goes to the new segment too.
        after_capture = None
        if self._tail is not None:
            after_capture, self._cut = self._cut, 0
        done = functools.partial(
            self._flushed, data, covered, sync, time.perf_counter(), after_capture
        )
        disk.call(functools.partial(segment.append, bytes(data), sync), done)

    def _flushed(
        self,
        data: bytearray,
        covered: int,
        sync: bool,
        began: float,
        after_capture: int | None,
        error: OSError | None,
    ) -> None:
        # Runs in trio's thread as soon as the disk thread is done: the
        # replies go out now, and the next flush, if replies wait for it,
        # starts now, not when a task is next scheduled.
        self._flushing = False
        if error is not None:
            # Nothing is lost: the data goes back in front of whatever came
            # since, and the flusher task writes it again after a pause;
            # held replies keep waiting.
            self._buffer[:0] = data
            if self.failure is None:
                log.error("journal %s: cannot write: %s; retrying", self.directory, error)
            self.failure = error
            self._progressed()
            self._wake.set()
            if self._lazy_wait is not None:
                self._lazy_wait.cancel()
            return
        if self.failure is not None:
            log.warning("journal %s: writing again", self.directory)
            self.failure = None
            self._retry_delay = 0.1
        # What a held reply waits for: the thread's round trip included.
        self._flush_seconds.observe(time.perf_counter() - began)
        if sync:
            self._last_sync = trio.current_time()
        self._synced = sync or (self._synced and not data)
        self.size += len(data)
        self._written += len(data)
        if after_capture is not None and self._tail is not None:
            self._tail += data[after_capture:]
        self.durable = covered
        self._release()
        self._progressed()
        self._compaction_failed = False
        compact = self._compaction_due()
        if self._urgent and self._buffer and not compact and not self._switching:
            self._start()  # replies wait for what came during this flush
            return
        if compact or self._buffer or not self._synced:
            self._wake.set()  # work for the flusher task
        lazy_wait = self._lazy_wait
        if lazy_wait is not None:
            # The task's lazy wait, its deadline lifted by _start. A
            # compaction due: the task has it to do at once. Events that
            # came during the flush came after it started. With nothing,
            # the task sleeps on (append sets a deadline when the next event
            # comes): waking it after every flush put a pass of trio's
            # scheduler on every acknowledgement's path.
            if compact:
                lazy_wait.cancel()
            elif self._buffer:
                lazy_wait.deadline = self._last_start + LAZY_FLUSH_SECONDS

    def _compaction_due(self) -> bool:
        # After a failed compaction, not before the next flush has succeeded:
        # flushes (and the replies they release) go on meanwhile.
        return (not self._compacting and not self._compaction_failed) and self.size >= max(
            self.compact_min_bytes, self.compact_ratio * self.snapshot_size
        )

    async def _run(self) -> None:
        lazy = self._holds
        while True:
            if self._flushing:  # it ends in _flushed, which sets _progress
                await self._progress.wait()
                continue
            if self.failure is not None:
                await trio.sleep(self._retry_delay)
                self._retry_delay = min(self._retry_delay * 2, _MAX_RETRY_DELAY)
                if not self._flushing:
                    self._start()
                continue
            if self._compaction_due():
                self._compaction_failed = not await self.compact()
                self._synced = True
                continue
            if lazy:
                await self._wait_lazily()
                continue
            if not self._buffer:
                if self._synced or self.fsync != "interval":
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                with trio.move_on_at(self._last_sync + self.fsync_interval) as timer:
                    await self._wake.wait()
                self._wake = trio.Event()
                if timer.cancelled_caught and not self._flushing and not self._buffer:
                    self._start()  # flush what was written since the last flush
                continue
            self._start()

    async def _wait_lazily(self) -> None:
        """``always``: flush the events no reply waits for, after a little while.

        Those events (jobs handed to workers) share the next
        acknowledgement's flush, or wait ``LAZY_FLUSH_SECONDS`` at most.
        The wait's deadline is set by :meth:`append` for the event that
        starts a buffer, lifted by :meth:`_start` while a flush runs, and
        set again by :meth:`_flushed` for what came during it; while the
        buffer is empty there is none. An acknowledgement's flush is
        started by :meth:`hold`, not by this task, so while acknowledgements
        keep coming this task is not woken at all. It is woken at once
        (the wait cancelled) for a compaction or a failed write, and by
        :meth:`wait_idle`.
        """
        if self._buffer and self._urgent:
            self._start()  # replies wait for these, and hold could not start it
            return
        self._hurry = trio.Event()  # not urgent: no hurry is pending
        deadline = trio.current_time() + LAZY_FLUSH_SECONDS if self._buffer else math.inf
        with trio.CancelScope(deadline=deadline) as lazy_wait:
            self._lazy_wait = lazy_wait
            try:
                await self._hurry.wait()
            finally:
                self._lazy_wait = None
        if self._buffer and self._can_start():
            self._start()

    async def compact(self) -> bool:
        """Write the live state as a new segment, then remove the old ones.

        The state is captured here, in trio's thread, between two commands
        (the orders of its records; a record an event changes meanwhile has
        its fields kept first: :func:`~jobqueue._snapshot.captured`). The
        capture is encoded and written under a temporary name in a thread,
        while the coordinator serves on (with a shorter switch interval,
        :data:`ENCODING_SWITCH_INTERVAL`) and flushes go on to the old
        segment, so a reply that waits for a flush does not wait for the
        compaction. Then, with no flush under way and none starting, the
        events those flushes wrote since the capture are appended after the
        snapshot, the file is flushed, renamed and the directory flushed,
        and appends go to it; only then are the old segments removed. A
        crash at any point leaves either the old journal or the new one
        whole. Events buffered before the capture that no flush took
        meanwhile are in the snapshot, and are not written. Returns whether
        it succeeded; on failure the old segment stays the journal, as if
        nothing had been tried.
        """
        assert self._state is not None, "start() first"
        self._compacting = True
        try:
            return await self._compact(self._state)
        finally:
            self._compacting = False
            self._progressed()

    def figures(self) -> JournalFigures:
        """Its flushes, size, trouble and compactions, for ``/metrics`` and ``stats``: O(1)."""
        failure = self.failure
        return JournalFigures(
            self._flush_seconds.copy(),
            self.size,
            self._written,
            self.fsync,
            None if failure is None else str(failure),
            self.compactions,
            self._compaction_seconds,
        )

    @property
    def idle(self) -> bool:
        """Whether every event is on disk and no compaction is under way."""
        return self.durable == self.appended and not self._compacting

    async def wait_idle(self) -> None:
        """Wait until :attr:`idle` (tests, and a server that stops cleanly).

        Events no reply waits for are flushed at once, not after
        ``LAZY_FLUSH_SECONDS``: someone is waiting for them now.
        """
        while not self.idle:
            self._urgent = True
            self._hurry.set()
            if self._can_start():
                self._start()
            await self._progress.wait()

    async def wait_failing(self) -> None:
        """Wait until a write has failed (:attr:`failing`; for tests)."""
        while not self.failing:
            await self._progress.wait()

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def _compact(self, state: QueueState) -> bool:
        started = time.perf_counter()
        number = self._number + 1
        segment: NewSegment | None = None
        switched = 0.0
        try:
            with captured(state) as snapshot:  # records keep their fields until encoded
                covered = self.appended
                self._tail, self._cut = bytearray(), len(self._buffer)
                paused = time.perf_counter() - started
                path = os.path.join(self.directory, segment_name(number))
                segment = NewSegment(path, self._write)
                chunks = segment_chunks(encode_snapshot(snapshot, self._offset))
                interval = sys.getswitchinterval()
                sys.setswitchinterval(min(interval, ENCODING_SWITCH_INTERVAL))
                try:
                    await trio.to_thread.run_sync(segment.write, chunks)
                finally:
                    sys.setswitchinterval(interval)
            switched = time.perf_counter()
            self._switching = True
            while self._flushing:
                await self._progress.wait()
            if self.failure is not None:  # what that flush held is not in the tail
                raise OSError(f"a flush failed meanwhile ({self.failure})")
            tail = bytes(self._tail)
            size = await trio.to_thread.run_sync(self._switch_to, segment, number, tail)
        except BaseException as exc:
            if segment is not None:
                segment.abandon()
            if not isinstance(exc, OSError):
                raise
            log.error("journal %s: cannot compact: %s", self.directory, exc)
            return False
        finally:
            self._tail = None
            self._switching = False
        del self._buffer[: self._cut]  # in the snapshot, and taken by no flush
        self.size, self.snapshot_size = size, size - len(tail)
        self._written += size
        self.compactions += 1
        self._compaction_seconds += time.perf_counter() - started
        self.durable = max(self.durable, covered)
        self._release()
        if self._urgent and self._buffer and self._can_start():
            self._start()
        log.info(
            "journal %s: compacted to %d jobs in %d bytes (the coordinator paused "
            "%.1f ms, flushes %.1f ms; %.0f ms in all)",
            self.directory,
            len(snapshot.jobs),
            size,
            paused * 1e3,
            (time.perf_counter() - switched) * 1e3,
            (time.perf_counter() - started) * 1e3,
        )
        return True

    def _switch_to(self, segment: NewSegment, number: int, tail: bytes) -> int:
        # Runs in a thread, no flush under way; returns the new segment's size.
        new_fd = segment.finish(tail)
        size = segment.size
        # From here on the new segment is the journal: append to it.
        previous, self._segment = self._segment, OpenSegment(new_fd, size, self._write)
        self._number = number
        if previous is not None:
            previous.close()  # switched: nothing may fail from here on
        for old, path in segments(self.directory):
            if old < number:
                try:
                    os.unlink(path)
                except OSError as exc:  # harmless: replay starts at the snapshot
                    log.warning("journal %s: cannot remove %s: %s", self.directory, path, exc)
        with contextlib.suppress(OSError):
            fsync_directory(self.directory)
        return size

    def _release(self) -> None:
        held, held_by, durable = self._held, self._held_by, self.durable
        while held and held[0][0] <= durable:
            _, conn, replies = held.popleft()
            count = held_by[conn.id] - 1
            if count:
                held_by[conn.id] = count
            else:
                del held_by[conn.id]
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                conn.outbox.send_nowait(replies)
