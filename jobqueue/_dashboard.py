"""The web dashboard: a page to watch and operate a queue (the ``jobqueue[dashboard]`` extra).

It is a separate process and an ordinary client of the queue: one
:class:`~jobqueue.Client` asks for stats and job lists once per
``interval``, whoever is looking, and the page gets each round over
server-sent events. So the queue's load does not grow with the number of
open pages, and the dashboard can do nothing a ``jobqueue`` command could
not. HTTP is :mod:`jobqueue._http` (h11 on trio, with its limits); the
access rules are :mod:`jobqueue._dashboard_gate`; the page itself is
package data (``_dashboard_static``): plain HTML, CSS and JavaScript, no
framework and nothing fetched from elsewhere.

Endpoints (docs/dashboard.md): ``GET /``, ``/login``, ``/api/overview``,
``/api/jobs/ID``, ``/events``; ``POST /login``, ``/logout``,
``/api/jobs/ID/retry`` and ``/api/jobs/ID/delete``.
"""

from __future__ import annotations

import html
import json
import logging
import time
import urllib.parse
from importlib import resources
from typing import Any, NoReturn

import attrs
import trio

from ._client import Client
from ._dashboard_defaults import DEFAULT_HOST as DEFAULT_HOST
from ._dashboard_defaults import DEFAULT_PORT as DEFAULT_PORT
from ._dashboard_defaults import POLL_INTERVAL as POLL_INTERVAL
from ._dashboard_gate import Gate, Refused
from ._dashboard_view import History, job_json, overview, unreachable
from ._errors import ConnectionLost, JobQueueError, RequestError
from ._http import HttpLimits, Request, Response, Send, host_for_url, is_loopback, serve_http
from ._http import require_h11 as _require
from ._limits import MAX_NAME_CHARS
from ._replies import JobList

log = logging.getLogger("jobqueue.dashboard")

#: Longest the queue may take to answer a round or an action.
QUEUE_TIMEOUT = 5.0
#: Server-sent event streams open at once; more get 503.
MAX_EVENT_STREAMS = 8
#: HTTP connections open at once (event streams included).
MAX_CONNECTIONS = 32
#: Seconds a connection has to send a request and read its response.
REQUEST_TIMEOUT = 10.0
#: Longest request head and body accepted.
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 4 * 1024
#: Seconds between comments on an idle event stream (so proxies keep it).
KEEPALIVE_SECONDS = 15.0
#: A round waits at least this many times as long as the last one took, so
#: the dashboard takes at most about a tenth of the queue's time however
#: slow its answers get (a ``stats`` over hundreds of thousands of job
#: names costs the coordinator a good part of a second).
BACK_OFF = 9.0
#: Jobs listed per state on the page (running: all that the workers show).
LISTED = {"running": 500, "pending": 20, "failed": 50}
_NONE = JobList(())

#: Where the command line and the docs send a user without the extra.
INSTALL_HINT = "pip install 'jobqueue[dashboard]'"

_SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
_STATIC_TYPES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_HTML = "text/html; charset=utf-8"
_JSON = "application/json"


class DashboardError(JobQueueError):
    """The dashboard cannot start: the extra is missing, or a login token is needed."""


def require_h11() -> Any:
    """The ``h11`` module.

    Raises:
        DashboardError: h11 is not installed; the message says how to get it.
    """
    return _require(DashboardError, f"the dashboard needs the h11 package: {INSTALL_HINT}")


