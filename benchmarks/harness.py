"""The benchmarks' harness: processes, readiness, timing, statistics and result rows.

Every scenario (``benchmarks.run``, ``floor``, ``soak``, ``quick_throughput``)
and every peer runner (``benchmarks.peers.*``) takes these helpers from here,
and this module imports none of them, so there is one copy of each and no
import cycle.

At import time it needs only the standard library: peer worker processes
import it cheaply, and ``benchmarks.peers.run_all`` can be loaded by any
interpreter. :func:`wait_ready` imports trio and jobqueue when it is called.

Servers (redis-server, beanstalkd) run on a free loopback port in a temporary
directory with persistence off. Peer worker processes run in their own
process group, wrapped in coreutils ``timeout`` so that each one stops by
itself even if the runner dies; ``PR_SET_PDEATHSIG`` ends the server and the
wrapper when the runner that started them dies.

Worker side: :func:`record_latency` appends ``now - t0`` to a per-process file
in ``$BENCH_LAT_DIR`` (one line per job, flushed), so latency collection does
not go through the broker under test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
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
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TextIO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAT_DIR_ENV = "BENCH_LAT_DIR"
REDIS_URL_ENV = "BENCH_REDIS_URL"

# ------------------------------------------------------------------- /proc readings


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process, from /proc/PID/stat (0.0 if gone)."""
    fields = _stat_fields(pid)
    if fields is None:
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
        fields = _stat_fields(entry)
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":  # not zombies
            pids.append(int(entry))
    return pids


def group_cpu(pgids: Sequence[int]) -> dict[int, float]:
    """CPU seconds per live pid, over every process in the given process groups."""
    return {pid: cpu_seconds(pid) for pgid in pgids for pid in group_pids(pgid)}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two :func:`group_cpu` readings (processes may have come and gone)."""
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


# ------------------------------------------------------------------ ports and waiting


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def port_answers(port: int, probe: bytes, expect: bytes) -> bool:
    """Whether a server on ``port`` answers ``probe`` with a reply starting ``expect``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(probe)
            return sock.recv(64).startswith(expect)
    except OSError:
        return False


async def wait_ready(
    port: int,
    slots: int,
    processes: Sequence[subprocess.Popen[bytes]] = (),
    limit: float = 20.0,
) -> None:
    """Return once the jobqueue server at ``port`` answers and has ``slots`` workers waiting.

    Raises:
        RuntimeError: one of ``processes`` (the server, the workers) exited.
        trio.TooSlowError: not ready within ``limit`` seconds.
    """
    import trio

    from jobqueue import Client, ConnectionLost

    with trio.fail_after(limit):
        while True:
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
            try:
                async with Client.connect("127.0.0.1", port) as client:
                    if (await client.stats()).waiting_workers >= slots:
                        return
            except ConnectionLost:
                pass
            await trio.sleep(0.05)


# ------------------------------------------------------------------------ processes


def python_module(module: str, *args: str) -> list[str]:
    """The command line that runs ``python -m module args...`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


@contextlib.contextmanager
def spawned(
    *args: str, module: str = "jobqueue", env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``python -m <module> ...`` process (jobqueue by default), killed on the way out."""
    process = subprocess.Popen(
        python_module(module, *args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _pdeathsig(sig: int) -> Callable[[], None]:
    def set_it() -> None:
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, sig)  # PR_SET_PDEATHSIG

    return set_it


def spawn_server(argv: Sequence[str], cwd: str, log_path: str) -> subprocess.Popen[bytes]:
    """Start a server binary directly (its pid is the server's, for CPU and RSS)."""
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_pdeathsig(signal.SIGKILL),
        )


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
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, full_env.get("PYTHONPATH", "")) if p)
    with contextlib.ExitStack() as stack:
        log: int | TextIO = subprocess.DEVNULL
        if log_path:
            log = stack.enter_context(open(log_path, "a"))
        return subprocess.Popen(
            ["timeout", "-k", "5", f"{lifetime:.0f}", *argv],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else log,
            stderr=log,
            start_new_session=True,
            preexec_fn=_pdeathsig(signal.SIGTERM),
        )


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
    """SIGTERM one process, then SIGKILL it after ``grace`` seconds."""
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


class WorkerRun:
    """One peer run's temporary directory (latency files, worker log) and worker group."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench-lat-")
        self.log_path = os.path.join(self.dir, "worker.log")
        self.worker: subprocess.Popen[bytes] | None = None

    def spawn(
        self, argv: Sequence[str], lifetime: float, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start the workers with :func:`spawn_group`, recording latencies in this run's dir."""
        self.worker = spawn_group(
            argv, env={LAT_DIR_ENV: self.dir, **(env or {})}, lifetime=lifetime,
            log_path=self.log_path,
        )  # fmt: skip
        return self.worker


