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
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import redis
from saq import Queue

from benchmarks.peers import common

SYSTEM = "saq"
CONCURRENCY_ENV = "BENCH_CONCURRENCY"


async def _noop(ctx: dict[str, Any], *, t0: float | None = None) -> None:
    common.record_latency(t0)


def settings() -> dict[str, Any]:
    """SAQ worker settings (SAQ calls this in the worker process)."""
    return {
        "queue": Queue.from_url(os.environ.get(common.REDIS_URL_ENV, "redis://127.0.0.1:6379/0")),
        "functions": [("noop", _noop)],
        "concurrency": int(os.environ.get(CONCURRENCY_ENV, "8")),
    }


async def _produce(url: str, pacer: common.Pacer | None, n: int, timeout: float) -> float:
    """Submit the jobs; return perf_counter() when the last one was submitted."""
    queue = Queue.from_url(url)
    await queue.connect()
    try:
        if pacer is None:
            for _ in range(n):
                await queue.enqueue("noop")
        else:
            for i in range(n):
                delay = pacer.delay_before(i)
                if delay > 0:
                    await asyncio.sleep(delay)
                await queue.enqueue("noop", t0=time.time())
        submitted = time.perf_counter()
        deadline = time.monotonic() + timeout
        while await queue.count("incomplete") > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for saq jobs")
            await asyncio.sleep(0.002)
        return submitted
    finally:
        await queue.disconnect()


def run(
    scenario: str,
    jobs: int,
    concurrency: int,
    rate: float = 500.0,
    duration: float = 10.0,
    variant: str = "default",
    timeout: float = 300.0,
) -> dict[str, Any]:
    lat_dir = tempfile.mkdtemp(prefix="bench-lat-")
    worker = None
    try:
        with common.redis_server() as server:
            r = redis.Redis.from_url(server.url)
            worker = common.spawn_group(
                common.python_module("saq", "benchmarks.peers.saq_peer.settings", "--quiet"),
                env={
                    common.REDIS_URL_ENV: server.url,
                    common.LAT_DIR_ENV: lat_dir,
                    CONCURRENCY_ENV: str(concurrency),
                },
                lifetime=timeout + 60,
                log_path=os.path.join(lat_dir, "worker.log"),
            )
            # Each idle dequeue loop sits in a blocking BLMOVE.
            common.wait_until(
                lambda: int(r.info("clients")["blocked_clients"]) >= concurrency,
                60,
                "saq worker",
                0.05,
            )
            pacer = common.Pacer(rate, duration) if scenario == "latency" else None
            n = pacer.count if pacer else jobs
            timed = common.TimedRun(server, worker.pid, pacer)
            submitted = asyncio.run(_produce(server.url, pacer, n, timeout))
            return timed.result(
                SYSTEM,
                variant,
                n,
                submitted,
                lat_dir,
                f"1 process x {concurrency} async dequeue loops",
            )
    except Exception:
        common.print_log_tail(os.path.join(lat_dir, "worker.log"))
        raise
    finally:
        common.stop_group(worker)
        shutil.rmtree(lat_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = common.parse_args(argv, variants=["default"])
    common.emit(
        run(
            args.scenario,
            args.jobs,
            args.concurrency,
            args.rate,
            args.duration,
            args.variant,
            args.timeout,
        )
    )


if __name__ == "__main__":
    main()
