"""The ``GET /metrics`` endpoint: HTTP/1.1 with h11 on trio (the ``jobqueue[metrics]`` extra).

The HTTP side is :mod:`jobqueue._http`, shared with the dashboard: h11, a
sans-IO HTTP/1.1 parser, on trio's own streams (that module says why h11
rather than an ASGI framework).

The endpoint can never touch the queue: it asks the coordinator for a
:class:`~jobqueue._metrics.MetricsSnapshot` over the command channel, like
any connection's request, and renders it in a worker thread, so a long page
never holds up trio's thread, which every connection of the server shares.
Bad input costs only its own connection: a request head larger than
:data:`MAX_HEAD_BYTES` is refused, every request must arrive and be answered
within :data:`REQUEST_TIMEOUT`, and at most :data:`MAX_CONNECTIONS`
connections are served at once (more are closed at once). These are read
when the endpoint starts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import trio

from ._errors import JobQueueError
from ._http import HttpLimits, Request, Response, host_for_url, is_loopback, serve_http
from ._http import require_h11 as _require
from ._metrics import CONTENT_TYPE, MetricsSnapshot, render

log = logging.getLogger("jobqueue.metrics")

#: Longest request head (request line and headers) accepted, in bytes.
MAX_HEAD_BYTES = 16 * 1024
#: Seconds a connection has to send a whole request and read its response
#: (and, between requests, how long an idle keep-alive connection stays).
REQUEST_TIMEOUT = 10.0
#: Connections served at once; a scraper needs one.
MAX_CONNECTIONS = 16
#: The one path served.
PATH = "/metrics"

#: Where the command line and the docs send a user without the extra.
INSTALL_HINT = "pip install 'jobqueue[metrics]'"


class MetricsUnavailable(JobQueueError):
    """``metrics`` was asked for, but the ``jobqueue[metrics]`` extra is not installed."""


def require_h11() -> Any:
    """The ``h11`` module.

    Raises:
        MetricsUnavailable: h11 is not installed; the message says how to get it.
    """
    return _require(
        MetricsUnavailable, f"the metrics endpoint needs the h11 package: {INSTALL_HINT}"
    )


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
    limits = HttpLimits(
        max_head_bytes=MAX_HEAD_BYTES,
        request_timeout=REQUEST_TIMEOUT,
        max_connections=MAX_CONNECTIONS,
    )
    listeners = await trio.open_tcp_listeners(port, host=host)
    sockname = listeners[0].socket.getsockname()
    address = (str(sockname[0]), int(sockname[1]))
    if not all(is_loopback(listener) for listener in listeners):
        log.warning(
            "metrics bound to %s: anyone who can reach this address can read the queue's "
            "names and counts; bind 127.0.0.1 unless Prometheus runs on another host",
            host,
        )

    # One page is rendered at a time: a render holds the GIL throughout, so
    # two at once would finish no sooner, and each holds a page half built.
    rendering = trio.CapacityLimiter(1)

    async def handle(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            allow = (("Allow", "GET, HEAD"),)
            return Response(405, b"only GET\n", headers=allow, close=True)
        if request.path != PATH:
            return Response(404, b"not found: try /metrics\n")
        figures = await snapshot()
        # Rendered in a worker thread: a page of 1,000 queues takes tens of
        # milliseconds, which in trio's thread would stall every connection
        # of the server, the queue's own included. This is safe because the
        # snapshot is a copy the coordinator made for this request alone
        # (the journal's figures are a copy too): no other task or thread
        # reads or changes it, here or later.
        body = await trio.to_thread.run_sync(_page, figures, limiter=rendering)
        return Response(200, body, content_type=CONTENT_TYPE)

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_http, handle, listeners, limits, log)
        log.info("metrics at http://%s:%d%s", host_for_url(address[0]), address[1], PATH)
        task_status.started(address)
    raise AssertionError("serve_http never returns")  # pragma: no cover


def _page(figures: MetricsSnapshot) -> bytes:
    """The page's bytes; runs in a worker thread."""
    return render(figures).encode()
