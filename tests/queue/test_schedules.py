"""Periodic jobs through a whole queue, in virtual time (autojump clock, in-memory streams).

The server's scheduler reads a wall clock that moves with trio's mock clock,
starting at 2024-01-01T00:00:00Z, so firings land at exact virtual times.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import pytest
import trio
import trio.testing

from jobqueue import Client, RequestError, Schedule, ServerConfig
from jobqueue._events import Event, Submitted
from jobqueue._server import QueueService

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()


@asynccontextmanager
async def scheduled_queue(**options: Any) -> AsyncIterator[tuple[Client, QueueService]]:
    """A queue whose wall clock is ``T0`` plus trio's (virtual) time, and a client."""
    service = QueueService(ServerConfig(**options))
    service.coordinator.scheduler.wall_clock = lambda: T0 + trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)

        async def connect() -> trio.abc.Stream:
            client_end, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(service.handle_stream, server_end)
            return client_end

        async with Client.connect("memory", 0, connect=connect) as client:
            yield client, service
        nursery.cancel_scope.cancel()


async def test_every_fires_at_exact_virtual_times(autojump_clock: trio.testing.MockClock) -> None:
    async with scheduled_queue() as (client, service):
        fired: list[tuple[float, str | None]] = []

        def record(event: Event) -> None:
            if isinstance(event, Submitted):
                fired.append((trio.current_time(), event.key))

        service.state.on_event = record
        await trio.sleep(3.5)
        info = await client.add_schedule("tick", "report", {"x": 1}, every=10)
        assert (info.next_fire, info.last_fire) == (T0 + 10, None)
        await trio.sleep(30)
        assert fired == [
            (10.0, "schedule:tick:2024-01-01T00:00:10Z"),
            (20.0, "schedule:tick:2024-01-01T00:00:20Z"),
            (30.0, "schedule:tick:2024-01-01T00:00:30Z"),
        ]
        job = next(iter(service.state._jobs.values()))
        assert (job.name, job.payload) == ("report", b'{"x":1}')
        # One wake-up per firing, none in between: no polling loop.
        assert service.coordinator.statistics().timer_wakeups == 3


async def test_a_job_runs_when_its_schedule_fires(autojump_clock: trio.testing.MockClock) -> None:
    async with scheduled_queue() as (client, service):
        await client.add_schedule("nightly", "cleanup", cron="0 3 * * *")
        times: list[float] = []
        service.state.on_event = lambda event: times.append(trio.current_time())
        await trio.sleep(4 * 3600)
        # Its job, then the firing's record: both at 03:00 exactly.
        assert times == [3 * 3600.0, 3 * 3600.0]
        (job,) = service.state._jobs.values()
        assert job.key == "schedule:nightly:2024-01-01T03:00:00Z"
        status = await client.status(job.id)
        assert (status.name, status.state) == ("cleanup", "pending")


async def test_list_and_remove(autojump_clock: trio.testing.MockClock) -> None:
    async with scheduled_queue() as (client, service):
        await client.add_schedule("b", "job-b", cron="*/5 * * * *", tz="Europe/Paris")
        await client.add_schedule("a", "job-a", every=60, queue="low", priority=2)
        await trio.sleep(61)
        listed = await client.list_schedules()
        assert [info.schedule.name for info in listed] == ["a", "b"]
        a, b = listed
        assert (a.schedule.every, a.schedule.queue, a.schedule.priority) == (60, "low", 2)
        assert a.last_fire == T0 + 60
        assert a.next_fire == T0 + 120
        assert (b.schedule.cron, b.schedule.tz, b.last_fire) == (
            "*/5 * * * *",
            "Europe/Paris",
            None,
        )
        await client.remove_schedule("a")
        assert [info.schedule.name for info in await client.list_schedules()] == ["b"]
        count = len(service.state)
        await trio.sleep(200)
        assert len(service.state) == count  # "a" fired no more; "b" is not due before 5 min
        with pytest.raises(RequestError) as caught:
            await client.remove_schedule("a")
        assert caught.value.code == "unknown_schedule"


async def test_bad_schedules_are_refused_before_and_by_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scheduled_queue() as (client, _service):
        with pytest.raises(ValueError, match="either every or cron"):
            await client.add_schedule("x", "j")
        with pytest.raises(ValueError, match="unknown time zone"):
            await client.add_schedule("x", "j", cron="* * * * *", tz="Nowhere/Else")
        # Past the client's own check: the server checks the same.
        with pytest.raises(RequestError) as caught:
            await client._request(  # a raw add_schedule no Schedule would build
                _RawAdd({"name": "x", "job": "j", "cron": "99 * * * *"})  # type: ignore[arg-type]
            )
        assert caught.value.code == "bad_request"
        assert "99 is not from 0 to 59" in caught.value.message
        assert await client.list_schedules() == []


class _RawAdd:
    TYPE = "add_schedule"

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, **self.fields}


async def test_schedules_from_the_server_config_and_re_adding_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    schedule = Schedule("tick", "report", every=30)
    async with scheduled_queue(schedules=[schedule]) as (client, service):
        await trio.sleep(31)
        (info,) = await client.list_schedules()
        assert info.last_fire == T0 + 30
        # The same schedule again (as a restarted server adds it): nothing changes.
        again = await client.add_schedule("tick", "report", every=30)
        assert (again.last_fire, again.next_fire) == (T0 + 30, T0 + 60)
        assert len(service.state) == 1
