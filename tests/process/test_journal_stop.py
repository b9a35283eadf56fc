"""Stopping a server (SIGTERM, Ctrl-C) says what becomes of its jobs."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import trio

from jobqueue import Client
from tests.helpers import free_port, wait_until_accepting
from tests.process import journal_crash as crash


async def stop_a_server(tmp_path: Path, signum: int, *options: str) -> str:
    port = free_port()
    log_path = tmp_path / "server.log"
    with crash._open_log(log_path) as log:
        server = await trio.lowlevel.open_process(
            [sys.executable, "-m", "jobqueue", "serve", "--port", str(port), *options],
            cwd=crash.ROOT,
            stderr=log,
        )
        try:
            await wait_until_accepting(port, server)
            async with Client.connect("127.0.0.1", port) as client:
                await client.submit("n")
                await client.submit("n", delay=600)
            server.send_signal(signum)
            with trio.fail_after(30):
                status = await server.wait()
        finally:
            if server.returncode is None:
                server.kill()
    assert status in (0, 130)
    return log_path.read_text()


# A shell that runs a job in the background starts it with SIGINT ignored,
# and a child started from there ignores it too (as ``jobqueue serve`` should).
_SIGINT = pytest.param(
    signal.SIGINT,
    marks=pytest.mark.skipif(
        signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
        reason="SIGINT is ignored in this environment, so the server would ignore it too; "
        "run the suite in the foreground",
    ),
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, _SIGINT])
async def test_without_a_journal_it_says_what_it_drops(tmp_path: Path, signum: int) -> None:
    log = await stop_a_server(tmp_path, signum)
    assert "stopping without a journal: dropping 1 pending, 1 scheduled and 0 running jobs" in log


async def test_with_a_journal_it_says_they_are_safe(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    log = await stop_a_server(tmp_path, signal.SIGTERM, "--journal", str(journal))
    assert f"1 pending, 1 scheduled and 0 running jobs are safe in the journal {journal}" in log
