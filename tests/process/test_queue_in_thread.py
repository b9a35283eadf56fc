"""``jobqueue.testing.run_queue_in_thread``: a real queue for blocking and asyncio tests.

These tests are what a Django or FastAPI project would write: plain
synchronous test functions (asyncio through ``asyncio.run``), no trio, a
real server over TCP in a background thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

import jobqueue.asyncio
import jobqueue.sync
from jobqueue import Job
from jobqueue.testing import QueueInThread, run_queue_in_thread

# The fixture, as a project gets it with pytest_plugins = ["jobqueue.testing"].
from jobqueue.testing import queue_in_thread as queue_in_thread


def resize(job: Job) -> dict[str, object]:
    """A plain (blocking) job function, as a Django project has them."""
    width, height = job.payload["size"]
    return {"size": [width // 2, height // 2], "thread": threading.get_ident()}


async def add(job: Job) -> int:
    return sum(job.payload)


def test_blocking_code_submits_and_waits_against_a_real_queue() -> None:
    with run_queue_in_thread() as queue:
        worker = queue.start_worker({"resize": resize, "add": add}, concurrency=2)
        with jobqueue.sync.Client.connect(queue.host, queue.port, timeout=10) as client:
            job_id = client.submit("resize", {"size": [640, 480]})
            info = client.wait(job_id, timeout=10)
            assert info.state == "completed"
            assert info.result["size"] == [320, 240]
            # A plain function runs in a thread of its own, not the test's.
            assert info.result["thread"] != threading.get_ident()
            assert client.wait(client.submit("add", [1, 2, 3]), timeout=10).result == 6
        assert worker.statistics().completed == 2
        address = queue.address
    # Stopped with the block: nothing listens there any more.
    with pytest.raises(ConnectionRefusedError), socket.create_connection(address, timeout=5):
        pass


def test_asyncio_code_submits_and_waits_against_a_real_queue() -> None:
    async def main(queue: QueueInThread) -> list[int]:
        async with jobqueue.asyncio.Client.connect(queue.host, queue.port) as client:
            ids = await asyncio.gather(*(client.submit("add", [n, n]) for n in range(20)))
            infos = await asyncio.gather(*(client.wait(job_id, timeout=10) for job_id in ids))
            return [info.result for info in infos]

    with run_queue_in_thread() as queue:
        queue.start_worker({"add": add}, concurrency=4)
        assert asyncio.run(main(queue)) == [2 * n for n in range(20)]


def test_the_fixture_is_a_plain_sync_fixture(queue_in_thread: QueueInThread) -> None:
    queue_in_thread.start_worker({"add": add})
    with jobqueue.sync.Client.connect(*queue_in_thread.address) as client:
        assert client.wait(client.submit("add", [40, 2]), timeout=10).result == 42


def test_server_options_and_token_are_passed_on() -> None:
    with run_queue_in_thread(token="s3cret", max_attempts=1) as queue:
        assert queue.token == "s3cret"
        queue.start_worker({"add": add})  # the worker uses the queue's token
        with pytest.raises(jobqueue.RequestError) as refused:
            jobqueue.sync.Client.connect(queue.host, queue.port).close()
        assert refused.value.code == "unauthorized"
        with jobqueue.sync.Client.connect(queue.host, queue.port, token=queue.token) as client:
            info = client.wait(client.submit("add", "not numbers"), timeout=10)
            assert (info.state, info.attempt) == ("failed", 1)  # max_attempts=1 applied


def test_a_bad_server_option_is_raised_in_the_test_thread() -> None:
    with pytest.raises(TypeError, match="no_such_option"), run_queue_in_thread(no_such_option=1):
        pass  # pragma: no cover


def reports_progress(job: Job) -> str:
    """A blocking handler as the README writes them: it reports progress from its thread."""
    job.report_progress_sync(0.5, {"stage": "half"})
    return "reported"


def test_a_plain_function_runs_as_a_workers_blocking_handler() -> None:
    # job.report_progress_sync, job.cancelled and the rest work in a plain
    # function run by a worker's own thread runner, not in one that merely
    # sits in some thread: started here, they must work the same.
    with run_queue_in_thread(max_attempts=1) as queue:
        queue.start_worker({"report": reports_progress})
        with jobqueue.sync.Client.connect(queue.host, queue.port, timeout=10) as client:
            info = client.wait(client.submit("report"), timeout=10)
    assert (info.state, info.result, info.error) == ("completed", "reported", None)


def test_a_plain_function_past_job_timeout_fails_its_attempt() -> None:
    release = threading.Event()

    def stuck(job: Job) -> str:
        release.wait(10)
        return "late"

    try:
        with run_queue_in_thread(max_attempts=1) as queue:
            queue.start_worker({"stuck": stuck}, job_timeout=0.2)
            with jobqueue.sync.Client.connect(queue.host, queue.port, timeout=10) as client:
                info = client.wait(client.submit("stuck"), timeout=30)
    finally:
        release.set()
    assert info.state == "failed"
    assert info.error is not None
    assert info.error["type"] == "TimeoutError"


def test_leaving_the_block_does_not_wait_for_a_running_plain_function() -> None:
    # The worker abandons a blocking handler's thread when it stops, as
    # Python cannot kill a thread; the queue must stop without it (the
    # thread limit is 10 s, the handler would run for 30).
    running = threading.Event()
    release = threading.Event()

    def endless(job: Job) -> None:
        running.set()
        release.wait(30)

    try:
        with run_queue_in_thread() as queue:
            queue.start_worker({"endless": endless})
            with jobqueue.sync.Client.connect(queue.host, queue.port, timeout=10) as client:
                client.submit("endless")
                assert running.wait(10)
        # Reaching here is the test: stop() raised no "did not stop" error.
    finally:
        release.set()


def test_a_crash_in_the_queues_thread_is_raised_once_by_stop() -> None:
    # A KeyboardInterrupt in an async def handler stops its worker (it may
    # be Ctrl-C), and with it this queue's trio run. stop() raises that in
    # the test's thread; it raised it again on every later stop(), the one
    # leaving the block included.
    async def interrupt(job: Job) -> None:
        raise KeyboardInterrupt

    with run_queue_in_thread() as queue:
        queue.start_worker({"interrupt": interrupt})
        with jobqueue.sync.Client.connect(
            queue.host, queue.port, timeout=10, reconnect_timeout=0
        ) as client:
            job_id = client.submit("interrupt")
            # The queue's run has ended: its server closed the connection.
            with pytest.raises(jobqueue.ConnectionLost):
                client.wait(job_id, timeout=10)
        # A group, whose type has no builtin name on 3.10 (and pytest.RaisesGroup
        # needs pytest 8.4, the suite 8.2): what it holds is checked below.
        with pytest.raises(BaseException) as raised:  # noqa: PT011
            queue.stop()
        assert _leaves(raised.value) == ["KeyboardInterrupt"]
        queue.stop()  # told once is enough


def _leaves(exc: BaseException) -> list[str]:
    """The type names of what ``exc`` is, or of what its groups hold, nested or not."""
    inner: tuple[BaseException, ...] | None = getattr(exc, "exceptions", None)
    if inner is None:
        return [type(exc).__name__]
    return [name for member in inner for name in _leaves(member)]
