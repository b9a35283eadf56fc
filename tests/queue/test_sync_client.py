"""The blocking client against a real queue over TCP (and a fake one for bad replies)."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest

from jobqueue import ConnectionLost, RequestError
from jobqueue.sync import Client, ClientClosed, RequestTimeout
from tests import helpers as support

TOKEN = "s3cret-token"


@pytest.fixture
def queue() -> Iterator[support.QueueThread]:
    with support.QueueThread() as running:
        yield running


@pytest.fixture
def client(queue: support.QueueThread) -> Iterator[Client]:
    with Client.connect(*queue.address, name="sync-test", timeout=5) as opened:
        yield opened


def test_every_method(client: Client) -> None:
    job = client.submit("echo", {"x": 1})
    assert client.wait(job, timeout=5).result == {"x": 1}
    assert client.status(job).state == "completed"
    many = client.submit_many([{"name": "echo", "payload": n} for n in range(3)])
    assert [client.wait(i, timeout=5).result for i in many] == [0, 1, 2]
    assert client.submit("echo", key="k1") == client.submit("echo", key="k1")

    failed = client.submit("fail", "boom", max_attempts=1)
    info = client.wait(failed, timeout=5)
    assert info.state == "failed"
    assert info.error is not None
    assert "boom" in info.error["message"]
    assert failed in [i.job_id for i in client.list_jobs("failed").jobs]
    assert client.retry(failed).state in {"pending", "running", "failed"}

    later = client.submit("echo", delay=60)
    assert client.cancel(later).state == "cancelled"
    client.delete(later)
    with pytest.raises(RequestError) as refused:
        client.status(later)
    assert refused.value.code == "unknown_job"
    assert client.stats().totals["submitted"] >= 7

    # Bad input is refused before anything is sent, and the client goes on.
    with pytest.raises(ValueError, match="job 0"):
        client.submit_many([{"payload": 1}])
    with pytest.raises(TypeError):
        client.submit("echo", object())
    with pytest.raises(RequestError, match="bad_request"):
        client.list_jobs("nonsense")
    assert client.status(job).result == {"x": 1}


def test_threads_share_one_client_and_each_gets_its_own_reply(client: Client) -> None:
    results: dict[int, object] = {}

    def one(index: int) -> None:
        payload = {"thread": index, "text": f"payload-{index}"}
        job = client.submit("echo", payload)
        assert client.status(job).job_id == job
        results[index] = client.wait(job, timeout=10).result

    assert not support.run_threads(one, 64)
    assert results == {i: {"thread": i, "text": f"payload-{i}"} for i in range(64)}

    # Hundreds of calls from the same threads, each checked against its own.
    jobs: dict[int, str] = {}
    assert not support.run_threads(
        lambda i: jobs.__setitem__(i, client.submit("echo", i, key=f"key-{i}")), 32
    )

    def check(index: int) -> None:
        for round_ in range(10):
            assert client.submit("echo", index, key=f"key-{index}") == jobs[index], round_
            assert client.status(jobs[index]).job_id == jobs[index]

    assert not support.run_threads(check, 32)


def test_a_blocked_wait_does_not_hold_up_other_threads(client: Client) -> None:
    stuck = client.submit("echo", queue="nobody-serves-this")
    outcome: list[BaseException] = []

    def wait_for_it() -> None:
        try:
            client.wait(stuck, timeout=1.5)
        except RequestTimeout as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=wait_for_it)
    started = time.monotonic()
    waiting.start()
    for n in range(20):
        job = client.submit("echo", n, timeout=2)
        assert client.wait(job, timeout=2).result == n
    assert time.monotonic() - started < 1.2
    assert waiting.is_alive()  # still waiting, on its own connection
    waiting.join(5)
    assert len(outcome) == 1


def test_wait_timeout_is_a_timeout_error_with_the_state(client: Client) -> None:
    job = client.submit("echo", queue="nobody-serves-this")
    started = time.monotonic()
    with pytest.raises(TimeoutError) as timed_out:
        client.wait(job, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 3
    assert isinstance(timed_out.value, RequestTimeout)
    assert timed_out.value.info is not None
    assert timed_out.value.info.state == "pending"
    assert client.status(job).state == "pending"  # and the client goes on


def test_a_late_reply_times_out_and_is_never_handed_to_the_next_call() -> None:
    # "a" is answered late, then "b": the late reply must not become b's.
    with (
        support.FakeServer(support.late_for_a) as fake,
        Client.connect(*fake.address, timeout=2) as client,
    ):
        with pytest.raises(RequestTimeout, match="may or may not"):
            client.status("a", timeout=0.2)
        assert client.status("b").job_id == "b"


def test_reconnects_after_a_server_restart(queue: support.QueueThread) -> None:
    port = queue.address[1]
    with Client.connect(*queue.address, timeout=5, reconnect_timeout=5) as client:
        stuck = client.submit("echo", queue="nobody-serves-this")
        lost: list[BaseException] = []

        def wait_for_it() -> None:
            try:
                client.wait(stuck)
            except BaseException as exc:
                lost.append(exc)

        before = client.stats().connections
        waiting = threading.Thread(target=wait_for_it)
        waiting.start()
        deadline = time.monotonic() + 5
        while client.stats().connections == before:  # until the wait's own connection is in
            assert time.monotonic() < deadline, "the wait never connected"
        queue.stop()  # mid-call
        waiting.join(5)
        assert len(lost) == 1
        assert isinstance(lost[0], ConnectionLost)
        with support.QueueThread(port):
            job = client.submit("echo", "again")
            assert client.wait(job, timeout=5).result == "again"


def test_a_request_the_server_never_read_is_sent_again() -> None:
    # The first connection answers with the idle farewell (the server
    # closed before reading the request); the second with the reply.
    idle = b'{"type":"error","code":"idle_timeout","message":"idle"}\n'
    submitted = b'{"type":"job_submitted","job_id":"j-1"}\n'
    with (
        support.FakeServer(lambda number, line: idle if number == 0 else submitted) as fake,
        Client.connect(*fake.address, timeout=2) as client,
    ):
        assert client.submit("echo") == "j-1"
        assert [line for line in fake.requests if b"submit_job" in line] == [
            b'{"type":"submit_job","name":"echo","payload":null}'
        ] * 2


def test_a_send_that_runs_out_of_time_is_a_timeout_and_is_not_sent_again() -> None:
    # The server reads nothing and its buffer is small: 16 MB cannot all go
    # out within the timeout. The request was not sent whole, so it cannot
    # have been applied, but the call's time is spent: it was sent again on a
    # new connection (RequestNotSent), and a shorter request might have gone
    # out whole there, past the call's deadline.
    with (
        support.DeafServer(receive_buffer=4096) as deaf,
        Client.connect(*deaf.address, timeout=5) as client,
    ):
        started = time.monotonic()
        with pytest.raises(RequestTimeout, match=r"could not send the request .* within 0\.5s"):
            client.submit("echo", "x" * 16_000_000, timeout=0.5)
        assert time.monotonic() - started < 3
        assert deaf.connections == 1


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"this is not json\n", "bad reply"),
        (b'{"type":"ok"}\n', "protocol mismatch"),
        (b'{"type":"job_submitted"}\n', "bad reply"),
    ],
)
def test_a_bad_reply_is_a_lost_connection(line: bytes, error: str) -> None:
    with (
        support.FakeServer(support.scripted(line)) as fake,
        Client.connect(*fake.address, timeout=2) as client,
        pytest.raises(ConnectionLost, match=error),
    ):
        client.submit("echo")


def test_token_and_its_refusals() -> None:
    with support.QueueThread(token=TOKEN, worker=False) as queue:
        with Client.connect(*queue.address, token=TOKEN) as client:
            assert client.stats().connections == 1
        for token in ("wrong", None):
            with pytest.raises(RequestError) as refused:
                Client.connect(*queue.address, token=token, timeout=2)
            assert refused.value.code == "unauthorized"


def test_tls_and_its_refusals() -> None:
    server_context, client_context = support.tls_contexts()
    with support.QueueThread(
        ssl_context=server_context, worker_ssl_context=client_context, token=TOKEN
    ) as queue:
        with Client.connect(*queue.address, ssl_context=client_context, token=TOKEN) as client:
            job = client.submit("echo", "secret")
            assert client.wait(job, timeout=5).result == "secret"
        untrusting = ssl.create_default_context()
        with pytest.raises(ConnectionLost, match="certificate rejected"):
            Client.connect(*queue.address, ssl_context=untrusting, timeout=2)
        with pytest.raises(ConnectionLost, match="if the server uses TLS"):
            Client.connect(*queue.address, token=TOKEN, timeout=2)


def test_a_server_that_never_answers_the_hello_is_not_connected_to() -> None:
    # Nothing accepts on this socket, but the kernel completes the TCP
    # handshake: a port that takes connections and says nothing.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match=r"cannot connect .* no answer within 0\.5s"):
            Client.connect(*silent.getsockname()[:2], timeout=0.5)
        assert time.monotonic() - started < 3


def test_no_server_and_a_closed_client(queue: support.QueueThread) -> None:
    port = support.free_port()
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match="cannot connect"):
        Client.connect("127.0.0.1", port, timeout=2)
    assert time.monotonic() - started < 2
    client = Client.connect(*queue.address)
    client.close()
    with pytest.raises(ClientClosed):
        client.stats()


def test_close_ends_the_calls_other_threads_are_in() -> None:
    # A wait holds its connection until the job ends (this one never does),
    # renewing its request once a minute: close() must end it now.
    asked = threading.Event()

    def never_ends(_number: int, _line: bytes) -> bytes:
        asked.set()
        return b""

    with support.FakeServer(never_ends) as fake:
        client = Client.connect(*fake.address, timeout=5)
        outcome: list[BaseException] = []

        def wait_for_it() -> None:
            try:
                client.wait("j-1")
            except BaseException as exc:
                outcome.append(exc)

        waiting = threading.Thread(target=wait_for_it)
        waiting.start()
        assert asked.wait(support.LIMIT)  # the wait_job is sent and held
        client.close()
        waiting.join(support.LIMIT)
        assert not waiting.is_alive(), "close() left a thread blocked in wait()"
        assert len(outcome) == 1
        assert isinstance(outcome[0], ConnectionLost)
        assert "the client was closed" in str(outcome[0])
        with pytest.raises(ClientClosed):
            client.wait("j-1")


def test_close_ends_a_call_waiting_to_reconnect() -> None:
    retrying = threading.Event()
    with support.on_client_log("retrying", retrying.set):
        with support.FakeServer(support.scripted()) as fake:
            client = Client.connect(*fake.address, timeout=30, reconnect_timeout=30)
        # The server is gone: the next call tries to reconnect for 30 s.
        outcome: list[BaseException] = []

        def ask() -> None:
            try:
                client.stats()
            except BaseException as exc:
                outcome.append(exc)

        asking = threading.Thread(target=ask)
        asking.start()
        assert retrying.wait(support.LIMIT)  # its first attempt failed
        client.close()
        asking.join(support.LIMIT)
        assert not asking.is_alive(), "close() left a thread reconnecting"
        assert [type(exc) for exc in outcome] == [ClientClosed]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_forked_child_uses_connections_of_its_own() -> None:
    # A client made before a fork (module level, under gunicorn --preload)
    # is copied into the child with its idle connections. Replies are
    # matched to requests by position, so two processes reading one
    # socket take each other's replies: the child must leave the parent's
    # connections to the parent (without ending them) and open its own.
    seen: list[tuple[int, bytes]] = []

    def answer(number: int, line: bytes) -> bytes:
        seen.append((number, line))
        return support.status_of(line)

    with support.FakeServer(answer) as fake, Client.connect(*fake.address, timeout=5) as client:
        assert client.status("parent").job_id == "parent"  # its connection is idle now
        pid = os.fork()
        if pid == 0:  # the child reports by its exit status, and never returns to pytest
            code = 1
            try:
                code = 0 if client.status("child").job_id == "child" else 2
                client.close()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert client.status("parent").job_id == "parent"
    connections = [(number, line.split(b'"job_id":')[1]) for number, line in seen]
    assert connections == [(0, b'"parent"}'), (1, b'"child"}'), (0, b'"parent"}')]


def test_the_wsgi_example_runs_a_job_per_request(queue: support.QueueThread) -> None:
    with support.example_app("wsgi_app", queue.address) as get:
        first = get("/?numbers=1,2,3")
        assert (first["state"], first["result"]) == ("completed", 6)
        assert get("/?numbers=10,5")["result"] == 15
        assert get("/?numbers=x") == {"status": 400, "error": "numbers must be like 1,2,3"}
