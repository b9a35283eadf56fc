"""A no-op worker with prefetch, for the batched throughput benchmark.

    python -m benchmarks._batched_worker --connect 127.0.0.1:8080 --concurrency 8 --prefetch 64

The command line has no ``--prefetch`` flag, so the benchmark runs the worker
through the API, exactly as a user of ``Worker(prefetch=...)`` would.
"""

from __future__ import annotations

import argparse

import trio

from benchmarks._noop import HANDLERS
from jobqueue import Worker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connect", default="127.0.0.1:8080")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--prefetch", type=int, default=64)
    args = parser.parse_args()
    host, _, port = args.connect.rpartition(":")
    worker = Worker(
        host, int(port), handlers=HANDLERS, concurrency=args.concurrency, prefetch=args.prefetch
    )
    trio.run(worker.run)


if __name__ == "__main__":
    main()
