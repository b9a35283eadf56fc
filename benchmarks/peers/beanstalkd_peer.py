"""beanstalkd (Debian's package) through the ``greenstalk`` client.

    python -m benchmarks.peers.beanstalkd_peer --scenario throughput --jobs 20000 --concurrency 8
    python -m benchmarks.peers.beanstalkd_peer --scenario latency --rate 500 --duration 10
    python -m benchmarks.peers.beanstalkd_peer --scenario memory --pending 1000000 --body-bytes 100
    python -m benchmarks.peers.beanstalkd_peer --scenario failover --trials 20

Server: ``beanstalkd -l 127.0.0.1 -p PORT`` with no ``-b``, so no binlog: jobs
live in memory only, as in jobqueue.

Workers (throughput, latency): one process with <concurrency> threads, each
with its own greenstalk connection looping ``reserve`` / ``delete`` on the
``default`` tube. This process is the one producer: ``client.put(body)`` once
per job (greenstalk defaults: priority 2**16, delay 0, TTR 60 s). The body is
``-`` for a no-op job, or the submit time for a latency job. Completion is
read from the server's own counter: ``stats`` ``cmd-delete`` reaching N on a
fresh server (a worker deletes a job after running it). Nothing is added per
job.

Memory: N jobs of ``--body-bytes`` bytes put with no worker (sent pipelined on
a raw socket, 1,000 ``put`` commands per write, only to be quick; the server
stores each the same way). Reports (RSS with N jobs - RSS of the empty
server) / N.

Failover: per trial, worker A (a process) reserves a job with the default
TTR; worker B (another process) then blocks in ``reserve``; A is SIGKILLed;
the time from the kill to B's reserve returning the same job is recorded.
beanstalkd puts a reserved job back when its connection closes, so this
measures close detection, not the TTR.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import greenstalk

from benchmarks import harness

SYSTEM = "beanstalkd"
NOOP_BODY = "-"

# ------------------------------------------------------------------ worker roles


def _worker_loop(port: int, stop: threading.Event) -> None:
    with greenstalk.Client(("127.0.0.1", port)) as client:
        while not stop.is_set():
            try:
                job = client.reserve(timeout=1)
            except greenstalk.TimedOutError:
                continue
            if job.body != NOOP_BODY:
                harness.record_latency(float(job.body))
            client.delete(job)


def worker_main(port: int, threads: int) -> None:
    """Run ``threads`` reserve/delete loops until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    loops = [
        threading.Thread(target=_worker_loop, args=(port, stop), daemon=True)
        for _ in range(threads)
    ]
    for loop in loops:
        loop.start()
    while not stop.is_set() and any(loop.is_alive() for loop in loops):
        stop.wait(0.5)
    for loop in loops:
        loop.join(timeout=2)


def failover_worker_main(port: int, hold: bool) -> None:
    """Reserve one job and say so on stdout; then hold it (``hold``) or delete it.

    The standby deletes the job before it says so: the harness stops it as soon
    as it reads the line, and a job released by that stop would be reserved
    at once by the next trial's victim, which would then never wait.
    """
    with greenstalk.Client(("127.0.0.1", port)) as client:
        job = client.reserve(timeout=60)
        reserved_at = time.time()
        if not hold:
            client.delete(job)
        print(f"reserved {job.id} {os.getpid()} {reserved_at:.6f}", flush=True)
        if hold:
            time.sleep(60)  # until killed; bounded if not


# ---------------------------------------------------------------------- helpers


def _stats(client: greenstalk.Client[str]) -> dict[str, Any]:
    return dict(client.stats())


def _wait_for_waiters(
    client: greenstalk.Client[str], count: int, timeout: float, what: str
) -> None:
    """Until ``count`` connections are blocked in ``reserve``."""
    harness.wait_until(lambda: _stats(client)["current-waiting"] >= count, timeout, what, 0.005)


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError(f"no line from worker within {timeout:.0f}s")
    line = proc.stdout.readline().decode()
    if not line:
        raise RuntimeError("worker exited without reserving")
    return line


# -------------------------------------------------------------------- scenarios


