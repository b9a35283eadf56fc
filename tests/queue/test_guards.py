"""Limits, timeouts, authentication, TLS and client reconnects.

What the server refuses and when it closes a connection, each inflicted for
real: a queue filled to its limit, one connection too many, a peer that never
says hello or goes quiet, a wrong token, a certificate the client does not
trust. The timing cases run in virtual time (``autojump_clock`` with an
in-memory queue), so their deadlines are exact; the TLS cases also run once
over real sockets, with a throwaway CA made by ``trustme``.
"""

from __future__ import annotations

import hmac
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
import trustme

from jobqueue import Client, ConnectionLost, Job, RequestError, serve_queue
from jobqueue._config import QueueRules
from jobqueue._errors import RuleError
from jobqueue._state import QueueState
from jobqueue.testing import RunningQueue, open_memory_queue, open_test_queue

if TYPE_CHECKING:
    from tests.helpers import RawConnection, RawOpener

TOKEN = "correct horse battery staple"


async def closed_with(conn: RawConnection, code: str) -> dict[str, Any]:
    """The farewell error the server sent, after which it closed the connection."""
    reply = await conn.read_reply()
    assert reply["type"] == "error", reply
    assert reply["code"] == code, reply
    with pytest.raises(EOFError):
        await conn.read_reply()
    return reply


async def echo(job: Job) -> Any:
    return job.payload


# -- max_pending: queue_full ---------------------------------------------------------


def test_state_refuses_new_jobs_beyond_max_pending_but_keeps_accepted_ones() -> None:
    state = QueueState(rules=QueueRules(max_pending=2, retry_delay=5))
    first, _ = state.submit("a", None, 0, key="k1")
    state.submit("b", None, 0, delay=60)  # scheduled jobs wait too
    assert state.waiting_count == 2
    with pytest.raises(RuleError) as refused:
        state.submit("c", None, 0)
    assert refused.value.code == "queue_full"
    assert len(state) == 2
    # A repeated key adds nothing, so it is answered even when full.
    assert state.submit("a", None, 0, key="k1") == (first, False)

    # Accepted jobs always get their place back: a failed attempt is
    # rescheduled although the queue is at its limit again.
    job = state.assign("w", 1)
    assert job is not None
    state.submit("c", None, 1)
    assert state.waiting_count == 2
    state.fail(job.id, "w", job.attempt, "E", "boom", 2)
    assert state.get(job.id).state.value == "scheduled"
    assert state.waiting_count == 3
    with pytest.raises(RuleError):
        state.check_room(1)


def test_state_max_pending_none_means_no_limit() -> None:
    state = QueueState(rules=QueueRules(max_pending=None))
    for _ in range(100):
        state.submit("a", None, 0)
    state.check_room(10**9)
    with pytest.raises(ValueError, match="max_pending"):
        QueueRules(max_pending=0)


async def test_queue_full_is_a_clear_error_and_drops_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_queue(max_pending=3) as queue:
        client = queue.client
        ids = [await client.submit("echo", n) for n in range(3)]
        with pytest.raises(RequestError) as refused:
            await client.submit("echo", 3)
        assert refused.value.code == "queue_full"
        assert "3 waiting jobs" in refused.value.message
        # A batch is all or nothing: none of it is added.
        with pytest.raises(RequestError) as batch_refused:
            await client.submit_many([{"name": "echo", "payload": 9}] * 2)
        assert batch_refused.value.code == "queue_full"
        stats = await client.stats()
        assert stats.jobs["pending"] == 3
        assert stats.totals["submitted"] == 3

        # The connection and the server carry on; room comes back as jobs run.
        await queue.start_worker({"echo": echo})
        assert [(await client.wait(i)).result for i in ids] == [0, 1, 2]
        ids += await client.submit_many([{"name": "echo", "payload": n} for n in (3, 4, 5)])
        assert [(await client.wait(i)).result for i in ids[3:]] == [3, 4, 5]


# -- max_payload_bytes: queue_full ---------------------------------------------------