async def serve_dashboard(
    client: Client,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    login_token: str | None = None,
    interval: float = POLL_INTERVAL,
    request_timeout: float = REQUEST_TIMEOUT,
    max_event_streams: int = MAX_EVENT_STREAMS,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the dashboard for the queue ``client`` is connected to, until cancelled.

    Args:
        client: A connected client; the dashboard's only way to the queue.
        host: Address to bind; loopback unless people elsewhere need it.
        port: TCP port; 0 picks a free one.
        login_token: The token a person logs in with. Required when ``host``
            is not loopback; on loopback, it makes the page ask for it too.
        interval: Seconds between two rounds of questions to the queue.
        request_timeout: Seconds each HTTP request may take to arrive and
            be answered.
        max_event_streams: Live views (event streams) open at once.
        task_status: Set by ``nursery.start`` with the bound ``(host, port)``.

    Raises:
        DashboardError: without the ``jobqueue[dashboard]`` extra, or bound
            beyond loopback without a ``login_token``.
        OSError: the address cannot be bound.

    Error handling: the queue going away is shown on the page (and actions
    answer 502) until the client reconnects; bad HTTP input ends only its
    own connection.
    """
    require_h11()
    listeners = await trio.open_tcp_listeners(port, host=host)
    sockname = listeners[0].socket.getsockname()
    address = (str(sockname[0]), int(sockname[1]))
    loopback = all(is_loopback(listener) for listener in listeners)
    if not loopback and login_token is None:
        for listener in listeners:
            await listener.aclose()
        raise DashboardError(
            f"the dashboard bound to {host} needs a login token (--login-token or "
            "$JOBQUEUE_DASHBOARD_TOKEN): anyone who can reach it could retry and delete jobs"
        )
    app = _Dashboard(client, Gate(login_token, loopback), interval, max_event_streams)
    limits = HttpLimits(
        max_head_bytes=MAX_HEAD_BYTES,
        max_body_bytes=MAX_BODY_BYTES,
        request_timeout=request_timeout,
        max_connections=MAX_CONNECTIONS,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(app.poll)
        await nursery.start(serve_http, app.handle, listeners, limits, log)
        url = f"http://{host_for_url(address[0])}:{address[1]}/"
        if login_token is not None:
            log.info("dashboard at %s (login required: the login token)", url)
        else:
            log.info("dashboard at %s (no login: loopback only)", url)
        task_status.started(address)
    raise AssertionError("serve_http never returns")  # pragma: no cover


@attrs.define(eq=False)
class _Feed:
    """The latest view of the queue, and a way to wait for the next one."""

    view: dict[str, Any] | None = None
    #: The view as one server-sent event, encoded once for every stream.
    event: bytes = b""
    version: int = 0
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def publish(self, view: dict[str, Any], point: dict[str, Any] | None) -> None:
        self.view = view
        data = json.dumps({**view, "point": point}, separators=(",", ":"))
        self.event = b"event: overview\ndata: " + data.encode() + b"\n\n"
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_after(self, version: int) -> None:
        """Return once a view newer than ``version`` is published."""
        while self.version == version:
            await self._changed.wait()


@attrs.define(eq=False)
class _Dashboard:
    """The routes, the poller, and the event streams open."""

    _client: Client
    _gate: Gate
    _interval: float
    _max_streams: int
    _feed: _Feed = attrs.field(factory=_Feed, init=False)
    _history: History = attrs.field(factory=History, init=False)
    _poke: trio.Event = attrs.field(factory=trio.Event, init=False)
    _streams: int = attrs.field(default=0, init=False)
    _static: dict[str, str] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        folder = resources.files("jobqueue") / "_dashboard_static"
        for name in ("index.html", "login.html", *_STATIC_TYPES):
            self._static[name] = (folder / name).read_text(encoding="utf-8")

    # -- the poller ------------------------------------------------------------

    async def poll(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Ask the queue for a new view every ``interval`` (sooner after an action).

        An answered round that took long makes the next wait longer
        (``BACK_OFF``); an unanswered one does not, so a queue that comes
        back is seen again within ``interval``.
        """
        took = await self._refresh()
        task_status.started()
        while True:
            with trio.move_on_after(max(self._interval, BACK_OFF * took)):
                await self._poke.wait()
            self._poke = trio.Event()
            took = await self._refresh()

    async def _refresh(self) -> float:
        """Ask for a new view; return the seconds an answered round took (0 if unanswered)."""
        started = trio.current_time()
        view: dict[str, Any] | None = None
        error = f"the queue did not answer within {QUEUE_TIMEOUT:g}s"
        with trio.move_on_after(QUEUE_TIMEOUT):
            try:
                client = self._client
                stats = await client.stats()
                lists = {}
                for state, limit in LISTED.items():
                    # A listing of failed jobs scans the retained finished
                    # ones: ask only when there are some.
                    wanted = stats.jobs.get(state, 0) > 0
                    lists[state] = await client.list_jobs(state, limit=limit) if wanted else _NONE
                view = overview(time.time(), stats, **lists)
            except (ConnectionLost, RequestError) as exc:
                error = str(exc)
        if view is None:
            if self._feed.view is None or self._feed.view.get("connected"):
                log.warning("queue unreachable: %s", error)
            self._feed.publish(unreachable(time.time(), error, self._feed.view), None)
            return 0.0
        self._feed.publish(view, self._history.add(view))
        return trio.current_time() - started

    # -- HTTP ------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """Route one request; refusals become their status and a JSON error."""
        try:
            self._gate.check_host(request)
            response = await self._route(request)
        except Refused as exc:
            if exc.status == 401 and not request.path.startswith(("/api/", "/events")):
                response = _redirect("/login")
            else:
                response = _error(exc.status, exc.code, exc.message)
                response = attrs.evolve(response, headers=exc.headers)
        return attrs.evolve(response, headers=response.headers + _SECURITY_HEADERS)

    async def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if method == "HEAD":
            method = "GET"
        if path in ("/", "/index.html"):
            _allow(method, "GET")
            return self._page(request)
        if path.lstrip("/") in _STATIC_TYPES:
            _allow(method, "GET")
            name = path.lstrip("/")
            return Response(200, self._static[name].encode(), _STATIC_TYPES[name])
        if path == "/login":
            _allow(method, "GET", "POST")
            return self._login(request) if method == "POST" else self._login_page(request, "")
        if path == "/logout":
            _allow(method, "POST")
            self._gate.check_origin(request)
            response = _redirect("/login")
            cookie = ("Set-Cookie", self._gate.logout(request))
            return attrs.evolve(response, headers=(*response.headers, cookie))
        if path == "/events":
            _allow(request.method, "GET")
            self._session(request)
            return self._events(request)
        if path == "/api/overview":
            _allow(method, "GET")
            self._session(request)
            return _json(200, {**self._current(), "history": self._history.points()})
        if path.startswith("/api/jobs/"):
            job_id, _, action = path.removeprefix("/api/jobs/").partition("/")
            job_id = _job_id(job_id)
            if not action:
                _allow(method, "GET")
                self._session(request)
                return await self._queue_call("status", job_id)
            if action in ("retry", "delete"):
                _allow(method, "POST")
                self._gate.check_action(request, trio.current_time())
                return await self._queue_call(action, job_id)
        raise Refused(404, "not_found", f"no such page: {path}")

    def _session(self, request: Request) -> str:
        """The request's CSRF token: it has a session (or needs none).

        Raises:
            Refused: 401 without a session.
        """
        token = self._gate.csrf_token(request, trio.current_time())
        if token is None:
            raise Refused(401, "login_required", "log in first (POST /login)")
        return token

    def _current(self) -> dict[str, Any]:
        return self._feed.view or {}

    def _page(self, request: Request) -> Response:
        token = self._session(request)
        text = self._static["index.html"].replace("{{csrf}}", html.escape(token))
        text = text.replace("{{login}}", "yes" if self._gate.login_required else "no")
        return Response(200, text.encode(), _HTML)

    def _login_page(self, request: Request, message: str, status: int = 200) -> Response:
        if not self._gate.login_required:
            return _redirect("/")
        text = self._static["login.html"].replace("{{message}}", html.escape(message))
        return Response(status, text.encode(), _HTML)

    def _login(self, request: Request) -> Response:
        form = urllib.parse.parse_qs(request.body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        try:
            cookie = self._gate.login(request, token, trio.current_time())
        except Refused as exc:
            if exc.status in (401, 429):
                return self._login_page(request, exc.message, exc.status)
            raise
        response = _redirect("/")
        return attrs.evolve(response, headers=(*response.headers, ("Set-Cookie", cookie)))

    async def _queue_call(self, action: str, job_id: str) -> Response:
        """Ask the queue about, or act on, one job; its answer as a response."""
        client = self._client
        body: dict[str, Any] | None = None
        with trio.move_on_after(QUEUE_TIMEOUT):
            try:
                if action == "status":
                    # With its payload: a person looking at one job wants what it was given.
                    body = {"job": job_json(await client.status(job_id, payload=True))}
                elif action == "retry":
                    body = {"job": job_json(await client.retry(job_id))}
                else:
                    await client.delete(job_id)
                    body = {"deleted": job_id}
            except RequestError as exc:
                status = {"unknown_job": 404, "not_failed": 409, "not_finished": 409}
                return _error(status.get(exc.code, 400), exc.code, exc.message)
            except ConnectionLost as exc:
                return _error(502, "queue_unreachable", str(exc))
        if body is None:
            message = f"the queue did not answer within {QUEUE_TIMEOUT:g}s"
            return _error(504, "queue_timeout", message)
        if action != "status":
            log.info("%s job %s from the dashboard", action, job_id)
            self._poke.set()
        return _json(200, body)

    def _events(self, request: Request) -> Response:
        if self._streams >= self._max_streams:
            return attrs.evolve(
                _error(503, "too_many_streams", f"{self._max_streams} live views are open"),
                headers=(("Retry-After", "5"),),
                close=True,
            )
        self._streams += 1
        feed, gate = self._feed, self._gate

        async def stream(send: Send) -> None:
            try:
                await send(b"retry: 3000\n\n" + feed.event)
                while gate.csrf_token(request, trio.current_time()) is not None:
                    version = feed.version
                    with trio.move_on_after(KEEPALIVE_SECONDS) as idle:
                        await feed.wait_after(version)
                    await send(b": keep-alive\n\n" if idle.cancelled_caught else feed.event)
            finally:
                self._streams -= 1

        return Response(200, content_type="text/event-stream", close=True, stream=stream)


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise Refused(
            405,
            "method_not_allowed",
            f"{method} not allowed here; use {' or '.join(allowed)}",
            (("Allow", ", ".join(allowed)),),
        )


def _job_id(text: str) -> str:
    job_id = urllib.parse.unquote(text)
    if not job_id or len(job_id) > MAX_NAME_CHARS or not job_id.isprintable():
        raise Refused(400, "bad_job_id", f"not a job id: {text[:80]!r}")
    return job_id


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status, json.dumps(body).encode(), _JSON)


def _error(status: int, code: str, message: str) -> Response:
    return _json(status, {"error": code, "message": message})


def _redirect(location: str) -> Response:
    return Response(303, b"", headers=(("Location", location),))
