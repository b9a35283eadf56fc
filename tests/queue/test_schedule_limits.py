"""Schedules a listing must still hold: big payloads, many schedules, long names.

``list_schedules`` answers in one line. A payload may take most of a line
by itself, so payloads that do not fit are left out of the listing; and a
server keeps no more schedules than one listing can show without them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from jobqueue import JobQueueError, RequestError, Schedule, ServerConfig, _scheduler, serve_queue
from jobqueue._limits import MAX_NAME_CHARS, MAX_SCHEDULES, MAX_STORED_BYTES
from jobqueue._scheduler import Scheduler
from jobqueue._state import QueueState
from jobqueue.testing import open_memory_queue, open_test_queue


async def test_payloads_that_do_not_fit_are_left_out_of_the_listing() -> None:
    big = {"blob": "x" * (MAX_STORED_BYTES - 100)}
    with trio.fail_after(30):
        async with open_memory_queue() as queue:
            client = queue.client
            for name in ("a-big", "b-big", "c-small"):
                await client.add_schedule(name, "work", big if "big" in name else [1], every=60)
            listed = await client.list_schedules()
    assert [info.schedule.name for info in listed] == ["a-big", "b-big", "c-small"]
    assert [info.payload_omitted for info in listed] == [False, True, False]
    assert listed[0].schedule.payload == big
    assert listed[1].schedule.payload is None
    assert listed[2].schedule.payload == [1]  # a later one that fits keeps its payload


async def test_a_server_keeps_at_most_max_schedules() -> None:
    with trio.fail_after(60):
        async with open_memory_queue() as queue:
            client = queue.client
            for n in range(MAX_SCHEDULES):
                await client.add_schedule(f"s{n:04d}", "work", every=3600)
            with pytest.raises(RequestError) as refused:
                await client.add_schedule("one-more", "work", every=3600)
            # Replacing one is no new schedule.
            replaced = await client.add_schedule("s0000", "other", every=60)
            listed = await client.list_schedules()
    assert refused.value.code == "too_many_schedules"
    assert f"at most {MAX_SCHEDULES} schedules" in str(refused.value)
    assert replaced.schedule.job == "other"
    assert len(listed) == MAX_SCHEDULES


async def test_schedules_are_refused_before_they_no_longer_fit_a_listing() -> None:
    # Texts of the longest a name may be, every character escaped on the wire.
    def longest(n: int, tag: str) -> str:
        return f"{n:04d}{tag}" + "\x01" * (MAX_NAME_CHARS - 5)

    with trio.fail_after(60):
        async with open_memory_queue() as queue:
            client = queue.client
            refused: RequestError | None = None
            added = 0
            while refused is None and added < MAX_SCHEDULES:
                n = added
                try:
                    await client.add_schedule(
                        longest(n, "n"), longest(n, "j"), every=60, queue=longest(n, "q")
                    )
                    added += 1
                except RequestError as exc:
                    refused = exc
            listed = await client.list_schedules()
    assert refused is not None
    assert refused.code == "too_many_schedules"
    assert "would not fit in a list_schedules reply" in str(refused)
    assert 100 < added < MAX_SCHEDULES
    assert len(listed) == added  # every schedule kept is listed


async def test_a_configured_schedules_texts_are_held_to_the_wires_limit() -> None:
    # A request's texts are the codec's to check; a configured schedule's the server's.
    long_queue = Schedule("nightly", "cleanup", every=60, queue="q" * (MAX_NAME_CHARS + 1))
    too_long = f"'nightly': a schedule's queue is longer than {MAX_NAME_CHARS} characters"
    with trio.fail_after(10), pytest.raises(JobQueueError, match=too_long):
        await serve_queue(0, host="127.0.0.1", schedules=(long_queue,))
    with pytest.raises(ValueError, match="schedules may hold at most"):
        ServerConfig(
            schedules=tuple(Schedule(f"s{n}", "work", every=60) for n in range(MAX_SCHEDULES + 1))
        )


async def test_configured_schedules_past_the_journals_stop_the_server_with_its_error(
    tmp_path: Path,
) -> None:
    # The journal holds as many schedules as a server keeps, added over the
    # wire; one more configured at start cannot be added. The server stops
    # before it listens, with an error that says so (not a group wrapping a
    # RuleError, which the command line showed as a traceback).
    with trio.fail_after(60):
        async with open_test_queue(journal=str(tmp_path)) as queue:
            for n in range(MAX_SCHEDULES):
                await queue.client.add_schedule(f"s{n:04d}", "work", every=3600)
        extra = Schedule("extra", "work", every=60)
        with pytest.raises(JobQueueError, match=r"cannot add schedule 'extra': .* at most 1000"):
            await serve_queue(0, host="127.0.0.1", journal=str(tmp_path), schedules=(extra,))


async def test_configured_schedules_that_do_not_fit_a_listing_stop_the_server() -> None:
    def longest(n: int, tag: str) -> str:
        return f"{n:04d}{tag}" + "\x01" * (MAX_NAME_CHARS - 5)

    schedules = tuple(
        Schedule(longest(n, "n"), longest(n, "j"), every=60, queue=longest(n, "q"))
        for n in range(400)
    )
    with trio.fail_after(60), pytest.raises(JobQueueError, match="would not fit"):
        await serve_queue(0, host="127.0.0.1", schedules=schedules)


def test_an_add_measures_only_the_schedules_it_has_not_measured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each add past a few hundred schedules checks that they all still fit
    # a listing. Measuring every one afresh cost each add milliseconds of
    # the coordinator's time (tens with 1,000 cron schedules), and a start
    # with 1,000 configured schedules seconds: each is measured once.
    scheduler = Scheduler(QueueState(), wall_clock=lambda: 1.7e9)
    for n in range(600):
        scheduler.add(Schedule(f"s{n:04d}", "work", cron="*/5 * * * *", tz="Europe/Paris"))
    measured: list[str] = []
    measure = _scheduler._listed_bytes

    def counting(schedule: Schedule) -> int:
        measured.append(schedule.name)
        return measure(schedule)

    monkeypatch.setattr(_scheduler, "_listed_bytes", counting)
    scheduler.add(Schedule("s0000", "other", every=60))  # a replacement
    scheduler.add(Schedule("new", "work", every=60))
    assert len(measured) <= 4


async def test_a_payload_shorter_than_its_mark_is_never_left_out() -> None:
    # Once the line's room is spent, a null payload takes fewer bytes than
    # the "payload_omitted":true that would replace it: leaving it out only
    # made the reply longer and told the client a payload was missing.
    big = "x" * (MAX_STORED_BYTES - 2)
    with trio.fail_after(30):
        async with open_memory_queue() as queue:
            client = queue.client
            await client.add_schedule("a-big", "work", big, every=60)
            for n in range(10):
                name = f"b{n}" + "\x01" * (MAX_NAME_CHARS - 2)
                await client.add_schedule(name, name, None, every=60, queue=name)
            listed = await client.list_schedules()
    assert [info.payload_omitted for info in listed] == [False] * 11
    assert all(info.schedule.payload is None for info in listed[1:])
