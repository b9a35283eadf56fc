"""How long after SIGKILL a process's sockets read EOF, by what the process holds.

The failover scenario (``benchmarks.run --scenarios failover``) starts its
clock at the SIGKILL of a worker holding a job, and the server can only act
once that worker's connection reads EOF. The kernel closes a killed
process's files only after it has stopped its other threads and unmapped its
memory, so this time depends on the process's footprint. Each kind of victim
connects one extra socket to this process, then is killed; the time is from
just before ``os.kill`` to ``recv`` returning ``b""`` on that socket:

- ``bare``: ``python -c`` and nothing else;
- ``trio``: the same after ``import trio``;
- ``jobqueue``: after ``import jobqueue``;
- ``cli``: after ``import jobqueue._cli`` (what ``jobqueue worker`` loads);
- ``idle``: a real ``python -m jobqueue worker``, parked in ``request_job``;
- ``busy``: the same worker, running a job (``benchmarks._latency:hold``);
- not run unless named: ``ssl`` and ``idna`` (two of trio's imports) and
  ``greenstalk`` (what beanstalkd's failover victim loads; in the peers'
  venv, see benchmarks/peers/README.md).

The kinds alternate within each round, so load changes hit them all alike.
Before each kill it reads the victim's threads, RSS and mappings from /proc.

    python -m benchmarks.exit_eof [--trials 50] [--kinds bare,trio,idle,busy]
    python -m benchmarks.exit_eof --trials 20 --kinds bare,idna,greenstalk,ssl,trio
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import trio

from benchmarks.harness import ROOT, free_port, percentile, spawned, wait_ready
from jobqueue import Client

PROBE_ENV = "JOBQUEUE_EOF_PROBE"
#: Seconds every victim idles between being ready and being killed.
SETTLE = 0.05
KINDS = ("bare", "trio", "jobqueue", "cli", "idle", "busy")

# Connect to the probe port, then wait for ever (SIGKILL ends it).
_PROBE = (
    "import os, socket, signal; s = socket.create_connection(('127.0.0.1', {port})); "
    "s.sendall(b'r'); signal.pause()"
)
_IMPORTS = {"bare": "", "trio": "import trio; ", "jobqueue": "import jobqueue; ",
            "cli": "import jobqueue._cli; ", "ssl": "import ssl; ", "idna": "import idna; ",
            "greenstalk": "import greenstalk; "}  # fmt: skip


def footprint(pid: int) -> dict[str, int]:
    """Threads, RSS (KiB) and number of memory mappings of ``pid``."""
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f)
    with open(f"/proc/{pid}/maps") as f:
        maps = sum(1 for _ in f)
    return {
        "threads": int(status["Threads"]),
        "rss_kib": int(status["VmRSS"].split()[0]),
        "maps": maps,
    }


def kill_to_eof(pid: int, conn: socket.socket) -> float:
    """SIGKILL ``pid``; seconds until ``conn`` (its peer) reads EOF."""
    conn.settimeout(10)
    start = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while conn.recv(64):
        pass
    return time.perf_counter() - start


@contextmanager
def probe_listener() -> Iterator[tuple[socket.socket, int]]:
    """A listening socket on a free loopback port."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)
        yield listener, listener.getsockname()[1]


def accept_probe(listener: socket.socket) -> socket.socket:
    """Accept the victim's probe connection and its one ready byte."""
    conn, _ = listener.accept()
    conn.settimeout(30)
    assert conn.recv(1) == b"r"
    return conn


def plain_trial(kind: str, listener: socket.socket, port: int) -> tuple[float, dict[str, int]]:
    """One kill of a ``python -c`` victim of ``kind``."""
    code = _IMPORTS[kind] + _PROBE.format(port=port)
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        with accept_probe(listener) as conn:
            time.sleep(SETTLE)
            shape = footprint(process.pid)
            return kill_to_eof(process.pid, conn), shape
    finally:
        process.kill()
        process.wait()


def worker_trial(
    kind: str, listener: socket.socket, probe_port: int, port: int
) -> tuple[float, dict[str, int]]:
    """One kill of a real worker, idle or running a job."""
    env = {PROBE_ENV: str(probe_port)}
    with spawned(
        "worker", "--connect", f"127.0.0.1:{port}", "--handlers", "benchmarks._eof_probe:HANDLERS",
        env=env,
    ) as victim, accept_probe(listener) as conn:  # fmt: skip

        async def ready() -> str | None:
            await wait_ready(port, 1, [victim])
            if kind != "busy":
                return None
            async with Client.connect("127.0.0.1", port) as client:
                job_id = await client.submit("hold", {"seconds": 3600})
                while (await client.status(job_id)).state != "running":  # noqa: ASYNC110
                    await trio.sleep(0.002)
                return job_id

        async def cancel(job_id: str) -> None:
            async with Client.connect("127.0.0.1", port) as client:
                await client.cancel(job_id)

        job_id = trio.run(ready)
        time.sleep(SETTLE)
        shape = footprint(victim.pid)
        seconds = kill_to_eof(victim.pid, conn)
        if job_id is not None:  # back in the queue now; no later victim may take it
            trio.run(cancel, job_id)
        return seconds, shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    shapes: dict[str, dict[str, int]] = {}
    print(f"load before: {os.getloadavg()}")
    with ExitStack() as stack:
        listener, probe_port = stack.enter_context(probe_listener())
        port = free_port()
        if {"idle", "busy"} & set(kinds):
            stack.enter_context(spawned("serve", "--port", str(port), "--lease-timeout", "60"))
        for _ in range(args.trials):
            for kind in kinds:
                if kind in _IMPORTS:
                    seconds, shape = plain_trial(kind, listener, probe_port)
                else:
                    seconds, shape = worker_trial(kind, listener, probe_port, port)
                times[kind].append(seconds * 1000)
                shapes[kind] = shape
    print(f"load after: {os.getloadavg()}")
    print(f"SIGKILL to EOF, {args.trials} trials (ms)")
    for kind in kinds:
        ms, shape = times[kind], shapes[kind]
        print(
            f"  {kind:<12}p50 {percentile(ms, 50):6.2f}  p90 {percentile(ms, 90):6.2f}  "
            f"threads {shape['threads']:2d}  rss {shape['rss_kib'] / 1024:5.1f} MiB  "
            f"maps {shape['maps']}"
        )


if __name__ == "__main__":
    main()
