"""The three clients side by side: trio ``Client``, ``jobqueue.sync``, ``jobqueue.asyncio``.

For each client, against a server in its own process (and, end to end, a
no-op worker with 8 slots in another), from this process:

- ``round_trips_per_s``: one caller submitting one job at a time, each
  awaiting its reply (no worker running): the client's submit round trip.
- ``jobs_per_s``: 20,000 submits from one thread or task, one job per
  request, until a worker has run them all (as the ``throughput`` scenario,
  with this client as the producer).
- ``shared_per_s``: ``sharers`` threads (blocking) or tasks (trio, asyncio)
  submitting through one shared client at once.

    python -m benchmarks.clients [--jobs 20000] [--round-trips 5000] [--sharers 16] [--rounds 3]

Each figure is the median of ``--rounds`` rounds, the clients taking
turns within each, so that the machine's changing load falls on all.

It is also the ``clients`` scenario of ``benchmarks.run``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

import jobqueue.asyncio
import jobqueue.sync
from benchmarks.harness import free_port, spawned, wait_ready
from jobqueue import Client

CLIENTS = ("trio", "sync", "asyncio")

#: Submits made, and not measured, before each measurement.
WARMUP = 500


@contextmanager
def _queue(*, worker: bool) -> Iterator[int]:
    """A server (and, with ``worker``, a no-op worker with 8 slots); yield its port."""
    port = free_port()
    with spawned("serve", "--port", str(port)) as server:
        if not worker:
            trio.run(wait_ready, port, 0, [server])
            yield port
            return
        with spawned(
            "worker", "--connect", f"127.0.0.1:{port}", "--concurrency", "8",
            "--handlers", "benchmarks._noop:HANDLERS",
        ) as process:  # fmt: skip
            trio.run(wait_ready, port, 8, [server, process])
            yield port


def _timed(run: Callable[[int, int, Any], int], port: int, n: int, arg: Any) -> tuple[float, float]:
    """``run(port, n, arg)`` returns the jobs it submitted: return their rate and CPU µs each."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    count = run(port, n, arg)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return count / wall, cpu / count * 1e6


# -- trio ------------------------------------------------------------------------------


def _trio_sequential(port: int, count: int, finish: bool) -> int:
    async def main() -> int:
        async with Client.connect("127.0.0.1", port) as client:
            for _ in range(count):
                last = await client.submit("noop")
            if finish:
                await client.wait(last)
                while (await client.stats()).totals["completed"] < count:  # noqa: ASYNC110
                    await trio.sleep(0.002)
        return count

    return trio.run(main)


