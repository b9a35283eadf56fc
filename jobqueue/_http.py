"""A small, hardened HTTP/1.1 server: h11 on trio, shared by the metrics endpoint and the dashboard.

h11 is a sans-IO HTTP/1.1 state machine, as our own codec is for the queue's
protocol: it turns bytes into events and back and does no I/O, so it runs on
trio's streams as they are, with our own deadlines and limits. It is small,
has no dependencies, and is maintained by the python-hyper organisation
(it is what httpcore and hypercorn are built on). An ASGI framework on
hypercorn would bring routing, middleware, a server loop and several
dependencies for a handful of paths, and its limits would be its own.

What this module guarantees, whoever the handler is: bad input costs only
its own connection. A request head larger than ``max_head_bytes`` gets 431
(h11's ``max_incomplete_event_size``), a body larger than ``max_body_bytes``
413, garbage 400, a transfer coding other than chunked 501 (RFC 9112 §6.1:
a coding the server does not understand); a client that waits to be told
to send its body (``Expect: 100-continue``) is told at once; every request
must arrive and be answered within ``request_timeout``; at most
``max_connections`` connections are served at once (more are closed at
once). A streamed response (server-sent events) runs past the request
deadline, but each of its writes must complete within ``send_timeout``, so
a reader that stops reading is dropped, not waited for.

The handler sees a :class:`Request` whose body has been read whole, and
returns a :class:`Response`; ``HEAD`` is answered like ``GET`` without the
body. Only the names below without an underscore are for other modules.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import trio

from ._errors import JobQueueError

if TYPE_CHECKING:
    import h11

#: After an error response: how long, and how much, the peer may still send.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1 << 20


@attrs.frozen
class HttpLimits:
    """What one HTTP server lets a peer do.

    Attributes:
        max_head_bytes: Longest request head (request line and headers).
        max_body_bytes: Longest request body.
        request_timeout: Seconds a connection has to send a whole request
            and read its response (and, between requests, how long an idle
            keep-alive connection stays).
        max_connections: Connections served at once.
        send_timeout: Seconds each write of a streamed response may take.
    """

    max_head_bytes: int = 16 * 1024
    max_body_bytes: int = 16 * 1024
    request_timeout: float = 10.0
    max_connections: int = 16
    send_timeout: float = 10.0


@attrs.frozen
class Request:
    """One request, its body read whole.

    Attributes:
        method: ``GET``, ``POST``, ...
        path: The target before any ``?``, percent-encoded as sent.
        query: The target after ``?`` (``""`` without one).
        headers: Lower-case names; a repeated header's values joined by ``", "``.
        body: The request body.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or ``None``."""
        return self.headers.get(name.lower())


#: Writes one chunk of a streamed response (bounded by ``send_timeout``).
Send = Callable[[bytes], Awaitable[None]]


@attrs.frozen
class Response:
    """What a handler answers.

    Attributes:
        status: The HTTP status code.
        body: The body (ignored when ``stream`` is given).
        content_type: Its ``Content-Type``.
        headers: Further headers.
        close: Close the connection after this response.
        stream: For a response of unknown length (server-sent events): an
            async function that writes the body with the ``Send`` it is
            given, for as long as it likes; the connection closes when it
            returns. It runs outside the request deadline, and is called
            exactly once, unless the request was ``HEAD`` (then the head
            alone is sent), so it may release what its handler took. The
            response's head goes out with its first write.
    """

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False
    stream: Callable[[Send], Awaitable[None]] | None = None


Handler = Callable[[Request], Awaitable[Response]]


def require_h11(error: type[JobQueueError], message: str) -> Any:
    """The ``h11`` module.

    Raises:
        error: h11 is not installed, with ``message`` (which names the extra).
    """
    try:
        import h11
    except ImportError:
        raise error(message) from None
    return h11


async def serve_http(
    handler: Handler,
    listeners: list[trio.SocketListener],
    limits: HttpLimits,
    log: logging.Logger,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve HTTP/1.1 on ``listeners`` with ``handler`` until cancelled.

    Error handling: a connection that breaks, times out or sends something
    that is not HTTP ends alone (logged at debug level); an exception from
    ``handler`` (a bug) is logged with its traceback and answered with a 500
    that closes the connection: it never ends the listener.
    """
    server = _Server(handler, limits, log)
    await trio.serve_listeners(server.handle, listeners, task_status=task_status)


def is_loopback(listener: trio.SocketListener) -> bool:
    """Whether ``listener`` is bound to a loopback address."""
    host = str(listener.socket.getsockname()[0]).partition("%")[0]
    return ipaddress.ip_address(host).is_loopback


