"""``jobqueue submit --wait``: ids first, then results; ``--timeout`` bounds the wait.

The command runs in this thread (``_cli.main``, which calls ``trio.run``)
against a real queue in a background thread.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobqueue.sync
from jobqueue import Job, _cli
from jobqueue._limits import MAX_BATCH, MAX_LINE_BYTES
from jobqueue.testing import QueueInThread, run_queue_in_thread

#: Set to let blocked jobs finish (so the queue can stop).
release = threading.Event()


def block(job: Job) -> str:
    release.wait(30)
    return "released"


async def echo(job: Job) -> object:
    return job.payload


@pytest.fixture
def queue() -> Iterator[QueueInThread]:
    release.clear()
    with run_queue_in_thread() as running:
        running.start_worker({"block": block, "echo": echo}, concurrency=4)
        yield running
        release.set()


def submit(queue: QueueInThread, *args: str) -> int:
    return _cli.main(["submit", *args, "--connect", f"{queue.host}:{queue.port}"])


def test_wait_prints_the_ids_then_each_result(
    queue: QueueInThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit(queue, "echo", "--payload", '{"n": 1}', "--count", "2", "--wait") == 0
    out, err = capsys.readouterr()
    ids = [line.removeprefix("submitted ") for line in err.splitlines()]
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["job_id"] for r in results] == ids
    assert [(r["state"], r["result"]) for r in results] == [("completed", {"n": 1})] * 2


def test_timeout_ends_the_wait_with_a_clear_line(
    queue: QueueInThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit(queue, "block", "--wait", "--timeout", "0.5") == _cli.TIMED_OUT != 0
    out, err = capsys.readouterr()
    assert out == ""
    first, last = err.splitlines()
    # The id came first, so it is known however the wait ends.
    job_id = first.removeprefix("submitted ")
    assert first == f"submitted {job_id}"
    assert last == f"jobqueue: 1 of 1 jobs did not finish within 0.5s: {job_id} (running)"


def test_timeout_prints_the_jobs_that_finished_in_time(
    queue: QueueInThread, capsys: pytest.CaptureFixture[str]
) -> None:
    # Jobs are waited for in order: the echo ones finish, each printed as it does.
    assert submit(queue, "echo", "--count", "3", "--wait", "--timeout", "30") == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert submit(queue, "block", "--count", "7", "--wait", "--timeout", "0.2") == _cli.TIMED_OUT
    _, err = capsys.readouterr()
    assert err.splitlines()[-1].startswith("jobqueue: 7 of 7 jobs did not finish within 0.2s: ")
    assert err.splitlines()[-1].endswith(" and 2 more")


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_timeout_is_a_usage_error(
    value: str, queue: QueueInThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit(queue, "echo", "--wait", "--timeout", value) == 2
    err = capsys.readouterr().err
    assert err.startswith("jobqueue: argument --timeout: ")


def test_timeout_without_wait_is_a_usage_error(
    queue: QueueInThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit(queue, "echo", "--timeout", "5") == 2
    assert capsys.readouterr().err == (
        "jobqueue: --timeout needs --wait: without it, submit does not wait\n"
    )


# -- --count beyond one request ------------------------------------------------


def test_count_beyond_one_request_goes_in_batches(
    queue: QueueInThread, capsys: pytest.CaptureFixture[str]
) -> None:
    # The server takes at most MAX_BATCH jobs a request: this was a traceback.
    count = MAX_BATCH + 1
    assert submit(queue, "nobody-runs-this", "--count", str(count), "--key", "k") == 0
    ids = capsys.readouterr().out.split()
    assert len(set(ids)) == count
    with jobqueue.sync.Client.connect(queue.host, queue.port) as client:
        assert client.stats().names["nobody-runs-this"]["pending"] == count
        # The keys run on across batches, and say which id is which job.
        assert client.submit("nobody-runs-this", key=f"k-{count}") == ids[-1]


def test_count_of_large_payloads_fits_each_request_to_the_line_limit(
    queue: QueueInThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each job fits alone; all of them in one line would not (message_too_large).
    path = tmp_path / "payload.json"
    path.write_text(json.dumps("x" * (MAX_LINE_BYTES // 3)))
    assert submit(queue, "echo", "--payload", f"@{path}", "--count", "4", "--wait") == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [len(r["result"]) for r in results] == [MAX_LINE_BYTES // 3] * 4


def test_a_refused_batch_names_the_jobs_submitted_before(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with run_queue_in_thread(max_pending=MAX_BATCH + 5) as small:
        assert submit(small, "echo", "--count", str(2 * MAX_BATCH)) == 1
    out, err = capsys.readouterr()
    assert len(out.split()) == MAX_BATCH
    # After the warning that no worker runs 'echo': the error, in one line.
    warning, error = err.splitlines()
    assert warning.startswith("jobqueue: warning: ")
    assert error.startswith("jobqueue: ")
    assert error.endswith(
        f"({MAX_BATCH} of {2 * MAX_BATCH} jobs were submitted before that; "
        "their ids are printed above)"
    )


def test_count_has_an_upper_bound(queue: QueueInThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert submit(queue, "echo", "--count", str(_cli.MAX_COUNT + 1)) == 2
    assert capsys.readouterr().err == (
        f"jobqueue: argument --count: must be at most {_cli.MAX_COUNT}, "
        f"not {_cli.MAX_COUNT + 1} (see 'jobqueue submit --help')\n"
    )
