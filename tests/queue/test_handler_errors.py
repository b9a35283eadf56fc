"""Handlers that fail in awkward ways fail their job, never the worker that runs it.

A worker is shared by every job it takes: whatever one handler raises, the
job must end as that handler's failure, reported and logged, and the worker
must go on to the next job. Otherwise the job ends as a lost worker, and
with retries it takes down each worker that picks it up in turn. A result
that cannot be reported fails its job too, and the worker's log says so.

Each test runs a second job on the same worker after the awkward one, which
only a living worker can run. In-memory queues, real time (blocking handlers
run in real threads); every wait is bounded.
"""

from __future__ import annotations

import logging
import math
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from jobqueue import Job, JobInfo, Worker
from jobqueue._limits import MAX_LINE_BYTES
from jobqueue.testing import RunningQueue, open_memory_queue


class Unprintable(Exception):
    """An exception whose text cannot be built: its ``__str__`` raises."""

    def __str__(self) -> str:
        raise ZeroDivisionError("no text today")


def fine(job: Job) -> str:
    return "still here"


def handler_kinds(raising: Callable[[Job], Any]) -> list[Any]:
    """``raising`` as a blocking handler, and as an async one."""

    async def async_raising(job: Job) -> Any:
        return raising(job)

    return [pytest.param(raising, id="def"), pytest.param(async_raising, id="async")]


async def fail_then_run_another(
    queue: RunningQueue, handler: Callable[[Job], Any]
) -> tuple[JobInfo, JobInfo]:
    """Run ``handler``'s job (one attempt), then a plain one; both as they ended."""
    await queue.start_worker({"awkward": handler, "fine": fine})
    with trio.fail_after(10):
        awkward = await queue.client.wait(await queue.client.submit("awkward", max_attempts=1))
        after = await queue.client.wait(await queue.client.submit("fine"))
    return awkward, after


def raise_unprintable(job: Job) -> None:
    raise Unprintable


