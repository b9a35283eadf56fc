"""A queue growing to a million jobs: its clients' longest waits, with and without freezing.

    python -m benchmarks.large_queue [--jobs 1000000] [--batch 50] [--rounds 2] [--journal]
                                     [--flow N]

One client submits ``--jobs`` jobs, ``--batch`` to a ``submit_many``, with
no worker, and the time of every request is kept. Two servers take turns,
round after round, both without a journal and without a limit on pending jobs:

- ``serve_queue``: the server as a program that embeds it runs it, with
  Python's cyclic garbage collector as it comes. Each full pass walks every
  job held, and one runs each time the heap has grown by a quarter;
- ``jobqueue serve``: the command, whose process freezes the survivors of a
  slow full pass (``jobqueue/_collector.py``), so later passes walk only
  what came after.

Printed for each run: p50, p99 and the longest request, the requests over
50 ms, and the whole time; the server's peak RSS beside it (freezing must
not keep what reference counting frees).

With ``--journal`` both servers journal to a fresh directory with ``--fsync
always``: then every submit waits for its flush, and the journal compacts
as it grows (at about 1,500, 6,000, 24,000, 97,000 and 390,000 jobs), so
the longest requests show what a compaction costs the replies meanwhile.

With ``--flow N`` the queue then stays that deep while ``N`` more jobs flow
through it: a ``Worker`` (2 slots, ``prefetch`` of ``--batch``) runs the
oldest jobs while the client submits ``N`` more, and that phase's requests
are timed apart, with a probe that asks for a job's status every 5 ms until
the worker is done. Jobs frozen while the queue grew are freed as they are
run, and new ones take their place: the collector's passes must stay short
there too (the freezer unfreezes only when the frozen objects dwindle to a
quarter of their peak, which a steady backlog should not reach).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from typing import Any

import trio

from benchmarks.harness import ROOT, free_port, latency_summary, python_module, wait_ready

SLOW = 0.05  # a request over this is a stall a client notices


def serve_embedded(port: int, journal: str | None) -> None:
    """(In a child process.) ``serve_queue`` as a program would embed it."""
    from jobqueue import serve_queue

    trio.run(lambda: serve_queue(port, max_pending=None, journal=journal))


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def grow(jobs: int, batch: int, freezing: bool, journal: bool, flow: int) -> dict[str, Any]:
    """Submit ``jobs`` to a fresh server, ``batch`` a request, then ``flow`` more
    while as many are run; the requests' times."""
    with tempfile.TemporaryDirectory(prefix="bench-large-") as directory:
        return _grow(jobs, batch, freezing, directory if journal else None, flow)


def _summary(seconds: list[float], total: float) -> dict[str, Any]:
    return {
        **latency_summary(seconds),
        "slow": sum(1 for s in seconds if s > SLOW),
        "seconds": total,
    }


def _grow(jobs: int, batch: int, freezing: bool, journal: str | None, flow: int) -> dict[str, Any]:
    port = free_port()
    if freezing:
        argv = python_module("jobqueue", "serve", "--port", str(port), "--max-pending", "0")
        if journal is not None:
            argv += ["--journal", journal, "--fsync", "always"]
    else:
        argv = python_module("benchmarks.large_queue", "--serve-embedded", str(port))
        if journal is not None:
            argv += ["--serve-journal", journal]
    server = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        trio.run(wait_ready, port, 0, [server])
        seconds, total = trio.run(_submit_all, port, jobs, batch)
        row = {**_summary(seconds, total), "peak_rss": peak_rss(server.pid)}
        if flow:
            submits, probes = trio.run(_flow, port, jobs, flow, batch)
            row["flow"] = {**_summary(*submits), "peak_rss": peak_rss(server.pid)}
            row["probe"] = {**_summary(*probes), "peak_rss": row["flow"]["peak_rss"]}
    finally:
        server.kill()
        server.wait()
    return row