async def test_payload_bytes_past_the_limit_are_refused_and_room_comes_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # "xxxx" is held as its JSON text, six bytes; a number counts nothing.
    async with open_memory_queue(max_payload_bytes=20, retry_delay=1.0) as queue:
        client = queue.client
        first = await client.submit("flaky", "xxxx")
        await client.submit("echo", "xxxx")
        await client.submit("echo", "xxxx")  # 18 bytes held
        await client.submit("echo", 7)
        with pytest.raises(RequestError) as refused:
            await client.submit("echo", "xxxx")
        assert refused.value.code == "queue_full"
        assert "hold 18 bytes; 6 more would pass the limit of 20" in refused.value.message
        # All or nothing: a batch that would not fit adds none of its jobs.
        with pytest.raises(RequestError):
            await client.submit_many(
                [{"name": "echo", "payload": 1}, {"name": "echo", "payload": "xxxx"}]
            )
        assert (await client.stats()).jobs["pending"] == 4

        # A job already accepted keeps its place: a failed run is retried.
        failures: list[int] = []

        async def flaky(job: Job) -> str:
            if not failures:
                failures.append(job.attempt)
                raise RuntimeError("once")
            return str(job.payload)

        await queue.start_worker({"flaky": flaky, "echo": echo})
        assert (await client.wait(first)).state == "completed"
        assert failures == [1]
        # Finished jobs' payloads no longer count.
        assert (await client.wait(await client.submit("echo", "xxxx"))).result == "xxxx"


async def test_stats_show_how_near_each_limit_is() -> None:
    async with open_memory_queue(
        max_pending=10, max_payload_bytes=100, finished_retention=5, finished_retention_bytes=None
    ) as queue:
        client = queue.client
        done = await client.submit("echo", "xxxx")  # six bytes held as JSON text
        await client.submit("echo", [1, 2], delay=60)  # "[1,2]": five, scheduled
        await client.submit("echo", 7)  # a number counts nothing
        await client.cancel(done)  # finished: its payload moves to the finished side
        stats = await client.stats()
    assert stats.limits == {
        "waiting": {"used": 2, "max": 10},
        "payload_bytes": {"used": 5, "max": 100},
        "finished": {"used": 1, "max": 5},
        "finished_bytes": {"used": 6, "max": None},
    }
    assert stats.to_wire()["limits"] == stats.limits


def test_max_payload_bytes_none_means_no_limit() -> None:
    state = QueueState(rules=QueueRules(max_payload_bytes=None))
    state.submit("a", b'"' + b"x" * 10_000 + b'"', 0)
    state.check_room(1, 10**12)
    with pytest.raises(ValueError, match="max_payload_bytes"):
        QueueRules(max_payload_bytes=0)


# -- max_connections -----------------------------------------------------------------


