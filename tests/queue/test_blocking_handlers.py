"""Blocking (plain ``def``) handlers run in worker threads (issue 13).

These use real threads, so real time: a short real lease, and handlers that
block on a ``threading.Event`` the test opens only after it has seen what it
came to see (never a sleep that merely hopes the handler is done).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import trio

from jobqueue import Job, JobCancelled, Worker
from jobqueue.testing import RunningQueue, open_test_queue

if TYPE_CHECKING:
    from tests.helpers import RawOpener

#: The server's lease in these tests: short, so several pass during one job.
LEASE = 0.4


class Gate:
    """A blocking handler that says it started, then blocks until the test opens the gate.

    It records the ``Job`` it was given and what it saw after the gate
    opened, and how many times it ran.
    """

    def __init__(self, result: Any = "done") -> None:
        self.started = threading.Event()
        self.gate = threading.Event()
        self.returned = threading.Event()
        self.jobs: list[Job] = []
        self.cancelled_after: list[bool] = []
        self.result = result

    def __call__(self, job: Job) -> Any:
        self.jobs.append(job)
        self.started.set()
        self.gate.wait(30)
        self.cancelled_after.append(job.cancelled)
        self.returned.set()
        return self.result


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Until ``predicate()`` (the worker's counters), within 10 s."""
    with trio.fail_after(10):
        while not predicate():  # noqa: ASYNC110  (plain counters, no event to wait on)
            await trio.sleep(0.01)


async def wait_thread_event(event: threading.Event) -> None:
    """Until the handler's thread sets ``event``, within 10 s."""
    assert await trio.to_thread.run_sync(event.wait, 10), "the handler thread never got there"


async def started_worker(queue: RunningQueue, handlers: dict[str, Any], **options: Any) -> Worker:
    return await queue.start_worker(handlers, **options)


async def test_blocking_handler_keeps_its_lease_over_several_lease_periods() -> None:
    gate = Gate()
    async with open_test_queue(lease_timeout=LEASE) as queue:
        worker = await started_worker(queue, {"block": gate})
        job_id = await queue.client.submit("block", None)
        await wait_thread_event(gate.started)
        # The thread blocks; the loop must keep heartbeating. Without heartbeats
        # the server takes the job back after LEASE (attempt 2, or pending).
        await trio.sleep(LEASE * 5)
        info = await queue.client.status(job_id)
        assert (info.state, info.attempt, info.worker) == ("running", 1, "test-worker")
        assert worker.statistics().running == 1
        gate.gate.set()
        with trio.fail_after(10):
            done = await queue.client.wait(job_id)
    assert (done.state, done.attempt, done.result) == ("completed", 1, "done")
    assert len(gate.jobs) == 1
    assert gate.cancelled_after == [False]


async def test_blocking_handler_does_not_block_other_slots() -> None:
    gate = Gate()
    async with open_test_queue() as queue:
        await started_worker(queue, {"block": gate}, concurrency=2)
        blocked = await queue.client.submit("block", None)
        await wait_thread_event(gate.started)
        other = await queue.client.submit("sleep", {"seconds": 0})
        with trio.fail_after(10):
            assert (await queue.client.wait(other)).state == "completed"
        assert (await queue.client.status(blocked)).state == "running"
        gate.gate.set()
        with trio.fail_after(10):
            assert (await queue.client.wait(blocked)).state == "completed"


async def test_cancelled_blocking_handler_is_decided_at_once_and_its_return_dropped() -> None:
    gate = Gate(result="too late")
    async with open_test_queue() as queue:
        worker = await started_worker(queue, {"block": gate, "quick": lambda job: job.payload})
        job_id = await queue.client.submit("block", None)
        await wait_thread_event(gate.started)
        await queue.client.cancel(job_id)
        # Decided while the thread is still blocked on the gate.
        await wait_for(lambda: worker.statistics().cancelled == 1)
        assert worker.statistics().running == 0
        assert not gate.returned.is_set()
        assert gate.jobs[0].cancelled
        with pytest.raises(JobCancelled):
            gate.jobs[0].check_cancelled()
        # The slot is free again at once, though the thread still runs.
        quick = await queue.client.submit("quick", {"n": 1})
        with trio.fail_after(10):
            assert (await queue.client.wait(quick)).result == {"n": 1}
        gate.gate.set()
        await wait_thread_event(gate.returned)
        await trio.sleep(0.2)  # room for a (wrong) late report to arrive
        info = await queue.client.status(job_id)
        stats = worker.statistics()
    assert gate.cancelled_after == [True]
    assert (info.state, info.result) == ("cancelled", None)
    assert (stats.cancelled, stats.completed, stats.failed) == (1, 1, 0)


