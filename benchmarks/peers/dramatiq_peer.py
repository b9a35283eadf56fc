"""Dramatiq 2.x with its RedisBroker on a local redis-server.

    python -m benchmarks.peers.dramatiq_peer --scenario throughput --jobs 20000 --concurrency 8
    python -m benchmarks.peers.dramatiq_peer --variant prefetch64 --scenario throughput
    python -m benchmarks.peers.dramatiq_peer --scenario latency --rate 500 --duration 10

Workers: ``dramatiq`` CLI with ``--processes 1 --threads <concurrency>`` (8-way:
one process, eight worker threads; the CLI's own default would be one process
per CPU x 8 threads). Variants:

- ``default``: every other setting at Dramatiq's default, including the queue
  prefetch (``worker_threads * 2`` = 16 for 8 threads) and the default
  middleware (AgeLimit, TimeLimit, ShutdownNotifications, Callbacks, Pipelines,
  Retries).
- ``prefetch64``: the same with ``dramatiq_queue_prefetch=64`` in the workers'
  environment, the documented tuning knob.

This process is the one producer: ``noop.send()`` once per job (one EVALSHA of
Dramatiq's dispatch script each). Completion is read from the broker's own
state: the ``dramatiq:default.msgs`` hash holds every message not yet acked,
and Dramatiq acks after the actor has run, so once all N are enqueued an empty
hash means all N are done. Nothing is added per job.

Caveat: Dramatiq's Redis consumer polls, backing off up to ``worker_timeout``
(1 s) while the queue is empty, so the first jobs of a burst can wait up to
that long; it is part of the measured time, as it would be for a real burst.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from benchmarks.peers import common

SYSTEM = "dramatiq"
MSGS = "dramatiq:default.msgs"
HEARTBEATS = "dramatiq:__heartbeats__"
VARIANTS = {"default": {}, "prefetch64": {"dramatiq_queue_prefetch": "64"}}


def _noop(t0: float | None = None) -> None:
    common.record_latency(t0)


# What the workers import (``dramatiq benchmarks.peers.dramatiq_peer``).
broker = RedisBroker(url=os.environ.get(common.REDIS_URL_ENV, "redis://127.0.0.1:6379/0"))  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)
noop = dramatiq.actor(actor_name="noop", queue_name="default", broker=broker)(_noop)


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
            env = {common.REDIS_URL_ENV: server.url, common.LAT_DIR_ENV: lat_dir}
            env.update(VARIANTS[variant])
            worker = common.spawn_group(
                common.python_module(
                    "dramatiq",
                    "benchmarks.peers.dramatiq_peer",
                    "--processes",
                    "1",
                    "--threads",
                    str(concurrency),
                ),
                env=env,
                lifetime=timeout + 60,
                log_path=os.path.join(lat_dir, "worker.log"),
            )
            # Each worker broker ZADDs itself here on every fetch.
            common.wait_until(lambda: r.zcard(HEARTBEATS) >= 1, 60, "dramatiq worker", 0.05)

            producer = RedisBroker(url=server.url)  # type: ignore[no-untyped-call]
            actor = dramatiq.actor(actor_name="noop", queue_name="default", broker=producer)(_noop)
            pacer = common.Pacer(rate, duration) if scenario == "latency" else None
            n = pacer.count if pacer else jobs
            timed = common.TimedRun(server, worker.pid, pacer)
            if pacer is None:
                for _ in range(n):
                    actor.send()
            else:
                for i in range(n):
                    delay = pacer.delay_before(i)
                    if delay > 0:
                        time.sleep(delay)
                    actor.send(t0=time.time())
            submitted = time.perf_counter()
            common.wait_until(lambda: r.hlen(MSGS) == 0, timeout, "dramatiq jobs to finish", 0.002)
            return timed.result(
                SYSTEM,
                variant,
                n,
                submitted,
                lat_dir,
                f"1 process x {concurrency} threads",
                prefetch=int(VARIANTS[variant].get("dramatiq_queue_prefetch", 2 * concurrency)),
            )
    except Exception:
        common.print_log_tail(os.path.join(lat_dir, "worker.log"))
        raise
    finally:
        common.stop_group(worker)
        shutil.rmtree(lat_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = common.parse_args(argv, variants=list(VARIANTS))
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
