"""Rough end-to-end throughput: N no-op jobs, one producer, 8-way worker concurrency.

The server and the worker each run in their own process; this process is the
producer. Prints jobs/s and each process's CPU time per job. It is the
``throughput`` scenario of ``benchmarks.run`` on its own, without the peers.

    python -m benchmarks.quick_throughput [--jobs 20000] [--concurrency 8]
    python -m benchmarks.quick_throughput --batch 100 --prefetch 64   # batched
    python -m benchmarks.quick_throughput --prefetch 1                # one job a request
    python -m benchmarks.quick_throughput --kinds async,def,process   # handler kinds

With ``--kinds``, one row per handler kind, one after another in one run:
``async`` (on the worker's loop), ``def`` (a worker thread), ``process``
(``jobqueue.in_process``; needs ``jobqueue[processes]``).
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.run import throughput


def main(jobs: int, concurrency: int, batch: int, prefetch: str | None, kinds: list[str]) -> None:
    for kind in kinds:
        row = throughput(
            jobs, concurrency, batch=batch if batch > 1 else 0, prefetch=prefetch, kind=kind
        )
        print_row(jobs, concurrency, row, "" if kinds == ["async"] else f"{kind} handler, ")


def print_row(jobs: int, concurrency: int, row: dict[str, Any], label: str) -> None:
    per_job = 1e6 / jobs
    print(
        f"{label}{jobs} jobs, concurrency {concurrency}: {row['jobs_per_s']:,.0f} jobs/s end to end"
        f" (submit phase {jobs / row['submit_seconds']:,.0f}/s); CPU per job: server"
        f" {row['server_cpu_s'] * per_job:.0f} us, worker {row['worker_cpu_s'] * per_job:.0f} us,"
        f" producer {row['producer_cpu_s'] * per_job:.0f} us"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="submit_many size (1: submit)")
    parser.add_argument(
        "--prefetch", help="worker prefetch: a number, or auto (default: the worker's, auto)"
    )
    parser.add_argument(
        "--kinds", default="async", help="handler kinds, comma-separated: async, def, process"
    )
    args = parser.parse_args()
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - {"async", "def", "process"})
    if unknown:
        parser.error(f"unknown --kinds {', '.join(unknown)} (async, def, process)")
    main(args.jobs, args.concurrency, args.batch, args.prefetch, kinds)
