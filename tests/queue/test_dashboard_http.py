"""The dashboard's HTTP endpoints against a real queue over TCP.

What the page gets (overview, one job, the live event stream) is checked
against a scenario with known counts; the actions (retry, delete) against
the queue's own answers; the access rules (Host, CSRF token, Origin,
login) by the status codes they refuse with; and bad HTTP input (garbage,
huge heads and bodies, slow clients, floods of connections and of live
views) while a client keeps submitting: its requests must keep being
answered, and the dashboard must keep serving.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
import trio
import trio.testing

from jobqueue import Client, Job, RequestError, serve_dashboard, serve_queue
from jobqueue._dashboard import QUEUE_TIMEOUT
from jobqueue._dashboard_view import SHOWN_QUEUES
from jobqueue.testing import RunningQueue, open_memory_queue, open_test_queue

TOKEN = "a-login-token-long-enough"
#: Longest any condition in these tests may take to come true.
LIMIT = 10.0


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.frozen
class Endpoint:
    """A dashboard's HTTP address, and requests to it."""

    address: tuple[str, int]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.address[1]}"

    async def send(self, data: bytes) -> bytes:
        """Send ``data`` and read until the dashboard closes."""
        stream = await trio.open_tcp_stream(*self.address)
        async with stream:
            await stream.send_all(data)
            received = b""
            while chunk := await stream.receive_some(65536):
                received += chunk
        return received

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Reply:
        fields = {"Host": self.host, "Connection": "close", **(headers or {})}
        if body or method == "POST":
            fields["Content-Length"] = str(len(body))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        return parse(await self.send(head.encode() + b"\r\n" + body))

    async def csrf(self, cookie: str | None = None) -> str:
        """The CSRF token the page carries."""
        page = await self.request("GET", "/", {"Cookie": cookie} if cookie else None)
        assert page.status == 200, page
        found = re.search(rb'name="csrf-token" content="([^"]+)"', page.body)
        assert found is not None
        return found.group(1).decode()

    async def act(self, action: str, job_id: str, **headers: str) -> Reply:
        return await self.request("POST", f"/api/jobs/{job_id}/{action}", headers)

    async def overview_when(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The overview, once ``predicate`` holds for it (the dashboard polls the queue)."""
        with trio.fail_after(LIMIT):
            while True:
                view: dict[str, Any] = (await self.request("GET", "/api/overview")).json()
                if predicate(view):
                    return view
                await trio.sleep(0.02)


@attrs.frozen
class Dashboard(Endpoint):
    """A dashboard, and the test queue it shows."""

    queue: RunningQueue


def parse(response: bytes) -> Reply:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(lines[0].split()[1]), headers, body)


@asynccontextmanager
async def dashboard(
    queue_options: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[Dashboard]:
    async with (
        open_test_queue(retry_delay=600.0, **(queue_options or {})) as queue,
        queue.connect("dashboard") as client,
        trio.open_nursery() as nursery,
    ):
        # The dashboard stops before its client closes.
        address = await nursery.start(
            lambda task_status: serve_dashboard(
                client, "127.0.0.1", 0, interval=0.05, task_status=task_status, **options
            )
        )
        yield Dashboard(address, queue)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def scenario(board: Dashboard) -> AsyncIterator[dict[str, str]]:
    """Known jobs: two pending in ``a``, one running with progress, one failed, one completed."""
    release = trio.Event()
    started = trio.Event()

    async def resize(job: Job) -> str:
        await job.report_progress(0.25, note={"stage": "upload"})
        started.set()
        await release.wait()
        return "done"

    async def charge(job: Job) -> None:
        raise ConnectionError("gateway down")

    async def ping(job: Job) -> str:
        return "pong"

    queue = board.queue
    client = queue.client
    handlers = {"resize": resize, "charge": charge, "ping": ping}
    await queue.start_worker(handlers, name="w1", concurrency=2)
    ids = {"completed": await client.submit("ping", None)}
    assert (await client.wait(ids["completed"])).state == "completed"
    ids["failed"] = await client.submit("charge", {"order": 7}, max_attempts=1)
    assert (await client.wait(ids["failed"])).state == "failed"
    ids["running"] = await client.submit("resize", {"image": "cat.png"})
    await started.wait()
    ids["pending1"] = await client.submit("report", 1, queue="a")
    ids["pending2"] = await client.submit("report", 2, queue="a", priority=5)
    try:
        yield ids
    finally:
        release.set()


async def test_overview_shows_the_known_counts() -> None:
    async with dashboard() as board, scenario(board) as ids:
        view = await board.overview_when(lambda v: v["totals"].get("submitted") == 5)
        assert view["connected"] is True
        assert view["journal"] is None  # a queue in memory only
        assert view["jobs"] == {
            "pending": 2,
            "scheduled": 0,
            "running": 1,
            "completed": 1,
            "failed": 1,
            "cancelled": 0,
        }
        assert view["queues"]["a"] == {"pending": 2, "scheduled": 0, "running": 0}
        assert view["queues"]["default"]["running"] == 1
        [worker] = view["workers"]
        assert worker["name"] == "w1"
        [running] = worker["jobs"]
        assert running["job_id"] == ids["running"]
        assert running["progress"] == 0.25
        assert running["note"] == {"stage": "upload"}
        # Pending, oldest first (as list_jobs gives them).
        # In the order they will run: the higher priority first.
        assert [j["job_id"] for j in view["pending"]] == [ids["pending2"], ids["pending1"]]
        assert view["pending"][0]["priority"] == 5
        [failed] = view["failed"]
        assert failed["job_id"] == ids["failed"]
        assert failed["error"] == {"type": "ConnectionError", "message": "gateway down"}
        # The chart's points, oldest first, the latest with the same counts.
        history = view["history"]
        assert history[-1]["queues"] == view["queues"]
        assert [p["t"] for p in history] == sorted(p["t"] for p in history)

        job = (await board.request("GET", f"/api/jobs/{ids['completed']}")).json()["job"]
        assert (job["state"], job["result"], job["attempt"]) == ("completed", "pong", 1)
        # The detail shows what the job was given, too.
        job = (await board.request("GET", f"/api/jobs/{ids['failed']}")).json()["job"]
        assert job["payload"] == {"order": 7}
        missing = await board.request("GET", "/api/jobs/no-such-job")
        assert (missing.status, missing.json()["error"]) == (404, "unknown_job")


async def test_overview_shows_the_busiest_queues_and_counts_the_rest() -> None:
    async with dashboard() as board:
        client = board.queue.client
        await client.submit_many([{"name": "work", "queue": "busy"}] * 2)
        await client.submit_many([{"name": "work", "queue": f"q{n:03d}"} for n in range(60)])
        view = await board.overview_when(lambda v: v["jobs"]["pending"] == 62)
        assert len(view["queues"]) == SHOWN_QUEUES
        assert view["queues"]["busy"]["pending"] == 2
        assert view["queues_unlisted"] == 61 - SHOWN_QUEUES
        assert view["workers_unlisted"] == 0
        # The chart of all queues counts the queues not shown too.
        assert view["history"][-1]["all"] == {"pending": 62, "scheduled": 0, "running": 0}
        # The bounds come along, for the page's warning before queue_full.
        assert view["limits"]["waiting"] == {"used": 62, "max": 1_000_000}


async def test_overview_shows_the_journal(tmp_path: Path) -> None:
    async with dashboard({"journal": str(tmp_path)}) as board:
        await board.queue.client.submit("ping")
        view = await board.overview_when(lambda v: v["totals"].get("submitted") == 1)
    journal = view["journal"]
    assert (journal["fsync"], journal["failing"], journal["error"]) == ("always", False, None)
    assert journal["bytes"] > 0


async def test_retry_and_delete_act_on_the_queue() -> None:
    async with dashboard() as board, scenario(board) as ids:
        client = board.queue.client
        token = await board.csrf()
        retried = await board.act("retry", ids["failed"], **{"X-CSRF-Token": token})
        assert retried.status == 200
        assert retried.json()["job"]["state"] in ("pending", "running", "failed")
        # It runs again (and fails again: the handler still raises).
        with trio.fail_after(LIMIT):
            assert (await client.wait(ids["failed"])).attempt == 2
        again = await board.act("retry", ids["pending1"], **{"X-CSRF-Token": token})
        assert (again.status, again.json()["error"]) == (409, "not_failed")
        busy = await board.act("delete", ids["pending1"], **{"X-CSRF-Token": token})
        assert (busy.status, busy.json()["error"]) == (409, "not_finished")
        deleted = await board.act("delete", ids["completed"], **{"X-CSRF-Token": token})
        assert (deleted.status, deleted.json()) == (200, {"deleted": ids["completed"]})
        with pytest.raises(RequestError, match="unknown_job"):
            await client.status(ids["completed"])
        gone = await board.act("delete", ids["completed"], **{"X-CSRF-Token": token})
        assert gone.status == 404


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 403, "bad_csrf_token"),
        ({"X-CSRF-Token": "guessed"}, 403, "bad_csrf_token"),
        ({"X-CSRF-Token": "{token}", "Origin": "http://evil.example"}, 403, "cross_site"),
        ({"X-CSRF-Token": "{token}", "Origin": "null"}, 403, "cross_site"),
        ({"X-CSRF-Token": "{token}", "Sec-Fetch-Site": "cross-site"}, 403, "cross_site"),
        ({"X-CSRF-Token": "{token}", "Host": "evil.example"}, 403, "bad_host"),
    ],
)
async def test_actions_from_elsewhere_are_refused(
    headers: dict[str, str], status: int, code: str
) -> None:
    async with dashboard() as board, scenario(board) as ids:
        token = await board.csrf()
        filled = {k: v.replace("{token}", token) for k, v in headers.items()}
        refused = await board.act("retry", ids["failed"], **filled)
        assert (refused.status, refused.json()["error"]) == (status, code)
        assert "access-control-allow-origin" not in refused.headers
        assert (await board.queue.client.status(ids["failed"])).state == "failed"
        # The same request with the token, from the page's own origin, works.
        origin = {"Origin": f"http://{board.host}", "Sec-Fetch-Site": "same-origin"}
        allowed = await board.act("retry", ids["failed"], **{"X-CSRF-Token": token, **origin})
        assert allowed.status == 200


async def test_loopback_dashboard_answers_only_to_loopback_names() -> None:
    async with dashboard() as board:
        for host in ("localhost:1234", "[::1]:80", "127.0.0.2"):
            assert (await board.request("GET", "/api/overview", {"Host": host})).status == 200
        # A DNS-rebinding page reaches 127.0.0.1 under its own name.
        rebound = await board.request("GET", "/", {"Host": "evil.example:8081"})
        assert (rebound.status, rebound.json()["error"]) == (403, "bad_host")
        page = await board.request("GET", "/")
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        # Nothing else: wrong methods and paths.
        wrong = await board.request("DELETE", "/api/overview")
        assert (wrong.status, wrong.headers["allow"]) == (405, "GET")
        options = await board.request("OPTIONS", "/api/jobs/x/retry")
        assert options.status == 405
        assert "access-control-allow-origin" not in options.headers
        assert (await board.request("GET", "/nothing-here")).status == 404


async def test_login_is_required_when_a_token_is_set() -> None:
    async with dashboard(login_token=TOKEN) as board, scenario(board) as ids:
        page = await board.request("GET", "/")
        assert (page.status, page.headers["location"]) == (303, "/login")
        assert (await board.request("GET", "/api/overview")).status == 401
        assert (await board.request("GET", "/events")).status == 401
        assert (await board.act("retry", ids["failed"])).status == 401
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        wrong = await board.request("POST", "/login", form, b"token=wrong")
        assert wrong.status == 401
        assert b"wrong login token" in wrong.body
        cross = await board.request(
            "POST", "/login", {**form, "Origin": "http://evil.example"}, f"token={TOKEN}".encode()
        )
        assert cross.status == 403
        good = await board.request("POST", "/login", form, f"token={TOKEN}".encode())
        assert (good.status, good.headers["location"]) == (303, "/")
        cookie_header = good.headers["set-cookie"]
        assert "HttpOnly" in cookie_header
        assert "SameSite=Strict" in cookie_header
        cookie = cookie_header.partition(";")[0]
        overview = await board.request("GET", "/api/overview", {"Cookie": cookie})
        assert overview.status == 200
        token = await board.csrf(cookie)
        # A session's actions still need its CSRF token.
        no_token = await board.act("retry", ids["failed"], Cookie=cookie)
        assert no_token.status == 403
        done = await board.act("retry", ids["failed"], Cookie=cookie, **{"X-CSRF-Token": token})
        assert done.status == 200
        # Another session's token is not this one's.
        other = await board.request("POST", "/login", form, f"token={TOKEN}".encode())
        other_cookie = other.headers["set-cookie"].partition(";")[0]
        mixed = await board.act(
            "delete", ids["completed"], Cookie=other_cookie, **{"X-CSRF-Token": token}
        )
        assert mixed.status == 403
        out = await board.request("POST", "/logout", {"Cookie": cookie})
        assert out.status == 303
        assert "Max-Age=0" in out.headers["set-cookie"]
        assert (await board.request("GET", "/api/overview", {"Cookie": cookie})).status == 401


async def test_failed_logins_are_limited() -> None:
    async with dashboard(login_token=TOKEN) as board:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        statuses = [
            (await board.request("POST", "/login", form, b"token=guess")).status for _ in range(11)
        ]
        assert statuses == [401] * 10 + [429]
        # Even the right token waits out the minute.
        right = await board.request("POST", "/login", form, f"token={TOKEN}".encode())
        assert right.status == 429


async def test_beyond_loopback_a_login_token_is_required() -> None:
    async with open_test_queue() as queue:
        with pytest.raises(Exception, match="needs a login token") as caught:
            await serve_dashboard(queue.client, "0.0.0.0", 0)
        assert "--login-token" in str(caught.value)


async def read_event(stream: trio.SocketStream, buffer: bytearray) -> dict[str, Any]:
    """The next ``overview`` event's data from an event stream."""
    with trio.fail_after(LIMIT):
        while True:
            found = re.search(rb"event: overview\r?\ndata: (.*?)\n\n", buffer)
            if found:
                data: dict[str, Any] = json.loads(bytes(found.group(1)))
                del buffer[: found.end()]
                return data
            chunk = await stream.receive_some(65536)
            assert chunk, "the event stream closed"
            buffer += chunk


@asynccontextmanager
async def event_stream(board: Dashboard) -> AsyncIterator[tuple[trio.SocketStream, bytearray]]:
    stream = await trio.open_tcp_stream(*board.address)
    async with stream:
        await stream.send_all(f"GET /events HTTP/1.1\r\nHost: {board.host}\r\n\r\n".encode())
        yield stream, bytearray()


async def test_live_view_streams_each_new_overview() -> None:
    async with dashboard() as board, event_stream(board) as (stream, buffer):
        first = await read_event(stream, buffer)
        assert first["connected"] is True
        job_id = await board.queue.client.submit("later", None, queue="live")
        with trio.fail_after(LIMIT):
            while True:
                view = await read_event(stream, buffer)
                if view["queues"].get("live", {}).get("pending") == 1:
                    break
        assert view["pending"][-1]["job_id"] == job_id
        # Each event carries the chart's newest point.
        assert view["point"]["queues"] == view["queues"]


async def test_live_views_are_capped_and_a_stalled_one_holds_up_no_other() -> None:
    async with dashboard(max_event_streams=2) as board:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_submitting, board.queue.client, 100)
            await live_views_capped(board)
        # The submits made meanwhile were all answered, and all are there.
        assert (await board.queue.client.stats()).totals["submitted"] == 100


