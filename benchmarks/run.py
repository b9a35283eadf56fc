"""The benchmark suite's entry point: jobqueue beside its peers, in one run.

    python -m benchmarks.run                  # ours + peers (if set up), default sizes
    python -m benchmarks.run --only ours      # just jobqueue
    python -m benchmarks.run --jobs 20000 --rate 500 --failover-trials 100

Every server runs in its own process and every load generator in others, so
the numbers are what a user would see. Peers run through their own clients
(see benchmarks/peers/README.md; set them up with benchmarks/peers/setup.sh).
Prints one table: jobs/s, latency percentiles, server CPU seconds and RSS,
and each of our figures' ratio to each peer measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import trio

from benchmarks import harness
from benchmarks._kinds import KINDS
from benchmarks.clients import clients, print_clients
from benchmarks.floor import floor, print_floor
from benchmarks.harness import free_port, latency_summary, rss_bytes, spawned, wait_ready
from benchmarks.peers import producers
from benchmarks.peers.run_all import SCENARIOS as PEER_SCENARIOS
from benchmarks.peers.run_all import run_peers
from jobqueue import Client


def throughput(
    jobs: int,
    concurrency: int,
    idle_clients: int = 0,
    *,
    batch: int = 0,
    prefetch: int | str | None = None,
    kind: str = "async",
    server_args: Sequence[str] = (),
) -> dict[str, Any]:
    """One producer, ``concurrency`` worker slots, no-op jobs, end to end.

    By default one job per request, as the issue's shape asks, and the
    worker at its default ``--prefetch`` (``auto``). With ``batch``, the
    producer uses ``submit_many`` in batches of that size and the worker
    runs with ``--prefetch``: the "batched" row. With ``idle_clients``, that
    many more clients stay connected, doing nothing, for the whole run.
    ``kind`` is the no-op handler's kind: ``async`` (the default), ``def``
    (a worker thread) or ``process`` (``jobqueue[processes]``).
    ``server_args`` go to ``jobqueue serve`` (``--journal DIR``, say).
    """
    if kind == "async":
        name, handlers = "noop", "benchmarks._noop:HANDLERS"
    else:
        name, handlers = KINDS[kind], "benchmarks._kinds:HANDLERS"
    port = free_port()
    with spawned("serve", "--port", str(port), *server_args) as server, spawned(
        "worker", "--connect", f"127.0.0.1:{port}", "--concurrency", str(concurrency),
        "--handlers", handlers, *(() if prefetch is None else ("--prefetch", str(prefetch))),
    ) as worker:  # fmt: skip

        async def drive() -> dict[str, Any]:
            await wait_ready(port, concurrency)
            async with AsyncExitStack() as idle, Client.connect("127.0.0.1", port) as client:
                for _ in range(idle_clients):
                    await idle.enter_async_context(Client.connect("127.0.0.1", port))
                watch = harness.Stopwatch(server.pid, worker_pids=[worker.pid])
                if batch:
                    for first in range(0, jobs, batch):
                        ids = await client.submit_many([{"name": name}] * min(batch, jobs - first))
                    last = ids[-1]
                else:
                    for _ in range(jobs):
                        last = await client.submit(name)
                submitted = watch.seconds()
                await client.wait(last)
                while (await client.stats()).totals["completed"] < jobs:  # noqa: ASYNC110
                    await trio.sleep(0.002)
                seconds = watch.seconds()
                shape = {"batch": batch, "prefetch": prefetch} if batch else {}
                return {
                    "system": "jobqueue",
                    "variant": "batched" if batch else "default",
                    **({"handler_kind": kind} if kind != "async" else {}),
                    "scenario": "throughput",
                    "jobs": jobs,
                    **shape,
                    "seconds": seconds,
                    "submit_seconds": submitted,
                    "jobs_per_s": jobs / seconds,
                    "server_cpu_s": watch.server_cpu(),
                    "server_rss_bytes": rss_bytes(server.pid),
                    "worker_cpu_s": watch.worker_cpu(),
                    "producer_cpu_s": watch.own_cpu(),
                }

        return trio.run(drive)


def produce(address: str, jobs: int, go: Callable[[], None]) -> None:
    """One of the ``producers`` scenario's producer processes: a trio ``Client`` of its own."""
    host, _, port = address.rpartition(":")

    async def submit_all() -> None:
        async with Client.connect(host, int(port)) as client:
            go()
            for _ in range(jobs):
                await client.submit("noop")

    trio.run(submit_all)


