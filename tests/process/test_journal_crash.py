"""A journaled server SIGKILLed and restarted 3 times under load loses nothing acknowledged.

The third kill is aimed at a compaction.

The long version (at least 50 restarts) is ``nox -s crash`` or
``python -m tests.process.journal_crash --restarts 50``.
"""

from __future__ import annotations

import os
import random
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from jobqueue import Client
from tests.helpers import free_port, wait_until_accepting
from tests.process import journal_crash as crash


@pytest.mark.slow
async def test_sigkilled_server_loses_no_acknowledged_job(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    report = await crash.crash_run(tmp_path, restarts=3, seed=seed)
    assert not report.problems, f"seed {seed}\n{report}"
    assert report.restarts == 3
    assert report.aimed == 1  # the third kill comes as a compaction starts
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


async def _serving(port: int, journal: Path, log: Any) -> trio.Process:
    server = await trio.lowlevel.open_process(
        [sys.executable, "-m", "jobqueue", "serve", "--port", str(port), "--journal", str(journal)],
        cwd=crash.ROOT,
        stderr=log,
    )
    await wait_until_accepting(port, server)
    return server


@pytest.mark.slow
async def test_a_submit_acknowledged_during_a_compaction_survives_a_sigkill(
    tmp_path: Path,
) -> None:
    # Submits until a compaction is writing its snapshot (its .tmp file is
    # there), one more that is acknowledged meanwhile, and SIGKILL before the
    # snapshot is renamed: the old segment, still the journal, has them all.
    journal = tmp_path / "journal"
    port = free_port()
    batch = [{"name": "n", "payload": {"pad": "x" * 40}}] * 500
    with crash._open_log(tmp_path / "server.log") as log:
        server = await _serving(port, journal, log)
        try:
            async with Client.connect("127.0.0.1", port) as client:
                submitted = 0
                with trio.fail_after(120):
                    # The journal compacts at about 1,500, 6,000, 24,000 and
                    # 97,000 jobs; the last takes a few hundred milliseconds.
                    while submitted < 90_000 or not any(
                        name.endswith(".tmp") for name in os.listdir(journal)
                    ):
                        submitted += len(await client.submit_many(batch))
                        # (Before flushes went on during compactions, no submit
                        # was ever answered while a .tmp existed.)
                        assert submitted < 300_000, "no submit answered during a compaction"
                during = await client.submit("during", key="during")
                compacting = any(name.endswith(".tmp") for name in os.listdir(journal))
        finally:
            server.kill()
            await server.wait()
        assert compacting, "the submit waited for the compaction to end"
        server = await _serving(port, journal, log)
        try:
            async with Client.connect("127.0.0.1", port) as client:
                assert (await client.status(during)).state == "pending"
                assert (await client.stats()).jobs["pending"] == submitted + 1
        finally:
            server.kill()
            await server.wait()
