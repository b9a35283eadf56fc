"""The trio ``Client``'s shared connection: concurrent calls pipelined on one socket.

Every task's request goes out as soon as it can, without waiting for the
replies owed to other tasks (protocol §3.1: the server answers in order),
and requests that become ready together leave in one write. Replies are
matched to callers by position by the sans-IO
:class:`~jobqueue._client_core.Conversation` the blocking and asyncio
clients share.

There is no background task. A caller waiting for its reply either reads
(one caller at a time is *the reader*: it reads, settles every reply that
came and wakes their callers) or sleeps until its reply is settled or it is
asked to take over reading. A caller that leaves, its reply in hand or
cancelled, hands reading on to the oldest caller still waiting.

Cancellation: a caller cancelled while it waits for its reply, or while
its request waits to join a write, leaves its request in the conversation;
its reply is read and dropped, and the connection stays usable. On plain
TCP a write cancelled half-way (only possible when the socket would not
take the bytes: a server that stopped reading) spends the connection:
every call in flight on it gets :class:`~jobqueue.ConnectionLost`, and the
next call reconnects. (A shielded write with a deadline of its own would
spare them, but with it one caller's submit measured 102 us of client CPU
against 73 without.) Other streams (TLS) shield every write, deadline and
all, since they may yield in any write.
"""

from __future__ import annotations

import trio

from ._bytes import ByteStream
from ._client_core import Conversation, Pending
from ._errors import RequestNotSent, reason
from ._link import Link, close_at_once
from ._replies import Reply

#: Seconds a shielded write may wait for the server to take its bytes before
#: the connection is given up (a server that stopped reading, not a slow one).
WRITE_TIMEOUT = 30.0