@contextlib.contextmanager
def worker_run() -> Iterator[WorkerRun]:
    """A :class:`WorkerRun`; on failure the worker log's tail goes to stderr.

    On the way out the worker group is stopped and the directory removed.
    """
    run = WorkerRun()
    try:
        yield run
    except Exception:
        print_log_tail(run.log_path)
        raise
    finally:
        stop_group(run.worker)
        shutil.rmtree(run.dir, ignore_errors=True)


# -------------------------------------------------------------------------- servers


class Server:
    """A server process on a free loopback port in its own temporary directory."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], port: int, tmp: str) -> None:
        self.name = name
        self.proc = proc
        self.port = port
        self.tmp = tmp

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.proc.pid

    def cpu(self) -> float:
        """The server's CPU seconds so far."""
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        """The server's resident set size now."""
        return rss_bytes(self.pid)

    @property
    def url(self) -> str:
        """The server as a redis URL."""
        return f"redis://127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def _server(
    name: str,
    argv: Callable[[int, str], list[str]],
    probe: bytes,
    expect: bytes,
    timeout: float,
) -> Iterator[Server]:
    """Run ``argv(port, tmp)`` until it answers ``probe`` with ``expect``; stop it after."""
    binary = shutil.which(name)
    if binary is None:
        raise FileNotFoundError(f"{name} not installed (run benchmarks/peers/setup.sh)")
    tmp = tempfile.mkdtemp(prefix=f"bench-{name}-")
    port = free_port()
    proc = spawn_server([binary, *argv(port, tmp)], tmp, os.path.join(tmp, "server.log"))
    try:
        wait_until(
            lambda: proc.poll() is None and port_answers(port, probe, expect),
            timeout,
            f"{name} to answer",
            0.02,
        )
        yield Server(name, proc, port, tmp)
    finally:
        stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def redis_server(timeout: float = 10.0) -> contextlib.AbstractContextManager[Server]:
    """A redis-server with RDB and AOF off, bound to 127.0.0.1 only."""

    def argv(port: int, tmp: str) -> list[str]:
        return [
            "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
            "--loglevel", "warning", "--logfile", "",
        ]  # fmt: skip

    return _server("redis-server", argv, b"PING\r\n", b"+PONG", timeout)


def beanstalkd_server(timeout: float = 10.0) -> contextlib.AbstractContextManager[Server]:
    """A beanstalkd with no binlog (no ``-b``: nothing is persisted) on 127.0.0.1."""
    return _server(
        "beanstalkd",
        lambda port, _tmp: ["-l", "127.0.0.1", "-p", str(port)],
        b"stats-tube default\r\n",
        b"OK",
        timeout,
    )


# ------------------------------------------------------------------ latency samples

_lat_lock = threading.Lock()
_lat_file: TextIO | None = None


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
    """Every sample :func:`record_latency` wrote into ``directory``, in seconds."""
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
    """p50, p90, p99 and max of samples in seconds, as milliseconds."""
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
        """Seconds until job ``i`` is due (negative when late)."""
        return self.start + i / self.rate - time.perf_counter()

    def ticks(self) -> Iterator[float]:
        """Sleep until each job is due, then yield its submit time (``time.time()``)."""
        for i in range(self.count):
            delay = self.delay_before(i)
            if delay > 0:
                time.sleep(delay)
            yield time.time()

    async def aticks(self) -> AsyncIterator[float]:
        """:meth:`ticks` for an asyncio producer."""
        for i in range(self.count):
            delay = self.delay_before(i)
            if delay > 0:
                await asyncio.sleep(delay)
            yield time.time()


# ------------------------------------------------------------- timing and result rows


class Stopwatch:
    """Wall time and CPU over one measured run: this process's, a server's, the workers'.

    Workers are given as single processes (``worker_pids``) or as whole
    process groups (``worker_groups``, for runners that fork).
    """

    def __init__(
        self,
        server_pid: int,
        worker_pids: Sequence[int] = (),
        worker_groups: Sequence[int] = (),
    ) -> None:
        self._server_pid = server_pid
        self._worker_pids = worker_pids
        self._worker_groups = worker_groups
        self._server0 = cpu_seconds(server_pid)
        self._workers0 = self._workers()
        self._own0 = time.process_time()
        self.start = time.perf_counter()

    def _workers(self) -> dict[int, float]:
        cpu = group_cpu(self._worker_groups)
        cpu.update({pid: cpu_seconds(pid) for pid in self._worker_pids})
        return cpu

    def seconds(self) -> float:
        """Wall time since the start."""
        return time.perf_counter() - self.start

    def own_cpu(self) -> float:
        """This process's CPU seconds since the start."""
        return time.process_time() - self._own0

    def server_cpu(self) -> float:
        """The server's CPU seconds since the start."""
        return cpu_seconds(self._server_pid) - self._server0

    def worker_cpu(self) -> float:
        """The workers' CPU seconds since the start."""
        return cpu_delta(self._workers0, self._workers())