async def _submit_all(port: int, jobs: int, batch: int) -> tuple[list[float], float]:
    from jobqueue import Client

    each = [{"name": "grow", "payload": {"i": 1, "data": "x" * 60}}] * batch
    seconds: list[float] = []
    async with Client.connect("127.0.0.1", port) as client:
        started = time.perf_counter()
        for _ in range(jobs // batch):
            sent = time.perf_counter()
            await client.submit_many(each)
            seconds.append(time.perf_counter() - sent)
        total = time.perf_counter() - started
        assert (await client.stats()).jobs["pending"] == jobs // batch * batch
    return seconds, total


async def _flow(
    port: int, jobs: int, flow: int, batch: int
) -> tuple[tuple[list[float], float], tuple[list[float], float]]:
    """Run ``flow`` of the queue's oldest jobs while submitting ``flow`` more.

    Returns the submits' times, and those of a probe that asks for one job's
    status every 5 ms until the worker is done (the submits end before it).
    """
    from jobqueue import Client, Job, Worker

    each = [{"name": "grow", "payload": {"i": 1, "data": "x" * 60}}] * batch
    target = flow // batch * batch
    ran = 0
    done = trio.Event()

    async def run(job: Job) -> None:
        nonlocal ran
        ran += 1
        if ran >= target:
            done.set()

    async def probe(job_id: str) -> None:
        async with Client.connect("127.0.0.1", port) as prober:
            while not done.is_set():
                sent = time.perf_counter()
                await prober.status(job_id)
                probed.append(time.perf_counter() - sent)
                await trio.sleep(0.005)

    seconds: list[float] = []
    probed: list[float] = []
    worker = Worker("127.0.0.1", port, {"grow": run}, concurrency=2, prefetch=batch)
    async with Client.connect("127.0.0.1", port) as client, trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        started = time.perf_counter()
        for index in range(target // batch):
            sent = time.perf_counter()
            ids = await client.submit_many(each)
            seconds.append(time.perf_counter() - sent)
            if not index:
                nursery.start_soon(probe, ids[0])
        submitted = time.perf_counter() - started
        await done.wait()  # the backlog stays about ``jobs`` deep meanwhile
        total = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return (seconds, submitted), (probed, total)


def _line(name: str, row: dict[str, Any]) -> str:
    return (
        f"  {name:26} p50 {row['p50_ms']:5.2f} ms  p99 {row['p99_ms']:6.2f} ms  "
        f"longest {row['max_ms']:6.1f} ms  {row['slow']:3} over {SLOW * 1e3:.0f} ms  "
        f"{row['seconds']:5.1f} s  peak RSS {row['peak_rss'] / 2**20:,.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.large_queue")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs the queue grows to")
    parser.add_argument("--batch", type=int, default=50, help="jobs a submit_many")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each server")
    parser.add_argument("--journal", action="store_true", help="journal, --fsync always")
    parser.add_argument(
        "--flow", type=int, default=0, help="then run this many jobs through the full queue"
    )
    parser.add_argument("--serve-embedded", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-journal", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_embedded:
        serve_embedded(args.serve_embedded, args.serve_journal)
        return
    print(f"load average before: {os.getloadavg()}", flush=True)
    journal = ", a journal (--fsync always)" if args.journal else ""
    print(
        f"{args.jobs:,} jobs, {args.batch} a request, one client, no worker{journal}:", flush=True
    )
    if args.flow:
        print(f"then {args.flow:,} more while a worker runs as many of the oldest:", flush=True)
    for _ in range(args.rounds):
        for freezing in (False, True):
            row = grow(args.jobs, args.batch, freezing, args.journal, args.flow)
            name = "jobqueue serve (freezing)" if freezing else "serve_queue (as embedded)"
            print(_line(name, row), flush=True)
            if args.flow:
                print(_line(f"  then {args.flow:,} submitted", row["flow"]), flush=True)
                print(_line("  and run (a probe)", row["probe"]), flush=True)
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
