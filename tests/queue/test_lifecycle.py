"""The job lifecycle end to end, through the real server, workers and clients.

Retries with backoff, dead letters, delays, priorities, queues, cancellation,
idempotent and batch submits, progress, job timeouts and stats. Anything timed
runs in virtual time (``autojump_clock`` and ``open_memory_queue``), so each
assert can name the exact moment something happened; each test is bounded by
a virtual ``fail_after`` so a bug fails it instead of hanging it. Where the
claim is about bytes on a socket (a notice nobody asked for), the test runs
over TCP on 127.0.0.1.

Retry jitter is random. Tests on the real random source bound each backoff to
``[c/2, c]`` and check the attempt ran at exactly the time the server chose
(read from its event log); tests that need exact times give the server's
state a jitter source that returns a fixed fraction of the range.

Tests named ``test_BUG_...`` document library bugs and fail until fixed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import pytest
import trio
import trio.testing

from jobqueue import Client, Job, RequestError, Worker
from jobqueue._events import AttemptFailed, Event
from jobqueue._json import decode_object, encode
from jobqueue.testing import RunningQueue, open_memory_queue
from tests.helpers import FixedJitter, StreamWrapper, echo, settle, stats_when, take

if TYPE_CHECKING:
    from tests.helpers import RawConnection, RawOpener


# -- helpers -------------------------------------------------------------------


def retry_times(events: list[Event]) -> list[float]:
    """When each retry after a raised handler was scheduled for, in order."""
    return [e.retry_at for e in events if isinstance(e, AttemptFailed) and e.retry_at is not None]


async def error_code(conn: RawConnection, message: dict[str, Any]) -> str:
    reply = await conn.request(message)
    assert reply["type"] == "error", reply
    code: str = reply["code"]
    return code


class Connections:
    """A connector for one queue that counts connections and may wrap each stream."""

    def __init__(
        self,
        queue: RunningQueue,
        wrap: Callable[[trio.abc.Stream], trio.abc.Stream] | None = None,
    ) -> None:
        assert queue.connector is not None
        self._connector = queue.connector
        self._wrap = wrap
        self.opened: list[float] = []

    async def __call__(self) -> trio.abc.Stream:
        self.opened.append(trio.current_time())
        stream = await self._connector()
        return stream if self._wrap is None else self._wrap(stream)


class LatencyStream(StreamWrapper):
    """What this end sends reaches the far end ``delay`` seconds later, in order.

    ``send_all`` returns at once, as it does on a socket with room in its
    buffer: the network latency a real worker always has, made exact.
    """

    def __init__(self, inner: trio.abc.Stream, delay: float, nursery: trio.Nursery) -> None:
        self.inner = inner
        self.delay = delay
        self._send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)
        nursery.start_soon(self._pump, receive)

    async def _pump(self, receive: trio.MemoryReceiveChannel[tuple[float, bytes]]) -> None:
        async with receive:
            async for due, data in receive:
                await trio.sleep_until(due)
                try:
                    await self.inner.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
        await self.inner.aclose()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self._send.send_nowait((trio.current_time() + self.delay, bytes(data)))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._send.close()
        await trio.lowlevel.checkpoint()


class HeldStream(StreamWrapper):
    """A stream whose reader can be held: what arrives meanwhile is read in one piece.

    Models a worker process that is slow to read its socket for a moment (its
    event loop busy elsewhere): everything the server sent in that time is
    then read at once, as TCP delivers it.
    """

    def __init__(self, inner: trio.abc.Stream, nursery: trio.Nursery) -> None:
        self.inner = inner
        self._buffer = bytearray()
        self._held = False
        self._eof = False
        self._changed = trio.Event()
        nursery.start_soon(self._pump)

    def _change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _pump(self) -> None:
        while True:
            try:
                data = await self.inner.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._eof = True
                self._change()
                return
            self._buffer += data
            self._change()

    def hold(self) -> None:
        self._held = True

    def release(self) -> None:
        self._held = False
        self._change()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        while self._held or not (self._buffer or self._eof):
            await self._changed.wait()
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class SentStream(StreamWrapper):
    """A stream that counts, by wire type, every message sent through it."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent: Counter[str] = Counter()
        self._partial = b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        *lines, self._partial = (self._partial + bytes(data)).split(b"\n")
        self.sent.update(decode_object(line)["type"] for line in lines)
        await self.inner.send_all(data)


# -- retries and dead letters -------------------------------------------------------


