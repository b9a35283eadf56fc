"""The trio ``Client`` pipelines calls from many tasks on its one connection.

In virtual time over in-memory streams whose every read takes a fixed
latency: concurrent calls do not wait for each other's round trips, the
requests that are ready together leave in one write, and each caller still
gets its own reply.
"""

from __future__ import annotations

import trio
import trio.testing

from jobqueue import Client
from jobqueue.testing import open_memory_queue

#: Virtual seconds each read from the server takes.
LATENCY = 0.01


class Counted(trio.abc.Stream):
    """An in-memory connection that counts its writes and delays its reads."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        await trio.sleep(LATENCY)
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_concurrent_calls_share_round_trips_and_writes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tasks = 16
    async with open_memory_queue() as queue:
        assert queue.connector is not None
        connect = queue.connector
        streams: list[Counted] = []

        async def connector() -> trio.abc.Stream:
            streams.append(Counted(await connect()))
            return streams[-1]

        async with Client.connect("memory", 0, connect=connector) as client:
            ids: dict[int, str] = {}

            async def one(index: int) -> None:
                ids[index] = await client.submit(f"job{index}")

            writes_before = len(streams[0].writes)  # the hello's
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for index in range(tasks):
                    nursery.start_soon(one, index)
            elapsed = trio.current_time() - start
            # Taking turns, 16 calls would take 16 round trips; pipelined, a few.
            assert elapsed <= 4 * LATENCY, elapsed
            # The first call writes at once; the others that were ready with
            # it join one write.
            assert len(streams[0].writes) - writes_before <= 3
            assert len(streams) == 1
            # Each caller got its own job's id: the name says whose it is.
            for index, job_id in ids.items():
                assert (await client.status(job_id)).name == f"job{index}"


async def test_a_call_cancelled_before_it_starts_sends_nothing_and_keeps_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_queue() as queue:
        assert queue.connector is not None
        connect = queue.connector
        opened: list[trio.abc.Stream] = []

        async def connector() -> trio.abc.Stream:
            opened.append(await connect())
            return opened[-1]

        async with Client.connect("memory", 0, connect=connector) as client:
            with trio.CancelScope() as scope:
                scope.cancel()
                await client.submit("never")
            assert scope.cancelled_caught
            stats = await client.stats()
            assert stats.jobs["pending"] == 0
            assert len(opened) == 1
