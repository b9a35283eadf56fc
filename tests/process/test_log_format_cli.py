"""``serve`` and ``worker`` with ``--log-format json``, and ``serve --metrics``, as processes.

Every line either process writes must parse as JSON; the worker's line for
each job's outcome carries the job's id, queue, attempt and worker, and the
server's metrics endpoint (its flag generated from ``ServerConfig``) counts
the same outcomes.
"""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from jobqueue import Client
from tests.helpers import PYTHON_M_JOBQUEUE, free_port, running_process

pytestmark = pytest.mark.slow


async def read_lines(stream: trio.abc.ReceiveStream, buffer: bytearray, needle: str) -> None:
    """Read into ``buffer`` until a whole line contains ``needle``."""
    while not any(needle in line for line in buffer.decode(errors="replace").splitlines(True)
                  if line.endswith("\n")):  # fmt: skip
        data = await stream.receive_some()
        assert data, f"closed before {needle!r}:\n{buffer.decode(errors='replace')}"
        buffer += data


def entries(buffer: bytes) -> list[dict[str, Any]]:
    """Every line as a JSON object (each must be one)."""
    lines = buffer.decode().splitlines()
    found = [json.loads(line) for line in lines]
    for entry in found:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    return found


async def scrape(port: int) -> dict[str, float]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    body = data.partition(b"\r\n\r\n")[2].decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if not sample.labels
    }


async def test_json_logs_and_metrics_from_real_processes() -> None:
    port, metrics_port = free_port(), free_port()
    serve = [
        *PYTHON_M_JOBQUEUE, "serve", "--port", str(port), "--log-format", "json",
        "--metrics", f"127.0.0.1:{metrics_port}",
    ]  # fmt: skip
    worker_argv = [
        *PYTHON_M_JOBQUEUE, "worker", "--connect", f"127.0.0.1:{port}", "--name", "w1",
        "--queues", "jobs", "--log-format", "json",
    ]  # fmt: skip
    pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    server_log, worker_log = bytearray(), bytearray()
    async with running_process(serve, **pipes) as server:
        assert server.stderr is not None
        with trio.fail_after(20):
            await read_lines(server.stderr, server_log, "queue listening")
        async with running_process(worker_argv, **pipes) as worker:
            assert worker.stderr is not None
            async with Client.connect("127.0.0.1", port) as client:
                done = await client.submit("sleep", {"seconds": 0}, queue="jobs")
                # The built-in handler refuses this payload: the job fails.
                failed = await client.submit(
                    "sleep", {"seconds": "soon"}, queue="jobs", max_attempts=1
                )
                with trio.fail_after(20):
                    assert (await client.wait(done)).state == "completed"
                    assert (await client.wait(failed)).state == "failed"
                    await read_lines(worker.stderr, worker_log, f"job {failed} (sleep) failed")
                    await read_lines(worker.stderr, worker_log, f"job {done} (sleep) completed")
            with trio.fail_after(20):
                figures = await scrape(metrics_port)
            worker.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                await worker.wait()
                worker_log += b"".join([chunk async for chunk in worker.stderr])
        server.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            await server.wait()
            server_log += b"".join([chunk async for chunk in server.stderr])

    assert figures["jobqueue_jobs_submitted_total"] == 2
    assert figures["jobqueue_jobs_completed_total"] == 1
    assert figures["jobqueue_jobs_failed_total"] == 1
    served = entries(bytes(server_log))
    assert any(e["message"].startswith("metrics at http://127.0.0.1:") for e in served)
    ran = entries(bytes(worker_log))
    by_job = {e.get("job_id"): e for e in ran if e.get("job_id")}
    completed = by_job[done]
    assert (completed["level"], completed["logger"]) == ("INFO", "jobqueue.worker")
    assert completed["job_name"] == "sleep"
    assert (completed["queue"], completed["attempt"], completed["worker"]) == ("jobs", 1, "w1")
    assert completed["seconds"] >= 0
    lost = by_job[failed]
    assert (lost["level"], lost["attempt"], lost["worker"]) == ("ERROR", 1, "w1")
