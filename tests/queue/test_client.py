"""The trio Client and Worker over real TCP on 127.0.0.1: many peers, the client API, failures.

Real sockets mean real time, so nothing here sleeps to let something happen:
every test waits on a reply, an event, or polls ``stats``, bounded with
``trio.fail_after``.
"""

from __future__ import annotations

import logging
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from jobqueue import Client, ConnectionLost, Job, RequestError, Worker, serve_queue
from jobqueue.testing import RunningQueue, open_memory_queue
from tests.helpers import free_port, stats_when

if TYPE_CHECKING:
    pass

LOCALHOST = "127.0.0.1"


# -- Client and Worker over TCP ---------------------------------------------------------


async def test_many_clients_and_workers_run_every_job_exactly_once(
    tcp_queue: RunningQueue,
) -> None:
    clients, jobs_per_client = 5, 40
    executions: Counter[str] = Counter()
    attempts: set[int] = set()

    async def record(job: Job) -> dict[str, Any]:
        executions[job.id] += 1
        attempts.add(job.attempt)
        await trio.lowlevel.checkpoint()  # let the other slots interleave
        return {"echo": job.payload}

    results: dict[str, Any] = {}

    async def client_task(index: int) -> None:
        async with tcp_queue.connect(name=f"client{index}") as client:
            ids = []
            for i in range(jobs_per_client):
                payload = {"client": index, "i": i}
                ids.append((await client.submit("record", payload), payload))
            for job_id, payload in ids:
                info = await client.wait(job_id)
                assert (info.state, info.result) == ("completed", {"echo": payload})
                results[job_id] = info.result

    with trio.fail_after(15):
        for index, concurrency in enumerate((2, 3, 2, 3)):
            await tcp_queue.start_worker(
                {"record": record}, concurrency=concurrency, name=f"worker{index}"
            )
        async with trio.open_nursery() as nursery:
            for index in range(clients):
                nursery.start_soon(client_task, index)
        # Every slot goes back to waiting for work.
        stats = await stats_when(tcp_queue.client, lambda s: s.waiting_workers == 10)

    total = clients * jobs_per_client
    assert len(results) == total
    assert set(executions) == set(results)
    assert set(executions.values()) == {1}
    assert attempts == {1}
    assert stats.totals == {
        "submitted": total,
        "completed": total,
        "failed": 0,
        "cancelled": 0,
        "retried": 0,
        "reassigned": 0,
        "expired": 0,
    }
    assert stats.jobs == {
        "pending": 0,
        "scheduled": 0,
        "running": 0,
        "completed": total,
        "failed": 0,
        "cancelled": 0,
    }
    assert stats.queues == {}  # no queue has anything waiting or running
    assert sorted(entry["name"] for entry in stats.workers) == sorted(
        f"worker{index}" for index, n in enumerate((2, 3, 2, 3)) for _ in range(n)
    )
    assert all(
        (entry["jobs"], entry["waiting"], entry["queues"]) == ([], True, ["default"])
        for entry in stats.workers
    )


async def test_client_api(tcp_queue: RunningQueue) -> None:
    client = tcp_queue.client
    with trio.fail_after(5):
        job_id = await client.submit("sleep", {"seconds": 0})
        info = await client.status(job_id)
        assert (info.job_id, info.name, info.state, info.attempt) == (job_id, "sleep", "pending", 0)
        assert not info.finished
        stats = await client.stats()
        assert stats.jobs["pending"] == 1
        assert stats.totals["submitted"] == 1

        # A payload JSON cannot carry is refused before anything is sent.
        with pytest.raises(TypeError):
            await client.submit("sleep", {"bad": object()})
        # bytes too, though the server keeps payloads as bytes of JSON text:
        # a caller's bytes are not sent as they are.
        with pytest.raises(TypeError):
            await client.submit("sleep", b'{"seconds":0}')
        with pytest.raises(ValueError, match=r"JSON|[Oo]ut of range"):
            await client.submit("sleep", float("nan"))
        with pytest.raises(RequestError) as excinfo:
            await client.status("bogus")
        assert excinfo.value.code == "unknown_job"
        with pytest.raises(RequestError) as excinfo:
            await client.wait("bogus")
        assert excinfo.value.code == "unknown_job"
        with pytest.raises(RequestError) as excinfo:
            await client.submit("n" * 500)
        assert excinfo.value.code == "bad_request"

        # The client is still usable after all of that.
        await tcp_queue.start_worker()
        info = await client.wait(job_id)
    assert (info.state, info.attempt, info.result, info.worker) == (
        "completed",
        1,
        {"slept": 0},
        "test-worker",
    )
    assert info.finished


async def test_connecting_to_a_port_with_nothing_listening_is_connection_lost() -> None:
    port = free_port()
    with trio.fail_after(5), pytest.raises(ConnectionLost):
        async with Client.connect(LOCALHOST, port):
            pass  # pragma: no cover


