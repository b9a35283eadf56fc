"""taskiq + taskiq-redis (RedisStreamBroker) on a local redis-server.

    python -m benchmarks.peers.taskiq_peer --scenario throughput --jobs 20000 --concurrency 8
    python -m benchmarks.peers.taskiq_peer --scenario latency --rate 500 --duration 10

Workers: ``taskiq worker`` with 2 processes x (concurrency / 2) async tasks
(``--workers 2 --max-async-tasks 4`` for concurrency 8); every other setting is
taskiq's default (``--max-prefetch 0``, ack when saved, no result backend,
RedisStreamBroker's ``xread_count=100``). This process is the one producer:
``await noop.kiq()`` once per job, one XADD each.

Completion is read from the stream's consumer group (``XINFO GROUPS``): all N
entries read by the group and none left pending (unacknowledged). taskiq acks a
message after its handler has run, so this adds no work per job.
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
from taskiq_redis import RedisStreamBroker

from benchmarks.peers import common

STREAM = "taskiq"
GROUP = "taskiq"
SYSTEM = "taskiq"

broker = RedisStreamBroker(
    url=os.environ.get(common.REDIS_URL_ENV, "redis://127.0.0.1:6379/0"), queue_name=STREAM
)


async def _noop(t0: float | None = None) -> None:
    common.record_latency(t0)


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


async def _produce(url: str, pacer: common.Pacer | None, n: int) -> None:
    producer = RedisStreamBroker(url=url, queue_name=STREAM)
    noop = producer.task(task_name="noop")(_noop)
    await producer.startup()
    try:
        if pacer is None:
            for _ in range(n):
                await noop.kiq()
        else:
            for i in range(pacer.count):
                delay = pacer.delay_before(i)
                if delay > 0:
                    await asyncio.sleep(delay)
                await noop.kiq(t0=time.time())
    finally:
        await producer.shutdown()


def run(
    scenario: str,
    jobs: int,
    concurrency: int,
    rate: float = 500.0,
    duration: float = 10.0,
    variant: str = "2proc",
    timeout: float = 300.0,
    processes: int = 2,
) -> dict[str, Any]:
    per_process = max(1, concurrency // processes)
    lat_dir = tempfile.mkdtemp(prefix="bench-lat-")
    worker = None
    try:
        with common.redis_server() as server:
            r = redis.Redis.from_url(server.url)
            worker = common.spawn_group(
                common.python_module(
                    "taskiq",
                    "worker",
                    "benchmarks.peers.taskiq_peer:broker",
                    "--workers",
                    str(processes),
                    "--max-async-tasks",
                    str(per_process),
                    "--log-level",
                    "WARNING",
                ),
                env={common.REDIS_URL_ENV: server.url, common.LAT_DIR_ENV: lat_dir},
                lifetime=timeout + 60,
                log_path=os.path.join(lat_dir, "worker.log"),
            )
            common.wait_until(lambda: _blocked(r) >= processes, 60, "taskiq workers", 0.05)
            pacer = common.Pacer(rate, duration) if scenario == "latency" else None
            n = pacer.count if pacer else jobs
            timed = common.TimedRun(server, worker.pid, pacer)
            asyncio.run(_produce(server.url, pacer, n))
            submitted = time.perf_counter()
            common.wait_until(lambda: _done(r, n), timeout, "taskiq jobs to finish", 0.002)
            return timed.result(
                SYSTEM,
                variant,
                n,
                submitted,
                lat_dir,
                f"{processes} processes x {per_process} async tasks",
            )
    except Exception:
        common.print_log_tail(os.path.join(lat_dir, "worker.log"))
        raise
    finally:
        common.stop_group(worker)
        shutil.rmtree(lat_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = common.parse_args(argv, variants=["2proc"])
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
