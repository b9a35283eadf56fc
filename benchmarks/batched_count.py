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

    python -m benchmarks.batched_count --count server [--jobs 5000] [--warmup 1000]
    python -m benchmarks.batched_count --count worker --batch 1 --prefetch 1   # one per request
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
    if batch > 1:
        for first in range(0, jobs, batch):
            await client.submit_many([{"name": _NAME}] * min(batch, jobs - first))
    else:
        for _ in range(jobs):
            await client.submit(_NAME)
    while (await client.stats()).totals["completed"] < before + jobs:  # noqa: ASYNC110
        await trio.sleep(0.01)


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
    prefetch: int,
    slots: int,
    keep: str = "",
    worker_args: Sequence[str] = (),
    server_args: Sequence[str] = (),
) -> float:
    """Instructions per job in the ``which`` process (``server`` or ``worker``).

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
        time.sleep(0.1)
        if keep:
            for path in glob.glob(os.path.join(out_dir, "callgrind.out.*")):
                shutil.copy(path, keep)
        return _total(out_dir) / jobs


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", choices=["server", "worker"], required=True)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100, help="submit_many size (1: submit)")
    parser.add_argument("--prefetch", type=int, default=64, help="worker prefetch")
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
