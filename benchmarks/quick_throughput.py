"""Rough end-to-end throughput: N no-op jobs, one producer, 8-way worker concurrency.

The server and the worker each run in their own process; this process is the
producer. Prints jobs/s and the server's CPU time per job.

    python -m benchmarks.quick_throughput [--jobs 20000] [--concurrency 8]
    python -m benchmarks.quick_throughput --batch 100 --prefetch 64   # batched
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

import trio

from jobqueue import Client, ConnectionLost

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobqueue", *args], stderr=subprocess.DEVNULL, cwd=ROOT
    )


def main(jobs: int, concurrency: int, batch: int, prefetch: int) -> None:
    port = free_port()
    server = spawn("serve", "--port", str(port))
    worker = spawn(
        "worker", "--connect", f"127.0.0.1:{port}", "--concurrency", str(concurrency),
        "--handlers", "benchmarks._noop:HANDLERS", "--prefetch", str(prefetch),
    )  # fmt: skip
    try:
        trio.run(drive, jobs, concurrency, port, server.pid, worker.pid, batch)
    finally:
        server.kill()
        worker.kill()


async def drive(
    jobs: int, concurrency: int, port: int, server_pid: int, worker_pid: int, batch: int
) -> None:
    with trio.fail_after(10):
        while True:
            try:
                async with Client.connect("127.0.0.1", port) as client:
                    if (await client.stats()).waiting_workers >= concurrency:
                        break
            except ConnectionLost:
                pass
            await trio.sleep(0.05)
    async with Client.connect("127.0.0.1", port) as client:
        cpu0 = cpu_seconds(server_pid)
        wcpu0 = cpu_seconds(worker_pid)
        pcpu0 = time.process_time()
        start = time.perf_counter()
        if batch > 1:
            for first in range(0, jobs, batch):
                ids = await client.submit_many([{"name": "noop"}] * min(batch, jobs - first))
            last = ids[-1]
        else:
            for _ in range(jobs):
                last = await client.submit("noop", None)
        submitted = time.perf_counter()
        await client.wait(last)
        while (await client.stats()).totals["completed"] < jobs:  # noqa: ASYNC110
            await trio.sleep(0.005)
        end = time.perf_counter()
        cpu = cpu_seconds(server_pid) - cpu0
        wcpu = cpu_seconds(worker_pid) - wcpu0
        pcpu = time.process_time() - pcpu0
    print(
        f"{jobs} jobs, concurrency {concurrency}: {jobs / (end - start):,.0f} jobs/s end to end"
        f" (submit phase {jobs / (submitted - start):,.0f}/s); CPU per job: server"
        f" {cpu / jobs * 1e6:.0f} us, worker {wcpu / jobs * 1e6:.0f} us,"
        f" producer {pcpu / jobs * 1e6:.0f} us"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="submit_many size (1: submit)")
    parser.add_argument("--prefetch", type=int, default=1, help="worker prefetch")
    args = parser.parse_args()
    main(args.jobs, args.concurrency, args.batch, args.prefetch)
