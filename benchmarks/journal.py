"""The journal's costs: throughput with and without it, bytes per job, recovery, size.

    python -m benchmarks.journal [--jobs 20000] [--recover 1000000] [--passed 1000000]
        [--only throughput|recovery|size]

Four measurements, each beside its target from issue 11:

- end-to-end throughput (8 worker slots, no-op jobs) with ``--journal DIR
  --fsync always`` as a ratio to no journal, in three shapes: one producer,
  one job per request (the ``throughput`` scenario of ``benchmarks.run``);
  the same batched (``submit_many`` of 100, ``--prefetch 64``); and
  ``--producers`` producers (8) at once, one job per request each, where
  group commit lets one flush answer many producers. Target >= 0.8x. Runs
  alternate, with and without, round after round, and the best of each is
  kept; the server's CPU per job is printed beside each run;
- journal bytes per job: the records a no-op job's life writes (submitted,
  assigned, completed, forgotten);
- recovery: a process builds a journal of ``--recover`` pending jobs through
  the real writer (compacting as it goes; their payloads held as the server
  holds a submitted one, as JSON text), notes its RSS, and dies with
  ``os._exit`` (no clean-up, as after SIGKILL); then ``jobqueue serve
  --journal`` is started on it and timed until it answers with every job;
  target <= 10 s (the server's CPU time is printed beside it: on a shared
  machine the wall clock depends on the other tenants), and its RSS is
  compared with the builder's; then the replies to the first 50,000 jobs
  submitted after it, 10 a request: the longest shows whether the server
  stalls once serving (the garbage collector walking the restored jobs);
- size: ``--passed`` jobs pass through (submitted, run, completed, forgotten)
  while 1,000 stay pending; the journal's largest size and its size at the
  end against the live state (its snapshot); target < 10x.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import trio

from benchmarks.harness import (
    Stopwatch,
    cpu_seconds,
    free_port,
    rss_bytes,
    spawned,
    wait_ready,
)
from benchmarks.run import throughput
from jobqueue import Client, ConnectionLost, QueueRules
from jobqueue._events import Event
from jobqueue._journal import encode_event, frame
from jobqueue._journal_writer import Journal
from jobqueue._json import stored_form
from jobqueue._snapshot import capture, encode_snapshot
from jobqueue._state import QueueState


def compare_throughput(jobs: int, rounds: int, producers: int) -> dict[str, Any]:
    """Best-of-``rounds`` jobs/s with and without the journal, in each shape."""
    shapes = ("one per request", "batched", f"{producers} producers")
    best: dict[tuple[str, bool], float] = {}
    for _ in range(rounds):
        for journaled in (False, True):
            for shape in shapes:
                with tempfile.TemporaryDirectory(prefix="bench-journal-") as directory:
                    args = ("--journal", directory, "--fsync", "always") if journaled else ()
                    if shape == "batched":
                        row = throughput(jobs, 8, batch=100, prefetch=64, server_args=args)
                    elif shape == "one per request":
                        row = throughput(jobs, 8, server_args=args)
                    else:
                        row = concurrent_throughput(jobs, producers, 8, server_args=args)
                rate = row["jobs_per_s"]
                key = (shape, journaled)
                best[key] = max(best.get(key, 0.0), rate)
                cpu = row["server_cpu_s"] / jobs * 1e6
                print(
                    f"  {shape:16} journal={journaled!s:5} {rate:9,.0f} jobs/s, "
                    f"server CPU {cpu:4.0f} us/job",
                    flush=True,
                )
    return {
        shape: {
            "without": best[shape, False],
            "with": best[shape, True],
            "ratio": best[shape, True] / best[shape, False],
        }
        for shape in shapes
    }


def concurrent_throughput(
    jobs: int, producers: int, concurrency: int, server_args: Sequence[str] = ()
) -> dict[str, Any]:
    """``producers`` producers at once, one job per request each; ``concurrency`` worker slots.

    Each producer awaits each submit, as one sequential producer does, so
    only group commit (one flush answering every producer waiting) keeps the
    journal from costing a flush per job.
    """
    port = free_port()
    each = jobs // producers
    with spawned("serve", "--port", str(port), *server_args) as server, spawned(
        "worker", "--connect", f"127.0.0.1:{port}", "--concurrency", str(concurrency),
        "--handlers", "benchmarks._noop:HANDLERS",
    ) as worker:  # fmt: skip

        async def produce() -> None:
            async with Client.connect("127.0.0.1", port) as client:
                for _ in range(each):
                    await client.submit("noop")

        async def drive() -> dict[str, Any]:
            await wait_ready(port, concurrency)
            async with Client.connect("127.0.0.1", port) as client:
                watch = Stopwatch(server.pid, worker_pids=[worker.pid])
                async with trio.open_nursery() as nursery:
                    for _ in range(producers):
                        nursery.start_soon(produce)
                while (await client.stats()).totals["completed"] < each * producers:  # noqa: ASYNC110
                    await trio.sleep(0.002)
                seconds = watch.seconds()
                return {
                    "jobs": each * producers,
                    "jobs_per_s": each * producers / seconds,
                    "server_cpu_s": watch.server_cpu(),
                }

        return trio.run(drive)


def bytes_per_job() -> int:
    """Bytes of the records one no-op job's life appends."""
    sizes: list[int] = []

    def count(event: Event) -> None:
        sizes.append(len(frame(encode_event(event, 1.7e9))))

    q = QueueState(rules=QueueRules(finished_retention=0), id_prefix="3f9a2c1b-")
    for index in range(2):  # the second job's records are counted
        q.on_event = count if index else None
        job, _ = q.submit("noop", None, 1.0)
        assert q.assign(7, 1.0, "worker-1") is job
        q.complete(job.id, 7, 1, None, 1.0)
    return sum(sizes)


