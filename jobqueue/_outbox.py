"""A connection's replies on their way out: written by whichever task has them ready.

The coordinator answers a request in the middle of its step and must never
wait for a socket. Handing every reply to the connection's writer task costs
a task switch per reply, as much as the queue's rules for it, so the
:class:`Outbox` writes a reply itself, with one non-blocking send, when the
connection has nothing queued ahead of it. Only what the socket does not take
at once (a peer that reads slowly, a full buffer), and everything behind it,
goes to the writer task, which waits for the socket; so the order of replies
is exact either way, and the coordinator never blocks.

The send uses the socket's file descriptor (``os.write``), public API on both
sides; the connection handler takes the descriptor away (:meth:`Outbox.close`)
before it closes the stream, so a descriptor the kernel hands to a later
connection is never written by mistake.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Final

import trio

from ._bytes import ByteStream
from ._codec import encode_reply
from ._commands import Outgoing
from ._errors import Refusal
from ._replies import OK, ErrorReply, JobCancelledNotice

#: Requests one connection may have sent to the coordinator and not yet had
#: written back. Bounds what a peer that stops reading can make the server
#: hold (at most this many replies), while letting pipelined requests flow.
MAX_IN_FLIGHT: Final = 64


class Outbox:
    """One connection's replies, in order: sent at once when possible, else by its writer.

    The coordinator (and the journal, releasing replies it held) calls
    :meth:`send_nowait`; the connection's writer task runs :meth:`drain`.
    Both sides run in one thread, so the flags below need no lock.

    Args:
        fd: The plain TCP socket's descriptor, for the direct send; ``None``
            (TLS, in-memory streams): every reply goes through the writer.
        track_activity: Keep :attr:`last_activity` (an idle timeout is set).
    """

    def __init__(self, fd: int | None, *, track_activity: bool = False) -> None:
        self._fd = fd
        self._track_activity = track_activity
        # Encoded replies for the writer, with how many requests each answers;
        # None: the connection is finished.
        self._queue: deque[tuple[bytes, int] | None] = deque()
        # The writer holds bytes it took from the queue and has not yet sent.
        self._writing = False
        self._finished = False
        self._lot = trio.lowlevel.ParkingLot()
        #: Requests forwarded to the coordinator whose replies are not yet written.
        self.in_flight = 0
        #: Set whenever :attr:`in_flight` is below :data:`MAX_IN_FLIGHT`.
        self.window_open = trio.Event()
        #: When a reply was last written (kept only with ``track_activity``).
        self.last_activity = trio.current_time() if track_activity else 0.0

    def send_nowait(self, replies: list[Outgoing] | None) -> None:
        """Send ``replies`` (``None``: the connection is finished) after all before them.

        Never blocks: what the socket does not take now is queued for the
        writer. A send that fails is queued too, so the writer meets the
        error and ends the connection as it would have on its own.
        """
        if self._finished:
            return
        if replies is None:
            self._finished = True
            self._queue.append(None)
            self._lot.unpark()
            return
        if len(replies) == 1:
            reply = replies[0]
            data = _encode(reply)
            answered = 0 if type(reply) is JobCancelledNotice else 1
        else:
            # A batch of reports is answered mostly by the shared OK: its
            # bytes are taken as they are, without two calls per reply.
            data = b"".join([_OK_BYTES if reply is OK else _encode(reply) for reply in replies])
            # Notices were not asked for: they do not free the window.
            answered = len(replies) - [*map(type, replies)].count(JobCancelledNotice)
        fd = self._fd
        if fd is not None and not self._queue and not self._writing:
            try:
                sent = os.write(fd, data)
            except OSError:  # full (BlockingIOError), or broken: the writer deals with it
                sent = 0
            if sent == len(data):
                self._written(answered)
                return
            data = data[sent:]
        self._queue.append((data, answered))
        self._lot.unpark()

    async def drain(self, stream: ByteStream) -> None:
        """Write what is queued, as it comes, until the connection is finished.

        Raises:
            trio.BrokenResourceError, trio.ClosedResourceError, OSError: the
                connection broke.
        """
        queue = self._queue
        while True:
            while not queue:
                await self._lot.park()
            chunks: list[bytes] = []
            answered = 0
            finished = False
            # Coalesce whatever is queued: one write for many replies.
            while queue:
                item = queue.popleft()
                if item is None:
                    finished = True
                    break
                chunks.append(item[0])
                answered += item[1]
            if chunks:
                self._writing = True
                try:
                    await stream.send_all(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                finally:
                    self._writing = False
                self._written(answered)
            if finished:
                return

    def close(self) -> None:
        """Stop sending directly: the stream is about to close (its descriptor may be reused)."""
        self._fd = None

    def _written(self, answered: int) -> None:
        self.in_flight -= answered
        if self.in_flight < MAX_IN_FLIGHT:
            self.window_open.set()
        if self._track_activity:
            self.last_activity = trio.current_time()


#: The shared ``OK`` as ``encode_reply`` writes it (it is frozen: the bytes never change).
_OK_BYTES: Final = encode_reply(OK)


def _encode(reply: Outgoing) -> bytes:
    if isinstance(reply, Refusal):
        reply = ErrorReply.from_exception(reply)
    return encode_reply(reply)