@dataclasses.dataclass(frozen=True)
class Shape:
    """What one throughput or latency peer run does (a runner's command line)."""

    scenario: str = "throughput"
    jobs: int = 20000
    concurrency: int = 8
    rate: float = 500.0
    duration: float = 10.0
    variant: str = "default"
    timeout: float = 300.0
    #: Producer processes submitting at once (``producers`` scenario); 1 is this process.
    producers: int = 1


class TimedRun(Stopwatch):
    """One measured peer run: counters taken at its start, the result row at its end.

    Start it just before the first submit; call :meth:`result` once every job
    has finished. For the ``latency`` scenario it holds the :class:`Pacer`
    that schedules the submits; ``jobs`` is how many to submit.
    """

    def __init__(self, server: Server, worker_group: int, shape: Shape) -> None:
        self.server = server
        self.scenario = shape.scenario
        self.pacer = Pacer(shape.rate, shape.duration) if shape.scenario == "latency" else None
        self.jobs = self.pacer.count if self.pacer else shape.jobs
        super().__init__(server.pid, worker_groups=[worker_group])
        if self.pacer is not None:
            self.pacer.start = self.start

    def result(
        self,
        system: str,
        variant: str,
        submitted: float,
        lat_dir: str,
        concurrency: str,
        producer_cpu: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The row for this run; ``submitted`` is ``perf_counter()`` after the last submit.

        ``producer_cpu`` is the producers' CPU seconds when they were other
        processes (the ``producers`` scenario); by default it is this process's.
        """
        seconds = self.seconds()
        row: dict[str, Any] = {
            "system": system,
            "variant": variant,
            "scenario": self.scenario,
            "jobs": self.jobs,
        }
        if self.pacer is not None:
            row["rate"] = self.pacer.rate
        row.update(
            seconds=round(seconds, 4),
            jobs_per_s=round(self.jobs / seconds, 1),
            server_cpu_s=round(self.server_cpu(), 3),
            server_rss_bytes=self.server.rss(),
        )
        if self.pacer is not None:
            latencies = read_latencies(lat_dir)
            row.update(samples=len(latencies), **latency_summary(latencies))
        row.update(
            concurrency=concurrency,
            **extra,
            submit_s=round(submitted - self.start, 4),
            producer_cpu_s=round(self.own_cpu() if producer_cpu is None else producer_cpu, 3),
            worker_cpu_s=round(self.worker_cpu(), 3),
        )
        return row


# ------------------------------------------------------------------ command lines


def add_shape_options(
    parser: argparse.ArgumentParser, duration_flag: str = "--duration", duration: float = 5.0
) -> None:
    """The options every entry point shares: jobs, concurrency, latency rate and duration."""
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=500.0, help="latency: jobs/s")
    parser.add_argument(duration_flag, type=float, default=duration, help="latency: seconds")


def parse_args(
    argv: Sequence[str] | None,
    variants: Sequence[str],
    scenarios: Sequence[str] = ("throughput", "latency"),
) -> argparse.Namespace:
    """A peer runner's options."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", choices=list(scenarios), default="throughput")
    parser.add_argument("--variant", choices=list(variants), default=variants[0])
    add_shape_options(parser, duration=10.0)
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
    if "producers" in scenarios:
        parser.add_argument("--producers", type=int, default=8, help="producers: how many")
    return parser.parse_args(argv)


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line that is this run's result."""
    print(json.dumps(result, sort_keys=False), flush=True)


def peer_main(
    run: Callable[[Shape], dict[str, Any]],
    variants: Sequence[str],
    argv: Sequence[str] | None,
    scenarios: Sequence[str] = ("throughput", "latency"),
) -> None:
    """A throughput/latency peer runner's command line: parse, run once, emit the row."""
    args = parse_args(argv, variants, scenarios)
    emit(run(shape_of(args)))


def shape_of(args: argparse.Namespace) -> Shape:
    """The :class:`Shape` that :func:`parse_args`' options describe."""
    return Shape(
        args.scenario, args.jobs, args.concurrency, args.rate, args.duration, args.variant,
        args.timeout, getattr(args, "producers", 1),
    )  # fmt: skip
