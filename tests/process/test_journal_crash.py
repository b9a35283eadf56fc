"""A journaled server SIGKILLed and restarted 3 times under load loses nothing acknowledged.

The long version (at least 50 restarts) is ``nox -s crash`` or
``python -m tests.process.journal_crash --restarts 50``.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest
import trio

from tests.process import journal_crash as crash


@pytest.mark.slow
async def test_sigkilled_server_loses_no_acknowledged_job(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    report = await crash.crash_run(tmp_path, restarts=3, seed=seed)
    assert not report.problems, f"seed {seed}\n{report}"
    assert report.restarts == 3
    assert report.jobs > 0
    assert report.runs >= report.jobs


@pytest.mark.slow
async def test_the_crash_demo_completes_every_job() -> None:
    argv = [
        sys.executable,
        "-m",
        "jobqueue",
        "demo",
        "--crash-server",
        "--jobs",
        "8",
        "--seed",
        "1",
    ]
    with trio.fail_after(90):
        result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, out + err
    assert re.search(r"killed the server \(pid \d+\) with SIGKILL: \d+ completed, [1-9]", out), out
    assert "restarted on the same journal" in out
    assert re.search(r"jobs completed +8\n", out), out
    assert "every job completed" in out.splitlines()
