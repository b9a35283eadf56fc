"""Submit and assign cost in the state alone, from 10^3 to 10^6 pending jobs.

Routing by job name must cost the same whatever the number of pending jobs:
a worker that runs only some names looks at the heads of those names' lines,
never along a line. Each size is measured in the worst case for a scan: the
queue is filled with jobs *no* measured worker runs (a rolling deploy's new
name, submitted first, so every one of them is ahead of the others), plus
jobs of a few names the workers do run. Then, in steady state (one submit,
one assign, one complete per step, so the number pending stays put):

- ``routed``: a worker running three names takes the next of its jobs (it
  looks at its three lines' heads);
- ``many``: the same with 200 names in the queue, the worker running all
  but the filler's (it walks the heap of the lines' heads);
- ``any``: a worker without names (the default path) takes the best job of
  a queue holding only jobs it can run, as before routing existed.

    python -m benchmarks.routing_micro [--sizes 1000,10000,100000,1000000] [--steps 20000]
"""

from __future__ import annotations

import argparse
import time

from jobqueue._config import QueueRules
from jobqueue._state import QueueState

#: Names the routed worker runs, besides the one that fills the queue.
_SERVED = ("old", "old-b", "old-c")
#: Names the ``many`` worker runs.
_MANY = tuple(f"task-{index}" for index in range(200))


def measure(pending: int, steps: int, path: str) -> tuple[float, float]:
    """Microseconds per submit and per assign(+complete) with ``pending`` jobs waiting."""
    q = QueueState(rules=QueueRules(max_pending=None, finished_retention=1000))
    now = 0.0
    served = _MANY if path == "many" else _SERVED
    names: frozenset[str] | None = None
    if path == "any":
        for index in range(pending):
            q.submit(served[index % len(served)], None, now)
    else:
        # The jobs nobody measured can run come first: all of them ahead in line.
        for _ in range(pending):
            q.submit("new", None, now)
        names = frozenset(served)
    for index in range(2 * len(served)):
        q.submit(served[index % len(served)], None, now)
    submit_s = assign_s = 0.0
    clock = time.perf_counter
    for index in range(steps):
        now += 1e-4
        start = clock()
        q.submit(served[index % len(served)], None, now, priority=index % 2)
        middle = clock()
        job = q.assign("w", now, "w", names=names)
        assert job is not None
        assert job.name != "new"
        q.complete(job.id, "w", job.attempt, None, now)
        end = clock()
        submit_s += middle - start
        assign_s += end - middle
    return submit_s / steps * 1e6, assign_s / steps * 1e6


def main(sizes: list[int], steps: int) -> None:
    print(f"{'pending':>10} {'path':>7} {'submit us':>10} {'assign+complete us':>19}")
    for size in sizes:
        for path in ("any", "routed", "many"):
            submit_us, assign_us = measure(size, steps, path)
            print(f"{size:>10,} {path:>7} {submit_us:>10.2f} {assign_us:>19.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--steps", type=int, default=20000)
    args = parser.parse_args()
    main([int(size) for size in args.sizes.split(",")], args.steps)