async def test_one_connection_too_many_is_refused_and_the_rest_are_served(
    raw_connection: RawOpener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jobqueue.server")
    # The queue's own client is connection 1 of 3.
    async with open_test_queue(max_connections=3) as queue, raw_connection(queue) as second:
        assert (await second.request({"type": "hello"}))["type"] == "hello"
        async with raw_connection(queue) as third:
            assert (await third.request({"type": "stats"}))["connections"] == 3
            async with raw_connection(queue) as fourth:
                reply = await closed_with(fourth, "too_many_connections")
                assert "3 connections" in reply["message"]
            with pytest.raises(RequestError) as refused:
                async with queue.connect():
                    pass  # pragma: no cover
            assert refused.value.code == "too_many_connections"
            # Everyone already connected is served as before.
            job_id = await queue.client.submit("echo", 1)
            assert (await second.request({"type": "job_status", "job_id": job_id}))["state"] == (
                "pending"
            )
        # A slot that frees up can be taken again.
        with trio.fail_after(5):
            while True:
                try:
                    async with queue.connect() as again:
                        assert (await again.stats()).connections == 3
                        break
                except RequestError:  # the server has not yet seen `third` close
                    await trio.sleep(0.01)
    # One warning when refusals start and one when they end, however many.
    warnings = _bind_warnings(caplog)
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("refusing connections (from 127.0.0.1:")
    assert re.fullmatch(r"accepting connections again; \d+ were refused", warnings[1])


# -- handshake and idle timeouts -----------------------------------------------------


async def test_a_connection_that_never_sends_a_request_is_closed_after_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    async with (
        open_memory_queue(handshake_timeout=5) as queue,
        raw_connection(queue) as silent,
        raw_connection(queue) as half,
        raw_connection(queue) as prompt,
    ):
        start = trio.current_time()
        await half.send_raw(b'{"type": "sta')  # half a line, then nothing
        assert (await prompt.request({"type": "stats"}))["type"] == "stats"
        for conn in (silent, half):
            reply = await closed_with(conn, "handshake_timeout")
            assert reply["message"] == "no request within 5s"
        assert trio.current_time() - start == pytest.approx(5)
        # A connection past its first request is not subject to it.
        await trio.sleep(100)
        assert (await prompt.request({"type": "stats"}))["connections"] == 2


async def test_idle_connections_are_closed_and_busy_ones_are_not(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    async with open_memory_queue(idle_timeout=60) as queue:
        await queue.start_worker({"echo": echo}, poll_wait=600)
        async with raw_connection(queue) as idle, raw_connection(queue) as waiting:
            await idle.request({"type": "hello"})
            job_id = await queue.client.submit("echo", queue="unserved")
            await waiting.send({"type": "wait_job", "job_id": job_id})
            # 59 quiet seconds are fine, and any request restarts the clock.
            await trio.sleep(59)
            assert (await idle.request({"type": "stats"}))["type"] == "stats"
            quiet_from = trio.current_time()
            reply = await closed_with(idle, "idle_timeout")
            assert reply["message"] == "nothing received for 60s"
            assert trio.current_time() - quiet_from == pytest.approx(60)
            # Ten minutes on: the worker parked in request_job (poll_wait
            # 600 s) and the client parked in wait_job are not idle.
            await trio.sleep(600)
            await queue.client.cancel(job_id)
            assert (await waiting.read_reply())["state"] == "cancelled"
            done = await queue.client.submit("echo", "still here")
            assert (await queue.client.wait(done)).result == "still here"


async def test_a_client_closed_as_idle_resends_on_a_new_connection(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jobqueue.client")
    async with open_memory_queue(idle_timeout=60) as queue:
        job_id = await queue.client.submit("echo", 1)
        await trio.sleep(3600)  # closed as idle long ago
        # The request could not be sent, so the server never read it: the
        # client reconnects and sends it again.
        assert (await queue.client.status(job_id)).state == "pending"
        assert (await queue.client.stats()).totals["submitted"] == 1
    messages = [record.getMessage() for record in caplog.records]
    assert any("reconnecting" in text for text in messages), messages
    assert any("reconnected" in text for text in messages), messages


async def test_over_tcp_the_idle_farewell_tells_the_client_to_resend(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="jobqueue.client")
    with trio.fail_after(20):
        async with open_test_queue(idle_timeout=0.3) as queue, queue.connect() as busy:
            job_id = await queue.client.submit("echo", 1)
            # `busy` keeps talking, so it stays; the queue's own client goes quiet.
            # Polling is the point here: each poll keeps `busy` from being idle.
            while (await busy.stats()).connections > 1:  # noqa: ASYNC110
                await trio.sleep(0.05)
            # Over TCP the request is sent into the closed connection and the
            # server's farewell comes back instead of a reply.
            assert (await queue.client.status(job_id)).state == "pending"
    messages = [record.getMessage() for record in caplog.records]
    assert any("idle_timeout" in text and "reconnecting" in text for text in messages), messages


# -- the token -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        ({"type": "stats"}, 'this server needs a "hello" with its token first'),
        ({"type": "submit_job", "name": "x"}, 'this server needs a "hello" with its token first'),
        ({"type": "hello"}, "wrong or missing token"),
        ({"type": "hello", "token": "wrong"}, "wrong or missing token"),
        ({"type": "hello", "token": TOKEN[:-1]}, "wrong or missing token"),
        # A lone surrogate (JSON's "\udcff"), which UTF-8 cannot encode.
        ({"type": "hello", "token": "\udcff"}, "wrong or missing token"),
    ],
)
async def test_without_the_token_nothing_but_hello_is_answered(
    autojump_clock: trio.testing.MockClock,
    raw_connection: RawOpener,
    first: dict[str, Any],
    expected: str,
) -> None:
    async with open_memory_queue(token=TOKEN) as queue, raw_connection(queue) as intruder:
        await intruder.send(first)
        await intruder.send({"type": "submit_job", "name": "pwned"})  # never read
        reply = await closed_with(intruder, "unauthorized")
        assert reply["message"] == expected
        assert (await queue.client.stats()).totals["submitted"] == 0


async def test_bad_json_before_the_token_ends_the_connection(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    async with open_memory_queue(token=TOKEN) as queue, raw_connection(queue) as intruder:
        await intruder.send_line(b"{not json")
        await closed_with(intruder, "bad_json")


async def test_the_right_token_opens_the_connection_even_pipelined(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    async with open_memory_queue(token=TOKEN) as queue, raw_connection(queue) as peer:
        await peer.send_raw(
            b'{"type": "hello", "name": "p", "token": "' + TOKEN.encode() + b'"}\n'
            b'{"type": "submit_job", "name": "echo", "payload": 7}\n'
        )
        assert (await peer.read_reply())["type"] == "hello"
        job_id = (await peer.read_reply())["job_id"]
        # The queue's own client and workers carry the token too.
        await queue.start_worker({"echo": echo})
        assert (await queue.client.wait(job_id)).result == 7


async def test_the_token_is_compared_in_constant_time(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", recording)
    async with open_memory_queue(token=TOKEN) as queue:
        with pytest.raises(RequestError) as refused:
            async with queue.connect(token="nope"):
                pass  # pragma: no cover
        assert refused.value.code == "unauthorized"
    assert compared == [(TOKEN.encode(), TOKEN.encode()), (b"nope", TOKEN.encode())]


async def test_an_unexpected_error_on_one_connection_closes_only_that_one(
    autojump_clock: trio.testing.MockClock,
    raw_connection: RawOpener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(a: bytes, b: bytes) -> bool:
        raise RuntimeError("a bug in the server")

    async with open_memory_queue(token=TOKEN) as queue, raw_connection(queue) as peer:
        # Stands in for any bug met while serving a peer: the token check raises.
        monkeypatch.setattr(hmac, "compare_digest", broken)
        await peer.send({"type": "hello", "token": TOKEN})
        reply = await closed_with(peer, "internal_error")
        assert "the server's log has the details" in reply["message"]
        # The server and its other connections go on.
        job_id = await queue.client.submit("echo")
        assert (await queue.client.status(job_id)).state == "pending"
    (logged,) = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert logged.levelno == logging.ERROR
    assert "RuntimeError: a bug in the server" in caplog.text  # with its traceback


async def test_a_worker_with_the_wrong_token_gets_no_jobs_and_says_why(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jobqueue.worker")
    async with open_memory_queue(token=TOKEN) as queue:
        job_id = await queue.client.submit("echo", 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.worker({"echo": echo}, token="wrong").run)
            await trio.sleep(60)
            assert (await queue.client.status(job_id)).state == "pending"
            nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if r.name == "jobqueue.worker"]
    assert any("unauthorized: wrong or missing token" in text for text in warnings), warnings


def _bind_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "jobqueue.server" and record.levelno == logging.WARNING
    ]


@pytest.mark.parametrize(
    ("host", "token", "expected"),
    [
        ("127.0.0.1", None, []),
        ("0.0.0.0", None, ["with no token", "without TLS: jobs cross"]),
        ("0.0.0.0", TOKEN, ["without TLS: jobs and the token cross"]),
    ],
)
async def test_binding_beyond_loopback_without_a_token_warns(
    caplog: pytest.LogCaptureFixture, host: str, token: str | None, expected: list[str]
) -> None:
    caplog.set_level(logging.WARNING, logger="jobqueue.server")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_queue, 0, host=host, token=token))
        nursery.cancel_scope.cancel()
    warnings = _bind_warnings(caplog)
    assert len(warnings) == len(expected), warnings
    for text, fragment in zip(warnings, expected, strict=True):
        assert fragment in text


# -- TLS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost", "memory").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def _round_trip(queue: RunningQueue) -> None:
    await queue.start_worker({"echo": echo}, concurrency=2)
    ids = [await queue.client.submit("echo", {"n": n}) for n in range(5)]
    assert [(await queue.client.wait(i)).result for i in ids] == [{"n": n} for n in range(5)]


async def test_tls_over_real_sockets(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with trio.fail_after(20):
        async with open_test_queue(
            ssl_context=server_context, client_ssl_context=client_context, token=TOKEN
        ) as queue:
            await _round_trip(queue)


async def test_tls_in_virtual_time_with_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    raw_connection: RawOpener,
) -> None:
    async with open_memory_queue(
        ssl_context=server_context, client_ssl_context=client_context, handshake_timeout=5
    ) as queue:
        await _round_trip(queue)
        # A peer that connects and never starts the TLS handshake is dropped.
        async with raw_connection(queue) as silent:
            start = trio.current_time()
            with pytest.raises((EOFError, trio.BrokenResourceError)):
                await silent.read_reply()
            # (No farewell: a TLS stream whose handshake was cut off is broken.)
            assert trio.current_time() - start == pytest.approx(5)


async def test_tls_refusals_are_clear(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    untrusting = ssl.create_default_context()
    trustme.CA().configure_trust(untrusting)
    with trio.fail_after(20):
        async with open_test_queue(
            ssl_context=server_context, client_ssl_context=client_context, handshake_timeout=2
        ) as queue:
            host, port = queue.address
            with pytest.raises(ConnectionLost, match="certificate rejected"):
                async with Client.connect(host, port, ssl_context=untrusting):
                    pass  # pragma: no cover
            # Plain text to a TLS server: the hello is not a TLS handshake.
            with pytest.raises(ConnectionLost):
                async with Client.connect(host, port):
                    pass  # pragma: no cover
            # And the TLS clients are still served.
            assert (await queue.client.stats()).connections == 1


# -- the client's reconnect ----------------------------------------------------------


def flaky(connect: Callable[[], Awaitable[trio.abc.Stream]], failures: list[int]) -> Any:
    """A connector that refuses while ``failures[0]`` > 0, counting down."""

    async def connector() -> trio.abc.Stream:
        if failures[0] > 0:
            failures[0] -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        return await connect()

    return connector


async def test_client_reconnects_with_backoff_after_a_lost_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_queue() as queue:
        assert queue.connector is not None
        failures = [0]
        opened: list[trio.abc.Stream] = []
        refusing = flaky(queue.connector, failures)

        async def connector() -> trio.abc.Stream:
            opened.append(await refusing())
            return opened[-1]

        async with Client.connect("memory", 0, connect=connector, reconnect_timeout=10) as client:
            job_id = await client.submit("echo", 1)
            await opened[-1].aclose()  # the connection is lost
            failures[0] = 4  # the next four connects are refused
            start = trio.current_time()
            assert (await client.status(job_id)).state == "pending"
            # Four pauses of 0.1, 0.2, 0.4, 0.8 s, each jittered to 50-100 %.
            assert 0.75 <= trio.current_time() - start <= 1.5
            assert failures == [0]

            failures[0] = 1000
            await opened[-1].aclose()
            start = trio.current_time()
            with pytest.raises(ConnectionLost, match=r"could not reconnect .* within 10s"):
                await client.stats()
            assert trio.current_time() - start <= 10


async def test_calls_in_flight_on_a_broken_connection_are_lost_and_the_next_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_queue() as queue:
        assert queue.connector is not None
        connect = queue.connector
        gates: list[trio.Event] = []

        class Stalled(trio.abc.Stream):
            """A connection whose replies stall until it is closed."""

            def __init__(self, inner: trio.abc.Stream) -> None:
                self.inner = inner
                self.gate = trio.Event()
                gates.append(self.gate)

            async def send_all(self, data: bytes | bytearray | memoryview) -> None:
                await self.inner.send_all(data)

            async def wait_send_all_might_not_block(self) -> None:
                await self.inner.wait_send_all_might_not_block()

            async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
                data = await self.inner.receive_some(max_bytes)
                if len(gates) == 1 and b"stats" in data:
                    await self.gate.wait()  # the first connection's stats reply stalls
                    await self.inner.aclose()
                    return await self.inner.receive_some(max_bytes)
                return data

            async def aclose(self) -> None:
                self.gate.set()
                await self.inner.aclose()

        async def connector() -> trio.abc.Stream:
            return Stalled(await connect())

        async with Client.connect("memory", 0, connect=connector) as client:
            stats: list[Any] = []
            lost: list[ConnectionLost] = []

            async def stats_in_flight() -> None:
                try:
                    await client.stats()
                except ConnectionLost as exc:
                    lost.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stats_in_flight)
                await trio.testing.wait_all_tasks_blocked()
                # Pipelined behind the first: sent at once, not held for a turn.
                nursery.start_soon(stats_in_flight)
                await trio.testing.wait_all_tasks_blocked()
                assert lost == []
                gates[0].set()  # the connection breaks under both
            # Both were sent, so neither can be known applied or not: both lost.
            assert len(lost) == 2
            assert len(gates) == 1
            stats.append(await client.stats())  # the next call reconnects
            assert len(gates) == 2


async def test_a_file_limit_below_max_connections_is_warned_about(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    resource = pytest.importorskip("resource")  # Unix only, as is the check
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (256, 4096))
    caplog.set_level(logging.WARNING, logger="jobqueue.server")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_queue, 0, max_connections=1024))
        await nursery.start(partial(serve_queue, 0, max_connections=100))
        nursery.cancel_scope.cancel()
    warnings = _bind_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "max_connections is 1024 but this process may open only 256 files" in warnings[0]