async def test_worker_reports_failures(
    tcp_queue: RunningQueue, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(job: Job) -> None:
        raise KeyError(f"kaput {job.payload}")

    async def not_json(job: Job) -> object:
        return {"value": object()}

    async def not_a_number(job: Job) -> float:
        return float("nan")

    async def raw_bytes(job: Job) -> bytes:
        return b'"looks like JSON"'

    async def fine(job: Job) -> str:
        return "fine"

    client = tcp_queue.client
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")  # the tracebacks are expected
    with trio.fail_after(5):
        worker = await tcp_queue.start_worker(
            {
                "boom": boom,
                "not_json": not_json,
                "nan": not_a_number,
                "bytes": raw_bytes,
                "fine": fine,
            }
        )
        # One attempt each: a failure ends the job (retries are test_lifecycle's).
        once = partial(client.submit, max_attempts=1)
        ids = {
            "boom": await once("boom", 7),
            "not_json": await once("not_json"),
            "nan": await once("nan"),
            "bytes": await once("bytes"),
            "sleep_bad": await once("sleep", {"seconds": "soon"}),
            "sleep_negative": await once("sleep", {"seconds": -1}),
            "sleep_no_payload": await once("sleep"),
            "fine": await once("fine"),
        }
        infos = {key: await client.wait(job_id) for key, job_id in ids.items()}
        # The worker counts a job once the server acknowledged its report; it
        # is waiting for work again only after that.
        await stats_when(client, lambda s: s.waiting_workers == 1)

    def error_type(key: str) -> str:
        info = infos[key]
        assert info.state == "failed", info
        assert info.result is None
        assert info.error is not None
        return info.error["type"]

    assert error_type("boom") == "KeyError"
    assert infos["boom"].error is not None
    assert "kaput 7" in infos["boom"].error["message"]
    assert error_type("not_json") == "TypeError"
    assert error_type("nan") == "TypeError"
    assert error_type("bytes") == "TypeError"
    for key in ("sleep_bad", "sleep_negative", "sleep_no_payload"):
        assert error_type(key) == "ValueError"
    assert (infos["fine"].state, infos["fine"].result) == ("completed", "fine")
    assert {(info.attempt, info.max_attempts) for info in infos.values()} == {(1, 1)}
    statistics = worker.statistics()
    assert (statistics.failed, statistics.completed, statistics.lost) == (7, 1, 0)
    stats = await client.stats()
    assert (stats.totals["failed"], stats.totals["completed"], stats.totals["retried"]) == (7, 1, 0)
    assert stats.jobs["failed"] == 7


async def _serve_until_cancelled(
    scope: trio.CancelScope,
    stopped: trio.Event,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        with scope:
            await serve_queue(port, host=LOCALHOST, task_status=task_status)
    finally:
        stopped.set()


async def test_worker_reconnects_to_a_restarted_server(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobqueue.worker")
    with trio.fail_after(10):
        first_scope, first_stopped = trio.CancelScope(), trio.Event()
        host, port = await nursery.start(_serve_until_cancelled, first_scope, first_stopped, 0)
        worker = Worker(
            host,
            port,
            name="phoenix",
            reconnect_delay=0.01,
            max_reconnect_delay=0.05,
        )
        await nursery.start(worker.run)
        async with Client.connect(host, port) as client:
            job_id = await client.submit("sleep", {"seconds": 0})
            assert (await client.wait(job_id)).state == "completed"
            assert "lost the queue" not in caplog.text

        first_scope.cancel()
        await first_stopped.wait()
        second_scope, second_stopped = trio.CancelScope(), trio.Event()
        address = await nursery.start(_serve_until_cancelled, second_scope, second_stopped, port)
        assert address == (host, port)
        async with Client.connect(host, port) as client:
            job_id = await client.submit("sleep", {"seconds": 0})
            info = await client.wait(job_id)
    assert (info.state, info.worker, info.attempt) == ("completed", "phoenix", 1)
    messages = [r.getMessage() for r in caplog.records if r.name == "jobqueue.worker"]
    lost = [i for i, m in enumerate(messages) if "lost the queue" in m]
    regained = [i for i, m in enumerate(messages) if "reconnected to the queue" in m]
    assert len(lost) == 1, messages
    assert len(regained) == 1, messages
    assert lost[0] < regained[0]
    assert worker.statistics().connected_slots == 1
    second_scope.cancel()


async def test_tcp_links_use_the_socket_directly_and_memory_links_do_not(
    tcp_queue: RunningQueue,
) -> None:
    # The TCP tests in this file then exercise Link's direct socket path; the
    # in-memory queues (tests/queue/test_timing.py, ...) exercise the stream path.
    assert tcp_queue.client._link._bytes._raw is not None
    from jobqueue.testing import open_memory_queue

    async with open_memory_queue() as queue:
        assert queue.client._link._bytes._raw is None
        assert (await queue.client.stats()).connections == 1
    with trio.fail_after(5):
        job_id = await tcp_queue.client.submit("x", {"big": "y" * 300_000})
        assert (await tcp_queue.client.status(job_id)).state == "pending"


@pytest.mark.parametrize("prefetch", [1, 4])
async def test_a_payload_as_deep_as_the_server_accepts_reaches_the_handler(
    autojump_clock: trio.testing.MockClock, prefetch: int
) -> None:
    """The replies that carry it nest it deeper than a request may: the client reads them."""
    deepest: Any = "bottom"
    for _ in range(63):  # inside submit_job's object: 64 levels, the limit
        deepest = [deepest]
    async with open_memory_queue() as queue:
        job_id = await queue.client.submit("deep", deepest)
        seen: list[Any] = []

        async def deep(job: Job) -> Any:
            seen.append(job.payload)
            return job.payload

        await queue.start_worker({"deep": deep}, prefetch=prefetch)
        info = await queue.client.wait(job_id)
        assert (info.state, info.result, seen) == ("completed", deepest, [deepest])
