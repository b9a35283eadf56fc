"""Dramatiq 2.x with its RedisBroker on a local redis-server.

    python -m benchmarks.peers.dramatiq_peer --scenario throughput --jobs 20000 --concurrency 8
    python -m benchmarks.peers.dramatiq_peer --variant prefetch64 --scenario throughput
    python -m benchmarks.peers.dramatiq_peer --scenario latency --rate 500 --duration 10
    python -m benchmarks.peers.dramatiq_peer --variant prefetch64 --scenario producers

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
Dramatiq's dispatch script each); in the ``producers`` scenario ``--producers``
processes (8) do the same at once, each with its own broker. Completion is read
from the broker's own state: the ``dramatiq:default.msgs`` hash holds every
message not yet acked, and Dramatiq acks after the actor has run, so once all N
are enqueued an empty hash means all N are done. Nothing is added per job.

Caveat: Dramatiq's Redis consumer polls, backing off up to ``worker_timeout``
(1 s) while the queue is empty, so the first jobs of a burst can wait up to
that long; it is part of the measured time, as it would be for a real burst.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from benchmarks import harness
from benchmarks.peers import producers

SYSTEM = "dramatiq"
MSGS = "dramatiq:default.msgs"
HEARTBEATS = "dramatiq:__heartbeats__"
VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "prefetch64": {"dramatiq_queue_prefetch": "64"},
}


def _noop(t0: float | None = None) -> None:
    harness.record_latency(t0)


# What the workers import (``dramatiq benchmarks.peers.dramatiq_peer``).
broker = RedisBroker(url=os.environ.get(harness.REDIS_URL_ENV, "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)
noop = dramatiq.actor(actor_name="noop", queue_name="default", broker=broker)(_noop)


def produce(url: str, jobs: int, go: Callable[[], None]) -> None:
    """One of the ``producers`` scenario's producer processes (see ``producers.py``)."""
    producer = RedisBroker(url=url)
    actor = dramatiq.actor(actor_name="noop", queue_name="default", broker=producer)(_noop)
    producer.client.ping()  # connected before the clock starts
    go()
    for _ in range(jobs):
        actor.send()


def run(shape: harness.Shape) -> dict[str, Any]:
    with harness.worker_run() as work, harness.redis_server() as server:
        r = redis.Redis.from_url(server.url)
        worker = work.spawn(
            harness.python_module(
                "dramatiq", "benchmarks.peers.dramatiq_peer",
                "--processes", "1", "--threads", str(shape.concurrency),
            ),
            shape.timeout + 60,
            {harness.REDIS_URL_ENV: server.url, **VARIANTS[shape.variant]},
        )  # fmt: skip
        # Each worker broker ZADDs itself here on every fetch.
        harness.wait_until(lambda: r.zcard(HEARTBEATS) >= 1, 60, "dramatiq worker", 0.05)

        producer_cpu: float | None = None
        if shape.scenario == "producers":
            with producers.crowd(
                "benchmarks.peers.dramatiq_peer:produce", server.url, shape.jobs,
                shape.producers, timeout=shape.timeout,
            ) as crowd:  # fmt: skip
                timed = harness.TimedRun(server, worker.pid, shape)
                crowd.go()
                submitted, producer_cpu = crowd.finish(shape.timeout)
        else:
            producer = RedisBroker(url=server.url)
            actor = dramatiq.actor(actor_name="noop", queue_name="default", broker=producer)(_noop)
            timed = harness.TimedRun(server, worker.pid, shape)
            if timed.pacer is None:
                for _ in range(timed.jobs):
                    actor.send()
            else:
                for t0 in timed.pacer.ticks():
                    actor.send(t0=t0)
            submitted = time.perf_counter()
        harness.wait_until(
            lambda: r.hlen(MSGS) == 0, shape.timeout, "dramatiq jobs to finish", 0.002
        )
        prefetch = VARIANTS[shape.variant].get("dramatiq_queue_prefetch", 2 * shape.concurrency)
        return timed.result(
            SYSTEM,
            shape.variant,
            submitted,
            work.dir,
            f"1 process x {shape.concurrency} threads",
            producer_cpu,
            prefetch=int(prefetch),
            **({"producers": shape.producers} if producer_cpu is not None else {}),
        )


def main(argv: Sequence[str] | None = None) -> None:
    harness.peer_main(run, list(VARIANTS), argv, ("throughput", "latency", "producers"))


if __name__ == "__main__":
    main()