async def test_a_client_waits_for_room_on_a_full_server_when_it_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_queue() as queue:
        assert queue.connector is not None
        connect = queue.connector
        full = [0]
        held: list[trio.abc.Stream] = []

        opened: list[trio.abc.Stream] = []

        async def connector() -> trio.abc.Stream:
            if full[0] == 0:
                opened.append(await connect())
                return opened[-1]
            full[0] -= 1
            # What a full server says to one connection too many.
            client_end, server_end = trio.testing.memory_stream_pair()
            held.append(server_end)
            await server_end.send_all(
                b'{"type":"error","code":"too_many_connections","message":"full"}\n'
            )
            return client_end

        async with Client.connect("memory", 0, connect=connector) as client:
            job_id = await client.submit("echo", 1)
            await opened[-1].aclose()  # lost: the next call reconnects
            full[0] = 3
            start = trio.current_time()
            assert (await client.status(job_id)).state == "pending"
            assert full == [0]
            assert trio.current_time() - start >= 0.35  # three pauses: 0.05+ 0.1+ 0.2+

            # A refused token is not worth waiting for.
            async with Client.connect("memory", 0, connect=connector) as other:
                await opened[-1].aclose()
                held.clear()

                async def refuse_token() -> trio.abc.Stream:
                    client_end, server_end = trio.testing.memory_stream_pair()
                    held.append(server_end)
                    await server_end.send_all(
                        b'{"type":"error","code":"unauthorized","message":"no"}\n'
                    )
                    return client_end

                connect = refuse_token
                start = trio.current_time()
                with pytest.raises(RequestError) as refused:
                    await other.stats()
                assert refused.value.code == "unauthorized"
                assert trio.current_time() == start
