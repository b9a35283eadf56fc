"""Leases, heartbeats and waits in virtual time: exact times, no waiting.

Everything here runs under pytest-trio's ``autojump_clock`` and talks to the
queue through in-memory streams (``open_memory_queue``): the same server,
coordinator, worker and client code as over TCP. Virtual time starts at 0.0
and only moves when every task is blocked, so each assert can name the exact
moment something happened. Each test is bounded by a virtual ``fail_after``,
so a bug that loops in virtual time fails quickly instead of hanging.

Tests named ``test_BUG_...`` document library bugs and fail until fixed.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing

from jobqueue import Job, Worker
from jobqueue._json import encode
from jobqueue._limits import MAX_LINE_BYTES
from jobqueue.testing import RunningQueue, open_memory_queue
from tests.helpers import StreamWrapper, take

if TYPE_CHECKING:
    from tests.helpers import RawOpener


# -- leases -------------------------------------------------------------------------------


async def test_lease_expires_exactly_lease_timeout_after_assignment(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):  # virtual seconds: a bug fails, not hangs
        async with (
            open_memory_queue(lease_timeout=30) as queue,
            raw_connection(queue) as silent,
            raw_connection(queue) as waiter,
        ):
            await trio.sleep(7)  # start somewhere other than 0
            job_id = await queue.client.submit("work")
            assigned_at = trio.current_time()
            assert (await take(silent))["attempt"] == 1
            # `silent` keeps its connection open and says nothing more.
            await waiter.send({"type": "request_job", "wait": 100})
            again = await waiter.read_reply()
            assert trio.current_time() == assigned_at + 30.0 == 37.0
            assert (again["type"], again["job_id"], again["attempt"]) == ("job_assigned", job_id, 2)
            stats = await queue.client.stats()
        assert (stats.totals["expired"], stats.totals["reassigned"]) == (1, 1)


async def test_heartbeats_keep_the_lease_until_they_stop(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(1000):  # virtual seconds: a bug fails, not hangs
        async with (
            open_memory_queue(lease_timeout=30) as queue,
            raw_connection(queue) as holder,
            raw_connection(queue) as waiter,
        ):
            job_id = await queue.client.submit("work")
            assert (await take(holder))["attempt"] == 1
            await waiter.send({"type": "request_job", "wait": 300})
            for beat in range(1, 11):
                await trio.sleep_until(20.0 * beat)
                reply = await holder.request({"type": "heartbeat", "job_id": job_id, "attempt": 1})
                assert reply == {"type": "ok", "lease_timeout": 30.0}
            assert trio.current_time() == 200.0
            info = await queue.client.status(job_id)
            assert (info.state, info.attempt) == ("running", 1)
            # Had the waiter been handed the job earlier, this read would return at
            # once (at 200); it returns when the last heartbeat's lease runs out.
            again = await waiter.read_reply()
            assert trio.current_time() == 230.0
            assert (again["job_id"], again["attempt"]) == (job_id, 2)
            late = await holder.request({"type": "heartbeat", "job_id": job_id, "attempt": 1})
            assert (late["type"], late["code"]) == ("error", "not_leased")


async def test_worker_heartbeats_keep_a_long_job_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[float] = []

    async def slow(job: Job) -> str:
        runs.append(trio.current_time())
        await trio.sleep(1000)
        return "done"

    with trio.fail_after(2000):  # virtual seconds: a bug fails, not hangs
        async with open_memory_queue(lease_timeout=10) as queue:
            worker = await queue.start_worker({"slow": slow})
            start = trio.current_time()
            job_id = await queue.client.submit("slow")
            info = await queue.client.wait(job_id)
            assert trio.current_time() == start + 1000.0
            stats = await queue.client.stats()
            await trio.testing.wait_all_tasks_blocked()  # the worker has read its "ok"
            assert trio.current_time() == start + 1000.0
            statistics = worker.statistics()
        assert runs == [start]
        assert (info.state, info.attempt, info.result) == ("completed", 1, "done")
        assert (stats.totals["reassigned"], stats.totals["expired"]) == (0, 0)
        assert (statistics.completed, statistics.lost) == (1, 0)


# -- blocking requests --------------------------------------------------------------------


async def test_request_job_wait_times_out_or_takes_a_job_the_moment_it_arrives(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):  # virtual seconds: a bug fails, not hangs
        async with open_memory_queue() as queue, raw_connection(queue) as worker:
            assert await worker.request({"type": "request_job", "wait": 5}) == {"type": "no_job"}
            assert trio.current_time() == 5.0

            async def submit_at(when: float) -> None:
                await trio.sleep_until(when)
                await queue.client.submit("late", when)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(submit_at, 7.0)
                assigned = await worker.request({"type": "request_job", "wait": 5})
                assert trio.current_time() == 7.0
            assert (assigned["type"], assigned["payload"]) == ("job_assigned", 7.0)
            # wait 0 never blocks.
            assert await worker.request({"type": "request_job", "wait": 0}) == {"type": "no_job"}
            assert trio.current_time() == 7.0


async def test_blocked_workers_are_served_longest_waiting_first(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with (
            open_memory_queue() as queue,
            raw_connection(queue) as first,
            raw_connection(queue) as second,
            raw_connection(queue) as third,
        ):
            for when, conn in ((1.0, second), (2.0, third), (3.0, first)):
                await trio.sleep_until(when)
                await conn.send({"type": "request_job", "wait": 50})
            await trio.sleep_until(10.0)
            ids = [await queue.client.submit("work", i) for i in range(3)]
            got = [await conn.read_reply() for conn in (second, third, first)]
            assert trio.current_time() == 10.0
    assert [reply["job_id"] for reply in got] == ids


async def test_wait_job_returns_when_the_job_finishes_or_its_wait_ends(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):  # virtual seconds: a bug fails, not hangs
        async with open_memory_queue() as queue, raw_connection(queue) as watcher:
            # No worker runs it: it waits until cancelled.
            pending = await queue.client.submit("nobody-runs-this", max_attempts=1)
            status = await watcher.request({"type": "wait_job", "job_id": pending, "wait": 3})
            assert (status["type"], status["state"]) == ("job_status", "pending")
            assert trio.current_time() == 3.0
            status = await watcher.request({"type": "wait_job", "job_id": pending, "wait": 0})
            assert (status["state"], trio.current_time()) == ("pending", 3.0)

            async def after(job: Job) -> str:
                await trio.sleep(job.payload)
                return "slept"

            await queue.start_worker({"after": after})
            # The worker has no handler for it and is never handed it.
            await queue.client.cancel(pending)
            assert (await queue.client.wait(pending)).state == "cancelled"
            assert trio.current_time() == 3.0
            start = trio.current_time()
            job_id = await queue.client.submit("after", 7)
            status = await watcher.request({"type": "wait_job", "job_id": job_id, "wait": 3})
            assert (status["state"], status["attempt"]) == ("running", 1)
            assert trio.current_time() == start + 3.0
            info = await queue.client.wait(job_id)
            assert (info.state, info.result) == ("completed", "slept")
            assert trio.current_time() == start + 7.0
            # On a finished job, wait_job answers at once, whatever the wait.
            status = await watcher.request({"type": "wait_job", "job_id": job_id, "wait": 100})
            assert (status["state"], trio.current_time()) == ("completed", start + 7.0)


async def test_requests_behind_a_blocking_request_are_answered_when_it_ends(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    # Replies stay in request order, whichever event ends the blocking
    # request: its wait running out, a submission, or the job finishing.
    with trio.fail_after(100):  # virtual seconds: a bug fails, not hangs
        async with (
            open_memory_queue() as queue,
            raw_connection(queue) as conn,
            raw_connection(queue) as holder,
        ):
            stats = {"type": "stats"}
            await conn.send_raw(encode({"type": "request_job", "wait": 5}) + encode(stats))
            assert await conn.read_reply() == {"type": "no_job"}
            assert (await conn.read_reply())["type"] == "stats"
            assert trio.current_time() == 5.0

            await conn.send_raw(encode({"type": "request_job", "wait": 50}) + encode(stats))

            async def submit_at(when: float) -> str:
                await trio.sleep_until(when)
                return await queue.client.submit("work")

            job_id = await submit_at(8.0)
            assigned = await conn.read_reply()
            assert (assigned["type"], assigned["job_id"]) == ("job_assigned", job_id)
            after = await conn.read_reply()
            assert (after["type"], after["jobs"]["running"], after["waiting_workers"]) == (
                "stats",
                1,
                0,
            )
            assert trio.current_time() == 8.0
            assert await conn.request(
                {"type": "job_complete", "job_id": job_id, "attempt": 1, "result": "r"}
            ) == {"type": "ok"}

            other = await queue.client.submit("other")
            assert (await take(holder))["job_id"] == other
            await conn.send_raw(
                encode({"type": "wait_job", "job_id": other})
                + encode(stats)
                + encode({"type": "job_status", "job_id": other})
            )
            await trio.sleep_until(20.0)
            assert await holder.request({"type": "job_complete", "job_id": other}) == {"type": "ok"}
            done = await conn.read_reply()
            assert (done["type"], done["state"]) == ("job_status", "completed")
            assert (await conn.read_reply())["jobs"]["completed"] == 2
            assert (await conn.read_reply())["state"] == "completed"
            assert trio.current_time() == 20.0


# -- a worker that loses its lease --------------------------------------------------------


@attrs.define(eq=False)
class _Gate:
    """Open or shut; ``wait_open`` blocks while shut."""

    _opened: trio.Event = attrs.field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        self._opened.set()

    def shut(self) -> None:
        self._opened = trio.Event()

    def open(self) -> None:
        self._opened.set()

    async def wait_open(self) -> None:
        await self._opened.wait()


@attrs.define(eq=False)
class _GatedStream(StreamWrapper):
    """A stream whose sends hold while the gate is shut: a connection that stalls."""

    inner: trio.abc.Stream
    gate: _Gate

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.gate.wait_open()
        await self.inner.send_all(data)


async def test_worker_abandons_a_job_whose_lease_was_reassigned(
    autojump_clock: trio.testing.MockClock,
    raw_connection: RawOpener,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="jobqueue.worker")
    gate = _Gate()
    handler_ended: list[tuple[str, float]] = []
    handler_done = trio.Event()

    async def long(job: Job) -> str:
        outcome = "cancelled"
        try:
            await trio.sleep(100)
            outcome = "finished"
        finally:
            handler_ended.append((outcome, trio.current_time()))
            handler_done.set()
        return "too late"

    with trio.fail_after(1000):  # virtual seconds: a bug fails, not hangs
        async with open_memory_queue(lease_timeout=10) as queue:
            connector = queue.connector
            assert connector is not None

            async def gated_connect() -> trio.abc.Stream:
                return _GatedStream(await connector(), gate)

            worker = Worker(
                "memory", 0, handlers={"long": long}, name="stalled", connect=gated_connect
            )
            await queue.nursery.start(worker.run)
            job_id = await queue.client.submit("long")
            # The worker heartbeats every 10/3 s; its connection stalls at 5, so
            # the beat due at 6.67 hangs and the lease from the 3.33 beat runs out.
            first_beat = 10 / 3
            await trio.sleep_until(5)
            gate.shut()
            async with raw_connection(queue) as thief:
                await thief.request({"type": "hello", "name": "thief"})
                stolen = await thief.request({"type": "request_job", "wait": 100})
                # The lease runs out at 3.33 + 10; the worker gives up at the
                # same moment (by its own clock) and closes, whichever is first.
                assert trio.current_time() == pytest.approx(first_beat + 10)
                assert (stolen["job_id"], stolen["attempt"]) == (job_id, 2)

                # The worker does not wait for the partition to heal: its
                # heartbeat at 6.67 had no reply by the time its lease would
                # run out (6.67 + 20/3), so it stops the handler then.
                await handler_done.wait()
                [(outcome, ended_at)] = handler_ended
                assert outcome == "cancelled"
                assert ended_at == pytest.approx(2 * first_beat + 20 / 3)
                await trio.sleep_until(20)
                gate.open()
                await trio.testing.wait_all_tasks_blocked()
                statistics = worker.statistics()
                assert (statistics.lost, statistics.completed, statistics.failed) == (1, 0, 0)
                assert statistics.running == 0

                done = await thief.request(
                    {"type": "job_complete", "job_id": job_id, "attempt": 2, "result": "thief"}
                )
                assert done == {"type": "ok"}
            info = await queue.client.status(job_id)
            assert (info.state, info.attempt, info.worker, info.result) == (
                "completed",
                2,
                "thief",
                "thief",
            )
            # The worker is still in business (on a new connection).
            quick = await queue.client.submit("sleep", {"seconds": 1})
            info = await queue.client.wait(quick)
            assert (info.state, info.worker) == ("completed", "stalled")
        assert any("gave up job" in r.getMessage() for r in caplog.records)


# -- the coordinator's clock --------------------------------------------------------------


async def test_coordinator_wakes_only_for_deadlines(
    autojump_clock: trio.testing.MockClock,
    raw_connection: RawOpener,
) -> None:
    # The coordinator wakes when the deadline it sleeps under arrives, and only
    # then: its statistics count those wake-ups and say when the latest was.
    async def settled(queue: RunningQueue) -> int:
        """Let every command in flight be served; return the wake-up count so far."""
        await trio.testing.wait_all_tasks_blocked()
        return queue.statistics().timer_wakeups

    def woken_since(queue: RunningQueue, mark: int) -> tuple[int, float | None]:
        """Wake-ups since ``mark``, and when the latest one was."""
        statistics = queue.statistics()
        return statistics.timer_wakeups - mark, statistics.last_timer_wakeup

    with trio.fail_after(10000):  # virtual seconds: a bug fails, not hangs
        async with (
            open_memory_queue(lease_timeout=30) as queue,
            raw_connection(queue) as holder,
            raw_connection(queue) as other,
        ):
            # Peers that said hello (so the handshake timeout is behind them)
            # and have nothing to do: no wake-ups at all, however long.
            for peer in (holder, other):
                assert (await peer.request({"type": "hello"}))["type"] == "hello"
            mark = await settled(queue)
            await trio.sleep(1000)
            assert woken_since(queue, mark)[0] == 0

            job_id = await queue.client.submit("work")
            assert (await take(holder))["attempt"] == 1  # lease runs to 1030
            mark = await settled(queue)
            assert woken_since(queue, mark)[0] == 0
            await trio.sleep_until(1020)
            assert woken_since(queue, mark)[0] == 0
            await holder.request({"type": "heartbeat", "job_id": job_id})  # now to 1050
            mark = await settled(queue)
            await trio.sleep_until(3000)
            assert woken_since(queue, mark) == (1, 1050.0)  # not at 1030: the deadline moved

            # A blocked request_job is a deadline of its own.
            assert (await take(holder))["attempt"] == 2  # lease runs to 3030
            await other.send({"type": "request_job", "wait": 5})
            mark = await settled(queue)
            assert await other.read_reply() == {"type": "no_job"}
            assert trio.current_time() == 3005.0
            assert woken_since(queue, mark) == (1, 3005.0)
            await trio.sleep_until(5000)
            assert woken_since(queue, mark) == (2, 3030.0)
            stats = await queue.client.stats()
        assert (stats.totals["expired"], stats.jobs["pending"]) == (2, 1)


# -- replies and reconnects at the edges ---------------------------------------------------


def _submit_line(shape: tuple[str, str, str, str], count: int) -> bytes:
    """A submit_job line, written by hand, whose payload is ``count`` units."""
    opening, unit, separator, closing = shape
    payload = opening + separator.join([unit] * count) + closing
    return ('{"type":"submit_job","name":"size","payload":' + payload + "}").encode("utf-8")


async def _largest_accepted(raw_connection: RawOpener, shape: tuple[str, str, str, str]) -> int:
    """How many units of ``shape`` the largest payload submit_job accepts holds.

    Found to within 0.05%, far closer than the 16 KiB the server keeps for
    reply envelopes, on a queue of its own (so the probes' jobs go with it).
    """
    async with open_memory_queue() as queue, raw_connection(queue) as probe:
        accepted, refused = 0, MAX_LINE_BYTES // len(shape[1].encode("utf-8")) + 1
        while refused - accepted > max(1, refused // 2000):
            count = (accepted + refused) // 2
            await probe.send_line(_submit_line(shape, count))
            reply = await probe.read_reply()
            if reply["type"] == "job_submitted":
                accepted = count
            else:
                assert (reply["type"], reply["code"]) == ("error", "message_too_large")
                refused = count
    return accepted


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(('"', "a", "", '"'), id="ascii"),
        pytest.param(('"', "é", "", '"'), id="two-byte-utf8"),
        pytest.param(('"', "\U0001f600", "", '"'), id="emoji"),
        pytest.param(('"', "\\ud800", "", '"'), id="lone-surrogate-escape"),
        pytest.param(("[", "1e15", ",", "]"), id="numbers-that-grow"),
    ],
)
async def test_the_largest_accepted_payload_can_be_delivered_to_a_worker(
    autojump_clock: trio.testing.MockClock,
    raw_connection: RawOpener,
    shape: tuple[str, str, str, str],
) -> None:
    # A reply carries the stored payload plus an envelope, and the server
    # re-encodes it (1e15 comes back as 1000000000000000.0; escapes may be
    # expanded or collapsed). Whatever submit_job accepts, the job_assigned
    # reply must still be readable by the Worker, or the job bounces between
    # reconnects for ever. (Failed at 208c0d5; fixed by f658abf .. 45821ed.)
    runs: list[int] = []
    connections = 0

    async def size(job: Job) -> int:
        runs.append(job.attempt)
        return len(job.payload)

    with trio.fail_after(1000):
        accepted = await _largest_accepted(raw_connection, shape)
        async with open_memory_queue() as queue:
            connector = queue.connector
            assert connector is not None

            async def connect() -> trio.abc.Stream:
                # Stops a reconnect storm, which would never let virtual time move.
                nonlocal connections
                connections += 1
                if connections > 20:
                    await trio.sleep_forever()
                return await connector()

            async with raw_connection(queue) as raw:
                await raw.send_line(_submit_line(shape, accepted))
                submitted = await raw.read_reply()
            assert submitted["type"] == "job_submitted", submitted
            worker = Worker("memory", 0, handlers={"size": size}, connect=connect)
            await queue.nursery.start(worker.run)
            async with queue.connect() as waiter:
                with trio.move_on_after(60):
                    info = await waiter.wait(submitted["job_id"])
                    assert (info.state, info.result) == ("completed", accepted)
            stats = await queue.client.stats()
    assert accepted > 0
    assert runs == [1]
    assert stats.totals["completed"] == 1
    assert stats.totals["reassigned"] == 0
    assert connections == 1


@attrs.define(eq=False)
class _HangUp:
    """A connector whose connections open, then are closed by the far end at once.

    After ``limit`` attempts it stops answering (so a worker caught in a tight
    reconnect loop cannot hold virtual time still for ever) and sets ``exhausted``.
    """

    limit: int
    attempts: list[float] = attrs.field(factory=list, init=False)
    exhausted: trio.Event = attrs.field(factory=trio.Event, init=False)

    async def __call__(self) -> trio.abc.Stream:
        self.attempts.append(trio.current_time())
        if len(self.attempts) >= self.limit:
            self.exhausted.set()
            await trio.sleep_forever()
        client_end, server_end = trio.testing.memory_stream_pair()
        await server_end.aclose()
        return client_end


async def test_worker_connected_slots_never_counts_a_failed_hello(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Failed at 208c0d5 (the counter went to -1 per failed hello); fixed by 9b1075e.
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")
    hang_up = _HangUp(limit=4)
    worker = Worker("memory", 0, connect=hang_up)
    with trio.fail_after(1000):  # virtual seconds: a bug fails, not hangs
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.run)
            await hang_up.exhausted.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert worker.statistics().connected_slots == 0
            nursery.cancel_scope.cancel()


async def test_worker_backs_off_when_every_connection_breaks(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # A connection that opens and then breaks (here: at hello) must be retried
    # with backoff like a refused one, or a server that accepts and drops makes
    # every slot reconnect in a tight loop ("A lost or refused connection is
    # ... retried with exponential backoff"). Failed at 45821ed (every attempt
    # at t=0.0); fixed by 7828e69.
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")
    hang_up = _HangUp(limit=8)
    worker = Worker("memory", 0, connect=hang_up, reconnect_delay=1.0, max_reconnect_delay=4.0)
    with trio.move_on_after(1000):
        await worker.run()
    # Attempts from the 8th on hang until the connect timeout, then retry.
    first = hang_up.attempts[:8]
    gaps = [later - earlier for earlier, later in itertools.pairwise(first)]
    assert len(gaps) == 7
    # Jitter puts each delay between half and all of the nominal one.
    assert min(gaps) >= 0.5, hang_up.attempts


async def test_result_too_large_to_report_fails_the_job_instead_of_rerunning_it(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # job_complete with a result over the server's limit (MAX_LINE_BYTES -
    # ENVELOPE_BYTES) is refused with message_too_large. That is no lost
    # lease: the worker must report the job failed, not abandon it to lease
    # expiry and a rerun every lease_timeout for ever. One attempt, so the
    # failure ends the job and a rerun could only come from expiry.
    # Failed at 45821ed; fixed by 7828e69.
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")
    runs: list[float] = []

    async def huge(job: Job) -> str:
        runs.append(trio.current_time())
        return "x" * MAX_LINE_BYTES

    with trio.fail_after(1000):  # virtual seconds: a bug fails, not hangs
        async with open_memory_queue(lease_timeout=10) as queue:
            await queue.start_worker({"huge": huge})
            job_id = await queue.client.submit("huge", max_attempts=1)
            async with queue.connect() as waiter:
                with trio.move_on_after(100):
                    await waiter.wait(job_id)
            info = await queue.client.status(job_id)
        assert runs == [0.0]
        assert info.state == "failed"
        assert info.error is not None
        assert info.error["type"] == "ValueError"
        assert "the server refused the result" in info.error["message"]