@pytest.mark.parametrize("handler", handler_kinds(raise_unprintable))
async def test_an_exception_whose_str_raises_fails_its_job_and_says_so(
    handler: Callable[[Job], Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")  # the traceback is expected
    async with open_memory_queue() as queue:
        awkward, after = await fail_then_run_another(queue, handler)
    assert awkward.state == "failed"
    assert awkward.error == {
        "type": "Unprintable",
        "message": "<exception str() failed: ZeroDivisionError: no text today>",
    }
    assert (after.state, after.result) == ("completed", "still here")


def exit_five(job: Job) -> None:
    sys.exit(5)


@pytest.mark.parametrize("handler", handler_kinds(exit_five))
async def test_a_handlers_sys_exit_fails_its_job_and_is_logged(
    handler: Callable[[Job], Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="jobqueue.worker")
    async with open_memory_queue() as queue:
        awkward, after = await fail_then_run_another(queue, handler)
    assert awkward.state == "failed"
    assert awkward.error == {"type": "SystemExit", "message": "5"}
    assert (after.state, after.result) == ("completed", "still here")
    (record,) = caplog.records
    assert record.getMessage() == (
        f"job {awkward.job_id} (awkward) failed: its handler raised SystemExit"
    )
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], SystemExit)


class Bail(BaseException):
    """A handler's own ``BaseException`` subclass: neither Ctrl-C nor a cancel."""


def bail(job: Job) -> None:
    raise Bail("bailing out")


@pytest.mark.parametrize("handler", handler_kinds(bail))
async def test_a_handlers_own_base_exception_fails_its_job_and_is_logged(
    handler: Callable[[Job], Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="jobqueue.worker")
    async with open_memory_queue() as queue:
        awkward, after = await fail_then_run_another(queue, handler)
    assert awkward.state == "failed"
    assert awkward.error == {"type": "Bail", "message": "bailing out"}
    assert (after.state, after.result) == ("completed", "still here")
    (record,) = caplog.records
    assert record.getMessage() == f"job {awkward.job_id} (awkward) failed: its handler raised Bail"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Bail)


def interrupt(job: Job) -> None:
    raise KeyboardInterrupt


async def test_a_blocking_handlers_keyboard_interrupt_fails_its_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Ctrl-C interrupts the main thread only: this one is the handler's own.
    caplog.set_level(logging.ERROR, logger="jobqueue.worker")
    async with open_memory_queue() as queue:
        awkward, after = await fail_then_run_another(queue, interrupt)
    assert awkward.state == "failed"
    assert awkward.error == {"type": "KeyboardInterrupt", "message": ""}
    assert (after.state, after.result) == ("completed", "still here")
    (record,) = caplog.records
    assert "its handler raised KeyboardInterrupt" in record.getMessage()


def nested(depth: int) -> list[Any]:
    """A list ``depth`` lists deep: past what the JSON encoder can recurse through."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def circular() -> list[Any]:
    """A list that holds itself."""
    value: list[Any] = []
    value.append(value)
    return value


def only_interrupts(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``KeyboardInterrupt``, alone or in (nested) groups."""
    inner: Sequence[BaseException] = getattr(exc, "exceptions", ())
    if inner:
        return all(only_interrupts(e) for e in inner)
    return isinstance(exc, KeyboardInterrupt)


async def test_an_async_handlers_keyboard_interrupt_stops_the_worker_naming_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # On the worker's own thread it may be Ctrl-C, which must stop the worker.
    caplog.set_level(logging.ERROR, logger="jobqueue.worker")

    async def interrupted(job: Job) -> None:
        interrupt(job)

    async with open_memory_queue() as queue:
        worker = queue.worker({"interrupted": interrupted})
        job_id = await queue.client.submit("interrupted")
        try:
            with trio.fail_after(10):
                await worker.run()
        except BaseException as exc:  # the interrupt, inside the nurseries' groups
            stopped = exc
        else:
            pytest.fail("the worker ran on")
    assert only_interrupts(stopped)
    (record,) = caplog.records
    assert record.getMessage() == (
        f"job {job_id} (interrupted) was ended by KeyboardInterrupt; the worker stops"
    )


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_an_async_handlers_keyboard_interrupt_survives_a_cancel_at_the_same_moment(
    caplog: pytest.LogCaptureFixture, concurrency: int
) -> None:
    # Ctrl-C as the worker's own scope is cancelled (its deadline passed, or
    # the program is stopping it): the interrupt must still come out, not be
    # replaced by the cancel on the way (a close awaited in a ``finally``),
    # which the cancelled scope would then swallow as if nothing happened.
    # With a second slot, its cancellation comes out too, in groups of its
    # own beside the interrupt: still Ctrl-C alone.
    caplog.set_level(logging.ERROR, logger="jobqueue.worker")
    enclosing = trio.CancelScope()

    async def interrupted(job: Job) -> None:
        enclosing.cancel()
        interrupt(job)

    async with open_memory_queue() as queue:
        worker = queue.worker({"interrupted": interrupted}, concurrency=concurrency)
        job_id = await queue.client.submit("interrupted")
        try:
            with trio.fail_after(10), enclosing:
                await worker.run()
        except KeyboardInterrupt:  # alone, as Ctrl-C leaves run()
            pass
        else:
            pytest.fail("the interrupt was lost: the worker ended as if only cancelled")
    (record,) = caplog.records
    assert record.getMessage() == (
        f"job {job_id} (interrupted) was ended by KeyboardInterrupt; the worker stops"
    )


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        pytest.param({1, 2}, "handler result is not JSON: ", id="set"),
        pytest.param(math.nan, "handler result is not JSON: ", id="nan"),
        pytest.param(circular(), "handler result is not JSON: value holds itself", id="circular"),
        # The encoder's RecursionError, now a ValueError: it used to end the worker.
        pytest.param(
            nested(100_000), "handler result is not JSON: value holds itself", id="too-deep"
        ),
        pytest.param("x" * MAX_LINE_BYTES, "the server refused the result: ", id="too-large"),
    ],
)
async def test_a_result_that_cannot_be_reported_is_logged_as_the_jobs_failure(
    caplog: pytest.LogCaptureFixture, result: Any, reason: str
) -> None:
    caplog.set_level(logging.ERROR, logger="jobqueue.worker")

    async def returns(job: Job) -> Any:
        return result

    async with open_memory_queue() as queue:
        awkward, after = await fail_then_run_another(queue, returns)
    assert awkward.state == "failed"
    assert awkward.error is not None
    assert awkward.error["message"].startswith(reason)
    assert (after.state, after.result) == ("completed", "still here")
    # (The "completed" line came first, at INFO: the result is encoded only in its report.)
    (record,) = caplog.records
    assert (
        record.getMessage() == f"job {awkward.job_id} (awkward) failed: {awkward.error['message']}"
    )


async def test_ctrl_c_during_a_tls_handshake_survives_a_cancel_at_the_same_moment() -> None:
    # The same race while a slot connects: the half-open TLS stream is
    # closed on the interrupt's way out, and that close must not raise the
    # cancel in its place either.
    enclosing = trio.CancelScope()

    async def interrupted() -> None:
        enclosing.cancel()
        raise KeyboardInterrupt

    async def connect() -> trio.abc.Stream:
        ours, _server = trio.testing.memory_stream_pair()
        ours.send_stream.send_all_hook = interrupted  # the handshake's first write
        return ours

    worker = Worker(connect=connect, ssl_context=ssl.create_default_context())
    try:
        with trio.fail_after(10), enclosing:
            await worker.run()
    except KeyboardInterrupt:
        pass
    else:
        pytest.fail("the interrupt was lost: the worker ended as if only cancelled")
