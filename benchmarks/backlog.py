"""A backlog drained by one worker, with ``prefetch`` 1, ``auto`` and 64.

Two shapes, each with the jobs queued before the worker starts:

- **short**: ``--jobs`` no-op jobs, one worker process with 8 slots. The time
  runs from the first job's start to the last one's end, by the server's own
  stamps (``started_at``, ``finished_at``), so the worker's start is not in it.
- **long**: 40 jobs of 50 ms (the built-in ``sleep``), one worker process with
  4 slots: the best a worker can do is 0.5 s. A fixed prefetch of 64 lets the
  first slot take every job and run them one after another while the other
  three idle; ``auto`` must not.
- **mixed**: 400 jobs of 1 to 30 ms (drawn with a fixed seed), 4 slots: the
  best is their total over 4. ``auto`` takes several of the short ones at a
  time and gives back what a batch has not started by 20 ms; the jobs given
  back are counted from the statuses (``attempt`` beyond ``attempts_spent``).

    python -m benchmarks.backlog [--jobs 30000] [--rounds 3]

Each round runs the variants one after another, each on a fresh server.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import trio

from benchmarks.harness import free_port, spawned, wait_ready
from jobqueue import Client

VARIANTS = ("1", "auto", "64")
LONG_JOBS = 40
LONG_SECONDS = 0.05
LONG_SLOTS = 4
MIXED_JOBS = 400
MIXED_SECONDS = (0.001, 0.03)


def drain(
    prefetch: str, jobs: list[dict[str, Any]], slots: int, handlers: str
) -> tuple[float, int | None]:
    """Seconds from the first job's start to the last job's end, on a fresh server.

    And how many times jobs were given back, when there are few enough jobs
    to read every status (2,000), else ``None``.
    """
    port = free_port()
    with spawned("serve", "--port", str(port)):

        async def fill() -> list[str]:
            await wait_ready(port, 0)
            async with Client.connect("127.0.0.1", port) as client:
                ids: list[str] = []
                for first in range(0, len(jobs), 500):
                    ids.extend(await client.submit_many(jobs[first : first + 500]))
                return ids

        ids = trio.run(fill)
        argv = ["worker", "--connect", f"127.0.0.1:{port}", "--concurrency", str(slots)]
        with spawned(*argv, "--handlers", handlers, "--prefetch", prefetch):

            async def span() -> tuple[float, int | None]:
                async with Client.connect("127.0.0.1", port) as client:
                    with trio.fail_after(300):
                        while (await client.stats()).totals["completed"] < len(ids):  # noqa: ASYNC110
                            await trio.sleep(0.01)
                    # Every worker slot runs its batch in order, so the first
                    # start is among the first jobs and the last end among the
                    # last ones: a few batches' worth either way is enough.
                    edge = min(len(ids), 2000)
                    first = [await client.status(job_id) for job_id in ids[:edge]]
                    last = [await client.status(job_id) for job_id in ids[-edge:]]
                    began = min(info.started_at or float("inf") for info in first)
                    ended = max(info.finished_at or 0.0 for info in last)
                    given_back = None
                    if edge == len(ids):
                        given_back = sum(
                            info.attempt - info.attempts_spent
                            for info in first
                            if info.attempts_spent is not None
                        )
                    return ended - began, given_back

            return trio.run(span)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30_000, help="no-op jobs in the short shape")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    short = [{"name": "noop"}] * args.jobs
    long = [{"name": "sleep", "payload": {"seconds": LONG_SECONDS}}] * LONG_JOBS
    best = LONG_JOBS * LONG_SECONDS / LONG_SLOTS
    draw = random.Random(27)
    times = [round(draw.uniform(*MIXED_SECONDS), 4) for _ in range(MIXED_JOBS)]
    mixed = [{"name": "sleep", "payload": {"seconds": t}} for t in times]
    mixed_best = sum(times) / LONG_SLOTS
    handlers = "benchmarks._noop:HANDLERS"
    for round_ in range(1, args.rounds + 1):
        rates = {p: args.jobs / drain(p, short, 8, handlers)[0] for p in VARIANTS}
        spans = {p: drain(p, long, LONG_SLOTS, handlers)[0] for p in VARIANTS}
        mixes = {p: drain(p, mixed, LONG_SLOTS, handlers) for p in VARIANTS}
        print(f"round {round_}")
        print(f"  short: {args.jobs:,} no-op jobs, 8 slots, jobs/s (÷ prefetch 1)")
        for p in VARIANTS:
            print(f"    prefetch {p:<5}{rates[p]:>10,.0f}  {rates[p] / rates['1']:.2f}x")
        print(f"  long: {LONG_JOBS} jobs of {LONG_SECONDS * 1000:.0f} ms, {LONG_SLOTS} slots, "
              f"first start to last end (best {best:.2f} s)")  # fmt: skip
        for p in VARIANTS:
            print(f"    prefetch {p:<5}{spans[p]:>9.2f} s")
        low, high = (round(seconds * 1000) for seconds in MIXED_SECONDS)
        print(f"  mixed: {MIXED_JOBS} jobs of {low} to {high} ms, {LONG_SLOTS} slots "
              f"(best {mixed_best:.2f} s)")  # fmt: skip
        for p in VARIANTS:
            seconds, given_back = mixes[p]
            print(f"    prefetch {p:<5}{seconds:>9.2f} s  {seconds / mixed_best:.2f}x best, "
                  f"{given_back} given back")  # fmt: skip


if __name__ == "__main__":
    main()
