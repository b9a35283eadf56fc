"""The Prometheus endpoint over a real server: values, format, and bad HTTP input.

The output is read by ``prometheus_client``'s own text parser, and every
figure is checked against a scenario whose counts are known. Bad input
(garbage, a huge head, a slow client, a flood of connections, other methods
and paths) is sent while a client keeps submitting: its requests must keep
being answered, and the endpoint must keep serving.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from jobqueue import Client, _metrics_http
from jobqueue._limits import MAX_LISTED
from jobqueue._metrics import BUCKETS, MetricsSnapshot, render
from jobqueue.testing import RunningQueue, open_test_queue
from tests.helpers import free_port, open_raw_connection, stats_when, take

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@asynccontextmanager
async def metered_queue(**options: Any) -> AsyncIterator[tuple[RunningQueue, tuple[str, int]]]:
    port = free_port()
    async with open_test_queue(metrics=f"127.0.0.1:{port}", **options) as queue:
        yield queue, ("127.0.0.1", port)


async def http(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data`` and read until the server closes."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(data)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


async def scrape(address: tuple[str, int]) -> tuple[bytes, str]:
    """GET /metrics: the response head and the body."""
    response = await http(
        address, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    head, _, body = response.partition(b"\r\n\r\n")
    return head, body.decode()


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


async def report(conn: Any, kind: str, job: dict[str, Any], **fields: Any) -> None:
    message = {"type": kind, "job_id": job["job_id"], "attempt": job["attempt"], **fields}
    reply = await conn.request(message)
    assert reply["type"] == "ok", reply


async def test_figures_match_a_scenario_with_known_counts() -> None:
    async with metered_queue(retry_delay=600.0) as (running, address):
        client = running.client
        ids = [await client.submit("work", i, queue="a") for i in range(5)]
        ids.append(await client.submit("work", 5, queue="a", max_attempts=1))
        for i in range(2):
            await client.submit("work", i, queue="b")
        await client.submit("work", None, queue="b", key="once")
        await client.submit("work", None, queue="b", key="once")  # a duplicate: not counted
        await client.cancel(ids[4])
        async with open_raw_connection(running) as worker:
            taken = [await take(worker, "a") for _ in range(4)]  # ids 0, 1, 2, 3
            await report(worker, "job_complete", taken[0], result=1)
            await report(worker, "job_complete", taken[1], result=2)
            await report(worker, "job_failed", taken[2], error={"type": "E", "message": "x"})
            last = await take(worker, "a")  # ids[5], one attempt only
            await report(worker, "job_failed", last, error={"type": "E", "message": "x"})
        # taken[3] was lost with the connection: back in line (reassigned).
        await stats_when(client, lambda s: s.totals["reassigned"] == 1)
        async with (
            open_raw_connection(running) as holder,
            open_raw_connection(running) as waiter,
        ):
            await take(holder, "b")
            await waiter.send({"type": "request_job", "queues": ["c"], "wait": 60})
            await stats_when(client, lambda s: s.waiting_workers == 1)
            head, text = await scrape(address)

    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-type: text/plain; version=0.0.4; charset=utf-8" in head.lower()
    found = samples(text)
    jobs = {
        (name, state): value(found, "jobqueue_jobs", queue=name, state=state)
        for name in ("a", "b")
        for state in ("pending", "scheduled", "running")
    }
    assert jobs == {
        ("a", "pending"): 1,  # the lost run's job
        ("a", "scheduled"): 1,  # the retry, backing off
        ("a", "running"): 0,
        ("b", "pending"): 2,
        ("b", "scheduled"): 0,
        ("b", "running"): 1,
    }
    finished = {
        s: value(found, "jobqueue_finished_jobs", state=s)
        for s in ("completed", "failed", "cancelled")
    }
    assert finished == {"completed": 2, "failed": 1, "cancelled": 1}
    totals = {
        name: value(found, f"jobqueue_{name}_total")
        for name in (
            "jobs_submitted", "jobs_completed", "jobs_failed", "jobs_retried",
            "jobs_reassigned", "jobs_cancelled", "leases_expired",
        )
    }  # fmt: skip
    assert totals == {
        "jobs_submitted": 9,
        "jobs_completed": 2,
        "jobs_failed": 1,
        "jobs_retried": 1,
        "jobs_reassigned": 1,
        "jobs_cancelled": 1,
        "leases_expired": 0,
    }
    # The test's client, the holder and the waiter.
    assert value(found, "jobqueue_connections") == 3
    assert value(found, "jobqueue_workers") == 2
    assert value(found, "jobqueue_workers_waiting") == 1
    # Waits: five first starts in a (the lost job's second start is not
    # one), one in b. Runs: four reported outcomes in a, none yet in b.
    for name, line, count in (
        ("jobqueue_job_wait_seconds", "a", 5),
        ("jobqueue_job_wait_seconds", "b", 1),
        ("jobqueue_job_run_seconds", "a", 4),
        ("jobqueue_job_run_seconds", "b", 0),
    ):
        assert value(found, f"{name}_count", queue=line) == count
        assert value(found, f"{name}_bucket", queue=line, le="+Inf") == count
        assert value(found, f"{name}_sum", queue=line) >= 0
        buckets = [value(found, f"{name}_bucket", queue=line, le=str(b)) for b in BUCKETS]
        assert buckets == sorted(buckets)  # cumulative
    # Every family has its HELP and TYPE, and the names follow the conventions.
    families = list(text_string_to_metric_families(text))
    assert all(f.name.startswith("jobqueue_") and f.documentation for f in families)
    kinds = {f.name: f.type for f in families}
    assert kinds["jobqueue_jobs_submitted"] == "counter"
    assert kinds["jobqueue_job_wait_seconds"] == "histogram"
    assert kinds["jobqueue_jobs"] == "gauge"
    assert kinds["jobqueue_queues"] == "gauge"
    assert value(found, "jobqueue_queues") == 2  # a and b; c has had no job


async def test_the_page_shows_the_bytes_the_payloads_hold() -> None:
    async with metered_queue() as (queue, address):
        client = queue.client
        done = await client.submit("echo", "gone")
        await client.submit("echo", {"k": 1}, queue="a")  # {"k":1}: 7 bytes
        await client.submit("echo", 12345)  # a number counts nothing
        await client.submit("later", "xxxx", delay=600)  # "xxxx": 6 bytes, scheduled
        await client.cancel(done)  # finished: no longer counted
        _, text = await scrape(address)
    found = samples(text)
    assert value(found, "jobqueue_payload_bytes") == 7 + 6
    # The cancelled job's payload ("gone": 6 bytes) is a finished job's now.
    assert value(found, "jobqueue_finished_bytes") == 6
    # The bounds that are on, beside them, for alerts to divide by.
    assert value(found, "jobqueue_max_payload_bytes") == 1 << 30
    assert value(found, "jobqueue_finished_retention_bytes") == 1 << 30
    assert value(found, "jobqueue_finished_retention") == 100_000
    assert value(found, "jobqueue_max_pending") == 1_000_000


async def test_a_bound_that_is_off_has_no_gauge() -> None:
    async with metered_queue(max_pending=None, finished_retention_bytes=None) as (_, address):
        _, text = await scrape(address)
    names = {name for name, _labels in samples(text)}
    assert {"jobqueue_max_payload_bytes", "jobqueue_finished_retention"} <= names
    assert not names & {"jobqueue_max_pending", "jobqueue_finished_retention_bytes"}


async def test_the_page_lists_the_busiest_queues_and_counts_them_all() -> None:
    # A client that names a queue per job: MAX_LISTED queues of one job each,
    # then five of two jobs each whose names sort last (scheduled jobs are
    # unfinished jobs too).
    one_each: list[dict[str, Any]] = [{"name": "n", "queue": f"q{i:04}"} for i in range(MAX_LISTED)]
    two_each = [{"name": "n", "queue": f"zz{i}", "delay": 600} for i in range(5) for _ in "ab"]
    async with metered_queue() as (queue, address):
        await queue.client.submit_many(one_each + two_each)
        head, text = await scrape(address)
    assert head.startswith(b"HTTP/1.1 200")
    # Only the series looked at are parsed: the whole page takes half a second.
    wanted = (
        "jobqueue_jobs{",
        "jobqueue_queues ",
        "jobqueue_job_wait_seconds_count{",
        "jobqueue_job_run_seconds_count{",
    )
    found = samples("".join(line for line in text.splitlines(True) if line.startswith(wanted)))

    def queues(metric: str) -> set[str]:
        return {dict(labels)["queue"] for name, labels in found if name == metric}

    busy = {f"zz{i}" for i in range(5)}
    # The busiest five, then by name: the last five of the one-job queues are left out.
    assert queues("jobqueue_jobs") == busy | {f"q{i:04}" for i in range(MAX_LISTED - 5)}
    assert value(found, "jobqueue_jobs", queue="zz4", state="scheduled") == 2
    assert value(found, "jobqueue_queues") == MAX_LISTED + 5
    # The histograms are kept for the queues used last: the first five are gone.
    used_last = busy | {f"q{i:04}" for i in range(5, MAX_LISTED)}
    assert queues("jobqueue_job_wait_seconds_count") == used_last
    assert queues("jobqueue_job_run_seconds_count") == used_last


async def test_head_and_keep_alive() -> None:
    async with metered_queue() as (_, address):
        response = await http(
            address,
            b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    assert response.count(b"HTTP/1.1 200 OK") == 2
    assert response.count(b"# TYPE jobqueue_jobs gauge") == 1


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", b"405"),
        (b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404"),
        (b"GET /metricsX HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404"),
        (b"\x00\xff garbage \r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\n" + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n", b"431"),
    ],
)
async def test_refusals(request_bytes: bytes, status: bytes) -> None:
    async with metered_queue() as (queue, address):
        response = await http(address, request_bytes)
        assert response.startswith(b"HTTP/1.1 " + status), response[:100]
        # The queue is untouched and the endpoint still serves.
        assert await queue.client.submit("after", None)
        head, _ = await scrape(address)
        assert head.startswith(b"HTTP/1.1 200")


async def test_a_transfer_coding_other_than_chunked_is_not_implemented() -> None:
    # RFC 9112 §6.1: a server that receives a transfer coding it does not
    # understand should answer 501; h11 understands only chunked.
    async with metered_queue() as (_, address):
        response = await http(
            address, b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
        )
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501 Not Implemented\r\n")
    assert body == b"not implemented\n"


async def test_a_client_that_waits_before_sending_its_body_is_answered_at_once() -> None:
    # Expect: 100-continue: the client sends its body only once told to go
    # on. Unanswered, it would wait out the 10 s request deadline; the
    # fail_after bounds are far shorter.
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
    async with metered_queue() as (_, address):
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            await stream.send_all(head + b"Content-Length: 5\r\nConnection: close\r\n\r\n")
            received = b""
            with trio.fail_after(5):
                while b"\r\n\r\n" not in received:
                    received += await stream.receive_some(65536)
            assert received == b"HTTP/1.1 100 Continue\r\n\r\n"
            await stream.send_all(b"hello")
            with trio.fail_after(5):
                while chunk := await stream.receive_some(65536):
                    received += chunk
        assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
        assert b"# TYPE jobqueue_jobs gauge" in received
        # A body declared longer than the endpoint takes is refused at once,
        # before the client sends it.
        with trio.fail_after(5):
            response = await http(address, head + b"Content-Length: 100000\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 413 ")


async def test_a_queue_named_with_a_lone_surrogate_is_rendered_escaped() -> None:
    async with metered_queue() as (queue, address), open_raw_connection(queue) as peer:
        # JSON can carry half a surrogate pair, which has no UTF-8 form.
        await peer.send_line(b'{"type":"submit_job","name":"n","queue":"q\\udcff"}')
        assert (await peer.read_reply())["type"] == "job_submitted"
        head, body = await scrape(address)
        assert head.startswith(b"HTTP/1.1 200")
        assert value(samples(body), "jobqueue_jobs", queue="q\\udcff", state="pending") == 1


async def test_a_failing_page_is_a_500_and_the_endpoint_serves_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(snapshot: Any) -> str:
        raise RuntimeError("a bug in the page")

    async with metered_queue() as (queue, address):
        with monkeypatch.context() as patch:
            patch.setattr(_metrics_http, "render", broken)
            head, _ = await scrape(address)
        assert head.startswith(b"HTTP/1.1 500")
        assert "RuntimeError: a bug in the page" in caplog.text
        # Neither the endpoint nor the queue stopped.
        head, _ = await scrape(address)
        assert head.startswith(b"HTTP/1.1 200")
        assert await queue.client.submit("after", None)


async def test_the_server_answers_while_a_page_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    # The render stays blocked until the queue and the endpoint have answered
    # meanwhile. In trio's thread it would block them both: then it gives up
    # after a while, and the scrape is a 500.
    rendering, answered = threading.Event(), threading.Event()

    def blocked(snapshot: MetricsSnapshot) -> str:
        rendering.set()
        if not answered.wait(10):
            raise AssertionError("nothing was answered while the page rendered")
        return render(snapshot)

    monkeypatch.setattr(_metrics_http, "render", blocked)
    async with metered_queue() as (queue, address):
        scraped: list[tuple[bytes, str]] = []

        async def scrape_into() -> None:
            scraped.append(await scrape(address))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(scrape_into)
            await trio.to_thread.run_sync(rendering.wait)
            assert await queue.client.submit("meanwhile", None)
            other = b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            assert (await http(address, other)).startswith(b"HTTP/1.1 404")
            answered.set()
    [(head, text)] = scraped
    assert head.startswith(b"HTTP/1.1 200")
    # The figures are those of before the submit: the snapshot came first.
    assert value(samples(text), "jobqueue_jobs_submitted_total") == 0


async def keep_submitting(client: Client, count: int) -> None:
    """Submit ``count`` jobs one after another; each must be answered."""
    for i in range(count):
        assert await client.submit("meanwhile", i)


async def test_bad_clients_never_affect_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    # A short deadline so the slow clients are cut off within the test.
    monkeypatch.setattr(_metrics_http, "REQUEST_TIMEOUT", 0.5)
    async with metered_queue() as (queue, address):
        streams: list[trio.SocketStream] = []
        try:
            # A flood: far more connections than the endpoint serves, each
            # sending half a request and then nothing (a slow client).
            for _ in range(4 * _metrics_http.MAX_CONNECTIONS):
                stream = await trio.open_tcp_stream(*address)
                streams.append(stream)
                await stream.send_all(b"GET /metr")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_submitting, queue.client, 200)
                for stream in streams[: _metrics_http.MAX_CONNECTIONS]:
                    # Garbage on some, nothing on others.
                    nursery.start_soon(stream.send_all, b"\xff" * 1000)
            # Every connection is closed by the server: at the deadline, at
            # the garbage, or at once for those over the cap.
            for stream in streams:
                with trio.fail_after(5):
                    while await stream.receive_some(65536):
                        pass
        finally:
            for stream in streams:
                await trio.aclose_forcefully(stream)
        stats = await queue.client.stats()
        assert stats.jobs["pending"] == 200
        head, _ = await scrape(address)
        assert head.startswith(b"HTTP/1.1 200")


async def test_slow_client_is_cut_off_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_metrics_http, "REQUEST_TIMEOUT", 0.5)
    async with metered_queue() as (queue, address):
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            started = trio.current_time()
            # One byte at a time, slower than the deadline allows in total.
            with trio.fail_after(5):
                try:
                    for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n":
                        await stream.send_all(bytes([byte]))
                        await trio.sleep(0.05)
                except trio.BrokenResourceError:
                    pass
                while await stream.receive_some(65536):
                    pass
            assert trio.current_time() - started < 2.5
        assert await queue.client.submit("after", None)
