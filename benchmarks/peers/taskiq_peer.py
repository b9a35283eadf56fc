"""taskiq + taskiq-redis (RedisStreamBroker) on a local redis-server.

    python -m benchmarks.peers.taskiq_peer --scenario throughput --jobs 20000 --concurrency 8
    python -m benchmarks.peers.taskiq_peer --scenario latency --rate 500 --duration 10
    python -m benchmarks.peers.taskiq_peer --scenario producers --producers 8

Workers: ``taskiq worker`` with 2 processes x (concurrency / 2) async tasks
(``--workers 2 --max-async-tasks 4`` for concurrency 8); every other setting is
taskiq's default (``--max-prefetch 0``, ack when saved, no result backend,
RedisStreamBroker's ``xread_count=100``). This process is the one producer:
``await noop.kiq()`` once per job, one XADD each. In the ``producers``
scenario, ``--producers`` processes (8) do the same at once, each with its own
broker connection, sharing the jobs between them.

Completion is read from the stream's consumer group (``XINFO GROUPS``): all N
entries read by the group and none left pending (unacknowledged). taskiq acks a
message after its handler has run, so this adds no work per job.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio
from taskiq_redis import RedisStreamBroker

from benchmarks import harness
from benchmarks.peers import producers

STREAM = "taskiq"
GROUP = "taskiq"
SYSTEM = "taskiq"
PROCESSES = 2
SCENARIOS = ("throughput", "latency", "producers")

broker = RedisStreamBroker(
    url=os.environ.get(harness.REDIS_URL_ENV, "redis://127.0.0.1:6379/0"), queue_name=STREAM
)


async def _noop(t0: float | None = None) -> None:
    harness.record_latency(t0)


noop = broker.task(task_name="noop")(_noop)  # what the workers run


def _group(r: redis.Redis) -> dict[str, Any]:
    for group in r.xinfo_groups(STREAM):
        name = group["name"]
        if (name.decode() if isinstance(name, bytes) else name) == GROUP:
            return dict(group)
    return {}


def _done(r: redis.Redis, n: int) -> bool:
    group = _group(r)
    return int(group.get("entries-read") or 0) >= n and int(group.get("pending", 1)) == 0


def _blocked(r: redis.Redis) -> int:
    # An idle taskiq worker process sits in one blocking XREADGROUP. (Redis 7.0
    # lists a consumer in XINFO CONSUMERS only once it has been given an entry.)
    return int(r.info("clients")["blocked_clients"])


async def _produce(
    url: str, pacer: harness.Pacer | None, n: int, go: Callable[[], None] | None = None
) -> None:
    producer = RedisStreamBroker(url=url, queue_name=STREAM)
    noop = producer.task(task_name="noop")(_noop)
    await producer.startup()
    try:
        if go is not None:
            # Connected (the pool holds the connection) before the clock starts.
            async with redis.asyncio.Redis(connection_pool=producer.connection_pool) as r:
                await r.ping()
            go()
        if pacer is None:
            for _ in range(n):
                await noop.kiq()
        else:
            async for t0 in pacer.aticks():
                await noop.kiq(t0=t0)
    finally:
        await producer.shutdown()


def produce(url: str, jobs: int, go: Callable[[], None]) -> None:
    """One of the ``producers`` scenario's producer processes (see ``producers.py``)."""
    asyncio.run(_produce(url, None, jobs, go))


def run(shape: harness.Shape) -> dict[str, Any]:
    per_process = max(1, shape.concurrency // PROCESSES)
    with harness.worker_run() as work, harness.redis_server() as server:
        r = redis.Redis.from_url(server.url)
        worker = work.spawn(
            harness.python_module(
                "taskiq", "worker", "benchmarks.peers.taskiq_peer:broker",
                "--workers", str(PROCESSES), "--max-async-tasks", str(per_process),
                "--log-level", "WARNING",
            ),
            shape.timeout + 60,
            {harness.REDIS_URL_ENV: server.url},
        )  # fmt: skip
        harness.wait_until(lambda: _blocked(r) >= PROCESSES, 60, "taskiq workers", 0.05)
        producer_cpu: float | None = None
        if shape.scenario == "producers":
            with producers.crowd(
                "benchmarks.peers.taskiq_peer:produce", server.url, shape.jobs, shape.producers,
                timeout=shape.timeout,
            ) as crowd:  # fmt: skip
                timed = harness.TimedRun(server, worker.pid, shape)
                crowd.go()
                submitted, producer_cpu = crowd.finish(shape.timeout)
        else:
            timed = harness.TimedRun(server, worker.pid, shape)
            asyncio.run(_produce(server.url, timed.pacer, timed.jobs))
            submitted = time.perf_counter()
        harness.wait_until(
            lambda: _done(r, timed.jobs), shape.timeout, "taskiq jobs to finish", 0.002
        )
        return timed.result(
            SYSTEM, shape.variant, submitted, work.dir,
            f"{PROCESSES} processes x {per_process} async tasks", producer_cpu,
            **({"producers": shape.producers} if producer_cpu is not None else {}),
        )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    harness.peer_main(run, ["2proc"], argv, SCENARIOS)


if __name__ == "__main__":
    main()