def host_for_url(host: str) -> str:
    """``host`` as it goes in a URL (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


@attrs.define(eq=False)
class _Server:
    """The per-connection handler, and the count of connections open."""

    _handler: Handler
    _limits: HttpLimits
    _log: logging.Logger
    _open: int = attrs.field(default=0, init=False)
    # Imported here: the module imports without h11, and callers check for
    # it first with require_h11, whose error names their extra.
    _h11: Any = attrs.field(factory=lambda: importlib.import_module("h11"), init=False)

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection's requests; any failure ends only this connection."""
        if self._open >= self._limits.max_connections:
            await trio.aclose_forcefully(stream)
            return
        self._open += 1
        try:
            await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._log.debug("HTTP connection broke: %r", exc)
        except Exception:  # a bug after a response began (a stream): this connection only
            self._log.exception("HTTP connection: unexpected error; closing it")
        finally:
            self._open -= 1
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        h11 = self._h11
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.max_head_bytes)
        while True:
            with trio.move_on_after(self._limits.request_timeout) as timer:
                outcome = await self._cycle(stream, conn)
            if timer.cancelled_caught or outcome is False:
                return
            if outcome is not True:
                await self._stream(stream, conn, outcome)
                return
            conn.start_next_cycle()

    async def _cycle(self, stream: trio.SocketStream, conn: h11.Connection) -> bool | Response:
        """One request and its response.

        Returns whether the connection can serve another, or a streamed
        response whose head is sent and whose body is still to write.
        """
        h11 = self._h11
        try:
            event = await _next_event(stream, conn)
            if not isinstance(event, h11.Request):
                return False  # the peer closed its side
            body = await self._read_body(stream, conn, event)
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                # h11's hint: 400, 431 for a head too long, 501 for a transfer
                # coding it does not implement (RFC 9112 §6.1 asks for 501).
                status = exc.error_status_hint
                text = f"{HTTPStatus(status).phrase.lower()}\n".encode()
                error = Response(status, text, close=True)
                await _respond(stream, conn, error, head=False)
                await _linger(stream)
            return False
        if body is None:
            too_large = Response(413, b"request body too large\n", close=True)
            await _respond(stream, conn, too_large, head=False)
            await _linger(stream)
            return False
        request = _request(event, body)
        try:
            response = await self._handler(request)
        except Exception:
            # A bug met on one request costs that request and its connection,
            # never the listener or the server it belongs to.
            self._log.exception("HTTP %s %s: unexpected error", request.method, request.path)
            response = Response(500, b"internal server error (see the server's log)\n", close=True)
        head = request.method == "HEAD"
        if response.stream is not None and not head:
            return response  # its head goes with its first write
        await _respond(stream, conn, response, head=head)
        if response.close:
            return False
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def _read_body(
        self, stream: trio.SocketStream, conn: h11.Connection, request: h11.Request
    ) -> bytes | None:
        """The request's body, or ``None`` when it is longer than allowed.

        A client that sent ``Expect: 100-continue`` waits for a word from us
        before it sends a body. It gets ``100 Continue`` once the body is
        all that is missing (never for a request without one), or at once
        ``None`` (a 413) if the length it declares is too long already, so
        it is not left waiting out the request deadline (RFC 9110 §10.1.1).
        """
        h11 = self._h11
        limit = self._limits.max_body_bytes
        parts: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.client_is_waiting_for_100_continue:
                    if _declared_length(request) > limit:
                        return None
                    go_on = h11.InformationalResponse(
                        status_code=100, headers=[], reason=b"Continue"
                    )
                    await stream.send_all(conn.send(go_on))
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    return None
                parts.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:  # ConnectionClosed mid-body
                raise h11.RemoteProtocolError("the request's body was cut short")

    async def _stream(
        self, stream: trio.SocketStream, conn: h11.Connection, response: Response
    ) -> None:
        h11 = self._h11
        timeout = self._limits.send_timeout
        unsent = [_head(response)]

        async def send(data: bytes) -> None:
            chunk = b"".join(conn.send(event) for event in [*unsent, h11.Data(data=data)])
            unsent.clear()
            with trio.fail_after(timeout):
                await stream.send_all(chunk)

        assert response.stream is not None
        try:
            await response.stream(send)
            if unsent:
                await send(b"")
            with trio.move_on_after(timeout):
                await stream.send_all(conn.send(h11.EndOfMessage()))
        except trio.TooSlowError:
            self._log.debug("HTTP stream dropped: its reader fell %gs behind", timeout)


def _declared_length(event: h11.Request) -> int:
    """The request's ``Content-Length`` (h11 has checked it), 0 without one (chunked)."""
    for name, value in event.headers:
        if name == b"content-length":
            return int(value)
    return 0


def _request(event: h11.Request, body: bytes) -> Request:
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("ascii").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    path, _, query = event.target.decode("latin-1").partition("?")
    return Request(event.method.decode("ascii"), path, query, headers, body)


async def _next_event(stream: trio.SocketStream, conn: h11.Connection) -> Any:
    """The next h11 event, reading from ``stream`` as needed."""
    import h11

    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await stream.receive_some(65536)
        conn.receive_data(data)


async def _respond(
    stream: trio.SocketStream, conn: h11.Connection, response: Response, *, head: bool
) -> None:
    """Send ``response`` (its head only, for ``HEAD``)."""
    import h11

    events: list[h11.Response | h11.Data | h11.EndOfMessage] = [_head(response)]
    if not head:
        events.append(h11.Data(data=response.body))
    events.append(h11.EndOfMessage())
    try:
        data = b"".join(conn.send(event) or b"" for event in events)
    except h11.LocalProtocolError:
        return  # h11 says no response can be sent now: the connection just ends
    await stream.send_all(data)


def _head(response: Response) -> h11.Response:
    import h11

    headers = [("Content-Type", response.content_type), ("Cache-Control", "no-store")]
    if response.stream is None:
        headers.append(("Content-Length", str(len(response.body))))
    headers.extend(response.headers)
    if response.close:
        headers.append(("Connection", "close"))
    reason = HTTPStatus(response.status).phrase
    return h11.Response(status_code=response.status, headers=headers, reason=reason)


async def _linger(stream: trio.SocketStream) -> None:
    """End our side, then read and drop what the peer still sends, for a little while.

    Closing with unread data makes the kernel send a reset, which can
    destroy the error response before the peer reads it. The reading is
    bounded (:data:`_LINGER_BYTES`, :data:`_LINGER_SECONDS`).
    """
    with trio.move_on_after(_LINGER_SECONDS):
        await stream.send_eof()
        dropped = 0
        while dropped < _LINGER_BYTES:
            data = await stream.receive_some(65536)
            if not data:
                break
            dropped += len(data)
