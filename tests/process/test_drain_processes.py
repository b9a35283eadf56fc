"""Real ``jobqueue worker`` processes stopped with SIGTERM: the graceful drain.

The server runs in this trio run on a free loopback port; the worker is a real
process. Every wait is on observable state (a file the handler writes when it
starts, job status, the process exiting), bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from jobqueue._client import Client
from jobqueue._server import serve_queue

pytestmark = pytest.mark.slow

#: Long enough that no lease runs out during a test: every job given back
#: here was given back by the worker, not taken back by the server.
LONG_LEASE = 60.0

HANDLERS = """
import pathlib
import trio

async def marked_sleep(job):
    pathlib.Path(f"started-{job.id}").write_text(str(job.attempt))
    await trio.sleep(job.payload)
    return job.payload

HANDLERS = {"marked_sleep": marked_sleep}
"""


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[str, int]]:
    async with trio.open_nursery() as nursery:
        address: tuple[str, int] = await nursery.start(
            partial(serve_queue, 0, host="127.0.0.1", lease_timeout=LONG_LEASE)
        )
        yield address
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def worker_process(
    address: tuple[str, int], workdir: Path, *options: str
) -> AsyncIterator[trio.Process]:
    """A ``jobqueue worker`` process whose handlers live in ``workdir``; killed if left."""
    (workdir / "drain_handlers.py").write_text(HANDLERS)
    argv = [
        sys.executable, "-m", "jobqueue", "worker",
        "--connect", f"{address[0]}:{address[1]}",
        "--handlers", "drain_handlers:HANDLERS",
        "--name", "drainer",
        *options,
    ]  # fmt: skip
    log_path = workdir / "worker.log"
    with log_path.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir
        )
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            print(f"--- worker (exit {process.returncode}) ---")
            print(log_path.read_text(errors="replace"))


# Small local files: not worth a thread.
def _exists(path: Path) -> bool:
    return path.exists()


async def until_exists(path: Path, process: trio.Process) -> None:
    with trio.fail_after(30):
        while not _exists(path):
            assert process.returncode is None, "the worker exited early"
            await trio.sleep(0.02)


async def test_sigterm_drains_finishes_running_and_gives_back_prefetched(
    tmp_path: Path,
) -> None:
    async with serving() as address, Client.connect(*address) as client:
        ids = [await client.submit("marked_sleep", 1.5) for _ in range(3)]
        async with worker_process(address, tmp_path, "--prefetch", "3") as worker:
            # All three are taken at once; the first one's handler has started.
            await until_exists(tmp_path / f"started-{ids[0]}", worker)
            held = [j for entry in (await client.stats()).workers for j in entry["jobs"]]
            assert sorted(held) == sorted(ids)

            worker.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                status = await worker.wait()
            assert status == 0

        first = await client.status(ids[0])
        assert (first.state, first.result, first.attempt) == ("completed", 1.5, 1)
        for job_id in ids[1:]:
            back = await client.status(job_id)
            # Back in line, never started, attempt unchanged (no run was counted).
            assert (back.state, back.attempt, back.error) == ("pending", 1, None)
            assert not (tmp_path / f"started-{job_id}").exists()
        stats = await client.stats()
        assert stats.totals["reassigned"] == 0
        assert stats.workers == []
        log = (tmp_path / "worker.log").read_text()
        assert "draining" in log
        assert "1 job(s) finished during the drain, 2 given back" in log


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGTERM,
        pytest.param(
            signal.SIGINT,
            marks=pytest.mark.skipif(
                signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
                reason="SIGINT is ignored here, so the worker process would ignore it too",
            ),
        ),
    ],
)
async def test_a_second_signal_stops_at_once(tmp_path: Path, signum: signal.Signals) -> None:
    # Exit 143 or 130, as a shell reports a process that signal killed
    # (README, "Command line"); the first signal only drains.
    async with serving() as address, Client.connect(*address) as client:
        job_id = await client.submit("marked_sleep", 600)
        async with worker_process(address, tmp_path, "--drain-timeout", "600") as worker:
            await until_exists(tmp_path / f"started-{job_id}", worker)
            worker.send_signal(signum)
            # The drain has begun: the worker says so; the job still runs.
            with trio.fail_after(30):
                while "draining" not in (tmp_path / "worker.log").read_text():  # noqa: ASYNC110
                    await trio.sleep(0.02)
            assert worker.returncode is None
            worker.send_signal(signum)
            with trio.fail_after(10):
                status = await worker.wait()
            assert status == 128 + signum
        # Stopped at once: its connection closed, so the server took the job back.
        with trio.fail_after(10):
            while (await client.status(job_id)).state != "pending":  # noqa: ASYNC110
                await trio.sleep(0.02)