async def test_timed_out_blocking_handler_fails_at_once_and_its_return_is_dropped() -> None:
    gate = Gate(result="too late")
    async with open_test_queue() as queue:
        worker = await started_worker(queue, {"block": gate}, job_timeout=0.3)
        job_id = await queue.client.submit("block", None, max_attempts=1)
        await wait_thread_event(gate.started)
        with trio.fail_after(10):
            failed = await queue.client.wait(job_id)
        # Failed while the thread is still blocked: the outcome did not wait for it.
        assert not gate.returned.is_set()
        assert gate.jobs[0].cancelled
        gate.gate.set()
        await wait_thread_event(gate.returned)
        await trio.sleep(0.2)  # room for a (wrong) late report to arrive
        info = await queue.client.status(job_id)
        stats = worker.statistics()
    assert failed.state == "failed"
    assert failed.error is not None
    assert failed.error["type"] == "TimeoutError"
    assert (info.state, info.result, info.error) == ("failed", None, failed.error)
    assert (stats.timed_out, stats.failed, stats.completed) == (1, 1, 0)
    assert gate.cancelled_after == [True]


async def test_a_handler_that_watches_cancellation_stops_early() -> None:
    seen: list[float] = []

    def patient(job: Job) -> str:
        start = time.monotonic()
        while not job.wait_cancelled(0.05):
            pass
        seen.append(time.monotonic() - start)
        job.check_cancelled()
        return "unreachable"

    async with open_test_queue() as queue:
        worker = await started_worker(queue, {"patient": patient}, job_timeout=0.3)
        job_id = await queue.client.submit("patient", None, max_attempts=1)
        with trio.fail_after(10):
            info = await queue.client.wait(job_id)
        await wait_for(lambda: bool(seen))
    assert info.state == "failed"
    assert info.error is not None
    assert info.error["type"] == "TimeoutError"
    assert seen[0] < 5
    assert worker.statistics().timed_out == 1


async def test_blocking_handler_reports_progress_from_its_thread() -> None:
    gate = Gate()

    def progressing(job: Job) -> Any:
        job.report_progress_sync(0.5, {"stage": "half"})
        return gate(job)

    async with open_test_queue() as queue:
        await started_worker(queue, {"progressing": progressing})
        job_id = await queue.client.submit("progressing", None)
        await wait_thread_event(gate.started)
        info = await queue.client.status(job_id)
        gate.gate.set()
        with trio.fail_after(10):
            done = await queue.client.wait(job_id)
    assert (info.state, info.progress, info.note) == ("running", 0.5, {"stage": "half"})
    assert done.state == "completed"


async def test_progress_outside_a_thread_handler_is_a_clear_error() -> None:
    errors: list[str] = []

    async def on_the_loop(job: Job) -> None:
        try:
            job.report_progress_sync(0.5)
        except RuntimeError as exc:
            errors.append(str(exc))

    async with open_test_queue() as queue:
        await started_worker(queue, {"loop": on_the_loop})
        job_id = await queue.client.submit("loop", None)
        with trio.fail_after(10):
            assert (await queue.client.wait(job_id)).state == "completed"
    assert errors
    assert "blocking (def) handler" in errors[0]


async def test_blocking_handler_sees_what_a_given_back_job_has_spent_and_left(
    raw_connection: RawOpener,
) -> None:
    seen: list[tuple[int, int, bool]] = []

    def note(job: Job) -> None:
        seen.append((job.attempt, job.attempts_spent, job.last_attempt))

    async with open_test_queue() as queue:
        job_id = await queue.client.submit("note", max_attempts=1)
        async with raw_connection(queue) as holder:
            taken = await holder.request({"type": "request_job"})
            assert "attempts_spent" not in taken  # the first run: it is the attempt
            release = {"type": "release_job", "job_id": job_id, "attempt": taken["attempt"]}
            assert await holder.request(release) == {"type": "ok"}
        await started_worker(queue, {"note": note})
        with trio.fail_after(10):
            await queue.client.wait(job_id)
    # The second run, but the first of its budget, and (with one attempt) its last.
    assert seen == [(2, 1, True)]


async def test_blocking_handler_exception_fails_the_job() -> None:
    def broken(job: Job) -> None:
        raise ValueError(f"bad payload {job.payload!r}")

    async with open_test_queue() as queue:
        await started_worker(queue, {"broken": broken})
        job_id = await queue.client.submit("broken", 7, max_attempts=1)
        with trio.fail_after(10):
            info = await queue.client.wait(job_id)
    assert info.state == "failed"
    assert info.error == {"type": "ValueError", "message": "bad payload 7"}


async def test_stopping_the_worker_marks_a_running_blocking_job_cancelled() -> None:
    gate = Gate()
    async with open_test_queue(lease_timeout=LEASE) as queue:
        worker = queue.worker({"block": gate})
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.run)
            await queue.client.submit("block", None)
            await wait_thread_event(gate.started)
            nursery.cancel_scope.cancel()
        # The worker's run ended with the thread still blocked; it was told.
        assert not gate.returned.is_set()
        assert gate.jobs[0].cancelled
        gate.gate.set()
        await wait_thread_event(gate.returned)
    assert gate.cancelled_after == [True]
