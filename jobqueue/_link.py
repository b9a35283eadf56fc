"""One client-side connection: send a request, read its reply.

Shared by :class:`~jobqueue.Client` and :class:`~jobqueue.Worker`. The
exceptions users see are defined in ``_errors``.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from ._bytes import ByteStream
from ._codec import decode_reply, encode_request
from ._errors import (
    FAREWELL_CODES,
    ConnectionLost,
    ProtocolError,
    RequestError,
    RequestNotSent,
    reason,
)
from ._framing import EOF, NEED_DATA, LineDecoder
from ._limits import MAX_LINE_BYTES
from ._replies import ErrorReply, JobCancelledNotice, Reply
from ._requests import Request

_REPLY_HEADROOM = 65536

#: Seconds to connect, TLS handshake included, before giving up on a server
#: that accepts nothing and refuses nothing (a black-holed address).
CONNECT_TIMEOUT = 10.0

#: Opens a byte stream to the queue. The default is TCP to ``host:port``;
#: ``jobqueue.testing`` passes one that makes in-memory streams.
Connector = Callable[[], Awaitable[trio.abc.Stream]]


async def close_at_once(stream: trio.abc.AsyncResource) -> None:
    """Close ``stream`` forcefully, without raising the caller's ``Cancelled``.

    A close is awaited in ``finally`` blocks while another exception is on
    its way out, a ``KeyboardInterrupt`` from an async handler say. Were the
    caller's scope cancelled meanwhile, a ``Cancelled`` raised here would
    replace that exception (only its ``__context__`` then), and the
    cancelled scope would swallow it: the interrupt would be lost. The
    shield cannot hold the caller up: ``aclose_forcefully`` closes in a
    scope of its own that is already cancelled, so nothing in it waits.
    """
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(stream)


@attrs.define(eq=False)
class Link:
    """A TCP connection to the queue speaking request/reply."""

    stream: trio.abc.Stream
    address: str
    # Replies carry a request's payload plus an envelope, so allow headroom
    # over the limit the server applies to requests; a jobs_assigned reply
    # may hold up to two lines' worth of payloads (protocol §1).
    _decoder: LineDecoder = attrs.field(
        factory=lambda: LineDecoder(2 * MAX_LINE_BYTES + _REPLY_HEADROOM), init=False
    )
    # A connection carries one request at a time; tasks sharing a Client take
    # turns here. This serialises I/O on one socket, it guards no queue state.
    _turn: _Turn = attrs.field(factory=lambda: _Turn(), init=False)
    _broken: str | None = attrs.field(default=None, init=False)
    # Set while run_reader is running: replies arrive here instead of being
    # read by the requesting task.
    _replies: _Inbox | None = attrs.field(default=None, init=False)
    # Reads and writes for the stream (direct on a plain TCP socket).
    _bytes: ByteStream = attrs.field(init=False)
    #: Whether a call cancelled while it waits for its reply leaves the
    #: connection usable (see :meth:`request`). The Client sets it; a
    #: worker's link breaks instead, because there an overdue reply means
    #: the server is gone (and its reader task would hand on a late reply).
    keep_on_cancel: bool = attrs.field(default=False, kw_only=True)
    # Replies the server still owes on this connection, read by the task
    # whose turn it is: its own, and before them any owed to a call that
    # was cancelled while it waited (read and dropped). Direct reads only.
    _unread: int = attrs.field(default=0, init=False)

    @_bytes.default
    def _byte_stream(self) -> ByteStream:
        return ByteStream(self.stream)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        connect: Connector | None = None,
        ssl_context: ssl.SSLContext | None = None,
        *,
        keep_on_cancel: bool = False,
    ) -> Link:
        """Connect to the queue at ``host:port`` (or through ``connect``).

        With ``ssl_context``, the connection is TLS, and the server's
        certificate is checked against ``host`` (as the context says).
        ``keep_on_cancel`` is the attribute of that name.

        Raises:
            ConnectionLost: if nothing accepts the connection within
                :data:`CONNECT_TIMEOUT`, the host name is not valid or does
                not resolve, or the TLS handshake fails.
        """
        address = f"{host}:{port}"
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                if connect is None:
                    stream = await trio.open_tcp_stream(host, port)
                else:
                    stream = await connect()
                if ssl_context is not None:
                    stream = trio.SSLStream(stream, ssl_context, server_hostname=host)
                    await stream.do_handshake()
        except (OSError, UnicodeError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            if isinstance(exc, trio.TooSlowError):
                why = f"no answer within {CONNECT_TIMEOUT:g}s"
            else:
                why = reason(exc)
            if stream is None:
                raise ConnectionLost(f"cannot connect to the queue at {address}: {why}") from exc
            raise ConnectionLost(
                f"TLS handshake with the queue at {address} failed: {why}"
            ) from exc
        except BaseException:
            # Cancelled (a draining worker, the caller's own deadline) with
            # the stream open, mid-handshake: close it, not the collector.
            # (Or Ctrl-C, which a cancel meanwhile must not replace.)
            if stream is not None:
                await close_at_once(stream)
            raise
        return cls(stream, address, keep_on_cancel=keep_on_cancel)

    async def aclose(self) -> None:
        """Close the connection at once; a cancellation of the caller's does not show here.

        It is awaited in ``finally`` blocks, with another exception on its
        way out: see :func:`close_at_once`.
        """
        self._broken = self._broken or "the connection was closed"
        await close_at_once(self.stream)

    async def request(self, message: Request) -> Reply:
        """Send ``message`` and return the server's reply.

        Cancelled while it waits for the reply, the call leaves the
        connection usable if :attr:`keep_on_cancel` is set: the reply still
        comes, and the next call reads and drops it before reading its own,
        so no reply is ever handed to the wrong caller. (That next call
        then waits for it too: a request the server holds, ``wait_job``,
        belongs on a connection of its own.) Otherwise, and whenever the
        request may have been sent only in part, the connection is broken.

        Raises:
            RequestError: the server answered with an ``error`` reply.
            ConnectionLost: the connection is unusable.
            TypeError, ValueError: ``message`` holds something JSON cannot
                represent; nothing was sent and the connection is still usable.
        """
        reply = (await self._exchange((message,)))[0]
        if isinstance(reply, ErrorReply):
            raise RequestError(reply.code, reply.message)
        return reply

    async def request_many(self, messages: Sequence[Request]) -> list[Reply | RequestError]:
        """Send ``messages`` in one write and return their replies, in order.

        The requests are pipelined (protocol §3.1): one round trip for all of
        them. An ``error`` reply does not stop the others; it comes back in
        its place as a :class:`RequestError` instead of being raised.

        Raises:
            ConnectionLost: the connection is unusable.
            TypeError, ValueError: a message holds something JSON cannot
                represent; nothing was sent and the connection is still usable.
        """
        return [
            RequestError(reply.code, reply.message) if isinstance(reply, ErrorReply) else reply
            for reply in await self._exchange(messages)
        ]

    async def _exchange(self, messages: Sequence[Request]) -> list[Reply]:
        data = (
            encode_request(messages[0])
            if len(messages) == 1
            else b"".join([encode_request(message) for message in messages])
        )
        # Take a free turn without a trip through the scheduler: on this path
        # every yield costs as much as the rest of the request. (The request
        # itself still checkpoints: send_all and the reply wait are awaits.)
        if not self._turn.take():
            await self._turn.wait()
        try:
            if self._broken is not None:
                raise RequestNotSent(f"connection to {self.address} unusable: {self._broken}")
            sent = False
            replies: list[Reply] = []
            count = len(messages)
            try:
                await self._bytes.send_all(data)
                sent = True
                if self._replies is None:
                    self._unread += count
                    while len(replies) < count:
                        reply = await self._read_reply(skip_notices=True)
                        self._unread -= 1
                        # More unread than this call awaits: that reply was
                        # owed to a cancelled call. Dropped, as it asked.
                        if self._unread < count - len(replies):
                            replies.append(reply)
                elif not await self._replies.wait_for(count):
                    # The reader has ended, and _broken says why as
                    # "lost: <why>": pass on only the why, which is
                    # wrapped below (else it reads "lost: lost:").
                    why = (self._broken or "").removeprefix("lost: ")
                    raise trio.BrokenResourceError(why or "connection lost")
                else:
                    replies = self._replies.take(count)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._broken = f"lost: {reason(exc)}"
                # A failed send never sent the last newline; but of several
                # pipelined requests, the first ones may have gone out whole.
                lost = RequestNotSent if not sent and len(messages) == 1 else ConnectionLost
                raise lost(f"connection to {self.address} lost: {reason(exc)}") from exc
            except ProtocolError as exc:
                self._broken = f"bad reply: {exc}"
                raise ConnectionLost(
                    f"the server at {self.address} sent a bad reply: {exc.message}"
                ) from exc
            except BaseException:
                # Interrupted (cancelled) before its replies were read. Sent
                # whole and read directly, they are counted in _unread and
                # dropped when they come; otherwise the connection is spent.
                if not (sent and self.keep_on_cancel and self._replies is None):
                    self._broken = f"a {messages[0].TYPE} request was interrupted"
                raise
        finally:
            self._turn.release()
        for reply in replies:
            if isinstance(reply, ErrorReply) and reply.code in FAREWELL_CODES:
                self._broken = f"closed by the server ({reply.code}: {reply.message})"
        return replies

    async def run_reader(
        self,
        on_notice: Callable[[JobCancelledNotice], None],
        on_lost: Callable[[], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read everything the server sends, until the connection ends.

        Replies go to the task waiting in :meth:`request`; notices the server
        sends unasked (a job was cancelled) go to ``on_notice`` at once, even
        while no request is in flight. When the connection ends, ``on_lost``
        is called. A worker runs this for the life of each connection.
        """
        inbox = self._replies = _Inbox()
        task_status.started()
        try:
            while True:
                reply = await self._read_reply(skip_notices=False)
                if isinstance(reply, JobCancelledNotice):
                    on_notice(reply)
                else:
                    inbox.put(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._broken = f"lost: {reason(exc)}"
        except ProtocolError as exc:
            self._broken = f"bad reply: {exc.message}"
        finally:
            inbox.close()
            on_lost()

    async def _read_reply(self, *, skip_notices: bool) -> Reply:
        while True:
            line = self._decoder.next_line()
            if line is NEED_DATA:
                self._decoder.receive_data(await self._bytes.receive_some())
            elif line is EOF:
                raise trio.BrokenResourceError("the server closed the connection")
            else:
                reply = decode_reply(line)
                if not (skip_notices and isinstance(reply, JobCancelledNotice)):
                    return reply

    def suspect(self, why: str) -> None:
        """Treat the connection as lost if it is idle: another to the same server was.

        A connection that only speaks when spoken to learns that the server
        closed it only on its next request, which by then may have been
        applied or not (:class:`ConnectionLost`). When a sibling connection
        is lost, the server most likely went away; an idle connection is
        then marked broken, so the next request goes out on a new one. A
        connection in use is left alone: its caller will find out.
        """
        if self._broken is None and self._unread == 0 and not self._turn.held:
            self._broken = why

    @property
    def broken(self) -> str | None:
        """Why the connection is unusable, or ``None`` if it is fine."""
        return self._broken


class _Inbox:
    """The replies :meth:`Link.run_reader` has read, for the task whose turn it is.

    A memory channel would do, but it costs more per reply and wakes the
    taker once per reply; this wakes it once when all the replies it awaits
    are in. Every report and heartbeat of a worker's slot comes through
    here. Only one task takes at a time (the link's turn).
    """

    def __init__(self) -> None:
        self._replies: deque[Reply] = deque()
        self._closed = False
        self._waiter: trio.lowlevel.Task | None = None
        self._wanted = 0

    def put(self, reply: Reply) -> None:
        """The reader read ``reply``: keep it, and wake the taker once it has all it awaits."""
        self._replies.append(reply)
        if self._waiter is not None and len(self._replies) >= self._wanted:
            self._wake()

    def close(self) -> None:
        """The reader has ended: no more replies will come."""
        self._closed = True
        if self._waiter is not None:
            self._wake()

    async def wait_for(self, count: int) -> bool:
        """Wait until ``count`` replies are in; ``False`` if the reader ended first."""
        if len(self._replies) >= count:
            await trio.lowlevel.checkpoint()
        elif not self._closed:
            self._waiter = trio.lowlevel.current_task()
            self._wanted = count

            def abort(_: object) -> trio.lowlevel.Abort:
                self._waiter = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        return len(self._replies) >= count

    def take(self, count: int) -> list[Reply]:
        """The ``count`` oldest replies (:meth:`wait_for` said they are in)."""
        replies = self._replies
        return [replies.popleft() for _ in range(count)]

    def _wake(self) -> None:
        task, self._waiter = self._waiter, None
        assert task is not None
        trio.lowlevel.reschedule(task)


class _Turn:
    """Whose turn it is on a link: a first-come, first-served lock for one trio run's tasks.

    It serialises the use of one socket (a slot's reports, its keeper's
    heartbeats, a handler's progress) and guards no queue state. A
    ``trio.StrictFIFOLock`` does the same for about 9,000 instructions per
    take and give back, on every request a worker's slot makes; this is a
    flag and a parking lot, and a release hands the turn straight to the
    oldest waiter.
    """

    def __init__(self) -> None:
        #: Whether some task has the turn.
        self.held = False
        self._waiting = trio.lowlevel.ParkingLot()

    def take(self) -> bool:
        """Take the turn if it is free (no waiting, no checkpoint); whether it was."""
        if self.held:
            return False
        self.held = True
        return True

    async def wait(self) -> None:
        """Wait for the turn (after :meth:`take` found it held); return holding it."""
        await self._waiting.park()  # woken by release, which hands the turn over

    def release(self) -> None:
        """Give the turn up: to the oldest waiting task, else free."""
        if self._waiting:
            self._waiting.unpark()
        else:
            self.held = False