def build(directory: str, count: int) -> None:
    """(In a child process.) Journal ``count`` pending jobs, print RSS, and die uncleanly."""

    async def main() -> None:
        q = QueueState(id_prefix="3f9a2c1b-")
        journal = Journal(directory, fsync="never")
        journal.open(q, trio.current_time())
        journal.start(q, trio.current_time())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.run)
            for index in range(count):
                # Stored as the server stores a submitted payload: its JSON text.
                q.submit("noop", stored_form({"i": index}), trio.current_time())
                if index % 5000 == 0:
                    await journal.wait_idle()
            await journal.wait_idle()
            print(rss_bytes(os.getpid()), journal.compactions, flush=True)
            os._exit(0)  # as after SIGKILL: nothing closed, nothing flushed by Python

    trio.run(main)


def recovery(count: int) -> dict[str, Any]:
    """Time ``jobqueue serve --journal`` to recover ``count`` pending jobs."""
    with tempfile.TemporaryDirectory(prefix="bench-recover-") as directory:
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.journal", "--build", directory, str(count)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        built = time.perf_counter() - started
        before, compactions = int(out[0]), int(out[1])
        size = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
        port = free_port()
        started = time.perf_counter()
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "jobqueue", "serve", "--port", str(port)),
                *("--journal", directory, "--max-pending", "0"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            pending = trio.run(_await_jobs, port, count)
            seconds = time.perf_counter() - started
            cpu = cpu_seconds(server.pid)
            after = rss_bytes(server.pid)
            replies = trio.run(_first_replies, port, 50_000, 10)
        finally:
            server.kill()
            server.wait()
    return {
        "jobs": pending,
        "build_seconds": built,
        "compactions_while_building": compactions,
        "journal_bytes": size,
        "recover_seconds": seconds,
        "recover_cpu_seconds": cpu,
        "rss_before": before,
        "rss_after": after,
        "first_replies_p50": replies[len(replies) // 2],
        "first_replies_p99": replies[len(replies) * 99 // 100],
        "first_replies_max": replies[-1],
    }


async def _await_jobs(port: int, count: int) -> int:
    while True:
        try:
            async with Client.connect("127.0.0.1", port) as client:
                pending = (await client.stats()).jobs["pending"]
                assert pending == count, pending
                return pending
        except ConnectionLost:
            await trio.sleep(0.02)


async def _first_replies(port: int, jobs: int, batch: int) -> list[float]:
    """Seconds each request took, sorted: ``jobs`` submitted ``batch`` at a time."""
    seconds: list[float] = []
    async with Client.connect("127.0.0.1", port) as client:
        for _ in range(jobs // batch):
            started = time.perf_counter()
            await client.submit_many([{"name": "probe", "queue": "probe"}] * batch)
            seconds.append(time.perf_counter() - started)
    return sorted(seconds)


def size_after(passed: int, live: int = 1000) -> dict[str, Any]:
    """Journal size after ``passed`` jobs went through with ``live`` pending all along."""

    async def main(directory: str) -> dict[str, Any]:
        q = QueueState(rules=QueueRules(finished_retention=0), id_prefix="3f9a2c1b-")
        journal = Journal(directory, fsync="never")
        journal.open(q, 0.0)
        journal.start(q, 0.0)
        largest = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.run)
            now = 1.0
            for index in range(live):
                q.submit("waiting", stored_form({"i": index}), now)
            for index in range(passed):
                job, _ = q.submit("noop", stored_form({"i": index}), now, queue="work")
                q.assign(1, now, "worker-1", ["work"])
                q.complete(job.id, 1, None, None, now)
                if index % 200 == 0:
                    await journal.wait_idle()
                    largest = max(largest, journal.size)
            await journal.wait_idle()
            largest = max(largest, journal.size)
            live_bytes = len(snapshot_bytes(capture(q)))
            result = {
                "passed": passed,
                "live_jobs": len(q),
                "live_state_bytes": live_bytes,
                "journal_bytes_end": journal.size,
                "journal_bytes_largest": largest,
                "compactions": journal.compactions,
                "ratio_largest": largest / live_bytes,
            }
            nursery.cancel_scope.cancel()
        return result

    with tempfile.TemporaryDirectory(prefix="bench-size-") as directory:
        result = trio.run(main, directory)
        result["file_bytes_end"] = sum(
            os.path.getsize(os.path.join(directory, name))
            for name in os.listdir(directory)
            if name.endswith(".jqj")
        )
        return result


def snapshot_bytes(snapshot: Any) -> bytes:
    """The snapshot as the segment compaction would write."""
    return b"".join(frame(payload) for payload in encode_snapshot(snapshot))


def report_throughput(jobs: int, rounds: int, producers: int) -> None:
    """Print the throughput with and without the journal, in each shape."""
    print("throughput, best of each:", flush=True)
    for shape, row in compare_throughput(jobs, rounds, producers).items():
        print(
            f"  {shape:16} {row['without']:9,.0f} -> {row['with']:9,.0f} jobs/s "
            f"= {row['ratio']:.2f}x",
            flush=True,
        )


def report_recovery(count: int) -> None:
    """Print the recovery of ``count`` pending jobs, and the first replies after it."""
    print(f"recovery of {count:,} pending jobs:", flush=True)
    rec = recovery(count)
    print(
        f"  journal {rec['journal_bytes'] / 2**20:,.0f} MiB ({rec['compactions_while_building']}"
        f" compactions while built); serve answered with every job after "
        f"{rec['recover_seconds']:.1f}s ({rec['recover_cpu_seconds']:.1f}s of the server's CPU, "
        f"start-up included); RSS {rec['rss_before'] / 2**20:,.0f} MiB before the "
        f"crash, {rec['rss_after'] / 2**20:,.0f} MiB after recovery",
        flush=True,
    )
    print(
        f"  then 50,000 jobs, 10 a request: p50 {rec['first_replies_p50'] * 1e3:.2f} ms, "
        f"p99 {rec['first_replies_p99'] * 1e3:.2f} ms, "
        f"longest {rec['first_replies_max'] * 1e3:.1f} ms",
        flush=True,
    )


def report_size(passed: int) -> None:
    """Print the journal's size after ``passed`` jobs went through."""
    print(f"size after {passed:,} jobs passed with 1,000 live:", flush=True)
    size = size_after(passed)
    print(
        f"  live state {size['live_state_bytes'] / 1024:,.0f} KiB ({size['live_jobs']} jobs); "
        f"journal at most {size['journal_bytes_largest'] / 1024:,.0f} KiB "
        f"({size['ratio_largest']:.1f}x), {size['journal_bytes_end'] / 1024:,.0f} KiB at the end "
        f"({size['file_bytes_end'] / 1024:,.0f} KiB of file with the zeros prepared ahead); "
        f"{size['compactions']} compactions",
        flush=True,
    )


PARTS = ("throughput", "recovery", "size")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.journal")
    parser.add_argument("--jobs", type=int, default=20000, help="jobs per throughput run")
    parser.add_argument("--rounds", type=int, default=2, help="throughput runs of each kind")
    parser.add_argument("--producers", type=int, default=8, help="producers of the third shape")
    parser.add_argument("--recover", type=int, default=1_000_000, help="pending jobs to recover")
    parser.add_argument("--passed", type=int, default=1_000_000, help="jobs through, 1,000 live")
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run this part alone (repeatable; default: all)",
    )
    parser.add_argument("--build", nargs=2, metavar=("DIR", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build(args.build[0], int(args.build[1]))
        return
    parts = set(args.only or PARTS)
    print(f"load average before: {os.getloadavg()}", flush=True)
    print(f"journal bytes per no-op job: {bytes_per_job()}", flush=True)
    if "throughput" in parts:
        report_throughput(args.jobs, args.rounds, args.producers)
    if "recovery" in parts:
        report_recovery(args.recover)
    if "size" in parts:
        report_size(args.passed)
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
