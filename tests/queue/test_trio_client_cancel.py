"""The trio ``Client`` under cancellation: the connection stays, replies stay matched.

Issue 12: a ``trio.move_on_after`` around a call (how the docs say to bound
a ``wait``) used to break the connection and log a reconnect warning. Here,
in virtual time over in-memory streams, a cancelled call leaves the client
usable with no new connection and no warning, and with many tasks sharing
one client, some cancelled mid-call, every reply still reaches its caller.
"""

from __future__ import annotations

import logging
import random

import pytest
import trio
import trio.testing

from jobqueue import Client, ClientClosed, Job
from jobqueue.testing import RunningQueue, open_memory_queue

#: Virtual seconds each read from the server takes.
LATENCY = 0.01


class Slow(trio.abc.Stream):
    """An in-memory connection whose replies take :data:`LATENCY` to arrive.

    The pause comes before the read, so a call cancelled during it loses no
    bytes: what it would have read stays for the next reader.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        await trio.sleep(LATENCY)
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Counted:
    """A connector for ``queue`` that counts the connections it opens."""

    def __init__(self, queue: RunningQueue, *, slow: bool = False) -> None:
        assert queue.connector is not None
        self._connect = queue.connector
        self._slow = slow
        self.opened = 0

    async def __call__(self) -> trio.abc.Stream:
        self.opened += 1
        stream = await self._connect()
        return Slow(stream) if self._slow else stream


async def echo(job: Job) -> object:
    return job.payload


async def test_a_cancelled_wait_leaves_the_client_usable_without_reconnecting(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobqueue.client")
    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            connector = Counted(queue)
            async with Client.connect("memory", 0, connect=connector) as client:
                job_id = await client.submit("echo", {"n": 1})
                with trio.move_on_after(5) as scope:
                    await client.wait(job_id)  # no worker yet: the job never ends
                assert scope.cancelled_caught
                assert trio.current_time() == pytest.approx(5)
                # The same client answers at once, on the same connection.
                assert (await client.status(job_id)).state == "pending"
                assert await client.submit("echo", {"n": 2})
                await queue.start_worker({"echo": echo})
                info = await client.wait(job_id)
                assert info.result == {"n": 1}
                # One connection for calls, one for each wait (the cancelled
                # one's was closed): never a reconnect.
                assert connector.opened == 3
                assert (await queue.client.stats()).connections >= 2
    assert "reconnect" not in caplog.text
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_wait_holds_up_no_other_task(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            client = queue.client
            job_id = await client.submit("echo", 1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.wait, job_id)
                await trio.testing.wait_all_tasks_blocked()
                start = trio.current_time()
                # Behind a wait on the same connection these would never return.
                assert (await client.status(job_id)).state == "pending"
                await client.submit("echo", 2)
                assert trio.current_time() == start
                nursery.cancel_scope.cancel()
            assert (await client.stats()).totals["submitted"] == 2


async def test_a_cancelled_call_s_reply_is_dropped_not_handed_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobqueue.client")
    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            connector = Counted(queue, slow=True)
            async with Client.connect("memory", 0, connect=connector) as client:
                first = await client.submit("echo", "first")
                second = await client.submit("echo", "second")
                # Sent, then cancelled before its reply (LATENCY away) is read.
                with trio.move_on_after(LATENCY / 2) as scope:
                    await client.status(first)
                assert scope.cancelled_caught
                # The next call reads the stale reply, drops it, and gets its own.
                assert (await client.status(second)).job_id == second
                assert (await client.status(first)).job_id == first
                assert connector.opened == 1
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_replies_match_callers_with_many_tasks_some_cancelled(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobqueue.client")
    rng = random.Random(12)
    tasks = 300
    with trio.fail_after(1000):
        async with open_memory_queue() as queue:
            connector = Counted(queue, slow=True)
            submitted: dict[int, str] = {}
            cancelled: list[int] = []
            async with Client.connect("memory", 0, connect=connector) as client:

                async def one(index: int) -> None:
                    # A third give up at some point in their calls: while the
                    # request waits to be written, or while the reply is owed.
                    # (The calls are pipelined: all of them take a few reads.)
                    limit = rng.uniform(0, 4 * LATENCY) if index % 3 == 0 else 1e9
                    with trio.move_on_after(limit) as scope:
                        job_id = await client.submit("echo", {"index": index})
                        info = await client.status(job_id)
                        assert info.job_id == job_id
                        submitted[index] = job_id
                    if scope.cancelled_caught:
                        cancelled.append(index)

                async with trio.open_nursery() as nursery:
                    for index in range(tasks):
                        nursery.start_soon(one, index)
                assert cancelled, "no call was cancelled: the test shows nothing"
                assert len(submitted) >= 2 * tasks // 3
                # Each caller got its own job's id: the payload says whose it is.
                await queue.start_worker({"echo": echo}, concurrency=8)
                for index, job_id in submitted.items():
                    assert (await client.wait(job_id)).result == {"index": index}
            assert connector.opened == 1 + 1  # the calls', and the waits' one spare
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_spare_closed_as_idle_is_replaced_for_the_next_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue(idle_timeout=5) as queue:
            await queue.start_worker({"echo": echo})
            connector = Counted(queue)
            async with Client.connect("memory", 0, connect=connector) as client:
                first = await client.submit("echo", 1)
                assert (await client.wait(first)).result == 1  # its connection is kept
                assert connector.opened == 2
                await trio.sleep(10)  # the server closes both as idle meanwhile
                second = await client.submit("echo", 2)  # the shared one: reconnects
                assert (await client.wait(second)).result == 2
                # The spare told the wait it was closed unread: sent again on a new one.
                assert connector.opened == 4


async def test_calls_on_a_closed_client_raise_client_closed() -> None:
    async with open_memory_queue() as queue:
        async with queue.connect() as client:
            job_id = await client.submit("echo", 1)
        for call in (client.status(job_id), client.wait(job_id), client.stats()):
            with pytest.raises(ClientClosed):
                await call


async def test_ctrl_c_in_the_clients_block_survives_a_cancel_at_the_same_moment() -> None:
    # The block's close runs with the interrupt on its way out: a cancel of
    # the scope around it meanwhile must not replace (and so lose) it.
    enclosing = trio.CancelScope()
    async with open_memory_queue() as queue:
        try:
            with trio.fail_after(10), enclosing:
                async with queue.connect() as client:
                    await client.stats()
                    enclosing.cancel()
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
        else:
            pytest.fail("the interrupt was lost: the block ended as if only cancelled")