class Pipeline:
    """One connection on which concurrent calls are pipelined (see the module docstring)."""

    def __init__(self, stream: trio.abc.Stream, address: str) -> None:
        self.stream = stream
        self.address = address
        self._bytes = ByteStream(stream)
        # On plain TCP a write goes straight to the socket and waits only
        # when the socket is full. Other streams (TLS, in memory) checkpoint
        # in every write, where a cancel would cut a write that carries other
        # calls' requests, so there writes are shielded, with a deadline.
        self._shield_writes = type(stream) is not trio.SocketStream
        self._conv = Conversation(address)
        # Encoded requests not written yet, in the conversation's order.
        self._outbox: list[bytes] = []
        # Whether a write is under way, or one is promised (a caller yielded
        # so that the other ready callers' requests join its write).
        self._writing = False
        self._reader: Pending | None = None
        # Callers asleep in _sleep (some perhaps woken and not yet run): the
        # reader hands over only if there are any.
        self._sleepers = 0
        # The request whose bytes end the outbox.
        self._last: Pending | None = None

    @classmethod
    def of(cls, link: Link) -> Pipeline:
        """Take over ``link``'s connection (its ``hello`` answered, nothing in flight)."""
        return cls(link.stream, link.address)

    @property
    def broken(self) -> str | None:
        """Why the connection is unusable, or ``None`` if it is fine."""
        return self._conv.broken

    async def aclose(self) -> None:
        """Close the connection at once; calls waiting on it get :class:`ConnectionLost`.

        A cancellation of the caller's does not show here (see :func:`close_at_once`).
        """
        self._wake(self._conv.lose("the connection was closed"))
        await close_at_once(self.stream)

    def suspect(self, why: str) -> None:
        """Treat the connection as lost if it is idle (as :meth:`Link.suspect`)."""
        if self._conv.broken is None and self._conv.outstanding == 0 and not self._writing:
            self._conv.lose(why)

    async def request(self, data: bytes, request_type: str) -> Reply:
        """Send a request, encoded as ``data`` (one line), and return its reply.

        ``request_type`` is its wire type (``submit_job``), which says what
        reply it must get. The caller encodes: nothing of the request but
        its bytes is needed here, and the ``Client`` writes its commonest
        request without building the message at all.

        Raises:
            RequestError: the server answered with an ``error`` reply.
            RequestNotSent: the connection was already unusable, or the
                server closed it as idle before reading this request.
            ConnectionLost: the connection broke with the request sent.
        """
        # A call cancelled before it starts sends nothing (and spends nothing).
        await trio.lowlevel.checkpoint_if_cancelled()
        conv = self._conv
        pending = conv.expect(request_type)
        if self._writing or self._outbox:
            self._outbox.append(data)  # joins the write under way or promised
            self._last = pending
        elif conv.outstanding == 1:
            # Alone on the connection: write now, with no extra yield.
            await self._write(data, pending)
        else:
            # Others are in flight: let every caller that is ready now add
            # its request, then write them all at once.
            self._outbox.append(data)
            self._last = pending
            self._writing = True
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._writing = False
            if conv.broken is not None:
                self._outbox.clear()  # lost meanwhile: every request here has failed
            elif self._outbox:
                await self._write(b"".join(self._outbox), self._last)
        while pending.outcome is None:
            if self._reader is None:
                # Read as the reader until this reply is in; then hand
                # reading on. (Here, not in a method: on this path every
                # coroutine level costs about 1,400 instructions.)
                self._reader = pending
                try:
                    while pending.outcome is None:
                        try:
                            received = await self._bytes.receive_some()
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                            self._wake(conv.lose(reason(exc)))
                            break
                        self._wake(conv.receive(received), pending)
                finally:
                    self._reader = None
                    if self._sleepers:
                        self._hand_over()
            else:
                await self._sleep(pending)
        return pending.result()

    async def _write(self, data: bytes, last: Pending) -> None:
        """Write ``data``, then whatever was queued meanwhile, each batch in one write.

        ``last`` is the request whose bytes end ``data``. If a write fails,
        that request's final newline never went out, so the server cannot
        have applied it: it gets :class:`RequestNotSent` (and may be sent
        again on a new connection); the others get :class:`ConnectionLost`.
        """
        self._outbox.clear()
        self._writing = True
        try:
            while True:
                if self._shield_writes:
                    with trio.move_on_after(WRITE_TIMEOUT) as scope:
                        scope.shield = True
                        await self._bytes.send_all(data)
                    if scope.cancelled_caught:
                        raise trio.BrokenResourceError(f"no write for {WRITE_TIMEOUT:g}s")
                else:
                    await self._bytes.send_all(data)
                if not self._outbox:
                    return
                assert self._last is not None  # set with every request queued
                data, last = b"".join(self._outbox), self._last
                self._outbox.clear()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._outbox.clear()
            settled = self._conv.lose(reason(exc))
            last.outcome = RequestNotSent(f"connection to {self.address} lost: {reason(exc)}")
            self._wake(settled)
        except BaseException:
            # Cancelled while the socket would not take the bytes: some may
            # have gone, so the connection is spent, for every call on it.
            self._outbox.clear()
            self._wake(self._conv.lose(f"a {last.request_type} request was interrupted"))
            raise
        finally:
            self._writing = False

    async def _sleep(self, mine: Pending) -> None:
        """Sleep until ``mine`` is answered or this caller is asked to read."""
        mine.waiter = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            mine.waiter = None  # its reply will be read and dropped
            return trio.lowlevel.Abort.SUCCEEDED

        self._sleepers += 1
        try:
            await trio.lowlevel.wait_task_rescheduled(abort)
        finally:
            self._sleepers -= 1

    def _wake(self, settled: list[Pending], mine: Pending | None = None) -> None:
        """Wake the callers of ``settled`` that still wait (all but the reader)."""
        for pending in settled:
            task = pending.waiter
            if task is not None and pending is not mine:
                pending.waiter = None
                trio.lowlevel.reschedule(task)

    def _hand_over(self) -> None:
        """Wake the oldest caller still waiting, to read in turn."""
        for pending in self._conv.waiting():
            task = pending.waiter
            if task is not None:
                pending.waiter = None
                trio.lowlevel.reschedule(task)
                return