def many_producers(
    jobs: int, concurrency: int, count: int = producers.PRODUCERS, timeout: float = 300.0
) -> dict[str, Any]:
    """``count`` producer processes at once, each through its own ``Client``, one job per request.

    The workers are the ``throughput`` shape's (one process, ``concurrency``
    slots, prefetch 1), so what changes is only how many connections submit
    at once: the server's capacity as many web processes would see it.
    """
    port = free_port()
    with spawned("serve", "--port", str(port)) as server, spawned(
        "worker", "--connect", f"127.0.0.1:{port}", "--concurrency", str(concurrency),
        "--handlers", "benchmarks._noop:HANDLERS",
    ) as worker:  # fmt: skip
        trio.run(wait_ready, port, concurrency)
        with producers.crowd(
            "benchmarks.run:produce", f"127.0.0.1:{port}", jobs, count, timeout=timeout
        ) as crowd:
            watch = harness.Stopwatch(server.pid, worker_pids=[worker.pid])
            crowd.go()
            submitted, producer_cpu = crowd.finish(timeout)

        async def completed() -> None:
            async with Client.connect("127.0.0.1", port) as client:
                while (await client.stats()).totals["completed"] < jobs:  # noqa: ASYNC110
                    await trio.sleep(0.002)

        trio.run(completed)
        seconds = watch.seconds()
        return {
            "system": "jobqueue",
            "variant": "default",
            "scenario": "producers",
            "jobs": jobs,
            "producers": count,
            "seconds": seconds,
            "submit_seconds": submitted - watch.start,
            "jobs_per_s": jobs / seconds,
            "server_cpu_s": watch.server_cpu(),
            "server_rss_bytes": rss_bytes(server.pid),
            "worker_cpu_s": watch.worker_cpu(),
            "producer_cpu_s": producer_cpu,
        }