async def live_views_capped(board: Dashboard) -> None:
    async with event_stream(board) as (stalled, _), event_stream(board) as (live, buffer):
        # ``stalled`` never reads; ``live`` keeps getting fresh views.
        views = [await read_event(live, buffer) for _ in range(5)]
        assert [v["at"] for v in views] == sorted({v["at"] for v in views})
        for _ in range(10):
            refused = await board.request("GET", "/events")
            assert (refused.status, refused.json()["error"]) == (503, "too_many_streams")
            assert refused.headers["retry-after"] == "5"
        assert await stalled.receive_some(1)  # it was served all along
    # Both closed: their places are free again (once each stream notices).
    with trio.fail_after(LIMIT):
        while True:
            async with event_stream(board) as (again, buffer):
                try:
                    await read_event(again, buffer)
                    return
                except AssertionError:  # refused (503) and closed: not yet
                    await trio.sleep(0.05)


async def keep_submitting(client: Client, count: int) -> None:
    """Submit ``count`` jobs one after another; each must be answered."""
    for i in range(count):
        assert await client.submit("meanwhile", i)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"\x00\xff garbage \r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431),
        (
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"
            + b"t" * 100_000,
            413,
        ),
        (b"GET /api/jobs/%00%01 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 400),
        (b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ],
)
async def test_bad_requests_get_clear_errors(request_bytes: bytes, status: int) -> None:
    async with dashboard() as board:
        response = parse(await board.send(request_bytes))
        assert response.status == status
        assert await board.queue.client.submit("after", None)
        assert (await board.request("GET", "/api/overview")).status == 200


