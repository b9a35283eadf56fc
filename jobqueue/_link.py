"""One client-side connection: send a request, read its reply.

Shared by :class:`~jobqueue.Client` and :class:`~jobqueue.Worker`. The
exceptions users see are defined in ``_errors``.
"""

from __future__ import annotations

import math
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from ._bytes import ByteStream
from ._errors import (
    FAREWELL_CODES,
    ConnectionLost,
    RequestError,
    RequestNotSent,
)
from ._protocol import (
    EOF,
    MAX_LINE_BYTES,
    NEED_DATA,
    ErrorReply,
    JobCancelledNotice,
    LineDecoder,
    ProtocolError,
    Reply,
    Request,
    decode_reply,
    encode_request,
)

_REPLY_HEADROOM = 65536

#: Seconds to connect, TLS handshake included, before giving up on a server
#: that accepts nothing and refuses nothing (a black-holed address).
CONNECT_TIMEOUT = 10.0

#: Opens a byte stream to the queue. The default is TCP to ``host:port``;
#: ``jobqueue.testing`` passes one that makes in-memory streams.
Connector = Callable[[], Awaitable[trio.abc.Stream]]


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
    _turn: trio.StrictFIFOLock = attrs.field(factory=trio.StrictFIFOLock, init=False)
    _broken: str | None = attrs.field(default=None, init=False)
    # Set while run_reader is running: replies arrive here instead of being
    # read by the requesting task.
    _replies: trio.MemoryReceiveChannel[Reply] | None = attrs.field(default=None, init=False)
    # Reads and writes for the stream (direct on a plain TCP socket).
    _bytes: ByteStream = attrs.field(init=False)

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
    ) -> Link:
        """Connect to the queue at ``host:port`` (or through ``connect``).

        With ``ssl_context``, the connection is TLS, and the server's
        certificate is checked against ``host`` (as the context says).

        Raises:
            ConnectionLost: if nothing accepts the connection within
                :data:`CONNECT_TIMEOUT`, or the TLS handshake fails.
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
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            if isinstance(exc, trio.TooSlowError):
                why = f"no answer within {CONNECT_TIMEOUT:g}s"
            else:
                why = _why(exc)
            if stream is None:
                raise ConnectionLost(f"cannot connect to the queue at {address}: {why}") from exc
            raise ConnectionLost(
                f"TLS handshake with the queue at {address} failed: {why}"
            ) from exc
        return cls(stream, address)

    async def aclose(self) -> None:
        """Close the connection."""
        self._broken = self._broken or "the connection was closed"
        await trio.aclose_forcefully(self.stream)

    async def request(self, message: Request) -> Reply:
        """Send ``message`` and return the server's reply.

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
        try:
            self._turn.acquire_nowait()
        except trio.WouldBlock:
            await self._turn.acquire()
        try:
            if self._broken is not None:
                raise RequestNotSent(f"connection to {self.address} unusable: {self._broken}")
            sent = False
            replies: list[Reply] = []
            try:
                await self._bytes.send_all(data)
                sent = True
                for _ in messages:
                    if self._replies is None:
                        replies.append(await self._read_reply(skip_notices=True))
                    else:
                        try:
                            replies.append(await self._replies.receive())
                        except trio.EndOfChannel:
                            raise trio.BrokenResourceError(
                                self._broken or "connection lost"
                            ) from None
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._broken = f"lost: {_why(exc)}"
                # A failed send never sent the last newline; but of several
                # pipelined requests, the first ones may have gone out whole.
                lost = RequestNotSent if not sent and len(messages) == 1 else ConnectionLost
                raise lost(f"connection to {self.address} lost: {_why(exc)}") from exc
            except ProtocolError as exc:
                self._broken = f"bad reply: {exc}"
                raise ConnectionLost(
                    f"the server at {self.address} sent a bad reply: {exc.message}"
                ) from exc
            except BaseException:
                # Interrupted (cancelled) before its reply was read: that reply
                # is still coming, so nothing else can use the connection.
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
        send, receive = trio.open_memory_channel[Reply](math.inf)
        self._replies = receive
        task_status.started()
        try:
            while True:
                reply = await self._read_reply(skip_notices=False)
                if isinstance(reply, JobCancelledNotice):
                    on_notice(reply)
                else:
                    send.send_nowait(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._broken = f"lost: {_why(exc)}"
        except ProtocolError as exc:
            self._broken = f"bad reply: {exc.message}"
        finally:
            send.close()
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

    @property
    def broken(self) -> str | None:
        """Why the connection is unusable, or ``None`` if it is fine."""
        return self._broken


def _why(exc: BaseException) -> str:
    """The most specific human reason behind ``exc`` ("Connection refused")."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        # Its errno is a resolver code, which os.strerror calls "Unknown error -2".
        return f"the host name did not resolve ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # trio's own text repeats the address
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    cause = exc.__cause__
    # trio.open_tcp_stream raises OSError("all attempts ... failed") caused by
    # an ExceptionGroup of the per-address errors: report the first of those.
    inner = getattr(cause, "exceptions", None)
    if inner:
        return _why(inner[0])
    if cause is not None:
        return _why(cause)
    return str(exc) or type(exc).__name__
