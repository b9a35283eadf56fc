"""The asyncio client against a real queue over TCP (and a fake one for bad replies).

The suite runs async tests under trio, so each test here is a plain
function running its own ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from jobqueue import ConnectionLost, RequestError
from jobqueue.asyncio import MAX_SPARE_CONNECTIONS, Client, ClientClosed, RequestTimeout
from tests import helpers as support

TOKEN = "s3cret-token"


@pytest.fixture
def queue() -> Iterator[support.QueueThread]:
    with support.QueueThread() as running:
        yield running


def with_client(
    address: tuple[str, int], body: Callable[[Client], Awaitable[None]], **options: object
) -> None:
    """Run ``body(client)`` in a fresh event loop, bounded in time."""

    async def main() -> None:
        async with Client.connect(*address, timeout=5, **options) as client:  # type: ignore[arg-type]
            await body(client)

    asyncio.run(asyncio.wait_for(main(), 20))


def test_every_method(queue: support.QueueThread) -> None:
    async def body(client: Client) -> None:
        job = await client.submit("echo", {"x": 1})
        assert (await client.wait(job, timeout=5)).result == {"x": 1}
        assert (await client.status(job)).state == "completed"
        many = await client.submit_many([{"name": "echo", "payload": n} for n in range(3)])
        assert [(await client.wait(i, timeout=5)).result for i in many] == [0, 1, 2]
        failed = await client.submit("fail", "boom", max_attempts=1)
        assert (await client.wait(failed, timeout=5)).state == "failed"
        assert failed in [i.job_id for i in (await client.list_jobs("failed")).jobs]
        assert (await client.retry(failed)).state in {"pending", "running", "failed"}
        later = await client.submit("echo", delay=60)
        assert (await client.cancel(later)).state == "cancelled"
        await client.delete(later)
        with pytest.raises(RequestError, match="unknown_job"):
            await client.status(later)
        assert (await client.stats()).totals["submitted"] == 6
        with pytest.raises(ValueError, match="job 0"):
            await client.submit_many([{"payload": 1}])
        with pytest.raises(TypeError):
            await client.submit("echo", object())
        assert (await client.status(job)).result == {"x": 1}

    with_client(queue.address, body)


def test_hundreds_of_tasks_share_one_client_and_each_gets_its_own_reply(
    queue: support.QueueThread,
) -> None:
    async def body(client: Client) -> None:
        payloads = [{"task": n, "text": f"payload-{n}"} for n in range(300)]
        ids = await asyncio.gather(*(client.submit("echo", p) for p in payloads))
        assert len(set(ids)) == 300
        infos = await asyncio.gather(*(client.status(i) for i in ids))
        assert [info.job_id for info in infos] == ids
        ends = await asyncio.gather(*(client.wait(i, timeout=10) for i in ids[:40]))
        assert [info.result for info in ends] == payloads[:40]
        # Each wait had a connection of its own; the client keeps a few as
        # spares and closes the rest. Once the server has seen those closes,
        # what is left is the worker's 8, the shared one and the spares.
        # (Asking at once raced the server's readers to the closes.)
        deadline = time.monotonic() + 5
        while (connections := (await client.stats()).connections) > 8 + 1 + MAX_SPARE_CONNECTIONS:
            assert time.monotonic() < deadline, connections
            await asyncio.sleep(0.01)

    with_client(queue.address, body)


def test_a_cancelled_call_leaves_the_connection_usable(queue: support.QueueThread) -> None:
    async def body(client: Client) -> None:
        ids = [await client.submit("echo", n, delay=60) for n in range(2)]
        connections = (await client.stats()).connections
        for _ in range(50):
            first = asyncio.ensure_future(client.status(ids[0]))
            await asyncio.sleep(0)  # it has sent its request
            first.cancel()
            # Its reply comes first, and must not be taken for this one.
            assert (await client.status(ids[1])).job_id == ids[1]
        # The same connection all along: none was closed and replaced.
        assert (await client.stats()).connections == connections
        stuck = asyncio.ensure_future(client.wait(ids[0]))
        await asyncio.sleep(0.1)
        stuck.cancel()
        assert (await client.status(ids[0])).job_id == ids[0]
        with pytest.raises(RequestTimeout) as timed_out:  # a new wait is answered as usual
            await client.wait(ids[1], timeout=0.1)
        assert timed_out.value.info is not None
        assert timed_out.value.info.job_id == ids[1]

    with_client(queue.address, body)


def test_a_blocked_wait_does_not_hold_up_other_tasks(queue: support.QueueThread) -> None:
    async def body(client: Client) -> None:
        stuck = await client.submit("echo", queue="nobody-serves-this")
        waiting = asyncio.ensure_future(client.wait(stuck, timeout=1.5))
        started = time.monotonic()
        for n in range(20):
            job = await client.submit("echo", n, timeout=2)
            assert (await client.wait(job, timeout=2)).result == n
        assert time.monotonic() - started < 1.2
        assert not waiting.done()
        with pytest.raises(RequestTimeout) as timed_out:
            await waiting
        assert isinstance(timed_out.value, TimeoutError)
        assert timed_out.value.info is not None
        assert timed_out.value.info.state == "pending"

    with_client(queue.address, body)


def test_a_late_reply_times_out_and_is_never_handed_to_the_next_call() -> None:

    async def body(client: Client) -> None:
        with pytest.raises(RequestTimeout, match="may or may not"):
            await client.status("a", timeout=0.2)
        assert (await client.status("b")).job_id == "b"

    with support.FakeServer(support.late_for_a) as fake:
        with_client(fake.address, body)


def test_closing_does_not_wait_for_a_server_that_reads_nothing() -> None:
    # 16 MB is more than the kernel buffers on both ends take, so requests
    # stay unsent in the client, which must not wait to flush them to close.
    async def main(address: tuple[str, int]) -> None:
        client = await Client.connect(*address, timeout=5)
        calls = [asyncio.wait_for(client.submit("echo", "x" * 1_000_000), 0.5) for _ in range(16)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(outcome, asyncio.TimeoutError) for outcome in outcomes), outcomes
        await asyncio.wait_for(client.aclose(), 5)
        with pytest.raises(ClientClosed):
            await client.stats()

    with support.DeafServer() as deaf:
        asyncio.run(asyncio.wait_for(main(deaf.address), 20))


def test_calls_time_out_while_a_server_that_reads_nothing_fills_the_socket() -> None:
    # 16 MB is more than the kernel buffers on both ends take, so the
    # client's writes back up and later calls wait for the socket to drain,
    # which it never does: their timeout must still end them.
    async def body(client: Client) -> None:
        started = time.monotonic()
        calls = [client.submit("echo", "x" * 1_000_000, timeout=0.5) for _ in range(16)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert [type(outcome) for outcome in outcomes] == [RequestTimeout] * 16
        assert time.monotonic() - started < 5

    with support.DeafServer() as deaf:
        with_client(deaf.address, body)


def test_reconnects_after_a_server_restart(queue: support.QueueThread) -> None:
    port = queue.address[1]

    async def body(client: Client) -> None:
        stuck = await client.submit("echo", queue="nobody-serves-this")
        before = (await client.stats()).connections
        waiting = asyncio.ensure_future(client.wait(stuck))
        for _ in range(500):  # until the wait's own connection is in
            if (await client.stats()).connections > before:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the wait never connected")
        await asyncio.to_thread(queue.stop)  # mid-call
        with pytest.raises(ConnectionLost):
            await waiting
        with support.QueueThread(port):
            job = await client.submit("echo", "again")
            assert (await client.wait(job, timeout=5)).result == "again"

    with_client(queue.address, body, reconnect_timeout=5)


def test_a_restart_the_event_loop_has_not_seen_yet_is_noticed_before_sending(
    queue: support.QueueThread,
) -> None:
    port = queue.address[1]

    async def body(client: Client) -> None:
        await client.stats()
        # Blocking, so the loop does not run: the server's close waits
        # unread in the socket, as it does after any stretch of blocking
        # code in a task.
        queue.stop()
        with support.QueueThread(port, worker=False):
            assert (await client.stats()).connections == 1  # on a new connection

    with_client(queue.address, body, reconnect_timeout=5)


def test_a_request_the_server_never_read_is_sent_again() -> None:
    idle = b'{"type":"error","code":"idle_timeout","message":"idle"}\n'
    submitted = b'{"type":"job_submitted","job_id":"j-1"}\n'

    async def body(client: Client) -> None:
        assert await client.submit("echo") == "j-1"

    with support.FakeServer(lambda number, line: idle if number == 0 else submitted) as fake:
        with_client(fake.address, body)
        assert [line for line in fake.requests if b"submit_job" in line] == [
            b'{"type":"submit_job","name":"echo","payload":null}'
        ] * 2


def test_requests_pipelined_behind_an_idle_farewell_are_sent_again() -> None:
    # The server closes a connection as idle only with nothing outstanding
    # (protocol §1): every request on it still unanswered came after that
    # and was never read, not only the one the farewell answers.
    idle = b'{"type":"error","code":"idle_timeout","message":"idle"}\n'

    def answer(number: int, line: bytes) -> bytes:
        if number == 0:
            return idle if b'"payload":0' in line else b""
        return b'{"type":"job_submitted","job_id":"j-%d"}\n' % json.loads(line)["payload"]

    async def body(client: Client) -> None:
        ids = await asyncio.gather(*(client.submit("echo", n) for n in range(5)))
        assert ids == [f"j-{n}" for n in range(5)]

    with support.FakeServer(answer) as fake:
        with_client(fake.address, body)
        sent = [line for line in fake.requests if b"submit_job" in line]
        once = [b'{"type":"submit_job","name":"echo","payload":%d}' % n for n in range(5)]
        assert sorted(sent) == sorted(once * 2)


@pytest.mark.parametrize(
    ("line", "error"),
    [(b"this is not json\n", "bad reply"), (b'{"type":"ok"}\n', "protocol mismatch")],
)
def test_a_bad_reply_is_a_lost_connection(line: bytes, error: str) -> None:
    async def body(client: Client) -> None:
        with pytest.raises(ConnectionLost, match=error):
            await client.submit("echo")

    with support.FakeServer(support.scripted(line)) as fake:
        with_client(fake.address, body)


def test_token_tls_and_their_refusals() -> None:
    server_context, client_context = support.tls_contexts()

    async def body(client: Client) -> None:
        job = await client.submit("echo", "secret")
        assert (await client.wait(job, timeout=5)).result == "secret"

    async def refused(**options: object) -> BaseException:
        with pytest.raises((ConnectionLost, RequestError)) as failed:
            await Client.connect(*tls.address, timeout=2, **options)  # type: ignore[arg-type]
        return failed.value

    with support.QueueThread(
        ssl_context=server_context, worker_ssl_context=client_context, token=TOKEN
    ) as tls:
        with_client(tls.address, body, ssl_context=client_context, token=TOKEN)
        untrusting = ssl.create_default_context()
        error = asyncio.run(refused(ssl_context=untrusting))
        assert "certificate rejected" in str(error)
        error = asyncio.run(refused(token=TOKEN))
        assert "if the server uses TLS" in str(error)
        error = asyncio.run(refused(ssl_context=client_context, token="wrong"))
        assert isinstance(error, RequestError)
        assert error.code == "unauthorized"


def test_a_server_that_never_answers_the_hello_is_not_connected_to() -> None:
    # Nothing accepts on this socket, but the kernel completes the TCP
    # handshake: a port that takes connections and says nothing.
    async def main(address: tuple[str, int]) -> None:
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match=r"cannot connect .* no answer within 0\.5s"):
            await Client.connect(*address, timeout=0.5)
        assert time.monotonic() - started < 3

    with socket.create_server(("127.0.0.1", 0)) as silent:
        asyncio.run(asyncio.wait_for(main(silent.getsockname()[:2]), 20))


def test_no_server_and_a_closed_client(queue: support.QueueThread) -> None:
    port = support.free_port()

    async def main() -> None:
        with pytest.raises(ConnectionLost, match="cannot connect"):
            await Client.connect("127.0.0.1", port, timeout=2)
        client = await Client.connect(*queue.address)
        await client.aclose()
        with pytest.raises(ClientClosed):
            await client.stats()

    asyncio.run(asyncio.wait_for(main(), 20))


async def orphaned_client() -> Client:
    """A client whose server broke its connection (an ``internal_error``) and went away."""
    farewell = b'{"type":"error","code":"internal_error","message":"a bug"}\n'
    with support.FakeServer(support.scripted(farewell)) as fake:
        client = await Client.connect(*fake.address, timeout=30, reconnect_timeout=30)
        with pytest.raises(RequestError, match="internal_error"):
            await client.stats()  # and the server closes the connection
    return client


@contextlib.contextmanager
def first_retry() -> Iterator[asyncio.Event]:
    """An event set when a client first fails to reconnect and says it will retry."""
    retrying = asyncio.Event()
    with support.on_client_log("retrying", retrying.set):
        yield retrying


def test_closing_ends_a_call_waiting_to_reconnect() -> None:
    async def main() -> None:
        client = await orphaned_client()
        with first_retry() as retrying:
            asking = asyncio.ensure_future(client.stats())  # reconnects for 30 s
            await asyncio.wait_for(retrying.wait(), support.LIMIT)
            await client.aclose()
            with pytest.raises(ClientClosed):
                await asyncio.wait_for(asking, support.LIMIT)

    asyncio.run(asyncio.wait_for(main(), 40))


def test_a_call_waiting_for_another_calls_reconnect_keeps_its_own_timeout() -> None:
    async def main() -> None:
        client = await orphaned_client()
        with first_retry() as retrying:
            patient = asyncio.ensure_future(client.stats(timeout=30))  # reconnects for 30 s
            await asyncio.wait_for(retrying.wait(), support.LIMIT)
            started = time.monotonic()
            with pytest.raises(ConnectionLost, match="could not reconnect"):
                await asyncio.wait_for(client.stats(timeout=0.5), support.LIMIT)
            assert time.monotonic() - started < 3
            assert not patient.done()
            await client.aclose()
            with pytest.raises(ClientClosed):
                await patient

    asyncio.run(asyncio.wait_for(main(), 40))


def test_the_asyncio_example_runs_a_job_per_request(queue: support.QueueThread) -> None:
    with support.example_app("asyncio_app", queue.address) as get:
        first = get("/?numbers=1,2,3")
        assert (first["state"], first["result"]) == ("completed", 6)
        assert get("/?numbers=10,5")["result"] == 15
        assert get("/?numbers=x") == {"status": 400, "error": "numbers must be like 1,2,3"}
