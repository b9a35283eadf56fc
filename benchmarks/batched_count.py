"""Instructions per job in the batched shape, counted by callgrind.

The batched row of ``benchmarks.run`` (one producer calling ``submit_many``
with 100 jobs at a time, a worker with 8 slots and ``--prefetch 64``, no-op
async jobs) is set by the server's and the worker's CPU together, and on this
shared 2-core machine their CPU seconds move with the load. Here one of the
two (``--count server`` or ``--count worker``) runs under
``valgrind --tool=callgrind --instr-atstart=no``; after a warm-up, counting is
switched on with ``callgrind_control -i on`` for ``--jobs`` jobs and off again,
and the count divided by the jobs is printed. The counts do not depend on the
machine's load, so the same code counted twice agrees closely.

``--count producer`` counts the producer instead: it then runs as a process of
its own under callgrind (this module with ``--producer-of PORT``), and the
driver switches counting on after its warm-up and off once its ``--jobs``
jobs are submitted (answered), before it waits for them to complete: the
window holds the producer's submits and nothing else.

    python -m benchmarks.batched_count --count server [--jobs 5000] [--warmup 1000]
    python -m benchmarks.batched_count --count worker --batch 1 --prefetch 1   # one per request
    python -m benchmarks.batched_count --count producer --batch 1 --prefetch 1
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import trio

from benchmarks.harness import ROOT, free_port, wait_ready
from jobqueue import Client

_NAME, _HANDLERS = "noop", "benchmarks._noop:HANDLERS"


def _start(args: list[str], counted: bool, out_dir: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "jobqueue", *args]
    if counted:
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out_dir}/callgrind.out.%p",
            *argv,
        ]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _run(client: Client, jobs: int, batch: int) -> None:
    """Submit ``jobs`` jobs and return once all of them have completed."""
    before = (await client.stats()).totals["completed"]
    await _submit(client, jobs, batch)
    await _wait_completed(client, before + jobs)


async def _submit(client: Client, jobs: int, batch: int) -> None:
    """Submit ``jobs`` jobs (``batch`` per ``submit_many``; 1: ``submit``), each answered."""
    if batch > 1:
        for first in range(0, jobs, batch):
            await client.submit_many([{"name": _NAME}] * min(batch, jobs - first))
    else:
        for _ in range(jobs):
            await client.submit(_NAME)


async def _wait_completed(client: Client, total: int) -> None:
    """Return once ``total`` jobs have completed on the server."""
    while (await client.stats()).totals["completed"] < total:  # noqa: ASYNC110
        await trio.sleep(0.01)


def _produce(port: int, jobs: int, warmup: int, batch: int) -> None:
    """The counted producer (``--producer-of``): the driver sets its counting window.

    It says ``warm`` on stdout after the warm-up and waits for a line on stdin
    (the driver switches counting on meanwhile), submits ``jobs`` jobs, says
    ``done`` and waits for another line (counting off), then waits for every
    job to complete. Blocking on stdin blocks trio's loop, which is fine: a
    ``Client`` runs no task of its own.
    """

    def say(word: str) -> None:
        print(word, flush=True)
        sys.stdin.readline()

    async def main() -> None:
        async with Client.connect("127.0.0.1", port) as client:
            before = (await client.stats()).totals["completed"]
            await _submit(client, warmup, batch)
            await _wait_completed(client, before + warmup)
            say("warm")
            await _submit(client, jobs, batch)
            say("done")
            await _wait_completed(client, before + warmup + jobs)

    trio.run(main)


def _count_producer(
    port: int, jobs: int, warmup: int, batch: int, out_dir: str
) -> subprocess.Popen[bytes]:
    """Run the producer under callgrind; count its ``jobs`` submits after ``warmup``."""
    argv = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no",
        f"--callgrind-out-file={out_dir}/callgrind.out.%p",
        sys.executable, "-m", "benchmarks.batched_count", "--producer-of", str(port),
        "--jobs", str(jobs), "--warmup", str(warmup), "--batch", str(batch),
    ]  # fmt: skip
    producer = subprocess.Popen(
        argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert producer.stdin is not None
    assert producer.stdout is not None
    for word, on in (("warm", True), ("done", False)):
        line = producer.stdout.readline().decode().strip()
        if line != word:
            producer.kill()
            raise RuntimeError(f"the producer said {line!r}, not {word!r}")
        _instrument(producer.pid, on)
        producer.stdin.write(b"go\n")
        producer.stdin.flush()
    if producer.wait(600) != 0:
        raise RuntimeError(f"the producer exited with {producer.returncode}")
    return producer


def _instrument(pid: int, on: bool) -> None:
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _total(out_dir: str) -> int:
    """The ``totals:`` count of the one callgrind output in ``out_dir``."""
    (path,) = glob.glob(os.path.join(out_dir, "callgrind.out.*"))
    with open(path) as f:
        text = f.read()
    found = re.search(r"^totals: (\d+)", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no total in {path}")
    return int(found.group(1))


def count(
    which: str,
    jobs: int,
    warmup: int,
    batch: int,
    prefetch: int | str,
    slots: int,
    keep: str = "",
    worker_args: Sequence[str] = (),
    server_args: Sequence[str] = (),
) -> float:
    """Instructions per job in the ``which`` process (``server``, ``worker`` or ``producer``).

    With ``keep``, callgrind's output is copied there (for ``callgrind_annotate``);
    ``worker_args`` go to ``jobqueue worker`` (``--log-level warning``, say),
    ``server_args`` to ``jobqueue serve`` (``--journal DIR``, say).
    """
    port = free_port()
    with tempfile.TemporaryDirectory() as out_dir:
        server = _start(["serve", "--port", str(port), *server_args], which == "server", out_dir)
        worker = None
        try:
            worker = _start(
                [
                    "worker", "--connect", f"127.0.0.1:{port}", "--concurrency", str(slots),
                    "--handlers", _HANDLERS, "--prefetch", str(prefetch), *worker_args,
                ],
                which == "worker",
                out_dir,
            )  # fmt: skip
            if which == "producer":
                trio.run(wait_ready, port, slots, [server, worker], 300)
                _count_producer(port, jobs, warmup, batch, out_dir)
                return _finish(out_dir, jobs, keep)
            counted = server if which == "server" else worker

            async def drive() -> None:
                await wait_ready(port, slots, [server, worker], limit=300)
                async with Client.connect("127.0.0.1", port) as client:
                    await _run(client, warmup, batch)
                    _instrument(counted.pid, True)
                    await _run(client, jobs, batch)
                    _instrument(counted.pid, False)

            trio.run(drive)
        finally:
            for process in (worker, server):
                if process is not None:
                    process.terminate()
                    try:
                        process.wait(60)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
        return _finish(out_dir, jobs, keep)


def _finish(out_dir: str, jobs: int, keep: str) -> float:
    """The count per job in ``out_dir``; its output copied to ``keep`` if given."""
    time.sleep(0.1)
    if keep:
        for path in glob.glob(os.path.join(out_dir, "callgrind.out.*")):
            shutil.copy(path, keep)
    return _total(out_dir) / jobs


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", choices=["server", "worker", "producer"])
    parser.add_argument("--producer-of", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100, help="submit_many size (1: submit)")
    parser.add_argument("--prefetch", default="64", help="worker prefetch: a number, or auto")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--keep", default="", help="copy callgrind's output to this path")
    parser.add_argument(
        "--worker-args",
        default="",
        help="more arguments for the worker, e.g. '--log-level warning'",
    )
    parser.add_argument(
        "--server-args",
        default="",
        help="more arguments for the server, e.g. '--journal DIR'",
    )
    args = parser.parse_args()
    if args.producer_of:
        _produce(args.producer_of, args.jobs, args.warmup, args.batch)
        sys.exit()
    if args.count is None:
        parser.error("--count is required")
    per_job = count(
        args.count,
        args.jobs,
        args.warmup,
        args.batch,
        args.prefetch,
        args.concurrency,
        args.keep,
        args.worker_args.split(),
        args.server_args.split(),
    )
    print(f"{args.count}: {per_job:,.0f} instructions per job")
