"""Memory soak: push a million no-op jobs through a server process and watch its memory.

    python -m benchmarks.soak [--jobs 1000000] [--concurrency 8] [--window 2000]

Run from the repository root. The server (``python -m jobqueue serve``) and one
worker (``python -m jobqueue worker --concurrency 8`` with the no-op handler of
``benchmarks._noop``) each run in their own process; this process is the one
producer. It keeps at most ``--window`` jobs submitted ahead of those
completed, so the pending queue stays small and what is measured is the cost
of jobs that have finished.

Every ``--every`` (100,000) completed jobs it reads the server's resident set
size (``VmRSS`` in ``/proc/<pid>/status``) and prints a row: completed jobs,
RSS in MiB, and jobs per second so far. The server remembers 100,000 finished
jobs by default (``--retention``) and forgets older ones, so its memory should
level off once that many have finished. At the end it prints the RSS growth
from the first mark (100,000) to the end, and exits 1 if it is over
``--max-growth`` percent (10).

The first mark comes before steady state: at 100,000 completed the finished
jobs have only just filled the retention, and the server's structures (and
the allocator's pools) keep growing for a while after; from 200,000 on the RSS
should stay flat. It used to climb on glibc in steps of about 7 MiB (79 to
101 MiB over a million jobs), each the rebuild of one dict of all 100,000
finished jobs in a fragmented heap; finished jobs now live in generations of
5,461 that are never rebuilt (docs/design.md, section 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import attrs
import trio

from benchmarks.harness import free_port, rss_bytes, spawned, wait_ready
from jobqueue import Client


def rss_mib(pid: int) -> float:
    """The resident set size of process ``pid``, in MiB (Linux ``/proc``)."""
    return rss_bytes(pid) / 2**20


@attrs.frozen
class Sample:
    completed: int
    rss_mib: float
    seconds: float

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


@attrs.define(eq=False)
class Progress:
    """Completed jobs as last seen in ``stats``; the producer waits on it."""

    completed: int = 0
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def update(self, completed: int) -> None:
        self.completed = completed
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()


async def produce(client: Client, jobs: int, window: int, progress: Progress) -> None:
    for submitted in range(jobs):
        while submitted - progress.completed >= window:
            await progress.wait_changed()
        await client.submit("noop", None)


async def monitor(
    client: Client,
    jobs: int,
    every: int,
    server_pid: int,
    progress: Progress,
    samples: list[Sample],
) -> None:
    """Poll ``stats``; sample the server's RSS at each mark; return when all jobs completed."""
    start = time.monotonic()
    next_mark = every
    while True:
        stats = await client.stats()
        completed = stats.totals["completed"]
        progress.update(completed)
        if completed >= next_mark or completed >= jobs:
            sample = Sample(completed, rss_mib(server_pid), time.monotonic() - start)
            samples.append(sample)
            print(
                f"{sample.completed:>12,} {sample.rss_mib:>10.1f} {sample.rate:>10,.0f}",
                flush=True,
            )
            while next_mark <= completed:
                next_mark += every
        if completed >= jobs:
            return
        await trio.sleep(0.02)


async def drive(args: argparse.Namespace, port: int, server_pid: int) -> list[Sample]:
    samples: list[Sample] = []
    progress = Progress()
    async with (
        Client.connect("127.0.0.1", port, name="soak-producer") as producer,
        Client.connect("127.0.0.1", port, name="soak-monitor") as observer,
    ):
        print(f"{'completed':>12} {'RSS MiB':>10} {'jobs/s':>10}", flush=True)
        print(f"{0:>12,} {rss_mib(server_pid):>10.1f} {'':>10}", flush=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce, producer, args.jobs, args.window, progress)
            await monitor(observer, args.jobs, args.every, server_pid, progress, samples)
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--window", type=int, default=2000, help="most jobs ahead of completed")
    parser.add_argument("--every", type=int, default=100_000, help="sample every N completed")
    parser.add_argument("--retention", type=int, default=None, help="server --retention")
    parser.add_argument("--max-growth", type=float, default=10.0, metavar="PERCENT")
    args = parser.parse_args(argv)

    port = free_port()
    serve = ["serve", "--port", str(port)]
    if args.retention is not None:
        serve += ["--retention", str(args.retention)]
    with spawned(*serve) as server, spawned(
        "worker", "--connect", f"127.0.0.1:{port}", "--concurrency", str(args.concurrency),
        "--handlers", "benchmarks._noop:HANDLERS",
    ) as worker:  # fmt: skip
        # (Other processes cannot tell us when the workers are connected.)
        trio.run(wait_ready, port, args.concurrency, [server, worker], 30.0)
        started = time.monotonic()
        samples = trio.run(drive, args, port, server.pid)
        wall = time.monotonic() - started

    print(f"{args.jobs:,} jobs in {wall:.0f}s ({args.jobs / wall:,.0f} jobs/s)")
    if len(samples) < 2:
        print("too few samples to measure growth; use --jobs of at least two --every")
        return 0
    first, last = samples[0], samples[-1]
    growth = (last.rss_mib - first.rss_mib) / first.rss_mib * 100
    verdict = "OK" if growth <= args.max_growth else "FAIL"
    print(
        f"RSS growth from {first.completed:,} to {last.completed:,} completed: "
        f"{first.rss_mib:.1f} -> {last.rss_mib:.1f} MiB ({growth:+.1f}%, limit "
        f"{args.max_growth:g}%): {verdict}"
    )
    # Not part of the verdict, but it tells a leak (still climbing) from memory
    # that grew for a while and levelled off.
    middle = next(sample for sample in samples if sample.completed >= last.completed // 2)
    if middle is not last:
        late = (last.rss_mib - middle.rss_mib) / middle.rss_mib * 100
        print(
            f"RSS growth over the second half ({middle.completed:,} to {last.completed:,}): "
            f"{middle.rss_mib:.1f} -> {last.rss_mib:.1f} MiB ({late:+.1f}%); "
            f"peak {max(sample.rss_mib for sample in samples):.1f} MiB"
        )
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
