"""The server's CPU per job with the cheapest possible clients, in lockstep.

``benchmarks.quick_throughput`` runs the real producer and worker, which
share the 2-core machine with the server and make its figure move with them.
Here one process drives the server over two blocking sockets, one job at a
time, in the one-producer shape: a ``submit_job`` (the producer waits for
``job_submitted``), then the worker's ``job_complete`` with a ``fetch``
(ack and fetch, as a ``prefetch=1`` worker sends it), whose reply is the next
``job_assigned``. The server does exactly a job's two requests per job, and
nothing else runs between them, so its CPU per job varies much less.

    python -m benchmarks.server_lockstep [--jobs 20000] [--rounds 3]
    python -m benchmarks.server_lockstep --port 8080 --rounds 1   # a server already running

With ``--port``, the server is one started by hand (say under
``valgrind --tool=callgrind``, whose instruction counts do not depend on the
machine's load); only the driving is done here.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

from benchmarks.harness import cpu_seconds, free_port

_HELLO = b'{"type":"hello","name":"lockstep","names":["noop"]}\n'
_FETCH = b'{"type":"request_job","wait":30.0}\n'
_SUBMIT = b'{"type":"submit_job","name":"noop","payload":null}\n'
# What a prefetch=1 worker sends for a no-op job: result null, the attempt,
# and the same request_job as its fetch.
_COMPLETE = (
    '{{"type":"job_complete","job_id":{},"result":null,"attempt":1,"fetch":{{"wait":30.0}}}}\n'
)


class _Lines:
    """Blocking line reader on one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line


def _connect(port: int) -> socket.socket:
    deadline = time.monotonic() + 300  # a server under valgrind starts slowly
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock


def drive(port: int, jobs: int, server_pid: int | None) -> tuple[float, float]:
    """Run ``jobs`` jobs through the server; return (wall seconds, server CPU seconds)."""
    with _connect(port) as producer_sock, _connect(port) as worker_sock:
        producer, worker = _Lines(producer_sock), _Lines(worker_sock)
        worker_sock.sendall(_HELLO)
        worker.line()  # welcome
        worker_sock.sendall(_FETCH)
        # A warm-up job, so the first of the measured ones finds everything ready.
        for count in range(jobs + 1):
            if count == 1:
                cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
                start = time.perf_counter()
            producer_sock.sendall(_SUBMIT)
            producer.line()
            assigned = json.loads(worker.line())
            worker_sock.sendall(_COMPLETE.format(json.dumps(assigned["job_id"])).encode())
        # The last completion's reply is a parked fetch: let the server take it in.
        time.sleep(0.05)
        seconds = time.perf_counter() - start
        cpu = (cpu_seconds(server_pid) if server_pid else 0.0) - cpu0
    return seconds, cpu


def main() -> None:
    """Parse the arguments, run the rounds, print one line per round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=None, help="drive a server already running")
    args = parser.parse_args()
    for _ in range(args.rounds):
        if args.port is not None:
            seconds, _cpu = drive(args.port, args.jobs, None)
            print(f"{args.jobs} jobs: {args.jobs / seconds:,.0f} jobs/s")
            continue
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "jobqueue", "serve", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ.copy(),
        )
        try:
            seconds, cpu = drive(port, args.jobs, server.pid)
        finally:
            server.kill()
            server.wait()
        print(
            f"{args.jobs} jobs: {args.jobs / seconds:,.0f} jobs/s, "
            f"server CPU per job {cpu / args.jobs * 1e6:.1f} us"
        )


if __name__ == "__main__":
    main()
