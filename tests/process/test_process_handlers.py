"""CPU-bound handlers in processes, ``jobqueue.in_process`` (issue 13).

The handlers live in a module written to a temporary directory on
``sys.path``: a process handler is pickled by name, and the worker's
processes (spawned, so they get the parent's ``sys.path``) import it.
Real processes, so real time; each wait is bounded.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
import trio

import jobqueue
from jobqueue import Worker, _cli, in_process
from jobqueue.testing import open_test_queue

if TYPE_CHECKING:
    from tests.helpers import RawOpener

pytestmark = pytest.mark.slow

try:
    import trio_parallel  # noqa: F401
except ImportError:
    HAVE_EXTRA = False
else:
    HAVE_EXTRA = True

needs_extra = pytest.mark.skipif(
    not HAVE_EXTRA, reason="needs trio-parallel: pip install 'jobqueue[processes]'"
)

LEASE = 0.5

HANDLERS = """\
import os
import sys
import time

from jobqueue import in_process

@in_process
def pid(job):
    return os.getpid()

@in_process(max_jobs=2)
def recycled_pid(job):
    return os.getpid()

@in_process
def spin(job):
    # CPU-bound: holds the GIL of its own process, never the worker's.
    deadline = time.monotonic() + job.payload["seconds"]
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return {"pid": os.getpid(), "spun": n > 0}

@in_process
def attempts(job):
    return [job.attempt, job.attempts_spent, job.last_attempt]

class Unprintable(Exception):
    def __str__(self):
        raise ZeroDivisionError("no text today")

@in_process
def unprintable(job):
    raise Unprintable

@in_process
def exits(job):
    sys.exit(5)

@in_process
def interrupts(job):
    raise KeyboardInterrupt

class Bail(BaseException):
    pass

@in_process
def bails(job):
    raise Bail("bailing out")

@in_process
def spin_forever(job):
    with open(job.payload["pid_file"], "w") as f:
        f.write(str(os.getpid()))
    while True:
        pass
"""


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    (tmp_path / "jq_process_handlers.py").write_text(HANDLERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import jq_process_handlers  # type: ignore[import-not-found]

    yield jq_process_handlers
    del sys.modules["jq_process_handlers"]


def gone(pid: int) -> bool:
    """Whether process ``pid`` no longer runs (gone, or a zombie left to reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


async def read_pid(path: Path) -> int:
    """The pid the handler's process writes to ``path`` once it runs."""
    trio_path = trio.Path(path)
    with trio.fail_after(30):
        # Another process writes it: nothing to wait on but the file.
        while not await trio_path.exists() or not await trio_path.read_text():  # noqa: ASYNC110
            await trio.sleep(0.02)
    return int(await trio_path.read_text())


async def wait_gone(pid: int) -> None:
    """Until process ``pid`` is gone, within 10 s."""
    with trio.fail_after(10):
        while not gone(pid):  # noqa: ASYNC110  (another process: no event to wait on)
            await trio.sleep(0.02)


@needs_extra
async def test_process_handler_keeps_its_lease_while_it_spins(handlers: ModuleType) -> None:
    async with open_test_queue(lease_timeout=LEASE) as queue:
        worker = await queue.start_worker({"spin": handlers.spin})
        job_id = await queue.client.submit("spin", {"seconds": LEASE * 5})
        with trio.fail_after(60):
            info = await queue.client.wait(job_id)
    # Still attempt 1: the lease never ran out while the process spun.
    assert (info.state, info.attempt) == ("completed", 1)
    assert info.result["spun"] is True
    assert info.result["pid"] != os.getpid()
    assert worker.statistics().lost == 0


@needs_extra
async def test_a_process_handler_sees_what_a_given_back_job_has_spent_and_left(
    handlers: ModuleType, raw_connection: RawOpener
) -> None:
    async with open_test_queue() as queue:
        job_id = await queue.client.submit("attempts", max_attempts=1)
        async with raw_connection(queue) as holder:
            taken = await holder.request({"type": "request_job"})
            release = {"type": "release_job", "job_id": job_id, "attempt": taken["attempt"]}
            assert await holder.request(release) == {"type": "ok"}
        await queue.start_worker({"attempts": handlers.attempts})
        with trio.fail_after(60):
            info = await queue.client.wait(job_id)
    # The second run, the first of its budget, and (with one attempt) its last.
    assert info.result == [2, 1, True]


@needs_extra
async def test_cancel_kills_the_process(handlers: ModuleType, tmp_path: Path) -> None:
    pid_file = tmp_path / "cancel.pid"
    async with open_test_queue() as queue:
        worker = await queue.start_worker({"spin_forever": handlers.spin_forever})
        job_id = await queue.client.submit("spin_forever", {"pid_file": str(pid_file)})
        pid = await read_pid(pid_file)
        assert not gone(pid)
        await queue.client.cancel(job_id)
        await wait_gone(pid)
        with trio.fail_after(10):
            while worker.statistics().cancelled != 1:  # noqa: ASYNC110  (a plain counter)
                await trio.sleep(0.01)
        assert (await queue.client.status(job_id)).state == "cancelled"


@needs_extra
async def test_job_timeout_kills_the_process(handlers: ModuleType, tmp_path: Path) -> None:
    pid_file = tmp_path / "timeout.pid"
    async with open_test_queue() as queue:
        await queue.start_worker({"spin_forever": handlers.spin_forever}, job_timeout=1.0)
        job_id = await queue.client.submit(
            "spin_forever", {"pid_file": str(pid_file)}, max_attempts=1
        )
        pid = await read_pid(pid_file)
        with trio.fail_after(30):
            info = await queue.client.wait(job_id)
        await wait_gone(pid)
    assert info.state == "failed"
    assert info.error is not None
    assert info.error["type"] == "TimeoutError"


@needs_extra
async def test_stopping_the_worker_kills_the_process(handlers: ModuleType, tmp_path: Path) -> None:
    pid_file = tmp_path / "stop.pid"
    async with open_test_queue() as queue:
        worker = queue.worker({"spin_forever": handlers.spin_forever})
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.run)
                await queue.client.submit("spin_forever", {"pid_file": str(pid_file)})
                pid = await read_pid(pid_file)
                nursery.cancel_scope.cancel()
        await wait_gone(pid)


