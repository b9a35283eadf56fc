"""A queue growing to a million jobs: its clients' longest waits, with and without freezing.

    python -m benchmarks.large_queue [--jobs 1000000] [--batch 50] [--rounds 2] [--journal]

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


def grow(jobs: int, batch: int, freezing: bool, journal: bool) -> dict[str, Any]:
    """Submit ``jobs`` to a fresh server, ``batch`` a request; the requests' times."""
    with tempfile.TemporaryDirectory(prefix="bench-large-") as directory:
        return _grow(jobs, batch, freezing, directory if journal else None)


def _grow(jobs: int, batch: int, freezing: bool, journal: str | None) -> dict[str, Any]:
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
        rss = peak_rss(server.pid)
    finally:
        server.kill()
        server.wait()
    return {
        **latency_summary(seconds),
        "slow": sum(1 for s in seconds if s > SLOW),
        "seconds": total,
        "peak_rss": rss,
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.large_queue")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs the queue grows to")
    parser.add_argument("--batch", type=int, default=50, help="jobs a submit_many")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each server")
    parser.add_argument("--journal", action="store_true", help="journal, --fsync always")
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
    for _ in range(args.rounds):
        for freezing in (False, True):
            row = grow(args.jobs, args.batch, freezing, args.journal)
            name = "jobqueue serve (freezing)" if freezing else "serve_queue (as embedded)"
            print(
                f"  {name:26} p50 {row['p50_ms']:5.2f} ms  p99 {row['p99_ms']:6.2f} ms  "
                f"longest {row['max_ms']:6.1f} ms  {row['slow']:3} over {SLOW * 1e3:.0f} ms  "
                f"{row['seconds']:5.1f} s  peak RSS {row['peak_rss'] / 2**20:,.0f} MiB",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
