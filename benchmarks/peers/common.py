"""Shared helpers for the peer benchmarks.

Servers (redis-server, beanstalkd) run on a free loopback port in a temporary
directory with persistence off. Worker processes run in their own process
group, wrapped in coreutils ``timeout`` so that each one stops by itself even
if this process dies; ``PR_SET_PDEATHSIG`` ends the server and the wrapper
when the runner that started them dies.

Worker side: :func:`record_latency` appends ``now - t0`` to a per-process file
in ``$BENCH_LAT_DIR`` (one line per job, flushed), so latency collection does
not go through the broker under test.

This module imports only the standard library, so it is cheap to import in
worker processes and usable from a Python that has no peer packages.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAT_DIR_ENV = "BENCH_LAT_DIR"
REDIS_URL_ENV = "BENCH_REDIS_URL"

# --------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process, from /proc/PID/stat (0.0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of one process, from /proc/PID/status (0 if gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def group_pids(pgid: int) -> list[int]:
    """The live processes whose process group is ``pgid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # not zombies
            pids.append(int(entry))
    return pids


def group_cpu(pgids: Sequence[int]) -> dict[int, float]:
    """CPU seconds per live pid, over every process in the given process groups."""
    return {pid: cpu_seconds(pid) for pgid in pgids for pid in group_pids(pgid)}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


def _pdeathsig(sig: int) -> Callable[[], None]:
    def set_it() -> None:
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, sig)  # PR_SET_PDEATHSIG

    return set_it


def spawn_server(argv: Sequence[str], cwd: str, log_path: str) -> subprocess.Popen[bytes]:
    """Start a server binary directly (its pid is the server's, for CPU and RSS)."""
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_pdeathsig(signal.SIGKILL),
        )
    finally:
        log.close()


def spawn_group(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    lifetime: float = 900.0,
    log_path: str | None = None,
    stdout: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new process group under ``timeout`` (hard lifetime).

    Stop it with :func:`stop_group`. If this process dies first, the kernel
    sends the ``timeout`` wrapper SIGTERM, which it passes to the whole group.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, full_env.get("PYTHONPATH", "")) if p)
    cmd = ["timeout", "-k", "5", f"{lifetime:.0f}", *argv]
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else log,
            stderr=log,
            start_new_session=True,
            preexec_fn=_pdeathsig(signal.SIGTERM),
        )
    finally:
        if log_path:
            log.close()  # type: ignore[union-attr]


def stop_group(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL it after ``grace`` seconds."""
    if proc is None:
        return
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap the wrapper
        if not group_pids(pgid):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)


def print_log_tail(path: str, lines: int = 30) -> None:
    """On failure: show the end of a worker's log on stderr (it is deleted after)."""
    try:
        with open(path, errors="replace") as f:
            tail = f.readlines()[-lines:]
    except OSError:
        return
    if tail:
        print(f"--- last lines of {os.path.basename(path)} ---", file=sys.stderr)
        sys.stderr.writelines(tail)


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.005
) -> None:
    """Poll ``predicate`` until true; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _port_answers(port: int, probe: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(probe)
            return sock.recv(64).startswith(expect)
    except OSError:
        return False


# ----------------------------------------------------------------------- servers


class Server:
    """A server process on a free loopback port in its own temporary directory."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], port: int, tmp: str) -> None:
        self.name = name
        self.proc = proc
        self.port = port
        self.tmp = tmp

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def redis_server(timeout: float = 10.0) -> Iterator[Server]:
    """A redis-server with RDB and AOF off, bound to 127.0.0.1 only."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server not installed (run benchmarks/peers/setup.sh)")
    tmp = tempfile.mkdtemp(prefix="bench-redis-")
    port = free_port()
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        tmp,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--loglevel",
        "warning",
        "--logfile",
        "",
    ]
    proc = spawn_server(argv, tmp, os.path.join(tmp, "server.log"))
    try:
        wait_until(
            lambda: proc.poll() is None and _port_answers(port, b"PING\r\n", b"+PONG"),
            timeout,
            "redis-server to answer PING",
            0.02,
        )
        yield Server("redis", proc, port, tmp)
    finally:
        stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def beanstalkd_server(timeout: float = 10.0) -> Iterator[Server]:
    """A beanstalkd with no binlog (no ``-b``: nothing is persisted) on 127.0.0.1."""
    binary = shutil.which("beanstalkd")
    if binary is None:
        raise FileNotFoundError("beanstalkd not installed (run benchmarks/peers/setup.sh)")
    tmp = tempfile.mkdtemp(prefix="bench-beanstalkd-")
    port = free_port()
    proc = spawn_server(
        [binary, "-l", "127.0.0.1", "-p", str(port)], tmp, os.path.join(tmp, "server.log")
    )
    try:
        wait_until(
            lambda: proc.poll() is None and _port_answers(port, b"stats-tube default\r\n", b"OK"),
            timeout,
            "beanstalkd to answer",
            0.02,
        )
        yield Server("beanstalkd", proc, port, tmp)
    finally:
        stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------- latency recording

_lat_lock = threading.Lock()
_lat_file: Any = None


def record_latency(t0: float | None) -> None:
    """Worker side: append ``now - t0`` (seconds) to this process's latency file.

    Called at the start of a handler. A no-op when ``t0`` is None (throughput
    jobs) or ``$BENCH_LAT_DIR`` is unset. One line per job, flushed at once,
    so a job whose completion the producer has seen has its line on disk.
    """
    if t0 is None:
        return
    delay = time.time() - t0
    global _lat_file
    with _lat_lock:
        if _lat_file is None:
            directory = os.environ.get(LAT_DIR_ENV)
            if not directory:
                return
            _lat_file = open(  # noqa: SIM115 - lives as long as the worker
                os.path.join(directory, f"lat-{os.getpid()}.txt"),
                "a",
                buffering=1,
            )
        _lat_file.write(f"{delay:.6f}\n")
        _lat_file.flush()


def read_latencies(directory: str) -> list[float]:
    values: list[float] = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("lat-"):
            with open(os.path.join(directory, name)) as f:
                values.extend(float(line) for line in f if line.strip())
    return values


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation between order statistics."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(values_s: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000.0 for v in values_s]
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else math.nan,
    }


class Pacer:
    """Steady submission schedule: job ``i`` is due at ``start + i / rate``."""

    def __init__(self, rate: float, duration: float) -> None:
        self.rate = rate
        self.count = max(1, int(rate * duration))
        self.start = time.perf_counter()

    def delay_before(self, i: int) -> float:
        return self.start + i / self.rate - time.perf_counter()


# ------------------------------------------------------------------- runner CLI


def parse_args(
    argv: Sequence[str] | None,
    variants: Sequence[str],
    scenarios: Sequence[str] = ("throughput", "latency"),
) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", choices=list(scenarios), default="throughput")
    parser.add_argument("--variant", choices=list(variants), default=variants[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=500.0, help="latency: jobs/s")
    parser.add_argument("--duration", type=float, default=10.0, help="latency: seconds")
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up on any one wait after this many seconds",
    )
    if "memory" in scenarios:
        parser.add_argument("--pending", type=int, default=1_000_000)
        parser.add_argument("--body-bytes", type=int, default=100)
    if "failover" in scenarios:
        parser.add_argument("--trials", type=int, default=20)
    return parser.parse_args(argv)


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line that is this run's result."""
    print(json.dumps(result, sort_keys=False), flush=True)