def latency(rate: float, duration: float, concurrency: int) -> dict[str, Any]:
    """Submit-to-handler-start latency at a steady rate (no polling on the path)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "latency.log")
        with spawned("serve", "--port", str(port)), spawned(
            "worker", "--connect", f"127.0.0.1:{port}", "--concurrency", str(concurrency),
            "--handlers", "benchmarks._latency:HANDLERS", env={"JOBQUEUE_LATENCY_LOG": log},
        ):  # fmt: skip

            async def drive() -> int:
                await wait_ready(port, concurrency)
                async with Client.connect("127.0.0.1", port) as client:
                    pacer = harness.Pacer(rate, duration)
                    for index in range(pacer.count):
                        await trio.sleep(max(0.0, pacer.delay_before(index)))
                        last = await client.submit("stamp", {"t": time.time()})
                    await client.wait(last)
                    return pacer.count

            count = trio.run(drive)
            time.sleep(0.2)  # let the worker flush its last line
        with open(log) as f:
            samples = [float(line) for line in f if line.strip()]
    return {
        "system": "jobqueue",
        "variant": "default",
        "scenario": "latency",
        "rate": rate,
        "jobs": count,
        **latency_summary(samples),
    }


#: Seconds the failover scenario leaves the machine alone after each SIGKILL.
FAILOVER_QUIET = 0.05


def failover(trials: int) -> dict[str, Any]:
    """Time from SIGKILL of a worker holding a job to the job starting elsewhere.

    The time runs from just before ``os.kill`` to the start the taker's
    handler records itself (``benchmarks._latency:hold``). After the kill
    this process waits ``FAILOVER_QUIET`` before it asks the server whether
    the job has moved: asking every millisecond from the kill on, as it once
    did, put this process and the server's replies on the machine's two
    cores while the victim was being torn down and the taker was starting
    the job (the beanstalkd runner blocks on its standby's pipe instead).
    """
    port = free_port()
    delays: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "starts.log")
        env = {"JOBQUEUE_LATENCY_LOG": log}
        with spawned("serve", "--port", str(port), "--lease-timeout", "60"):

            async def trial(index: int) -> None:
                with spawned(
                    "worker", "--connect", f"127.0.0.1:{port}", "--name", f"victim{index}",
                    "--handlers", "benchmarks._latency:HANDLERS", env=env,
                ) as victim:  # fmt: skip
                    await wait_ready(port, 1)
                    async with Client.connect("127.0.0.1", port) as client:
                        job_id = await client.submit("hold", {"seconds": 3600})
                        with trio.fail_after(10):
                            while (await client.status(job_id)).state != "running":  # noqa: ASYNC110  (remote state)
                                await trio.sleep(0.002)
                        with spawned(
                            "worker", "--connect", f"127.0.0.1:{port}", "--name", f"taker{index}",
                            "--handlers", "benchmarks._latency:HANDLERS", env=env,
                        ):  # fmt: skip
                            await wait_ready(port, 1)
                            killed_at = time.time()
                            os.kill(victim.pid, signal.SIGKILL)
                            await trio.sleep(FAILOVER_QUIET)
                            with trio.fail_after(10):
                                while (await client.status(job_id)).attempt < 2:  # noqa: ASYNC110  (remote state)
                                    await trio.sleep(0.001)
                            started = _last_start(log, job_id)
                            delays.append(started - killed_at)
                            await client.cancel(job_id)

            async def drive() -> None:
                for index in range(trials):
                    await trial(index)

            trio.run(drive)
    summary = latency_summary(delays)
    return {
        "system": "jobqueue",
        "variant": "default",
        "scenario": "failover",
        "trials": trials,
        "p50_ms": summary["p50_ms"],
        "p90_ms": summary["p90_ms"],
        "max_ms": summary["max_ms"],
    }


def _last_start(log: str, job_id: str) -> float:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(log) as f:
            for line in reversed(f.read().splitlines()):
                if line.startswith(job_id + " "):
                    return float(line.split()[1])
        time.sleep(0.001)
    raise RuntimeError(f"no start recorded for {job_id}")


def memory(pending: int, body_bytes: int) -> dict[str, Any]:
    """Server RSS per pending job, with ``pending`` jobs of ``body_bytes`` each."""
    port = free_port()
    with spawned("serve", "--port", str(port)) as server:

        async def drive() -> dict[str, Any]:
            await wait_ready(port, 0)
            empty = rss_bytes(server.pid)
            body = "x" * body_bytes
            async with Client.connect("127.0.0.1", port) as client:
                batch = getattr(client, "submit_many", None)
                if batch is not None:
                    for start in range(0, pending, 1000):
                        await batch(
                            [{"name": "noop", "payload": body}] * min(1000, pending - start)
                        )
                else:
                    for _ in range(pending):
                        await client.submit("noop", body)
                assert (await client.stats()).jobs["pending"] == pending
            full = rss_bytes(server.pid)
            return {
                "system": "jobqueue",
                "variant": "default",
                "scenario": "memory",
                "pending": pending,
                "body_bytes": body_bytes,
                "bytes_per_job": (full - empty) / pending,
                "server_rss_bytes": full,
            }

        return trio.run(drive)


def scaling_state(sizes: list[int]) -> list[dict[str, Any]]:
    """Cost of submit and assign in the pure state machine at each pending size."""
    from jobqueue._config import QueueRules
    from jobqueue._state import QueueState

    rows = []
    for size in sizes:
        state = QueueState(rules=QueueRules(max_pending=None))  # it holds 10**6 and then some
        for _ in range(size):
            state.submit("noop", None, 0.0)
        n = 20000
        start = time.perf_counter()
        for _ in range(n):
            state.submit("noop", None, 0.0)
        submit_us = (time.perf_counter() - start) / n * 1e6
        start = time.perf_counter()
        for index in range(n):
            state.assign(index, 0.0)
        assign_us = (time.perf_counter() - start) / n * 1e6
        rows.append(
            {
                "system": "jobqueue",
                "scenario": "state_scaling",
                "pending": size,
                "submit_us": submit_us,
                "assign_us": assign_us,
            }
        )
    return rows


def scaling_connections(jobs: int) -> list[dict[str, Any]]:
    """Throughput as worker connections go from 1 to 64, and idle clients from 0 to 1,000."""
    rows = []
    for concurrency in (1, 4, 8, 16, 64):
        row = throughput(jobs, concurrency)
        rows.append({**row, "scenario": "scaling", "workers": concurrency, "idle_clients": 0})
    for idle_clients in (10, 100, 1000):
        row = throughput(jobs, 8, idle_clients)
        rows.append({**row, "scenario": "scaling", "workers": 8, "idle_clients": idle_clients})
    return rows


def print_floor_and_ceiling(floor: list[dict[str, Any]], throughput: list[dict[str, Any]]) -> None:
    """The round-trip floors, and what they say about the one-producer shape.

    A job end to end is two requests on the server (the producer's submit;
    the worker's report that also fetches the next job) and each answer is
    written back, so a server of our shape cannot spend less than two of the
    ``hops`` round trips' server CPU per job, with no queue in it at all.
    """
    print("\none request/reply round trip at a time (what a sequential producer waits on)")
    print_floor(floor)
    hops = next((row for row in floor if row["variant"] == "hops"), None)
    bare = next((row for row in floor if row["variant"] == "trio"), None)
    ours = next(
        (r for r in throughput if r["system"] == "jobqueue" and r.get("variant") == "default"),
        None,
    )
    if hops is None or bare is None:
        return
    per_job = 2 * hops["server_cpu_us"]
    print(f"  two such requests per job: a server of our shape, doing nothing, needs "
          f"{per_job:.0f} us CPU per job, so at most {1e6 / per_job:,.0f} jobs/s")  # fmt: skip
    print(f"  of which the reader -> coordinator -> writer hops: "
          f"{2 * (hops['server_cpu_us'] - bare['server_cpu_us']):.0f} us")  # fmt: skip
    if ours is not None and ours.get("server_cpu_s"):
        used = ours["server_cpu_s"] / ours["jobs"] * 1e6
        print(f"  jobqueue end to end: {used:.0f} us server CPU per job "
              f"({used - per_job:.0f} us of queue work above that floor)")  # fmt: skip
    taskiq = next((r for r in throughput if r["system"] == "taskiq" and "jobs_per_s" in r), None)
    if taskiq is not None:
        print(f"  2x taskiq in this run would be {2 * taskiq['jobs_per_s']:,.0f} jobs/s")


def print_producers(rows: list[dict[str, Any]]) -> None:
    """The ``producers`` scenario: jobs/s and CPU per job in each process, ours/peer."""
    if not rows:
        return
    ours = next((r for r in rows if r["system"] == "jobqueue" and "jobs_per_s" in r), None)
    count = next((r["producers"] for r in rows if "producers" in r), "?")
    print(f"\n{count} producers at once (processes, one job per request), same workers")
    print(f"  {'system':<12}{'variant':<12}{'jobs/s':>10}{'submit s':>10}"
          f"{'CPU us/job: server':>20}{'workers':>9}{'producers':>11}"
          f"{'ours/peer':>11}")  # fmt: skip
    for row in rows:
        if "jobs_per_s" not in row:
            print(f"  {row['system']:<12}{row.get('variant', ''):<12} "
                  f"{row.get('skipped') or row.get('error')}")  # fmt: skip
            continue
        per_job = 1e6 / row["jobs"]
        submit = row.get("submit_seconds", row.get("submit_s", 0.0))
        ratio = ""
        if ours and row is not ours:
            ratio = f"{ours['jobs_per_s'] / row['jobs_per_s']:.2f}x"
        print(f"  {row['system']:<12}{row.get('variant', ''):<12}{row['jobs_per_s']:>10,.0f}"
              f"{submit:>10.2f}{row['server_cpu_s'] * per_job:>20.0f}"
              f"{row['worker_cpu_s'] * per_job:>9.0f}{row['producer_cpu_s'] * per_job:>11.0f}"
              f"{ratio:>11}")  # fmt: skip


def print_table(rows: list[dict[str, Any]]) -> None:
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_scenario.setdefault(row["scenario"], []).append(row)
    ours_tp = next(
        (
            r
            for r in by_scenario.get("throughput", [])
            if r["system"] == "jobqueue" and r.get("variant") == "default"
        ),
        None,
    )
    ours_batched = next(
        (r for r in by_scenario.get("throughput", []) if r.get("variant") == "batched"), None
    )
    print("\nthroughput (20k-style no-op jobs, one producer, 8-way concurrency)")
    print(f"  {'system':<12}{'variant':<12}{'jobs/s':>10}{'server CPU s':>14}{'RSS MiB':>10}"
          f"{'ours/peer':>11}")  # fmt: skip
    for row in by_scenario.get("throughput", []):
        if "jobs_per_s" not in row:
            print(f"  {row['system']:<12}{row.get('variant', ''):<12} "
                  f"{row.get('skipped') or row.get('error')}")  # fmt: skip
            continue
        ratio = ""
        if ours_tp and row["system"] != "jobqueue":
            ratio = f"{ours_tp['jobs_per_s'] / row['jobs_per_s']:.2f}x"
        rss = row.get("server_rss_bytes") or 0
        print(f"  {row['system']:<12}{row.get('variant', ''):<12}{row['jobs_per_s']:>10,.0f}"
              f"{row.get('server_cpu_s', 0):>14.2f}{rss / 2**20:>10.1f}{ratio:>11}")  # fmt: skip
    beanstalkd = next(
        (r for r in by_scenario.get("throughput", []) if r["system"] == "beanstalkd"), None
    )
    if ours_batched and beanstalkd and "jobs_per_s" in beanstalkd:
        # Batched against the one peer measured on its own cheapest path.
        print(f"  jobqueue batched / beanstalkd: "
              f"{ours_batched['jobs_per_s'] / beanstalkd['jobs_per_s']:.2f}x")  # fmt: skip
    print_producers(by_scenario.get("producers", []))
    print("\nlatency, submit to handler start (ms)")
    for row in by_scenario.get("latency", []):
        if "p50_ms" in row:
            print(f"  {row['system']:<12}{row.get('variant', ''):<12}p50 {row['p50_ms']:.2f}  "
                  f"p90 {row.get('p90_ms', 0):.2f}  p99 {row['p99_ms']:.2f}  "
                  f"max {row.get('max_ms') or 0:.2f}")  # fmt: skip
    print("\nfailover after SIGKILL (ms)")
    for row in by_scenario.get("failover", []):
        if "p50_ms" in row:
            print(f"  {row['system']:<12}p50 {row['p50_ms']:.2f}  p90 {row.get('p90_ms', 0):.2f}  "
                  f"max {row['max_ms']:.2f}  ({row.get('trials')} trials)")  # fmt: skip
    print("\nmemory per pending job (bytes, body included)")
    for row in by_scenario.get("memory", []):
        if "bytes_per_job" in row:
            print(f"  {row['system']:<12}{row['bytes_per_job']:.0f}  "
                  f"({row.get('pending')} pending)")  # fmt: skip
    if by_scenario.get("scaling"):
        print("\njobqueue throughput vs worker connections and idle clients")
        for row in by_scenario["scaling"]:
            print(f"  {row['workers']:>3} worker connections, {row['idle_clients']:>5} idle "
                  f"clients: {row['jobs_per_s']:>8,.0f} jobs/s  "
                  f"server RSS {row['server_rss_bytes'] / 2**20:.1f} MiB")  # fmt: skip
    if by_scenario.get("floor"):
        print_floor_and_ceiling(by_scenario["floor"], by_scenario.get("throughput", []))
    if by_scenario.get("state_scaling"):
        print("\nstate machine cost vs pending jobs (us per operation)")
        for row in by_scenario["state_scaling"]:
            print(f"  {row['pending']:>9,} pending: submit {row['submit_us']:.2f}  "
                  f"assign {row['assign_us']:.2f}")  # fmt: skip
    if by_scenario.get("clients"):
        print_clients(by_scenario["clients"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["ours", "peers", "all"], default="all")
    harness.add_shape_options(parser)
    parser.add_argument("--failover-trials", type=int, default=20)
    parser.add_argument("--pending", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100, help="submit_many size, batched run")
    parser.add_argument("--prefetch", type=int, default=64, help="worker prefetch, batched run")
    parser.add_argument(
        "--scenarios",
        default=(
            "throughput,batched,producers,latency,failover,memory,scaling,connections,floor,clients"
        ),
        help="which of our scenarios to run (comma-separated)",
    )
    parser.add_argument(
        "--producers",
        type=int,
        default=producers.PRODUCERS,
        help="producer processes at once in the 'producers' scenario",
    )
    parser.add_argument("--json-out", help="also write every row as JSON lines here")
    parser.add_argument(
        "--scaling-jobs",
        type=int,
        default=5000,
        help="jobs per run of the 'connections' scenario (0: skip it)",
    )
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    scenarios = set(args.scenarios.split(","))
    if args.only in ("ours", "all"):
        if "throughput" in scenarios:
            rows.append(throughput(args.jobs, args.concurrency))
        if "batched" in scenarios:
            rows.append(
                throughput(args.jobs, args.concurrency, batch=args.batch, prefetch=args.prefetch)
            )
        if "producers" in scenarios:
            rows.append(many_producers(args.jobs, args.concurrency, args.producers))
        if "latency" in scenarios:
            rows.append(latency(args.rate, args.duration, args.concurrency))
        if "failover" in scenarios:
            rows.append(failover(args.failover_trials))
        if "memory" in scenarios:
            rows.append(memory(args.pending, 100))
        if "scaling" in scenarios:
            rows.extend(scaling_state([10**3, 10**4, 10**5, 10**6]))
        if "connections" in scenarios and args.scaling_jobs:
            rows.extend(scaling_connections(args.scaling_jobs))
        if "floor" in scenarios:
            rows.extend(floor(args.jobs))
        if "clients" in scenarios:
            rows.extend(clients(args.jobs))
    if args.only in ("peers", "all"):
        rows.extend(
            run_peers(
                jobs=args.jobs,
                concurrency=args.concurrency,
                rate=args.rate,
                latency_duration=args.duration,
                memory_pending=args.pending,
                failover_trials=args.failover_trials,
                producers=args.producers,
                scenarios=[name for name in PEER_SCENARIOS if name in scenarios],
            )
        )
    if args.json_out:
        with open(args.json_out, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    print_table(rows)


if __name__ == "__main__":
    main()
