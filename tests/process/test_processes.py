"""Real processes: worker processes killed mid-job, and the CLI against a served queue.

These tests are about processes, so they start real ones (``python -m jobqueue``
and the installed ``jobqueue`` script) and never fake the network: every
server listens on 127.0.0.1. Waiting is on observable state (server stats, job
status, a port accepting connections), always bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import pytest
import trio

from jobqueue import __version__
from jobqueue._client import Client
from jobqueue._replies import JobInfo, Stats
from tests.helpers import (
    JOBQUEUE_SCRIPT,
    PYTHON_M_JOBQUEUE,
    free_port,
    run_cli,
    running_process,
    serving,
    wait_until_accepting,
)

pytestmark = pytest.mark.slow


#: Long enough that nothing in these tests can be rescued by lease expiry:
#: a reassignment seen here was caused by the server noticing a closed
#: connection.
LONG_LEASE = 60.0


# -- helpers -----------------------------------------------------------------


# Small local files, opened once per process: not worth a thread.
def _open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


def _read_log(path: Path) -> str:
    return path.read_text(errors="replace")


@asynccontextmanager
async def background_process(
    argv: Sequence[str], log_path: Path, *, cwd: Path | None = None
) -> AsyncIterator[trio.Process]:
    """Run ``argv`` for the block, output to ``log_path``; kill and reap it afterwards.

    The log is printed on the way out, so a failing test shows what the
    process said (pytest only shows captured output for failures).
    """
    process: trio.Process | None = None
    try:
        with _open_log(log_path) as log_file:
            async with running_process(
                argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=cwd
            ) as process:
                yield process
    finally:
        status = None if process is None else process.returncode
        print(f"--- {' '.join(argv)} (exit {status}) ---")
        print(_read_log(log_path))


def out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode()


def err(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode()


def worker_entries(stats: Stats, name: str) -> list[str]:
    """Ids of the jobs held by connections named ``name``."""
    return [job for entry in stats.workers if entry["name"] == name for job in entry["jobs"]]


async def wait_for_idle_workers(
    client: Client, count: int, processes: Mapping[str, trio.Process]
) -> None:
    """Until ``count`` worker connections are blocked asking for a job."""
    with trio.fail_after(30):
        while (await client.stats()).waiting_workers < count:
            for name, process in processes.items():
                assert process.returncode is None, f"{name} exited early"
            await trio.sleep(0.02)


# -- a worker process killed mid-job -------------------------------------------

JOB_SECONDS = 0.8
N_JOBS = 9
WORKER_NAMES = ("w1", "w2", "w3")
VICTIM = "w2"


@asynccontextmanager
async def worker_processes(
    address: tuple[str, int], names: Sequence[str], logdir: Path
) -> AsyncIterator[dict[str, trio.Process]]:
    host, port = address
    async with trio.open_nursery() as nursery:
        processes: dict[str, trio.Process] = {}

        async def one(name: str, *, task_status: trio.TaskStatus[trio.Process]) -> None:
            argv = [
                *PYTHON_M_JOBQUEUE, "worker",
                "--connect", f"{host}:{port}",
                "--concurrency", "1",
                "--name", name,
            ]  # fmt: skip
            async with background_process(argv, logdir / f"{name}.log") as process:
                task_status.started(process)
                await trio.sleep_forever()

        for name in names:
            processes[name] = await nursery.start(one, name)
        yield processes
        nursery.cancel_scope.cancel()


async def test_sigkilled_worker_process_loses_its_job_to_another_worker(tmp_path: Path) -> None:
    async with (
        serving(lease_timeout=LONG_LEASE) as address,
        Client.connect(*address, name="test-client") as client,
        worker_processes(address, WORKER_NAMES, tmp_path) as processes,
    ):
        await wait_for_idle_workers(client, len(WORKER_NAMES), processes)

        # Three idle workers: the server hands the first three jobs out as
        # they are submitted, one to each, so the victim holds one now.
        job_ids = [await client.submit("sleep", {"seconds": JOB_SECONDS}) for _ in range(N_JOBS)]
        held = worker_entries(await client.stats(), VICTIM)
        assert len(held) == 1, held  # concurrency 1: one connection, one job
        victim_job = held[0]
        before = await client.status(victim_job)
        # It has JOB_SECONDS of work left, far more than the gap to the kill.
        assert (before.state, before.worker, before.attempt) == ("running", VICTIM, 1)

        victim = processes[VICTIM]
        victim.send_signal(signal.SIGKILL)
        killed_at = trio.current_time()
        with trio.fail_after(10):
            await victim.wait()
        assert victim.returncode == -signal.SIGKILL

        # The server notices the closed connection and requeues at once;
        # with a 60 s lease, nothing else could move the job this soon.
        with trio.fail_after(10):
            while True:
                info = await client.status(victim_job)
                if info.state != "running" or info.worker != VICTIM:
                    break
                await trio.sleep(0.01)
        requeue_seconds = trio.current_time() - killed_at
        assert requeue_seconds < 2.0, f"job left the killed worker after {requeue_seconds:.2f}s"
        assert info.state in ("pending", "running"), info
        stats = await client.stats()
        assert stats.totals["reassigned"] == 1
        assert stats.totals["expired"] == 0
        assert worker_entries(stats, VICTIM) == []

        with trio.fail_after(30):
            results: list[JobInfo] = [await client.wait(job_id) for job_id in job_ids]
        final = await client.stats()

        survivors = {name: p for name, p in processes.items() if name != VICTIM}
        for name, process in survivors.items():
            assert process.returncode is None, f"{name} died"

    by_id = {info.job_id: info for info in results}
    assert [info.state for info in results] == ["completed"] * N_JOBS, results
    assert all(info.result == {"slept": JOB_SECONDS} for info in results), results
    assert by_id[victim_job].attempt == 2
    assert by_id[victim_job].worker in survivors
    # Only the victim's job ran twice; nothing else was disturbed.
    assert {info.job_id for info in results if info.attempt > 1} == {victim_job}
    assert all(info.worker in survivors for info in results if info.attempt > 1)
    # Its first attempt was lost to the closed connection, not to lease expiry
    # (that would read LeaseExpired) and not to its handler (no retry backoff).
    assert by_id[victim_job].error == {
        "type": "WorkerLost",
        "message": "the worker's connection closed",
    }
    assert all(info.error is None for info in results if info.job_id != victim_job)
    assert final.totals == {
        "submitted": N_JOBS,
        "completed": N_JOBS,
        "failed": 0,
        "cancelled": 0,
        "retried": 0,
        "reassigned": sum(info.attempt - 1 for info in results),
        "expired": 0,
    }
    assert final.totals["reassigned"] == len(held) == 1
    assert final.jobs == {
        "pending": 0,
        "scheduled": 0,
        "running": 0,
        "completed": N_JOBS,
        "failed": 0,
        "cancelled": 0,
    }


# -- the command line against `jobqueue serve` in its own process ---------------


async def test_cli_against_a_served_queue(tmp_path: Path) -> None:
    port = free_port()
    connect = ("--connect", f"127.0.0.1:{port}")
    serve_argv = [
        *PYTHON_M_JOBQUEUE, "serve", "--port", str(port), "--lease-timeout", str(LONG_LEASE),
        "--max-attempts", "3", "--retry-delay", "0.05", "--max-retry-delay", "0.05",
    ]  # fmt: skip
    async with background_process(serve_argv, tmp_path / "serve.log") as server:
        await wait_until_accepting(port, server)

        # submit without --wait: one id per line, nothing else.
        submitted = await run_cli("submit", "sleep", "--payload", '{"seconds": 0.1}',
                                  "--count", "3", *connect)  # fmt: skip
        assert submitted.returncode == 0, err(submitted)
        first_ids = out(submitted).split()
        assert len(first_ids) == 3
        assert len(set(first_ids)) == 3
        assert out(submitted) == "".join(f"{job_id}\n" for job_id in first_ids)

        # The installed console script, as a worker.
        worker_argv = [JOBQUEUE_SCRIPT, "worker", *connect, "--name", "cli-worker"]
        async with background_process(worker_argv, tmp_path / "worker.log"):
            waited = await run_cli("submit", "sleep", "--payload", '{"seconds": 0.1}',
                                   "--count", "2", "--wait", *connect)  # fmt: skip
            assert waited.returncode == 0, err(waited)
            lines = [json.loads(line) for line in out(waited).splitlines()]
            assert len(lines) == 2
            for line in lines:
                assert line["job_id"] not in first_ids
                times = [line.pop(k) for k in ("submitted_at", "started_at", "finished_at")]
                assert times == sorted(times), times
                assert line == {
                    "job_id": line["job_id"],
                    "name": "sleep",
                    "state": "completed",
                    "attempt": 1,
                    "queue": "default",
                    "priority": 0,
                    "max_attempts": 3,  # serve --max-attempts
                    "worker": "cli-worker",
                    "result": {"slept": 0.1},
                }

            # A job that fails makes `submit --wait` exit 1, still printing its
            # status once its last attempt has failed. The server's backoff is
            # 0.05 s (serve --retry-delay, --max-retry-delay); its defaults would
            # spend at least 0.5 + 1 s between these three attempts.
            started = trio.current_time()
            failing = await run_cli("submit", "sleep", "--payload", '{"seconds": -1}',
                                    "--wait", *connect)  # fmt: skip
            took = trio.current_time() - started
            assert failing.returncode == 1, err(failing)
            [failed] = [json.loads(line) for line in out(failing).splitlines()]
            assert (failed["state"], failed["attempt"], failed["max_attempts"]) == ("failed", 3, 3)
            assert failed["error"]["type"] == "ValueError"
            assert "result" not in failed
            assert took < 1.5, took
            # --max-attempts overrides the server's default for that job.
            once = await run_cli("submit", "sleep", "--payload", '{"seconds": -1}',
                                 "--max-attempts", "1", "--wait", *connect)  # fmt: skip
            assert once.returncode == 1, err(once)
            assert json.loads(out(once))["attempt"] == 1

        # One worker, one slot, first in first out: the first three finished
        # before the --wait jobs did.
        status = await run_cli("status", first_ids[0], "--json", *connect)
        assert status.returncode == 0, err(status)
        shown = json.loads(out(status))
        times = [shown.pop(name) for name in ("submitted_at", "started_at", "finished_at")]
        assert times == sorted(times), times
        assert abs(times[0] - time.time()) < 600, times
        assert shown == {
            "job_id": first_ids[0],
            "name": "sleep",
            "state": "completed",
            "attempt": 1,
            "queue": "default",
            "priority": 0,
            "max_attempts": 3,
            "worker": "cli-worker",
            "result": {"slept": 0.1},
        }

        human = await run_cli("stats", *connect)
        assert human.returncode == 0, err(human)
        text = out(human).splitlines()
        assert text[0] == (
            "jobs:   pending 0  scheduled 0  running 0  completed 5  failed 2  cancelled 0"
        )
        assert text[1] == (
            "totals: submitted 7  completed 5  failed 2  cancelled 0  retried 2  reassigned 0"
            "  expired 0"
        )
        assert re.fullmatch(r"connections \d+  waiting workers 0", text[2]), text
        # How near each bound is: nothing waits, the seven jobs are finished.
        assert re.fullmatch(
            r"limits: waiting 0 of 1,000,000  payload bytes 0 of 1,073,741,824"
            r"  finished 7 of 100,000  finished bytes [1-9][0-9,]* of 1,073,741,824",
            text[3],
        ), text
        # No queue has work and no worker is connected: no per-queue or per-worker lines.
        assert len(text) == 4, text

        raw = await run_cli("stats", "--json", *connect)
        assert raw.returncode == 0, err(raw)
        stats = json.loads(out(raw))
        assert stats["jobs"] == {
            "pending": 0, "scheduled": 0, "running": 0, "completed": 5, "failed": 2,
            "cancelled": 0,
        }  # fmt: skip
        assert stats["totals"] == {
            "submitted": 7, "completed": 5, "failed": 2, "cancelled": 0, "retried": 2,
            "reassigned": 0, "expired": 0,
        }  # fmt: skip
        assert stats["workers"] == []
        assert stats["queues"] == {}
        assert stats["waiting_workers"] == 0
        assert stats["connections"] >= 1  # this client at least
        assert "type" not in stats

        assert server.returncode is None
    log = (tmp_path / "serve.log").read_text()
    assert f"queue listening on 127.0.0.1:{port}" in log
    assert "Traceback" not in log


async def test_subprocesses_import_the_jobqueue_under_test(tmp_path: Path) -> None:
    # Every process these tests start must run this code, not some other
    # installed copy: the environment (PYTHONPATH included) is inherited.
    import jobqueue

    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-c", "import jobqueue; print(jobqueue.__file__)"],
            capture_stdout=True,
            cwd=tmp_path,
        )
    assert Path(result.stdout.decode().strip()) == Path(jobqueue.__file__)


async def test_console_script_prints_its_version() -> None:
    assert os.access(JOBQUEUE_SCRIPT, os.X_OK), JOBQUEUE_SCRIPT
    with trio.fail_after(30):
        result = await trio.run_process(
            [JOBQUEUE_SCRIPT, "--version"], capture_stdout=True, capture_stderr=True
        )
    assert result.stdout.decode() == f"jobqueue {__version__}\n"