@needs_extra
async def test_a_process_is_reused_then_recycled_after_max_jobs(handlers: ModuleType) -> None:
    async with open_test_queue() as queue:
        await queue.start_worker({"pid": handlers.pid, "recycled": handlers.recycled_pid})
        pids: dict[str, list[int]] = {"pid": [], "recycled": []}
        for name in ("pid", "recycled"):
            for _ in range(4):
                job_id = await queue.client.submit(name, None)
                with trio.fail_after(30):
                    info = await queue.client.wait(job_id)
                assert info.state == "completed", info
                pids[name].append(info.result)
    # Without max_jobs one process serves every job; with max_jobs=2 a fresh
    # process takes over after each two.
    assert len(set(pids["pid"])) == 1
    first, second, third, fourth = pids["recycled"]
    assert first == second
    assert third == fourth
    assert third != first
    assert os.getpid() not in pids["pid"] + pids["recycled"]


@needs_extra
async def test_an_exception_whose_str_raises_fails_its_job_not_the_worker(
    handlers: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")  # the traceback is expected
    async with open_test_queue() as queue:
        await queue.start_worker({"unprintable": handlers.unprintable, "pid": handlers.pid})
        with trio.fail_after(30):
            job_id = await queue.client.submit("unprintable", max_attempts=1)
            failed = await queue.client.wait(job_id)
            # The worker, and its pool, run the next job.
            after = await queue.client.wait(await queue.client.submit("pid"))
    assert failed.state == "failed"
    assert failed.error == {
        "type": "Unprintable",
        "message": "<exception str() failed: ZeroDivisionError: no text today>",
    }
    assert after.state == "completed"


@needs_extra
@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("exits", {"type": "SystemExit", "message": "5"}),
        # The process ignores SIGINT: this one is the handler's own.
        ("interrupts", {"type": "KeyboardInterrupt", "message": ""}),
        # Any BaseException of its own: it used to end the worker.
        ("bails", {"type": "Bail", "message": "bailing out"}),
    ],
    ids=["exits", "interrupts", "bails"],
)
async def test_a_process_handlers_exit_or_interrupt_fails_its_job_not_the_worker(
    handlers: ModuleType, caplog: pytest.LogCaptureFixture, name: str, error: dict[str, str]
) -> None:
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")  # the traceback is expected
    async with open_test_queue() as queue:
        await queue.start_worker({name: getattr(handlers, name), "pid": handlers.pid})
        with trio.fail_after(30):
            failed = await queue.client.wait(await queue.client.submit(name, max_attempts=1))
            after = await queue.client.wait(await queue.client.submit("pid"))
    assert failed.state == "failed"
    assert failed.error == error
    assert after.state == "completed"


@needs_extra
async def test_an_unpicklable_handler_fails_its_job_with_a_clear_error() -> None:
    nested = in_process(lambda job: job.payload)
    async with open_test_queue() as queue:
        await queue.start_worker({"nested": nested})
        job_id = await queue.client.submit("nested", 1, max_attempts=1)
        with trio.fail_after(30):
            info = await queue.client.wait(job_id)
    assert info.state == "failed"
    assert info.error is not None
    assert info.error["type"] == "TypeError"
    assert "must be picklable" in info.error["message"]


def test_without_the_extra_a_process_handler_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "trio_parallel", None)  # import fails

    def cpu(job: jobqueue.Job) -> Any:
        return None

    def blocking(job: jobqueue.Job) -> Any:
        return None

    with pytest.raises(ImportError, match=r"pip install 'jobqueue\[processes\]'"):
        Worker(handlers={"cpu": in_process(cpu)})
    # A worker without process handlers does not need it.
    Worker(handlers={"blocking": blocking})


def test_jobqueue_worker_without_the_extra_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README: such a worker "refuses to start with an error saying so"."""
    (tmp_path / "extra_missing_handlers.py").write_text(
        "from jobqueue import in_process\n"
        "def cpu(job):\n"
        "    return None\n"
        "HANDLERS = {'cpu': in_process(cpu)}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "trio_parallel", None)  # import fails
    argv = ["worker", "--handlers", "extra_missing_handlers:HANDLERS", "--connect", "127.0.0.1:1"]
    assert _cli.main(argv) == 1  # refused before it connects anywhere
    assert capsys.readouterr().err == (
        "jobqueue: process handlers (jobqueue.in_process) need trio-parallel: "
        "pip install 'jobqueue[processes]'\n"
    )


def test_in_process_refuses_async_handlers_and_bad_max_jobs() -> None:
    async def coro(job: jobqueue.Job) -> None:
        return None

    def cpu(job: jobqueue.Job) -> None:
        return None

    with pytest.raises(TypeError, match="plain def"):
        in_process(coro)
    with pytest.raises(ValueError, match="max_jobs"):
        in_process(cpu, max_jobs=0)
    assert in_process(cpu) is cpu