def run_flow(shape: harness.Shape) -> dict[str, Any]:
    """Throughput or latency."""
    with (
        harness.worker_run() as work,
        harness.beanstalkd_server() as server,
        greenstalk.Client(("127.0.0.1", server.port)) as producer,
        greenstalk.Client(("127.0.0.1", server.port)) as watcher,
    ):
        worker = work.spawn(
            harness.python_module(
                "benchmarks.peers.beanstalkd_peer",
                "--role", "worker", "--port", str(server.port), "--threads", str(shape.concurrency),
            ),
            shape.timeout + 60,
        )  # fmt: skip
        _wait_for_waiters(watcher, shape.concurrency, 60, "beanstalkd workers")
        timed = harness.TimedRun(server, worker.pid, shape)
        if timed.pacer is None:
            for _ in range(timed.jobs):
                producer.put(NOOP_BODY)
        else:
            for t0 in timed.pacer.ticks():
                producer.put(repr(t0))
        submitted = time.perf_counter()
        harness.wait_until(
            lambda: _stats(watcher)["cmd-delete"] >= timed.jobs,
            shape.timeout,
            "beanstalkd jobs to finish",
            0.002,
        )
        return timed.result(
            SYSTEM, "8threads", submitted, work.dir, f"1 process x {shape.concurrency} threads"
        )


def run_memory(pending: int, body_bytes: int, timeout: float = 300.0) -> dict[str, Any]:
    body = b"x" * body_bytes
    batch = 1000
    with (
        harness.beanstalkd_server() as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock,
    ):
        reader = sock.makefile("rb")
        time.sleep(0.2)  # the empty server, with this one connection open
        rss_empty = server.rss()
        start = time.perf_counter()
        put = b"put 65536 0 60 %d\r\n%s\r\n" % (body_bytes, body)
        sent = 0
        while sent < pending:
            k = min(batch, pending - sent)
            sock.sendall(put * k)
            for _ in range(k):
                line = reader.readline()
                if not line.startswith(b"INSERTED"):
                    raise RuntimeError(f"beanstalkd refused a put: {line!r}")
            sent += k
        seconds = time.perf_counter() - start
        time.sleep(0.5)
        rss_full = server.rss()
    return {
        "system": SYSTEM,
        "variant": "default",
        "scenario": "memory",
        "jobs": pending,
        "body_bytes": body_bytes,
        "seconds": round(seconds, 3),
        "server_rss_empty_bytes": rss_empty,
        "server_rss_bytes": rss_full,
        "bytes_per_job": round((rss_full - rss_empty) / pending, 1),
    }


def run_failover(trials: int, timeout: float = 60.0) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="bench-failover-")
    delays: list[float] = []
    try:
        with (
            harness.beanstalkd_server() as server,
            greenstalk.Client(("127.0.0.1", server.port)) as client,
        ):
            for _ in range(trials):
                victim = standby = None
                try:
                    victim = _spawn_failover_worker(server.port, True, tmp)
                    _wait_for_waiters(client, 1, timeout, "worker A to wait")
                    job_id = client.put("failover")  # greenstalk's default TTR (60 s)
                    _, got, victim_pid, _ = _read_line(victim, timeout).split()
                    assert int(got) == job_id
                    standby = _spawn_failover_worker(server.port, False, tmp)
                    _wait_for_waiters(client, 1, timeout, "worker B to wait")
                    killed_at = time.time()
                    os.kill(int(victim_pid), signal.SIGKILL)
                    _, got, _, reserved_at = _read_line(standby, timeout).split()
                    assert int(got) == job_id
                    delays.append(float(reserved_at) - killed_at)
                finally:
                    harness.stop_group(victim, grace=1)
                    harness.stop_group(standby, grace=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = harness.latency_summary(delays)
    return {
        "system": SYSTEM,
        "variant": "default",
        "scenario": "failover",
        "trials": trials,
        "p50_ms": summary["p50_ms"],
        "max_ms": summary["max_ms"],
        "p90_ms": summary["p90_ms"],
    }


def _spawn_failover_worker(port: int, hold: bool, tmp: str) -> subprocess.Popen[bytes]:
    args = ["--role", "failover-worker", "--port", str(port)] + (["--hold"] if hold else [])
    return harness.spawn_group(
        harness.python_module("benchmarks.peers.beanstalkd_peer", *args),
        lifetime=120,
        log_path=os.path.join(tmp, "worker.log"),
        stdout=subprocess.PIPE,
    )


# -------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--role" in argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--role", choices=["worker", "failover-worker"], required=True)
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--threads", type=int, default=8)
        parser.add_argument("--hold", action="store_true")
        role = parser.parse_args(argv)
        if role.role == "worker":
            worker_main(role.port, role.threads)
        else:
            failover_worker_main(role.port, role.hold)
        return
    args = harness.parse_args(
        argv, variants=["8threads"], scenarios=("throughput", "latency", "memory", "failover")
    )
    if args.scenario == "memory":
        harness.emit(run_memory(args.pending, args.body_bytes, args.timeout))
    elif args.scenario == "failover":
        harness.emit(run_failover(args.trials))
    else:
        harness.emit(run_flow(harness.shape_of(args)))


if __name__ == "__main__":
    main()