async def test_bad_clients_never_affect_the_queue() -> None:
    async with dashboard(request_timeout=0.5) as board:
        streams: list[trio.SocketStream] = []
        try:
            # Far more connections than the dashboard serves, each sending
            # half a request and then nothing (slow clients).
            for _ in range(80):
                stream = await trio.open_tcp_stream(*board.address)
                streams.append(stream)
                await stream.send_all(b"GET /api/ov")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_submitting, board.queue.client, 200)
                for stream in streams[:20]:
                    nursery.start_soon(stream.send_all, b"\xff" * 1000)
            # Every one is closed by the dashboard: at the deadline, at the
            # garbage, or at once for those over the cap.
            for stream in streams:
                with trio.fail_after(5):
                    while await stream.receive_some(65536):
                        pass
        finally:
            for stream in streams:
                await trio.aclose_forcefully(stream)
        assert (await board.queue.client.stats()).jobs["pending"] == 200
        view = await board.overview_when(lambda v: v["jobs"].get("pending") == 200)
        assert view["connected"] is True


async def test_a_vanished_queue_is_shown_and_actions_answer_502() -> None:
    async with trio.open_nursery() as outer:
        server = trio.CancelScope()

        async def run_server(task_status: trio.TaskStatus[tuple[str, int]]) -> None:
            with server:
                await serve_queue(0, host="127.0.0.1", task_status=task_status)

        host, port = await outer.start(run_server)
        async with (
            Client.connect(host, port, name="dashboard", reconnect_timeout=0) as client,
            trio.open_nursery() as nursery,
        ):
            address = await nursery.start(
                lambda task_status: serve_dashboard(
                    client, "127.0.0.1", 0, interval=0.05, task_status=task_status
                )
            )
            board = Endpoint(address)
            assert (await board.overview_when(lambda v: v["connected"]))["error"] is None
            server.cancel()
            view = await board.overview_when(lambda v: not v["connected"])
            assert view["error"]
            token = await board.csrf()
            refused = await board.act("retry", "some-job", **{"X-CSRF-Token": token})
            assert (refused.status, refused.json()["error"]) == (502, "queue_unreachable")
            nursery.cancel_scope.cancel()


