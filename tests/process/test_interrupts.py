"""Ctrl-C out of ``trio.run(serve_queue)`` or ``trio.run(worker.run)``: a plain KeyboardInterrupt.

Both run nurseries of their own, which wrap an exception passing through
them in a ``BaseExceptionGroup``: ``except KeyboardInterrupt`` around them
missed Ctrl-C, and the user saw an exception group's traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from jobqueue import ConnectionLost
from jobqueue.sync import Client
from tests import helpers as support

#: Runs one of the two, exits 42 on KeyboardInterrupt; anything else escapes.
PROGRAM = """
import logging, sys, trio
import jobqueue

logging.basicConfig(level=logging.INFO, stream=sys.stdout)

async def noop(payload):
    pass

async def main(what, port):
    if what == "server":
        await jobqueue.serve_queue(port)
    else:
        await jobqueue.Worker("127.0.0.1", port, handlers={"noop": noop}).run()

try:
    trio.run(main, sys.argv[1], int(sys.argv[2]))
except KeyboardInterrupt:
    print("caught KeyboardInterrupt", flush=True)
    sys.exit(42)
"""


def _interrupt(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=support.LIMIT)
    return output


@contextmanager
def _started(what: str, port: int) -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        [sys.executable, "-c", PROGRAM, what, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C as from a terminal, even where this test runs with SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()


@pytest.mark.slow
def test_ctrl_c_leaves_a_worker_as_keyboard_interrupt() -> None:
    with support.QueueThread(worker=False) as queue:
        host, port = queue.address
        with Client.connect(host, port) as client, _started("worker", port) as worker:
            support.poll_until(lambda: client.stats().waiting_workers == 1, "the worker's slot")
            output = _interrupt(worker)
    assert worker.returncode == 42, output
    assert "caught KeyboardInterrupt" in output


@pytest.mark.slow
def test_ctrl_c_leaves_serve_queue_as_keyboard_interrupt() -> None:
    port = support.free_port()
    with _started("server", port) as server:
        support.poll_until(lambda: _answers(port), "the server to listen")
        output = _interrupt(server)
    assert server.returncode == 42, output
    assert "caught KeyboardInterrupt" in output


def _answers(port: int) -> bool:
    try:
        with Client.connect("127.0.0.1", port, timeout=1) as client:
            client.stats()
    except ConnectionLost:
        return False
    return True