async def test_a_failing_handler_is_retried_with_backoff_until_it_succeeds(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")  # the tracebacks are expected
    runs: list[tuple[int, float]] = []

    async def flaky(job: Job) -> str:
        runs.append((job.attempt, trio.current_time()))
        if job.attempt < 3:
            raise RuntimeError(f"attempt {job.attempt} failed")
        return "third time lucky"

    with trio.fail_after(100):  # virtual seconds: a bug fails, not hangs
        async with open_memory_queue() as queue:  # the defaults: retry_delay 1 s, 5 attempts
            with queue.record_events() as events:
                worker = await queue.start_worker({"flaky": flaky})
                await trio.sleep(3)
                job_id = await queue.client.submit("flaky")
                # The first backoff is at least 0.5 s: the job is waiting for its retry.
                await trio.sleep(0.25)
                between = await queue.client.status(job_id)
                info = await queue.client.wait(job_id)
                done_at = trio.current_time()
                stats = await queue.client.stats()
                await settle()
                statistics = worker.statistics()

    assert (between.state, between.attempt) == ("scheduled", 1)
    assert between.error == {"type": "RuntimeError", "message": "attempt 1 failed"}
    first_retry, second_retry = retry_times(events)
    assert [attempt for attempt, _ in runs] == [1, 2, 3]
    (_, first), (_, second), (_, third) = runs
    assert first == 3.0
    # Each retry ran at exactly the time the server chose for it, and that
    # time is the doubling backoff with equal jitter: within [c/2, c].
    assert second == first_retry
    assert third == second_retry
    assert 0.5 <= second - first <= 1.0
    assert 1.0 <= third - second <= 2.0
    # wait() returned when the job completed, not when an attempt failed.
    assert done_at == third
    assert (info.state, info.attempt, info.result) == ("completed", 3, "third time lucky")
    assert info.error == {"type": "RuntimeError", "message": "attempt 2 failed"}  # the last one
    assert (stats.totals["retried"], stats.totals["failed"], stats.totals["completed"]) == (2, 0, 1)
    assert (statistics.failed, statistics.completed, statistics.lost) == (2, 1, 0)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
async def test_backoff_doubles_up_to_max_retry_delay_at_exact_times(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    fraction: float,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")
    runs: list[float] = []

    async def broken(job: Job) -> None:
        runs.append(trio.current_time())
        raise OSError(f"disk full on attempt {job.attempt}")

    with trio.fail_after(100):
        async with open_memory_queue(retry_delay=2.0, max_retry_delay=5.0) as queue:
            queue.state.rng = FixedJitter(fraction)
            await queue.start_worker({"broken": broken})
            await trio.sleep(1)
            job_id = await queue.client.submit("broken")
            info = await queue.client.wait(job_id)
            failed_at = trio.current_time()
            stats = await queue.client.stats()

    # Ceilings 2, 4, then capped at 5: each delay is c/2 + fraction * c/2.
    expected = [1.0]
    for ceiling in (2.0, 4.0, 5.0, 5.0):
        expected.append(expected[-1] + ceiling / 2 + fraction * ceiling / 2)
    assert runs == expected
    assert failed_at == expected[-1]
    assert (info.state, info.attempt, info.max_attempts) == ("failed", 5, 5)
    assert info.error == {"type": "OSError", "message": "disk full on attempt 5"}
    assert (stats.totals["retried"], stats.totals["failed"]) == (4, 1)


async def test_out_of_attempts_is_a_dead_letter_to_list_requeue_or_delete(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")
    fixed = trio.Event()
    runs: list[tuple[str, int, int, bool]] = []

    async def until_fixed(job: Job) -> str:
        runs.append((job.payload, job.attempt, job.attempts_spent, job.last_attempt))
        if not fixed.is_set():
            raise ValueError(f"{job.payload} attempt {job.attempt}")
        return f"{job.payload} done"

    with trio.fail_after(1000):
        async with open_memory_queue(max_attempts=2, retry_delay=4.0) as queue:
            queue.state.rng = FixedJitter(1.0)
            client = queue.client
            await queue.start_worker({"until_fixed": until_fixed}, queues=("default", "other"))
            keep = await client.submit("until_fixed", "keep")
            drop = await client.submit("until_fixed", "drop", queue="other")
            # Both fail at 0, are retried at 4 and fail for good there.
            dead = await client.wait(keep)
            assert trio.current_time() == 4.0
            assert (dead.state, dead.attempt, dead.max_attempts) == ("failed", 2, 2)
            assert dead.error == {"type": "ValueError", "message": "keep attempt 2"}
            assert (await client.wait(drop)).state == "failed"

            listing = await client.list_jobs("failed")
            assert [(j.job_id, j.attempt) for j in listing.jobs] == [(keep, 2), (drop, 2)]
            assert not listing.truncated
            assert listing.jobs[0] == dead
            assert [j.job_id for j in (await client.list_jobs("failed", queue="other")).jobs] == [
                drop
            ]
            limited = await client.list_jobs("failed", limit=1)
            assert ([j.job_id for j in limited.jobs], limited.truncated) == ([keep], True)

            # Requeued with a fresh budget: two more runs (attempts 3 and 4),
            # then failed again; not failed after one.
            await settle()  # the worker is blocked asking for a job: it takes it at once
            revived = await client.retry(keep)
            assert (revived.state, revived.attempt, revived.max_attempts) == ("running", 3, 2)
            dead_again = await client.wait(keep)
            assert trio.current_time() == 8.0
            assert (dead_again.state, dead_again.attempt) == ("failed", 4)
            # The fresh budget's runs count from 1 again for the handler.
            assert runs.count(("keep", 3, 1, False)) == runs.count(("keep", 4, 2, True)) == 1

            fixed.set()
            await client.retry(keep)
            done = await client.wait(keep)
            assert (done.state, done.attempt, done.result) == ("completed", 5, "keep done")
            # (attempt, attempts_spent, last_attempt): the second run of each
            # budget of two is the last.
            assert [run[1:] for run in runs if run[0] == "keep"] == [
                (1, 1, False),
                (2, 2, True),
                (3, 1, False),
                (4, 2, True),
                (5, 1, False),
            ]
            assert [j.job_id for j in (await client.list_jobs("failed")).jobs] == [drop]

            await client.delete(drop)
            assert (await client.list_jobs("failed")).jobs == ()
            with pytest.raises(RequestError) as excinfo:
                await client.status(drop)
            assert excinfo.value.code == "unknown_job"
            with pytest.raises(RequestError) as excinfo:
                await client.delete(drop)
            assert excinfo.value.code == "unknown_job"
            with pytest.raises(RequestError) as excinfo:
                await client.retry(keep)  # completed, not failed
            assert excinfo.value.code == "not_failed"
            await client.delete(keep)  # any finished job can be deleted
            stats = await client.stats()

    assert runs.count(("drop", 1, 1, False)) == runs.count(("drop", 2, 2, True)) == 1
    assert len(runs) == 2 + 2 + 2 + 1
    assert stats.jobs == {
        "pending": 0,
        "scheduled": 0,
        "running": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert (stats.totals["failed"], stats.totals["completed"], stats.totals["retried"]) == (3, 1, 3)


async def test_a_lost_lease_spends_an_attempt_but_goes_back_in_line_at_once(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with (
            open_memory_queue(max_attempts=2, lease_timeout=10) as queue,
            raw_connection(queue) as second,
        ):
            client = queue.client
            job_id = await client.submit("work")
            async with raw_connection(queue) as first:
                assert (await take(first))["attempt"] == 1
                await trio.sleep(2)
            await settle()
            # No backoff after a lost worker: back in line now, one attempt spent.
            lost = await client.status(job_id)
            assert (lost.state, lost.attempt) == ("pending", 1)
            assert lost.error == {"type": "WorkerLost", "message": "the worker's connection closed"}

            assert (await take(second))["attempt"] == 2
            taken_at = trio.current_time()
            # `second` says nothing: the lease runs out, and with it the last attempt.
            info = await client.wait(job_id)
            assert trio.current_time() == taken_at + 10.0 == 12.0
            stats = await client.stats()
    assert (info.state, info.attempt) == ("failed", 2)
    assert info.error == {"type": "LeaseExpired", "message": "no heartbeat within the lease"}
    assert stats.totals == {
        "submitted": 1,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
        "retried": 0,
        "reassigned": 2,
        "expired": 1,
    }


# -- waiting for results -------------------------------------------------------------


async def test_wait_returns_at_the_moment_the_job_ends_without_polling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(job: Job) -> dict[str, int]:
        await trio.sleep(job.payload)
        return {"slept": job.payload}

    streams: list[SentStream] = []

    def record(stream: trio.abc.Stream) -> trio.abc.Stream:
        streams.append(SentStream(stream))
        return streams[-1]

    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            await queue.start_worker({"slow": slow})
            connect = Connections(queue, record)
            async with Client.connect("memory", 0, name="waiter", connect=connect) as waiter:
                await trio.sleep(2)
                job_id = await queue.client.submit("slow", 7)
                before = sum((stream.sent for stream in streams), Counter[str]())
                info = await waiter.wait(job_id)
                assert trio.current_time() == 9.0
                asked = sum((stream.sent for stream in streams), Counter[str]()) - before
    assert (info.state, info.result) == ("completed", {"slept": 7})
    # One wait_job (on a connection of its own, hence one hello), answered
    # when the job completed: the waiter never asked for its status (no
    # polling) and sent nothing else.
    assert asked == Counter({"hello": 1, "wait_job": 1})


# -- delays -------------------------------------------------------------------------


async def test_a_delayed_job_is_handed_out_exactly_when_due(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as worker:
            await trio.sleep(1)
            job_id = await queue.client.submit("later", "x", delay=5)
            info = await queue.client.status(job_id)
            assert (info.state, info.attempt) == ("scheduled", 0)
            stats = await queue.client.stats()
            assert stats.queues == {"default": {"pending": 0, "scheduled": 1, "running": 0}}
            assert (stats.jobs["scheduled"], stats.jobs["pending"]) == (1, 0)

            # Blocked in request_job before it is due: nothing to hand out.
            assert await worker.request({"type": "request_job", "wait": 3}) == {"type": "no_job"}
            assert trio.current_time() == 4.0
            # A wait that ends at the very moment the job comes due gets the job.
            assigned = await worker.request({"type": "request_job", "wait": 2})
            assert trio.current_time() == 6.0
            assert (assigned["type"], assigned["job_id"], assigned["attempt"]) == (
                "job_assigned",
                job_id,
                1,
            )


async def test_a_worker_runs_delayed_jobs_in_the_order_they_come_due(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[tuple[str, float]] = []

    async def note(job: Job) -> None:
        runs.append((job.payload, trio.current_time()))

    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            await queue.start_worker({"note": note})
            client = queue.client
            ids = [
                await client.submit("note", "in 30", delay=30),
                await client.submit("note", "in 10", delay=10),
                await client.submit("note", "now"),
                # Wall-clock run_at: the server turns it into a delay on its own
                # clock, losing only the real time between the two clock reads.
                await client.submit("note", "at +20", run_at=time.time() + 20),
                await client.submit("note", "at -5", run_at=time.time() - 5),
            ]
            for job_id in ids:
                await client.wait(job_id)
    assert [payload for payload, _ in runs] == ["now", "at -5", "in 10", "at +20", "in 30"]
    times = dict(runs)
    assert times["now"] == times["at -5"] == 0.0
    assert times["in 10"] == 10.0
    assert 19.0 < times["at +20"] <= 20.0
    assert times["in 30"] == 30.0


# -- priorities and queues -------------------------------------------------------------


async def test_higher_priority_first_then_first_come_first_served(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as worker:
            submitted = {
                name: await queue.client.submit("job", name, priority=priority)
                for name, priority in [
                    ("a0", 0), ("b5", 5), ("c0", 0), ("d5", 5), ("e-3", -3), ("f10", 10),
                    ("g0", 0),
                ]
            }  # fmt: skip
            taken = [(await take(worker))["payload"] for _ in submitted]
            assert await worker.request({"type": "request_job"}) == {"type": "no_job"}
            status = await queue.client.status(submitted["d5"])
    assert taken == ["f10", "b5", "d5", "a0", "c0", "g0", "e-3"]
    assert status.priority == 5


async def test_a_worker_takes_the_best_job_across_its_queues_and_none_from_others(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with (
            open_memory_queue() as queue,
            raw_connection(queue) as ab,
            raw_connection(queue) as c,
        ):
            client = queue.client
            a_low = await client.submit("job", "a low", queue="a")
            b_high = await client.submit("job", "b high", queue="b", priority=3)
            c_top = await client.submit("job", "c top", queue="c", priority=9)
            a_high = await client.submit("job", "a high", queue="a", priority=3)
            default = await client.submit("job", "default")
            got = [(await take(ab, "a", "b"))["job_id"] for _ in range(3)]
            # Equal priorities across queues: the earlier submission first.
            assert got == [b_high, a_high, a_low]
            assert await ab.request({"type": "request_job", "queues": ["a", "b"]}) == {
                "type": "no_job"
            }
            assert (await take(c, "c"))["job_id"] == c_top
            assert (await take(c, "default"))["job_id"] == default


async def test_blocked_workers_are_woken_only_by_their_own_queues(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with (
            open_memory_queue() as queue,
            raw_connection(queue) as on_a,
            raw_connection(queue) as on_b,
        ):
            # on_a has waited longest, but only serves queue a.
            await on_a.send({"type": "request_job", "wait": 50, "queues": ["a"]})
            await trio.sleep(1)
            await on_b.send({"type": "request_job", "wait": 50, "queues": ["b"]})
            await trio.sleep(1)
            for_b = await queue.client.submit("job", queue="b")
            got_b = await on_b.read_reply()
            assert trio.current_time() == 2.0
            await trio.sleep(3)
            for_a = await queue.client.submit("job", queue="a")
            got_a = await on_a.read_reply()
            assert trio.current_time() == 5.0
    assert (got_b["type"], got_b["job_id"]) == ("job_assigned", for_b)
    assert (got_a["type"], got_a["job_id"]) == ("job_assigned", for_a)


async def test_a_worker_on_one_queue_never_runs_another_queues_job(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran: list[str] = []

    async def record(job: Job) -> None:
        ran.append(job.payload)

    with trio.fail_after(1000):
        async with open_memory_queue() as queue:
            client = queue.client
            # One queue may be named by itself (a string, not a tuple of its letters).
            emails = await queue.start_worker({"record": record}, name="emails", queues="emails")
            assert emails.queues == ("emails",)
            other = await client.submit("record", "report", queue="reports")
            mine = await client.submit("record", "email", queue="emails")
            assert (await client.wait(mine)).worker == "emails"
            await trio.sleep(500)
            info = await client.status(other)
            stats = await client.stats()
            # A worker for the other queue takes it at once.
            await queue.start_worker({"record": record}, name="reports", queues=("reports",))
            done = await client.wait(other)
    assert ran == ["email", "report"]
    assert (info.state, info.attempt, info.queue) == ("pending", 0, "reports")
    assert stats.queues == {"reports": {"pending": 1, "scheduled": 0, "running": 0}}
    assert stats.workers == [{"name": "emails", "jobs": [], "waiting": True, "queues": ["emails"]}]
    assert (done.state, done.worker) == ("completed", "reports")


# -- cancellation ----------------------------------------------------------------------


async def test_a_cancelled_pending_job_never_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran: list[str] = []

    async def record(job: Job) -> None:
        ran.append(job.payload)

    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            client = queue.client
            doomed = await client.submit("record", "doomed")
            kept = await client.submit("record", "kept")
            info = await client.cancel(doomed)
            assert (info.state, info.attempt, info.job_id) == ("cancelled", 0, doomed)
            # Cancelling again changes nothing (and counts nothing).
            assert (await client.cancel(doomed)) == info
            await queue.start_worker({"record": record})
            assert (await client.wait(kept)).state == "completed"
            assert await client.wait(doomed) == info  # a finished job: at once
            assert (await client.list_jobs("cancelled")).jobs == (info,)
            stats = await client.stats()
    assert ran == ["kept"]
    assert (stats.totals["cancelled"], stats.jobs["cancelled"], stats.jobs["pending"]) == (1, 1, 0)


async def test_a_cancelled_scheduled_job_never_runs(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")
    ran: list[tuple[str, int, float]] = []

    async def fails(job: Job) -> None:
        ran.append((job.payload, job.attempt, trio.current_time()))
        raise RuntimeError("again")

    with trio.fail_after(1000):
        async with open_memory_queue(retry_delay=20.0) as queue:
            client = queue.client
            await queue.start_worker({"fails": fails})
            delayed = await client.submit("fails", "delayed", delay=10)
            backing_off = await client.submit("fails", "backing off")
            await trio.sleep(5)
            # One waits for its delay, the other for the retry after its first failure.
            assert [(await client.status(i)).state for i in (delayed, backing_off)] == [
                "scheduled",
                "scheduled",
            ]
            first = await client.cancel(delayed)
            second = await client.cancel(backing_off)
            await trio.sleep(500)
            stats = await client.stats()
    assert ran == [("backing off", 1, 0.0)]
    assert (first.state, first.attempt) == ("cancelled", 0)
    assert (second.state, second.attempt) == ("cancelled", 1)
    assert stats.jobs["cancelled"] == 2
    assert stats.queues == {}


async def test_cancelling_a_running_job_stops_its_handler_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stopped: list[tuple[str, float]] = []

    async def long(job: Job) -> str:
        try:
            await trio.sleep(100)
        except trio.Cancelled:
            stopped.append((job.id, trio.current_time()))
            raise
        return "finished"  # pragma: no cover  (must not happen)

    waited: list[tuple[str, float]] = []

    async def wait_for(job_id: str) -> None:
        async with queue.connect("waiter") as waiter:
            info = await waiter.wait(job_id)
        waited.append((info.state, trio.current_time()))

    with trio.fail_after(1000):
        async with open_memory_queue() as queue, trio.open_nursery() as nursery:
            connections = Connections(queue)
            worker = Worker(
                "memory", 0, handlers={"long": long}, name="runner", connect=connections
            )
            await queue.nursery.start(worker.run)
            await trio.sleep(1)
            job_id = await queue.client.submit("long")
            nursery.start_soon(wait_for, job_id)
            await trio.sleep_until(5.5)
            assert (await queue.client.status(job_id)).state == "running"
            info = await queue.client.cancel(job_id)
            await settle()
            assert stopped == [(job_id, 5.5)]
            assert waited == [("cancelled", 5.5)]
            statistics = worker.statistics()
            # Nothing was reported for it, and the worker carries on at once,
            # on the same connection.
            quick = await queue.client.submit("sleep", {"seconds": 0})
            after = await queue.client.wait(quick)
            assert trio.current_time() == 5.5
            final = await queue.client.status(job_id)
            stats = await queue.client.stats()
    assert (info.state, info.attempt, info.worker) == ("cancelled", 1, "runner")
    assert final == info
    assert (statistics.cancelled, statistics.completed, statistics.failed) == (1, 0, 0)
    assert (statistics.lost, statistics.running) == (0, 0)
    assert (after.state, after.worker) == ("completed", "runner")
    assert connections.opened == [0.0]
    assert (stats.totals["cancelled"], stats.totals["completed"]) == (1, 1)
    assert stats.totals["failed"] == 0


async def test_a_cancelled_jobs_holder_cannot_report_on_it(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with (
            open_memory_queue() as queue,
            raw_connection(queue) as holder,
            raw_connection(queue) as other,
        ):
            job_id = await queue.client.submit("work")
            assert (await take(holder))["attempt"] == 1
            await queue.client.cancel(job_id)
            notice = await holder.read_reply()
            assert notice == {"type": "job_cancelled", "job_id": job_id, "attempt": 1}
            for message in (
                {"type": "job_complete", "job_id": job_id, "attempt": 1, "result": "late"},
                {"type": "job_complete", "job_id": job_id},
                {"type": "job_failed", "job_id": job_id, "error": {"type": "E", "message": ""}},
                {"type": "heartbeat", "job_id": job_id, "attempt": 1},
                {"type": "progress", "job_id": job_id, "attempt": 1, "progress": 1},
            ):
                assert await error_code(holder, message) == "not_leased", message
            # A job that ended otherwise cannot be cancelled.
            done = await queue.client.submit("work")
            assert (await take(other))["job_id"] == done
            await other.request({"type": "job_complete", "job_id": done})
            with pytest.raises(RequestError) as excinfo:
                await queue.client.cancel(done)
            info = await queue.client.status(job_id)
            stats = await queue.client.stats()
    assert excinfo.value.code == "already_finished"
    assert (info.state, info.result) == ("cancelled", None)
    assert (stats.totals["completed"], stats.totals["failed"], stats.totals["cancelled"]) == (
        1,
        0,
        1,
    )


# -- the job_cancelled notice on the wire (TCP) ------------------------------------------


async def test_job_cancelled_arrives_unasked_on_the_holders_connection_only(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as holder, raw_connection(tcp_queue) as bystander:
            mine = await tcp_queue.client.submit("work")
            theirs = await tcp_queue.client.submit("work")
            assert (await take(holder))["job_id"] == mine
            assert (await take(bystander))["job_id"] == theirs
            # The holder has nothing in flight: whatever it reads now, it did not ask for.
            await tcp_queue.client.cancel(mine)
            notice = await holder.read_reply()
            # The bystander's next reply is the one to its own request.
            stats = await bystander.request({"type": "stats"})
    assert notice == {"type": "job_cancelled", "job_id": mine, "attempt": 1}
    assert stats["type"] == "stats"
    assert stats["jobs"]["cancelled"] == 1
    assert stats["jobs"]["running"] == 1


async def test_job_cancelled_does_not_disturb_the_order_of_replies(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    client = tcp_queue.client
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as holder:
            first = await client.submit("work", 1)
            assert (await take(holder))["job_id"] == first
            # Blocked in request_job, with two more requests queued behind it.
            await holder.send_raw(
                encode({"type": "request_job", "wait": 10})
                + encode({"type": "stats"})
                + encode({"type": "job_status", "job_id": first})
            )
            await stats_when(client, lambda stats: stats.waiting_workers == 1)
            await client.cancel(first)
            notice = await holder.read_reply()
            second = await client.submit("work", 2)
            replies = [await holder.read_reply() for _ in range(3)]
    assert notice == {"type": "job_cancelled", "job_id": first, "attempt": 1}
    assert [reply["type"] for reply in replies] == ["job_assigned", "stats", "job_status"]
    assert replies[0]["job_id"] == second
    assert (replies[1]["jobs"]["cancelled"], replies[1]["jobs"]["running"]) == (1, 1)
    assert (replies[2]["job_id"], replies[2]["state"]) == (first, "cancelled")


# -- idempotent and batch submits ----------------------------------------------------------


async def test_a_keyed_submit_adds_one_job_while_that_job_is_remembered(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with (
            open_memory_queue(finished_retention=1) as queue,
            raw_connection(queue) as raw,
        ):
            client = queue.client
            submit = {"type": "submit_job", "name": "charge", "payload": 1, "key": "order-17"}
            first = await raw.request(submit)
            assert first.keys() == {"type", "job_id"}
            job_id = first["job_id"]
            # Same key, different job: nothing added, the original kept.
            again = await raw.request({**submit, "payload": 2, "priority": 9})
            assert again == {"type": "job_submitted", "job_id": job_id, "duplicate": True}
            assert await client.submit("refund", key="order-17") == job_id
            assert await client.submit_many([{"name": "x", "key": "order-17"}]) == [job_id]
            info = await client.status(job_id)
            assert (info.name, info.priority, info.state) == ("charge", 0, "pending")
            assert (await client.stats()).totals["submitted"] == 1

            # Finished, still remembered: still the same job.
            assert (await take(raw))["payload"] == 1
            await raw.request({"type": "job_complete", "job_id": job_id, "result": "ok"})
            assert (await raw.request(submit))["duplicate"] is True

            # Retention 1: the next finished job makes the server forget it, key and all.
            other = await client.submit("other")
            assert (await take(raw))["job_id"] == other
            await raw.request({"type": "job_complete", "job_id": other})
            with pytest.raises(RequestError):
                await client.status(job_id)
            fresh = await raw.request(submit)
            assert fresh.keys() == {"type", "job_id"}
            assert fresh["job_id"] not in (job_id, other)

            # A cancelled job keeps its key until it is deleted.
            cancelled = await client.submit("charge", key="order-18")
            await client.cancel(cancelled)
            assert await client.submit("charge", key="order-18") == cancelled
            await client.delete(cancelled)
            assert await client.submit("charge", key="order-18") != cancelled


async def test_submit_many_adds_all_the_jobs_or_none(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as raw:
            client = queue.client
            ids = await client.submit_many(
                [
                    {"name": "a", "payload": 1},
                    {"name": "b", "queue": "q", "priority": 4, "max_attempts": 2},
                    {"name": "c", "delay": 30, "key": "c-once"},
                ]
            )
            infos = [await client.status(job_id) for job_id in ids]
            assert [(i.name, i.queue, i.priority, i.max_attempts, i.state) for i in infos] == [
                ("a", "default", 0, 5, "pending"),
                ("b", "q", 4, 2, "pending"),
                ("c", "default", 0, 5, "scheduled"),
            ]
            assert len(set(ids)) == 3

            # One bad job: the client refuses the batch before sending it...
            with pytest.raises(ValueError, match=r"^job 2: .*priority"):
                await client.submit_many(
                    [{"name": "d"}, {"name": "e"}, {"name": "f", "priority": 10**7}]
                )
            # ... and so does the server, naming the job, for a batch sent by hand.
            for jobs, starts in [
                ([{"name": "d"}, {"name": "e", "queue": 5}], "job 1: "),
                ([{"name": "d"}, {"name": "e"}, "f"], '"submit_jobs" job 2 is not an object'),
                ([{"name": "d"}, {"payload": 1}], "job 1: "),
                ([{"name": "d", "delay": 1, "run_at": 5.0}], "job 0: "),
                ([{"name": "d", "run_at": time.time() + 400 * 86400}], "job 0: "),
                ([], '"submit_jobs"'),
                ([{"name": "d"}] * 10_001, '"submit_jobs" takes at most 10000 jobs'),
            ]:
                reply = await raw.request({"type": "submit_jobs", "jobs": jobs})
                assert (reply["type"], reply["code"]) == ("error", "bad_request"), jobs
                assert reply["message"].startswith(starts), reply
            stats = await client.stats()
            largest = await raw.request({"type": "submit_jobs", "jobs": [{"name": "z"}] * 10_000})
            assert len(largest["job_ids"]) == 10_000
            batch = await raw.request(
                {"type": "submit_jobs", "jobs": [{"name": "g"}, {"name": "h", "key": "c-once"}]}
            )
    assert stats.totals["submitted"] == 3  # nothing from any refused batch
    assert stats.jobs["pending"] + stats.jobs["scheduled"] == 3
    assert batch["type"] == "jobs_submitted"
    assert batch["job_ids"][1] == ids[2]  # the key already named a job
    assert batch["job_ids"][0] not in ids


# -- progress ----------------------------------------------------------------------------


async def test_progress_shows_in_status_while_the_job_runs(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")
    step = trio.Event()

    async def staged(job: Job) -> str:
        nonlocal step
        if job.attempt == 1:
            await job.report_progress(0.25, {"stage": "download"})
            await trio.sleep(10)
            await job.report_progress(0.75)
            await trio.sleep(10)
            raise RuntimeError("upload failed")
        await step.wait()
        await job.report_progress(note="resumed")
        await trio.sleep(10)
        return "uploaded"

    with trio.fail_after(1000):
        # Fails at 20; retried 5 to 10 s later.
        async with open_memory_queue(retry_delay=10.0) as queue:
            await queue.start_worker({"staged": staged})
            job_id = await queue.client.submit("staged")
            seen = []
            for when in (5, 15, 22, 40):
                await trio.sleep_until(when)
                info = await queue.client.status(job_id)
                seen.append((when, info.state, info.attempt, info.progress, info.note))
            step.set()
            await trio.sleep(5)
            info = await queue.client.status(job_id)
            seen.append((45, info.state, info.attempt, info.progress, info.note))
            done = await queue.client.wait(job_id)
    assert seen == [
        (5, "running", 1, 0.25, {"stage": "download"}),
        (15, "running", 1, 0.75, None),  # a report replaces both
        (22, "scheduled", 1, 0.75, None),  # kept while it waits for its retry
        (40, "running", 2, None, None),  # a new run starts with none
        (45, "running", 2, None, "resumed"),
    ]
    assert (done.state, done.result, done.note) == ("completed", "uploaded", "resumed")


# -- job_timeout -----------------------------------------------------------------------


async def test_job_timeout_stops_a_hung_handler_and_fails_its_job(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")
    stopped: list[float] = []

    async def hangs(job: Job) -> None:
        try:
            await trio.sleep_forever()
        finally:
            stopped.append(trio.current_time())

    with trio.fail_after(1000):
        # A lease far shorter than the timeout: heartbeats keep the hung job,
        # so only job_timeout can end it.
        async with open_memory_queue(lease_timeout=3, retry_delay=10.0) as queue:
            worker = await queue.start_worker({"hangs": hangs}, job_timeout=12)
            await trio.sleep(1)
            once = await queue.client.submit("hangs", max_attempts=1)
            info = await queue.client.wait(once)
            assert trio.current_time() == 13.0
            assert stopped == [13.0]
            # With attempts left, a timeout is a failed run like any other: retried after a backoff.
            twice = await queue.client.submit("hangs", max_attempts=2)
            await trio.sleep(12.5)
            between = await queue.client.status(twice)
            last = await queue.client.wait(twice)
            stats = await queue.client.stats()
            statistics = worker.statistics()
    assert (info.state, info.attempt) == ("failed", 1)
    assert info.error == {
        "type": "TimeoutError",
        "message": "handler ran longer than job_timeout=12s",
    }
    assert (between.state, between.attempt) == ("scheduled", 1)
    assert (last.state, last.attempt) == ("failed", 2)
    # The second job's first run timed out at 25; its retry came 5 to 10 s later.
    assert stopped[:2] == [13.0, 25.0]
    assert 25.0 + 5 <= stopped[2] - 12 <= 25.0 + 10
    assert (statistics.timed_out, statistics.failed, statistics.lost) == (3, 3, 0)
    assert (stats.totals["reassigned"], stats.totals["expired"]) == (0, 0)


@pytest.mark.parametrize("prefetch", [1, 3, "auto"])
async def test_a_stopped_handler_leaves_the_slot_running_the_jobs_after_it(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    prefetch: int | Literal["auto"],
) -> None:
    # The slot's handlers share a cancel scope until a stop spends it: after
    # a stop, caught or not, the jobs after it run (in a batch too) and are
    # reported on the same connection.
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")

    async def hangs(job: Job) -> None:
        await trio.sleep_forever()

    async def stubborn(job: Job) -> str:
        # A handler that ignores its stop ends with what it returns.
        with contextlib.suppress(trio.Cancelled):
            await trio.sleep_forever()
        return "ignored the stop"

    async def nested(job: Job) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)

    async def quick(job: Job) -> int:
        await trio.sleep(1)
        return int(job.payload)

    handlers = {"hangs": hangs, "stubborn": stubborn, "nested": nested, "quick": quick}
    with trio.fail_after(1000):
        async with open_memory_queue() as queue:
            worker = await queue.start_worker(handlers, job_timeout=5, prefetch=prefetch)
            ids = await queue.client.submit_many(
                [{"name": name, "payload": index, "max_attempts": 1} for index, name in enumerate(
                    ["hangs", "quick", "stubborn", "quick", "nested", "quick"]
                )]
            )  # fmt: skip
            infos = [await queue.client.wait(job_id) for job_id in ids]
            statistics = worker.statistics()
    assert [(info.state, info.result) for info in infos] == [
        ("failed", None),
        ("completed", 1),
        ("completed", "ignored the stop"),
        ("completed", 3),
        ("failed", None),
        ("completed", 5),
    ]
    timeout = {"type": "TimeoutError", "message": "handler ran longer than job_timeout=5s"}
    assert infos[0].error == infos[4].error == timeout
    assert (statistics.timed_out, statistics.completed, statistics.failed) == (2, 4, 2)
    assert (statistics.lost, statistics.cancelled, statistics.running) == (0, 0, 0)
    assert statistics.connected_slots == 1


def test_worker_defaults_and_queue_names() -> None:
    assert Worker().job_timeout == 3600.0
    assert Worker().queues == ("default",)
    assert Worker(queues=["a", "b"]).queues == ("a", "b")
    with pytest.raises(ValueError, match="at least one queue"):
        Worker(queues=())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queues": ["x" * 201]}, "a queue name must be 1 to 200 characters"),
        ({"queues": ["a", ""]}, "a queue name must be 1 to 200 characters, not ''"),
        ({"queues": [f"q{n}" for n in range(65)]}, "at most 64 queues, not 65"),
        ({"name": "w" * 201}, "a worker's name must be 1 to 200 characters"),
        ({"handlers": {"": echo}}, "a handler's job name must be 1 to 200"),
    ],
    ids=["long-queue", "empty-queue", "65-queues", "long-name", "empty-handler-name"],
)
def test_a_worker_refuses_names_the_server_would_refuse(
    options: dict[str, Any], message: str
) -> None:
    # The server refuses them with bad_request on every hello or request_job:
    # a worker started with one reconnected and was refused again, for ever
    # (every 0.1 s for a queue name, since its hello had gone through).
    with pytest.raises(ValueError, match=re.escape(message)):
        Worker(**options)
    assert Worker().reply_grace == 10.0
    with pytest.raises(ValueError, match="reply_grace"):
        Worker(reply_grace=0)


@pytest.mark.parametrize("job_timeout", [0, -1.0, math.nan])
def test_a_worker_refuses_a_job_timeout_that_fails_every_job(job_timeout: float) -> None:
    # 0 (often "no limit" elsewhere) stopped every handler at once, each job
    # failing with TimeoutError; no limit is None.
    with pytest.raises(ValueError, match="job_timeout must be more than 0 seconds, or None"):
        Worker(job_timeout=job_timeout)
    assert Worker(job_timeout=None).job_timeout is None


# -- stats -------------------------------------------------------------------------------


async def test_stats_count_jobs_per_queue_and_list_every_worker_connection(
    autojump_clock: trio.testing.MockClock,
    raw_connection: RawOpener,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")

    async def fails(job: Job) -> None:
        raise RuntimeError("no")

    with trio.fail_after(100):
        async with open_memory_queue(retry_delay=50.0) as queue, raw_connection(queue) as holder:
            client = queue.client
            await holder.request({"type": "hello", "name": "holder"})
            held = await client.submit("work", queue="a")
            assert (await take(holder, "a"))["job_id"] == held
            await client.submit("work", queue="a", delay=10)
            await client.submit("work", queue="b")
            await client.submit("work", queue="b")
            cancelled = await client.submit("work", queue="b")
            await client.cancel(cancelled)
            await client.submit("fails", queue="c")
            await queue.start_worker({"fails": fails}, name="multi", queues=("c",), concurrency=2)
            await settle()
            stats = await client.stats()
    assert stats.queues == {
        "a": {"pending": 0, "scheduled": 1, "running": 1},
        "b": {"pending": 2, "scheduled": 0, "running": 0},
        "c": {"pending": 0, "scheduled": 1, "running": 0},  # backing off after a failure
    }
    assert stats.jobs == {
        "pending": 2,
        "scheduled": 2,
        "running": 1,
        "completed": 0,
        "failed": 0,
        "cancelled": 1,
    }
    assert stats.totals == {
        "submitted": 6,
        "completed": 0,
        "failed": 0,
        "cancelled": 1,
        "retried": 1,
        "reassigned": 0,
        "expired": 0,
    }
    # Every worker connection, holding a job or blocked asking for one; not clients.
    assert stats.workers == [
        {"name": "holder", "jobs": [held], "waiting": False},
        {"name": "multi", "jobs": [], "waiting": True, "queues": ["c"]},
        {"name": "multi", "jobs": [], "waiting": True, "queues": ["c"]},
    ]
    assert (stats.waiting_workers, stats.connections) == (2, 4)


# -- bugs --------------------------------------------------------------------------------


async def test_job_list_reports_a_completed_jobs_result_as_null(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    # Regression (was a bug in jobqueue._coordinator.Coordinator._list + JobInfo.to_wire): list_jobs
    # leaves results out by setting them to None, but JobInfo.to_wire writes
    # "result" for every completed job, so each completed entry says
    # "result": null. docs/protocol.md says the entries have the job_status
    # fields "except result"; null is a value (a handler may return None),
    # so a listing now misreports every completed job's result, and
    # Client.list_jobs("completed") gives JobInfo.result None for all of
    # them (`jobqueue list --state completed --json` prints "result": null).
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as raw:
            await queue.start_worker()
            job_id = await queue.client.submit("sleep", {"seconds": 0})
            assert (await queue.client.wait(job_id)).result == {"slept": 0}
            listing = await raw.request({"type": "list_jobs", "state": "completed"})
    [entry] = listing["jobs"]
    assert entry["job_id"] == job_id
    assert "result" not in entry, entry


async def test_cancel_notice_during_a_heartbeat_drops_the_workers_connection(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression (was a bug in jobqueue._worker.Worker._run_job / _link.Link.request): the handler's
    # cancel scope also covers the heartbeat loop. A job_cancelled notice that
    # arrives while a heartbeat is waiting for its reply cancels that
    # Link.request mid-flight, which marks the whole connection unusable ("a
    # heartbeat request was interrupted"): the worker logs "lost the queue",
    # closes the connection and reconnects, for a cancel that should only stop
    # one handler. Any worker with network latency hits this whenever a cancel
    # lands within one round trip of a heartbeat (here: 0.5 s one way; the
    # heartbeat goes at 11.0, the cancel at 11.25).
    caplog.set_level(logging.INFO, logger="jobqueue.worker")

    async def long(job: Job) -> None:
        await trio.sleep(100)

    with trio.fail_after(1000):
        async with open_memory_queue(lease_timeout=3) as queue:  # heartbeats every 1 s
            connections = Connections(queue, lambda s: LatencyStream(s, 0.5, queue.nursery))
            worker = Worker("memory", 0, handlers={"long": long}, name="w", connect=connections)
            await queue.nursery.start(worker.run)
            await trio.sleep_until(10)
            job_id = await queue.client.submit("long")
            await trio.sleep_until(11.25)
            await queue.client.cancel(job_id)
            await trio.sleep(5)
            statistics = worker.statistics()
    assert statistics.cancelled == 1
    assert "lost the queue" not in caplog.text
    assert connections.opened == [0.0]


async def test_job_timeout_during_report_progress_loses_the_timeout(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression (was a bug in jobqueue._worker.Worker._run_job / _link.Link.request): job_timeout
    # cancels the handler wherever it is, including inside
    # Job.report_progress while that request waits for its reply. The
    # interrupted request marks the connection unusable, so the TimeoutError
    # is never reported: the worker drops the connection and the server fails
    # the run as WorkerLost (with attempts left: requeued at once, no backoff,
    # counted as reassigned). A hung handler that keeps reporting progress is
    # the case job_timeout exists for. Here: 0.75 s one way; reports go out
    # every 0.75 s, one is in flight when the 10 s timeout fires.
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")

    async def chatty(job: Job) -> None:
        n = 0
        while True:
            n += 1
            await job.report_progress(n)

    with trio.fail_after(1000):
        async with open_memory_queue() as queue:
            connections = Connections(queue, lambda s: LatencyStream(s, 0.75, queue.nursery))
            worker = Worker(
                "memory",
                0,
                handlers={"chatty": chatty},
                name="w",
                connect=connections,
                job_timeout=10,
            )
            await queue.nursery.start(worker.run)
            job_id = await queue.client.submit("chatty", max_attempts=1)
            info = await queue.client.wait(job_id)
            stats = await queue.client.stats()
    assert info.state == "failed"
    assert info.error is not None
    assert info.error["type"] == "TimeoutError", info.error
    assert stats.totals["reassigned"] == 0
    assert connections.opened == [0.0]


async def test_cancel_notice_read_together_with_its_assignment_is_ignored(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression (was a bug in jobqueue._worker.Worker._on_notice): the reader task handles a
    # job_cancelled notice only if the job's handler is already registered in
    # Worker._running. When the assignment and its cancel notice are read in
    # one piece (the worker's event loop was busy for a moment, so both lines
    # arrived together), the reader hands job_assigned to the slot and then
    # drops the notice before the slot has started the job. The handler then
    # runs a job the server already cancelled until the next heartbeat is
    # refused (lease_timeout / 3 later: 10 s here, by default), and the worker
    # counts it as lost, not cancelled.
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")
    held: list[HeldStream] = []
    seen: list[tuple[str, float]] = []

    def hold(stream: trio.abc.Stream) -> trio.abc.Stream:
        held.append(HeldStream(stream, queue.nursery))
        return held[-1]

    async def long(job: Job) -> None:
        seen.append(("started", trio.current_time()))
        try:
            await trio.sleep(100)
        finally:
            seen.append(("stopped", trio.current_time()))

    with trio.fail_after(1000):
        async with open_memory_queue() as queue:
            worker = Worker(
                "memory", 0, handlers={"long": long}, name="w", connect=Connections(queue, hold)
            )
            await queue.nursery.start(worker.run)
            job_id = await queue.client.submit("long", delay=5)
            await trio.sleep_until(1)
            [stream] = held
            stream.hold()
            await trio.sleep_until(6)  # assigned at 5, unread
            assert (await queue.client.status(job_id)).state == "running"
            await queue.client.cancel(job_id)
            await trio.sleep_until(7)
            stream.release()  # the worker reads job_assigned and job_cancelled at once
            await trio.sleep(50)
            statistics = worker.statistics()
    # Either the handler never starts, or it is stopped the moment it does.
    assert seen in ([], [("started", 7.0), ("stopped", 7.0)])
    assert (statistics.cancelled, statistics.lost) == (1, 0)


async def test_cancel_notice_overtakes_the_assignment_it_cancels(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    # Regression (was a bug in jobqueue._coordinator.Coordinator._act / _feed_idle_workers): a job
    # handed to a blocked worker goes out later, from _serve_woken, but the
    # job_cancelled notice is sent straight away. When one batch both puts a
    # job in line for a blocked worker and cancels it (here: retry_job then
    # cancel_job, pipelined), the worker reads the notice for a job it does
    # not hold yet, then the job_assigned for a job that is already
    # cancelled. A Worker ignores the notice (it is not running that job) and
    # runs the handler until a heartbeat is refused.
    with trio.fail_after(100):
        async with (
            open_memory_queue(max_attempts=1) as queue,
            raw_connection(queue) as worker,
            raw_connection(queue) as person,
        ):
            job_id = await queue.client.submit("work")
            assert (await take(worker))["job_id"] == job_id
            await worker.request(
                {"type": "job_failed", "job_id": job_id, "error": {"type": "E", "message": "m"}}
            )
            assert (await queue.client.status(job_id)).state == "failed"
            await worker.send({"type": "request_job", "wait": 50})
            await trio.sleep(1)
            await person.send_raw(
                encode({"type": "retry_job", "job_id": job_id})
                + encode({"type": "cancel_job", "job_id": job_id})
            )
            revived, cancelled = await person.read_reply(), await person.read_reply()
            assert (revived["state"], cancelled["state"]) == ("running", "cancelled")
            first, second = await worker.read_reply(), await worker.read_reply()
    assert (first["type"], first["attempt"]) == ("job_assigned", 2)
    assert second == {"type": "job_cancelled", "job_id": job_id, "attempt": 2}
