"""SAQ (Simple Async Queue) with its Redis queue on a local redis-server.

    python -m benchmarks.peers.saq_peer --scenario throughput --jobs 20000 --concurrency 8
    python -m benchmarks.peers.saq_peer --scenario latency --rate 500 --duration 10

Workers: ``saq benchmarks.peers.saq_peer.settings`` (one process, ``--workers 1``)
with ``concurrency=<concurrency>`` (8 concurrent dequeue loops in one asyncio
worker); every other setting is SAQ's default (job timeout 10 s, ttl 600 s,
one retry, schedule/sweep timers at their defaults).

This process is the one producer: ``await queue.enqueue("noop")`` once per job
(one EVALSHA of SAQ's enqueue script each). Completion is read with SAQ's own
``queue.count("incomplete")``: a job leaves the ``incomplete`` sorted set when
it finishes, so once all N are enqueued a count of 0 means all N are done.
Nothing is added per job.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

import redis
from saq import Queue

from benchmarks import harness

SYSTEM = "saq"
CONCURRENCY_ENV = "BENCH_CONCURRENCY"


async def _noop(ctx: dict[str, Any], *, t0: float | None = None) -> None:
    harness.record_latency(t0)


def settings() -> dict[str, Any]:
    """SAQ worker settings (SAQ calls this in the worker process)."""
    return {
        "queue": Queue.from_url(os.environ.get(harness.REDIS_URL_ENV, "redis://127.0.0.1:6379/0")),
        "functions": [("noop", _noop)],
        "concurrency": int(os.environ.get(CONCURRENCY_ENV, "8")),
    }


async def _produce(url: str, pacer: harness.Pacer | None, n: int, timeout: float) -> float:
    """Submit the jobs; return perf_counter() when the last one was submitted."""
    queue = Queue.from_url(url)
    await queue.connect()
    try:
        if pacer is None:
            for _ in range(n):
                await queue.enqueue("noop")
        else:
            async for t0 in pacer.aticks():
                await queue.enqueue("noop", t0=t0)
        submitted = time.perf_counter()
        deadline = time.monotonic() + timeout
        while await queue.count("incomplete") > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for saq jobs")
            await asyncio.sleep(0.002)
        return submitted
    finally:
        await queue.disconnect()


def run(shape: harness.Shape) -> dict[str, Any]:
    with harness.worker_run() as work, harness.redis_server() as server:
        r = redis.Redis.from_url(server.url)
        worker = work.spawn(
            harness.python_module("saq", "benchmarks.peers.saq_peer.settings", "--quiet"),
            shape.timeout + 60,
            {harness.REDIS_URL_ENV: server.url, CONCURRENCY_ENV: str(shape.concurrency)},
        )
        # Each idle dequeue loop sits in a blocking BLMOVE.
        harness.wait_until(
            lambda: int(r.info("clients")["blocked_clients"]) >= shape.concurrency,
            60,
            "saq worker",
            0.05,
        )
        timed = harness.TimedRun(server, worker.pid, shape)
        submitted = asyncio.run(_produce(server.url, timed.pacer, timed.jobs, shape.timeout))
        return timed.result(
            SYSTEM,
            shape.variant,
            submitted,
            work.dir,
            f"1 process x {shape.concurrency} async dequeue loops",
        )


def main(argv: Sequence[str] | None = None) -> None:
    harness.peer_main(run, ["default"], argv)


if __name__ == "__main__":
    main()
