"""``Worker.drain`` in virtual time, over in-memory streams (``open_memory_queue``).

A drain stops taking jobs, lets the running handler finish within the drain
timeout, gives back at once the jobs a slot took and has not started, stops and
gives back a handler still running at the deadline, and then ``run()`` returns.
A job given back is back in line and has spent no attempt.
"""

from __future__ import annotations

import math
import re
import ssl

import pytest
import trio
import trio.testing

from jobqueue import Job, Worker
from jobqueue.testing import open_memory_queue


async def test_drain_lets_the_running_job_finish_and_gives_prefetched_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: list[str] = []
    first = trio.Event()

    async def work(job: Job) -> str:
        started.append(job.id)
        first.set()
        await trio.sleep(5)
        return f"done {job.payload}"

    with trio.fail_after(100):
        async with open_memory_queue(lease_timeout=30.0) as queue:
            client = queue.client
            ids = [await client.submit("work", n) for n in range(3)]
            worker = queue.worker({"work": work}, prefetch=3)
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.run)
                await first.wait()
                assert started == [ids[0]]
                held = (await client.stats()).workers[0]["jobs"]
                assert sorted(held) == sorted(ids)  # all three taken, one running

                drain_at = trio.current_time()
                worker.drain(timeout=30.0)
                # The prefetched ones are back in line at once, attempt unchanged,
                # while the first one still runs.
                await trio.sleep(0.1)
                for job_id in ids[1:]:
                    status = await client.status(job_id)
                    assert (status.state, status.attempt, status.error) == ("pending", 1, None)
                assert (await client.status(ids[0])).state == "running"
                # run() returns once the running job is done and reported.
            assert trio.current_time() - drain_at < 6
            assert started == [ids[0]]
            head = await client.status(ids[0])
            assert (head.state, head.result) == ("completed", "done 0")
            stats = worker.statistics()
            assert (stats.completed, stats.given_back, stats.lost) == (1, 2, 0)
            server = await client.stats()
            assert server.totals["reassigned"] == 0
            assert server.jobs["pending"] == 2
            assert server.workers == []

            # Given back without spending: a job with one attempt still runs.
            again = await queue.start_worker({"work": work})
            for job_id in ids[1:]:
                done = await client.wait(job_id)
                assert (done.state, done.attempt) == ("completed", 2)
            del again


async def test_drain_stops_and_gives_back_a_job_still_running_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stopped = trio.Event()
    running = trio.Event()

    async def forever(job: Job) -> None:
        running.set()
        try:
            await trio.sleep_forever()
        finally:
            stopped.set()

    with trio.fail_after(100):
        async with open_memory_queue(lease_timeout=30.0) as queue:
            client = queue.client
            job_id = await client.submit("forever", None, max_attempts=1)
            worker = queue.worker({"forever": forever})
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.run)
                await running.wait()
                drain_at = trio.current_time()
                worker.drain(timeout=7.0)
            # run() returned at the deadline, not before, and no later than a beat after.
            assert 7.0 <= trio.current_time() - drain_at < 7.5
            assert stopped.is_set()
            status = await client.status(job_id)
            # max_attempts 1: had the run counted, the job would have failed.
            assert (status.state, status.attempt, status.error) == ("pending", 1, None)
            assert worker.statistics().given_back == 1
            assert (await client.stats()).totals["reassigned"] == 0


async def test_drain_ends_an_idle_waiting_slot_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def work(job: Job) -> str:
        return "ok"

    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            client = queue.client
            worker = queue.worker({"work": work}, concurrency=3, poll_wait=600.0)
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.run)
                for _ in range(1000):
                    if (await client.stats()).waiting_workers == 3:
                        break
                    await trio.sleep(0.01)
                drain_at = trio.current_time()
                worker.drain()
            # Not poll_wait: the waiting slots closed their connections at once.
            assert trio.current_time() - drain_at < 1.0
            assert (await client.stats()).waiting_workers == 0
            # A job submitted now stays for another worker.
            job_id = await client.submit("work", None)
            await trio.sleep(1)
            assert (await client.status(job_id)).state == "pending"


async def test_drain_with_the_default_prefetch_reports_and_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()
    running = trio.Event()

    async def work(job: Job) -> str:
        running.set()
        await gate.wait()
        return "ok"

    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            client = queue.client
            ids = [await client.submit("work", n) for n in range(2)]
            worker = queue.worker({"work": work})
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.run)
                await running.wait()
                worker.drain()
                await trio.sleep(1)
                gate.set()
            # The report carried no fetch: the second job was never taken.
            assert (await client.status(ids[0])).state == "completed"
            second = await client.status(ids[1])
            assert (second.state, second.attempt) == ("pending", 0)
            assert worker.statistics().completed == 1


@pytest.mark.parametrize("bad", [math.nan, -1.0, -math.inf])
async def test_drain_refuses_a_nan_or_negative_timeout_and_the_worker_goes_on(
    autojump_clock: trio.testing.MockClock, bad: float
) -> None:
    # NaN was taken: the deadline became NaN, which no wait ever reaches.
    async def work(job: Job) -> str:
        return "ok"

    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            worker = queue.worker({"work": work})
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.run)
                message = f"timeout must be a number of seconds, 0 or more, not {bad!r}"
                with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
                    worker.drain(bad)
                assert not worker.draining.is_set()
                job_id = await queue.client.submit("work", None)
                assert (await queue.client.wait(job_id)).result == "ok"
                worker.drain(math.inf)  # no limit: the idle worker stops at once


async def test_drain_ends_a_connect_that_gets_no_answer_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # As a connect to a host that drops every packet: no answer, and no
    # refusal, until the connect's own 10 s timeout. A slot with no
    # connection holds nothing, so a drain has nothing to wait for.
    connecting = trio.Event()

    async def never_answers() -> trio.abc.Stream:
        connecting.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    worker = Worker("unreachable.example", 8080, connect=never_answers, concurrency=2)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.run)
            await connecting.wait()
            drain_at = trio.current_time()
            worker.drain()
    assert trio.current_time() == drain_at
    assert worker.statistics().connected_slots == 0


class SilentServer:
    """A ``connect=`` hook whose server side reads and never answers.

    Attributes:
        peers: the server's end of each connection made, kept open.
        connected: set once a connection is made.
    """

    def __init__(self) -> None:
        self.peers: list[trio.abc.Stream] = []
        self.connected = trio.Event()

    async def connect(self) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        self.peers.append(theirs)
        self.connected.set()
        return ours


async def test_drain_ends_a_connection_whose_hello_is_not_answered_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Connected, but the server has not answered hello (it is starting, or
    # hung): the slot holds nothing yet, so the drain need not wait out
    # reply_grace for the answer.
    server = SilentServer()
    worker = Worker("memory", 0, connect=server.connect, reply_grace=60.0)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.run)
            await server.connected.wait()
            assert b'"type":"hello"' in await server.peers[0].receive_some()
            drain_at = trio.current_time()
            worker.drain()
    assert trio.current_time() == drain_at
    assert len(server.peers) == 1  # and no reconnect


async def test_drain_during_a_tls_handshake_closes_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Stopped mid-handshake, the connection must still be closed, not left
    # open for the garbage collector.
    server = SilentServer()  # takes the TLS client hello, never answers
    worker = Worker(
        "queue.example",
        8080,
        connect=server.connect,
        ssl_context=ssl.create_default_context(),
    )
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.run)
            await server.connected.wait()
            assert await server.peers[0].receive_some()  # the client hello
            drain_at = trio.current_time()
            worker.drain()
        assert trio.current_time() == drain_at
        assert await server.peers[0].receive_some() == b""  # closed