async def test_a_slow_queue_is_asked_less_often(autojump_clock: trio.testing.MockClock) -> None:
    # Each stats takes 2 s (a server with very many job names): the dashboard
    # waits nine times as long as a round took, not its 0.1 s interval, so it
    # takes about a tenth of the queue's time, not all of it.
    asked: list[float] = []

    class SlowStats:
        def __init__(self, client: Client) -> None:
            self._client = client

        async def stats(self) -> Any:
            asked.append(trio.current_time())
            await trio.sleep(2.0)
            return await self._client.stats()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

    async with open_memory_queue() as queue, trio.open_nursery() as nursery:
        slow = cast(Client, SlowStats(queue.client))
        await nursery.start(lambda task_status: serve_dashboard(
            slow, "127.0.0.1", 0, interval=0.1, task_status=task_status
        ))  # fmt: skip
        await trio.sleep(100.0)
        nursery.cancel_scope.cancel()
    gaps = [later - earlier for earlier, later in itertools.pairwise(asked)]
    assert len(asked) >= 3
    assert all(gap >= 2.0 + 9 * 2.0 for gap in gaps), gaps


async def test_an_unanswered_round_does_not_delay_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The first stats never comes (the queue hangs): that round gives up after
    # QUEUE_TIMEOUT, and the next is asked an interval later, not nine rounds'
    # worth, so a queue that recovers shows again at once.
    asked: list[float] = []

    class HangsOnce:
        def __init__(self, client: Client) -> None:
            self._client = client

        async def stats(self) -> Any:
            asked.append(trio.current_time())
            if len(asked) == 1:
                await trio.sleep_forever()
            return await self._client.stats()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

    async with open_memory_queue() as queue, trio.open_nursery() as nursery:
        hangs = cast(Client, HangsOnce(queue.client))
        await nursery.start(lambda task_status: serve_dashboard(
            hangs, "127.0.0.1", 0, interval=0.1, task_status=task_status
        ))  # fmt: skip
        await trio.sleep(10.0)
        nursery.cancel_scope.cancel()
    assert asked[1] - asked[0] <= QUEUE_TIMEOUT + 0.2
