"""The journal's dealings with the disk below its format: the lock, the flushes, the thread.

:func:`lock_directory` keeps a second server off a journal directory,
:func:`write_or_flush` is the default write seam (tests inject failures in
its place), :class:`OpenSegment` appends to the segment in use,
:class:`NewSegment` writes a compaction's new segment whole or not at all,
and :class:`DiskThread` runs the writes and flushes of a
:class:`~jobqueue._journal_writer.Journal` one at a time, off trio's thread.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterable

import trio

from ._journal import JournalError

#: Zeros written ahead of the records (see :class:`OpenSegment`).
PREPARED_BYTES = 256 << 10


def lock_directory(directory: str) -> int:
    """Take the directory's lock file, so a second server refuses to share it.

    Raises:
        JournalError: another process holds it.
    """
    path = os.path.join(directory, "lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl  # Unix only

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise JournalError(
            f"journal directory {directory} is in use by another server (pid {owner}); "
            "two servers must not share one journal"
        ) from None
    except ImportError:  # pragma: no cover  (no flock: no protection)
        pass
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def fsync_directory(directory: str) -> None:
    """Flush ``directory`` itself, so a file just created, renamed or removed in it stays so."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskThread:
    """A thread of the journal's own that runs its writes and flushes, one at a time.

    ``trio.to_thread.run_sync`` per flush costs the coordinator's thread
    about twice the CPU of this hand-off (a capacity limiter, a thread cache,
    a context copy and a task rescheduled to learn the outcome, for each of
    the one or two flushes a job needs with ``fsync="always"``). Here a
    call is a put on a queue the thread waits on, and its outcome comes back
    as a callback run in trio's thread (``run_sync_soon``), which can act on
    it at once.
    """

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self._calls: queue.SimpleQueue[
            tuple[Callable[[], None], Callable[[OSError | None], None]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="jobqueue-journal", daemon=True)
        self._thread.start()

    def call(self, work: Callable[[], None], done: Callable[[OSError | None], None]) -> None:
        """Run ``work`` in the thread, then ``done(None)``, or ``done(error)``, in trio's."""
        self._calls.put((work, done))

    def stop(self) -> None:
        """Let the thread end once the calls already made are done."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            work, done = call
            error: OSError | None = None
            try:
                work()
            except OSError as exc:
                error = exc
            try:
                self._token.run_sync_soon(done, error)
            except trio.RunFinishedError:  # pragma: no cover  (stopped after trio's run)
                return


def write_or_flush(fd: int, data: bytes | None) -> None:
    """Write all of ``data`` to ``fd``, or flush ``fd`` to disk when it is ``None``."""
    if data is None:
        os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)
        return
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class OpenSegment:
    """The segment the journal appends to, written through the journal's write seam.

    Records go into zeros written and flushed ahead of them, ``PREPARED_BYTES``
    more each time they run out: appending to a file changes its size, which
    ``fdatasync`` must then write to the file system's journal as well as the
    data, and writing into space that already exists skips that (on ext4,
    about 105 us a flush instead of 140, measured here). Readers take the
    zeros after the last record for unused space, not damage
    (:class:`~jobqueue._journal.Records`). Blocking: the disk thread calls it.
    """

    def __init__(self, fd: int, end: int, write: Callable[[int, bytes | None], None]) -> None:
        self.fd = fd
        self._write = write
        #: Where the records end, and where the zeros prepared for more end.
        self.end = self.room = end

    def append(self, data: bytes, sync: bool) -> None:
        """Write ``data`` after the last record, and flush if ``sync``.

        On failure the file is cut back to where this write began, so
        writing the same data again cannot leave half a record in the
        middle of the journal.
        """
        start = self.end
        try:
            if start + len(data) > self.room:
                self._prepare(start + len(data))
            if data:
                os.lseek(self.fd, start, os.SEEK_SET)
                self._write(self.fd, data)
            if sync:
                self._write(self.fd, None)
        except OSError:
            self.room = start
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, start)
            raise
        self.end = start + len(data)

    def close(self, rest: bytes = b"") -> bool:
        """Write and flush ``rest`` if it can, then close; return whether ``rest`` is on disk."""
        written = False
        with contextlib.suppress(OSError):
            if rest:
                os.lseek(self.fd, self.end, os.SEEK_SET)
                self._write(self.fd, rest)
                self._write(self.fd, None)
            written = True
        with contextlib.suppress(OSError):
            os.close(self.fd)
        return written

    def _prepare(self, needed: int) -> None:
        """Fill the file with zeros up to ``needed`` and ``PREPARED_BYTES`` more, flushed."""
        room = needed + PREPARED_BYTES
        os.lseek(self.fd, self.room, os.SEEK_SET)
        zeros = bytes(min(room - self.room, 1 << 20))
        at = self.room
        while at < room:
            chunk = zeros[: room - at]
            self._write(self.fd, chunk)
            at += len(chunk)
        self._write(self.fd, None)
        self.room = room


class NewSegment:
    """A compaction's new segment, written whole or not at all, in two steps.

    Its records go to ``path + ".tmp"`` through ``write`` (the journal's
    write seam): first the snapshot (:meth:`write`, flushed), while the old
    segment keeps taking the events that come meanwhile; then those events
    (:meth:`finish`), flushed, and only then is the file renamed to ``path``
    and the directory flushed. A crash before the rename leaves the old
    journal whole, one after it the new one. Blocking: run it in a thread.
    """

    def __init__(self, path: str, write: Callable[[int, bytes | None], None]) -> None:
        self.path = path
        self.size = 0
        self._write = write
        self._temporary = path + ".tmp"
        self._fd = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def write(self, chunks: Iterable[bytes]) -> None:
        """Write ``chunks`` and flush them (or :meth:`abandon` and raise)."""
        try:
            for chunk in chunks:
                self._write(self._fd, chunk)
                self.size += len(chunk)
            self._write(self._fd, None)
        except BaseException:
            self.abandon()
            raise

    def finish(self, tail: bytes) -> int:
        """Write and flush ``tail``, rename the file into place; return it open for writing.

        The descriptor is the caller's (to append to, then close). If the
        directory cannot be flushed, the rename is undone (the old segment
        stays the journal) and the error raised.
        """
        self.write([tail])
        os.rename(self._temporary, self.path)
        try:
            fsync_directory(os.path.dirname(self.path))
        except OSError:
            with contextlib.suppress(OSError):
                os.rename(self.path, self._temporary)
            self.abandon()
            raise
        fd, self._fd = self._fd, -1
        return fd

    def abandon(self) -> None:
        """Close and remove the temporary file (the old segment stays the journal)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self._temporary)
