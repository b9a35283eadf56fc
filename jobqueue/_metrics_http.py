"""The ``GET /metrics`` endpoint: HTTP/1.1 with h11 on trio (the ``jobqueue[metrics]`` extra).

h11 is a sans-IO HTTP/1.1 state machine, as our own codec is for the queue's
protocol: it turns bytes into events and back and does no I/O, so it runs on
trio's streams as they are, with our own deadlines and limits. It is small,
has no dependencies, and is maintained by the python-hyper organisation
(it is what httpcore and hypercorn are built on). An ASGI framework on
hypercorn would bring routing, middleware and a server loop for one
read-only path.

The endpoint can never touch the queue: it asks the coordinator for a
:class:`~jobqueue._metrics.MetricsSnapshot` over the command channel, like
any connection's request, and renders it itself. Bad input costs only its own
connection: a request head larger than :data:`MAX_HEAD_BYTES` is refused
(h11's ``max_incomplete_event_size``), every request must arrive and be
answered within :data:`REQUEST_TIMEOUT`, and at most
:data:`MAX_CONNECTIONS` connections are served at once (more are closed
at once).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from ._errors import JobQueueError
from ._metrics import CONTENT_TYPE, MetricsSnapshot, render

if TYPE_CHECKING:
    import h11

log = logging.getLogger("jobqueue.metrics")

#: Longest request head (request line and headers) accepted, in bytes.
MAX_HEAD_BYTES = 16 * 1024
#: Seconds a connection has to send a whole request and read its response
#: (and, between requests, how long an idle keep-alive connection stays).
REQUEST_TIMEOUT = 10.0
#: Connections served at once; a scraper needs one.
MAX_CONNECTIONS = 16
#: After an error response: how long, and how much, the peer may still send.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1 << 20
#: The one path served.
PATH = b"/metrics"

#: Where the command line and the docs send a user without the extra.
INSTALL_HINT = "pip install 'jobqueue[metrics]'"


class MetricsUnavailable(JobQueueError):
    """``metrics`` was asked for, but the ``jobqueue[metrics]`` extra is not installed."""


def require_h11() -> Any:
    """The ``h11`` module.

    Raises:
        MetricsUnavailable: h11 is not installed; the message says how to get it.
    """
    try:
        import h11
    except ImportError:
        raise MetricsUnavailable(
            f"the metrics endpoint needs the h11 package: {INSTALL_HINT}"
        ) from None
    return h11


async def serve_metrics(
    snapshot: Callable[[], Awaitable[MetricsSnapshot]],
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``GET /metrics`` on ``host:port`` until cancelled.

    Args:
        snapshot: Asks the coordinator for the figures (``QueueService.metrics_snapshot``).
        host: Address to bind; loopback unless Prometheus runs elsewhere.
        port: TCP port; 0 picks a free one.
        task_status: Set by ``nursery.start`` with the bound ``(host, port)``.

    Raises:
        MetricsUnavailable: without the ``jobqueue[metrics]`` extra.
        OSError: the address cannot be bound.
    """
    require_h11()
    listeners = await trio.open_tcp_listeners(port, host=host)
    sockname = listeners[0].socket.getsockname()
    address = (str(sockname[0]), int(sockname[1]))
    if not all(_is_loopback(listener) for listener in listeners):
        log.warning(
            "metrics bound to %s: anyone who can reach this address can read the queue's "
            "names and counts; bind 127.0.0.1 unless Prometheus runs on another host",
            host,
        )
    endpoint = _Endpoint(snapshot)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, endpoint.handle, listeners)
        log.info("metrics at http://%s:%d/metrics", _host_for_url(address[0]), address[1])
        task_status.started(address)
    raise AssertionError("serve_listeners never returns")  # pragma: no cover


class _Endpoint:
    """The per-connection handler, and the count of connections open."""

    def __init__(self, snapshot: Callable[[], Awaitable[MetricsSnapshot]]) -> None:
        self._snapshot = snapshot
        self._open = 0
        self._h11 = require_h11()

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection's requests; any failure ends only this connection."""
        if self._open >= MAX_CONNECTIONS:
            await trio.aclose_forcefully(stream)
            return
        self._open += 1
        try:
            await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("metrics connection broke: %r", exc)
        finally:
            self._open -= 1
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        h11 = self._h11
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        while True:
            with trio.move_on_after(REQUEST_TIMEOUT) as timer:
                keep_going = await self._cycle(stream, conn)
            if timer.cancelled_caught or not keep_going:
                return
            conn.start_next_cycle()

    async def _cycle(self, stream: trio.SocketStream, conn: h11.Connection) -> bool:
        """One request and its response; whether the connection can serve another."""
        h11 = self._h11
        try:
            request = await _next_event(stream, conn)
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint
                await _respond(stream, conn, status, b"bad request\n", close=True)
                await _linger(stream)
            return False
        if not isinstance(request, h11.Request):
            return False  # the peer closed its side
        method = request.method
        if method not in (b"GET", b"HEAD"):
            await _respond(stream, conn, 405, b"only GET\n", allow=True, close=True)
            await _linger(stream)
            return False
        head = method == b"HEAD"
        if request.target.partition(b"?")[0] != PATH:
            await _respond(stream, conn, 404, b"not found: try /metrics\n", head=head)
        else:
            body = render(await self._snapshot()).encode()
            await _respond(stream, conn, 200, body, content_type=CONTENT_TYPE, head=head)
        # Read to the request's end (a GET has no body) before the next one.
        while conn.their_state is h11.SEND_BODY:
            event = await _next_event(stream, conn)
            if isinstance(event, h11.ConnectionClosed):
                return False
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE


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
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    allow: bool = False,
    close: bool = False,
    head: bool = False,
) -> None:
    import h11

    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    if allow:
        headers.append(("Allow", "GET, HEAD"))
    if close:
        headers.append(("Connection", "close"))
    events: list[h11.Response | h11.Data | h11.EndOfMessage] = [
        h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase)
    ]
    if not head:
        events.append(h11.Data(data=body))
    events.append(h11.EndOfMessage())
    try:
        data = b"".join(conn.send(event) or b"" for event in events)
    except h11.LocalProtocolError:
        return  # h11 says no response can be sent now: the connection just ends
    await stream.send_all(data)


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


def _is_loopback(listener: trio.SocketListener) -> bool:
    host = str(listener.socket.getsockname()[0]).partition("%")[0]
    return ipaddress.ip_address(host).is_loopback


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
