"""Schedules with the journal: they survive a restart, and missed firings fire once.

In virtual time (autojump clock), with a wall clock the test sets: the clock
may jump while a request waits for the journal's flush (a thread), so a wall
clock that moved with it could pass several firings unseen; this one moves
only when the test moves it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

import trio
import trio.testing

from jobqueue import Client, ServerConfig
from jobqueue._server import QueueService

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()


@asynccontextmanager
async def journaled(
    path: Path, wall_clock: Callable[[], float]
) -> AsyncIterator[tuple[Client, QueueService]]:
    service = QueueService(ServerConfig(journal=str(path)))
    service.coordinator.scheduler.wall_clock = wall_clock
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)

        async def connect() -> trio.abc.Stream:
            client_end, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(service.handle_stream, server_end)
            return client_end

        async with Client.connect("memory", 0, connect=connect) as client:
            yield client, service
        nursery.cancel_scope.cancel()


def keys(service: QueueService) -> list[str]:
    return sorted(str(job.key) for job in service.state._jobs.values())


async def test_a_schedule_survives_a_restart_and_a_long_outage_fires_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    wall = [T0 + 59.8]  # 0.2 s before the first firing
    async with journaled(tmp_path, lambda: wall[0]) as (client, service):
        await client.add_schedule("tick", "report", {"n": 1}, every=60)
        await trio.sleep(0.5)
        assert keys(service) == []  # not due yet
        wall[0] = T0 + 60.3
        await trio.sleep(0.5)  # it fires once, for 00:01:00
        assert keys(service) == ["schedule:tick:2024-01-01T00:01:00Z"]

    # The server comes back ten periods (and a bit) later: one firing, for the latest time.
    async with journaled(tmp_path, lambda: T0 + 60 * 11 + 5) as (client, service):
        await trio.sleep(0.3)  # due at once, and fired once
        assert keys(service) == [
            "schedule:tick:2024-01-01T00:01:00Z",
            "schedule:tick:2024-01-01T00:11:00Z",
        ]
        (info,) = await client.list_schedules()
        assert (info.last_fire, info.next_fire) == (T0 + 660, T0 + 720)
        assert info.schedule.payload == {"n": 1}

    # And again at the same wall time (say the clock had not moved): no second job.
    async with journaled(tmp_path, lambda: T0 + 60 * 11 + 5) as (client, service):
        await trio.sleep(0.1)
        assert len(service.state) == 2