def _trio_shared(port: int, count: int, sharers: int) -> int:
    async def main() -> int:
        async with Client.connect("127.0.0.1", port) as client:

            async def one() -> None:
                for _ in range(count // sharers):
                    await client.submit("noop")

            async with trio.open_nursery() as nursery:
                for _ in range(sharers):
                    nursery.start_soon(one)
        return count // sharers * sharers

    return trio.run(main)


# -- blocking --------------------------------------------------------------------------


def _sync_sequential(port: int, count: int, finish: bool) -> int:
    with jobqueue.sync.Client.connect("127.0.0.1", port) as client:
        for _ in range(count):
            last = client.submit("noop")
        if finish:
            client.wait(last)
            while client.stats().totals["completed"] < count:
                time.sleep(0.002)
    return count


def _sync_shared(port: int, count: int, sharers: int) -> int:
    with jobqueue.sync.Client.connect("127.0.0.1", port) as client:

        def one() -> None:
            for _ in range(count // sharers):
                client.submit("noop")

        threads = [threading.Thread(target=one) for _ in range(sharers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return count // sharers * sharers


# -- asyncio ---------------------------------------------------------------------------


def _asyncio_sequential(port: int, count: int, finish: bool) -> int:
    async def main() -> int:
        async with jobqueue.asyncio.Client.connect("127.0.0.1", port) as client:
            for _ in range(count):
                last = await client.submit("noop")
            if finish:
                await client.wait(last)
                while (await client.stats()).totals["completed"] < count:  # noqa: ASYNC110
                    await asyncio.sleep(0.002)
        return count

    return asyncio.run(main())


def _asyncio_shared(port: int, count: int, sharers: int) -> int:
    async def main() -> int:
        async with jobqueue.asyncio.Client.connect("127.0.0.1", port) as client:

            async def one() -> None:
                for _ in range(count // sharers):
                    await client.submit("noop")

            await asyncio.gather(*(one() for _ in range(sharers)))
        return count // sharers * sharers

    return asyncio.run(main())


_SEQUENTIAL = {"trio": _trio_sequential, "sync": _sync_sequential, "asyncio": _asyncio_sequential}
_SHARED = {"trio": _trio_shared, "sync": _sync_shared, "asyncio": _asyncio_shared}


def clients(
    jobs: int = 20_000, round_trips: int = 5_000, sharers: int = 16, rounds: int = 3
) -> list[dict[str, Any]]:
    """Measure each client; one row per client, each figure the median of ``rounds``.

    The clients take turns within each round (in reverse order every other
    round), so a change in the machine's load falls on all of them alike.
    """
    samples: dict[str, dict[str, list[float]]] = {
        name: {"rt": [], "cpu": [], "shared": [], "jobs": []} for name in CLIENTS
    }
    for index in range(rounds):
        order = CLIENTS if index % 2 == 0 else CLIENTS[::-1]
        with _queue(worker=False) as port:
            for name in order:
                _SEQUENTIAL[name](port, WARMUP, False)
            for name in order:
                rate, cpu_us = _timed(_SEQUENTIAL[name], port, round_trips, False)
                samples[name]["rt"].append(rate)
                samples[name]["cpu"].append(cpu_us)
                samples[name]["shared"].append(_timed(_SHARED[name], port, round_trips, sharers)[0])
        for name in order:
            with _queue(worker=True) as port:
                samples[name]["jobs"].append(_timed(_SEQUENTIAL[name], port, jobs, True)[0])
    return [
        {
            "system": "jobqueue",
            "variant": name,
            "scenario": "clients",
            "jobs": jobs,
            "rounds": rounds,
            "round_trips_per_s": statistics.median(samples[name]["rt"]),
            "client_cpu_us_per_submit": statistics.median(samples[name]["cpu"]),
            "jobs_per_s": statistics.median(samples[name]["jobs"]),
            "sharers": sharers,
            "shared_per_s": statistics.median(samples[name]["shared"]),
        }
        for name in CLIENTS
    ]


def print_clients(rows: list[dict[str, Any]]) -> None:
    """The ``clients`` rows as a table, each figure also as a ratio to the trio client's."""
    base = next((row for row in rows if row["variant"] == "trio"), None)
    rounds, jobs, sharers = (
        (rows[0]["rounds"], rows[0]["jobs"], rows[0]["sharers"]) if rows else (0, 0, 0)
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nclients, medians of {rounds} rounds (load average {load}):")
    print(
        f"{'client':<8} {'submit round trips/s':>21} {'CPU µs/submit':>14} "
        f"{f'{jobs:,} jobs/s':>14} {f'shared by {sharers}':>14}"
    )
    for row in rows:

        def vs(key: str, row: dict[str, Any] = row) -> str:
            return f" ({row[key] / base[key]:.2f}x)" if base and row is not base else ""

        print(
            f"{row['variant']:<8} {row['round_trips_per_s']:>12,.0f}{vs('round_trips_per_s'):>9}"
            f" {row['client_cpu_us_per_submit']:>14.0f}"
            f" {row['jobs_per_s']:>7,.0f}{vs('jobs_per_s'):>8}"
            f" {row['shared_per_s']:>7,.0f}{vs('shared_per_s'):>8}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--round-trips", type=int, default=5_000)
    parser.add_argument("--sharers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="figures are medians of these")
    args = parser.parse_args()
    print_clients(clients(args.jobs, args.round_trips, args.sharers, args.rounds))
