"""The command line when its output's reader goes away: ``jobqueue stats | head -1``.

A command whose standard output is a pipe nobody reads any more stops
quietly, with nothing on stderr, and exits 141 (128 + SIGPIPE), as a shell
reports ``cat`` or ``yes`` stopped that way. A connection that breaks
(the server went away) is still an error, reported as one. Each command runs
as a real process against a real server in a thread.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from jobqueue.sync import Client
from tests.helpers import LIMIT, PYTHON_M_JOBQUEUE, QueueThread

#: The exit status the README documents for a closed output.
OUTPUT_CLOSED = 141


@pytest.fixture
def queue() -> Iterator[QueueThread]:
    """A queue with no worker."""
    with QueueThread(worker=False) as queue:
        yield queue


def connect(queue: QueueThread) -> list[str]:
    host, port = queue.address
    return ["--connect", f"{host}:{port}"]


@pytest.mark.parametrize(
    "command",
    [
        ["stats"],
        ["stats", "--json"],
        ["status", "JOB"],
        ["status", "JOB", "--json"],
        ["list", "--state", "pending"],
        ["list", "--state", "pending", "--json"],
        ["submit", "sleep", "--count", "3"],
    ],
    ids=" ".join,
)
def test_a_command_whose_reader_has_gone_exits_141_quietly(
    queue: QueueThread, command: list[str]
) -> None:
    with Client.connect(*queue.address) as client:
        job_id = client.submit("sleep")  # pending: no worker
    argv = [*PYTHON_M_JOBQUEUE, *(job_id if arg == "JOB" else arg for arg in command)]
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the command writes a byte
    try:
        done = subprocess.run(
            [*argv, *connect(queue)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=LIMIT,
            check=False,
        )
    finally:
        os.close(write_end)
    # (submit warns, rightly, that no worker runs "sleep" here.)
    errors = [line for line in done.stderr.splitlines() if "no connected worker" not in line]
    assert (done.returncode, errors) == (OUTPUT_CLOSED, [])


def test_stats_watch_stops_quietly_when_its_reader_goes_away(queue: QueueThread) -> None:
    argv = [*PYTHON_M_JOBQUEUE, "stats", "--watch", "--interval", "0.01", *connect(queue)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as watch:
        try:
            assert watch.stdout is not None
            assert watch.stdout.readline().startswith("jobs:   ")  # it is watching
            watch.stdout.close()  # like head -1: read a line, then go
            _, errors = watch.communicate(timeout=LIMIT)
        finally:
            if watch.poll() is None:
                watch.kill()
    assert (watch.returncode, errors) == (OUTPUT_CLOSED, "")


def test_a_server_that_goes_away_is_still_an_error(queue: QueueThread) -> None:
    # The connection breaks while standard output still has its reader:
    # that is no closed output, and says what happened.
    argv = [*PYTHON_M_JOBQUEUE, "stats", "--watch", "--interval", "0.01", *connect(queue)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as watch:
        try:
            assert watch.stdout is not None
            assert watch.stdout.readline().startswith("jobs:   ")
            queue.stop()
            _, errors = watch.communicate(timeout=LIMIT)
        finally:
            if watch.poll() is None:
                watch.kill()
    assert watch.returncode == 1
    assert errors.startswith(f"jobqueue: connection to {queue.address[0]}:"), errors
    assert "lost" in errors
    assert len(errors.splitlines()) == 1, errors