def throughput_result(
    system: str,
    variant: str,
    jobs: int,
    seconds: float,
    server: Server,
    server_cpu: float,
    **extra: Any,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "system": system,
        "variant": variant,
        "scenario": "throughput",
        "jobs": jobs,
        "seconds": round(seconds, 4),
        "jobs_per_s": round(jobs / seconds, 1),
        "server_cpu_s": round(server_cpu, 3),
        "server_rss_bytes": server.rss(),
    }
    result.update(extra)
    return result


def latency_result(
    system: str,
    variant: str,
    pacer: Pacer,
    seconds: float,
    latencies: Sequence[float],
    server: Server,
    server_cpu: float,
    **extra: Any,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "system": system,
        "variant": variant,
        "scenario": "latency",
        "jobs": pacer.count,
        "rate": pacer.rate,
        "seconds": round(seconds, 4),
        "jobs_per_s": round(pacer.count / seconds, 1),
        "server_cpu_s": round(server_cpu, 3),
        "server_rss_bytes": server.rss(),
        "samples": len(latencies),
        **latency_summary(latencies),
    }
    result.update(extra)
    return result


class TimedRun:
    """One measured run: counters taken at its start, the result row at its end.

    Start it just before the first submit; call :meth:`result` once every job
    has finished. Server, worker and producer CPU are measured over the run.
    """

    def __init__(self, server: Server, worker_pid: int, pacer: Pacer | None) -> None:
        self.server = server
        self.worker_pid = worker_pid
        self.pacer = pacer
        self.cpu0 = server.cpu()
        self.wcpu0 = group_cpu([worker_pid])
        self.pcpu0 = time.process_time()
        self.start = time.perf_counter()
        if pacer is not None:
            pacer.start = self.start

    def result(
        self,
        system: str,
        variant: str,
        jobs: int,
        submitted: float,
        lat_dir: str,
        concurrency: str,
        **extra: Any,
    ) -> dict[str, Any]:
        """The row for this run; ``submitted`` is ``perf_counter()`` after the last submit."""
        seconds = time.perf_counter() - self.start
        extra = {
            "concurrency": concurrency,
            **extra,
            "submit_s": round(submitted - self.start, 4),
            "producer_cpu_s": round(time.process_time() - self.pcpu0, 3),
            "worker_cpu_s": round(cpu_delta(self.wcpu0, group_cpu([self.worker_pid])), 3),
        }
        server_cpu = self.server.cpu() - self.cpu0
        if self.pacer is not None:
            return latency_result(
                system,
                variant,
                self.pacer,
                seconds,
                read_latencies(lat_dir),
                self.server,
                server_cpu,
                **extra,
            )
        return throughput_result(system, variant, jobs, seconds, self.server, server_cpu, **extra)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
