"""Routing by job name over a running queue, in virtual time (``open_memory_queue``).

A worker says in ``hello`` which job names it has handlers for (the
``Worker`` sends its handlers' names, built-ins included), and is handed
only those: a job no connected worker runs waits, spends no attempt, shows
in ``stats`` by name, and runs as soon as a worker that has its handler
connects. A peer that says nothing takes any job, as before.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from jobqueue import Job
from jobqueue.testing import RunningQueue, open_memory_queue
from tests.helpers import RawOpener, stats_when, take


async def echo(job: Job) -> Any:
    return job.payload


async def shout(job: Job) -> Any:
    return str(job.payload).upper()


async def names_in_stats(queue: RunningQueue) -> dict[str, dict[str, int]]:
    return (await queue.client.stats()).names


async def test_a_worker_without_the_handler_is_never_handed_the_job(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue(lease_timeout=5.0) as queue:
            client = queue.client
            unknown = await client.submit("shout", "hi", max_attempts=1)
            known = await client.submit("echo", 1)
            worker = await queue.start_worker({"echo": echo}, concurrency=2)
            assert (await client.wait(known)).result == 1
            # Many lease periods later it has not been touched: no attempt,
            # no error, no failure in the worker's counters.
            await trio.sleep(60)
            status = await client.status(unknown)
            assert (status.state, status.attempt, status.error) == ("pending", 0, None)
            stats = worker.statistics()
            assert (stats.completed, stats.failed) == (1, 0)
            names = await names_in_stats(queue)
            assert names["shout"] == {"pending": 1, "workers": 0}
            # Both slots are connections that run echo and the built-in sleep.
            assert names["echo"] == {"pending": 0, "workers": 2}
            assert names["sleep"] == {"pending": 0, "workers": 2}


async def test_a_waiting_job_runs_when_a_worker_with_its_handler_connects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            client = queue.client
            await queue.start_worker({"echo": echo}, name="old")
            job_id = await client.submit("shout", "hi")
            await trio.sleep(10)
            assert (await client.status(job_id)).state == "pending"
            await queue.start_worker({"shout": shout}, name="new")
            info = await client.wait(job_id)
            assert (info.state, info.result, info.worker, info.attempt) == (
                "completed",
                "HI",
                "new",
                1,
            )
            names = await names_in_stats(queue)
            assert names["shout"] == {"pending": 0, "workers": 1}


async def test_a_rolling_deploy_spends_no_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Old workers run v1 only; jobs of the handler added in v2 arrive before
    # any new worker. They wait (in their place, ahead of later v1 jobs for
    # a v2 worker), v1 jobs keep flowing, and once a v2 worker is up each v2
    # job runs exactly once, on its first attempt.
    ran: list[tuple[str, Any]] = []

    async def v1(job: Job) -> Any:
        ran.append(("v1", job.payload))
        await trio.sleep(1)
        return job.payload

    async def v2(job: Job) -> Any:
        ran.append(("v2", job.payload))
        await trio.sleep(1)
        return job.payload

    with trio.fail_after(200):
        async with open_memory_queue(lease_timeout=3.0) as queue:
            client = queue.client
            await queue.start_worker({"resize": v1}, name="old-1", concurrency=2)
            await queue.start_worker({"resize": v1}, name="old-2", concurrency=2)
            new_jobs = [await client.submit("thumbnail", n, max_attempts=1) for n in range(3)]
            old_jobs = [await client.submit("resize", n) for n in range(6)]
            for job_id in old_jobs:
                assert (await client.wait(job_id)).state == "completed"
            assert all(kind == "v1" for kind, _ in ran)
            for job_id in new_jobs:
                assert (await client.status(job_id)).state == "pending"
            stats = await client.stats()
            assert stats.names["thumbnail"] == {"pending": 3, "workers": 0}
            assert stats.names["resize"] == {"pending": 0, "workers": 4}
            # The deploy: a worker with both handlers joins, the old ones stay.
            await queue.start_worker({"resize": v1, "thumbnail": v2}, name="new-1")
            infos = [await client.wait(job_id) for job_id in new_jobs]
            assert [(info.state, info.attempt, info.worker) for info in infos] == [
                ("completed", 1, "new-1")
            ] * 3
            assert [payload for kind, payload in ran if kind == "v2"] == [0, 1, 2]
            stats = await client.stats()
            assert stats.totals["failed"] == 0
            assert stats.totals["retried"] == 0
            assert stats.totals["reassigned"] == 0
            assert stats.names["thumbnail"] == {"pending": 0, "workers": 1}


async def test_priority_and_order_hold_among_the_names_a_worker_runs(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as worker:
            client = queue.client
            submitted = {
                "x1": await client.submit("x", 1),
                "a1": await client.submit("a", 1),
                "b1": await client.submit("b", 1, priority=5),
                "x2": await client.submit("x", 2, priority=9),
                "a2": await client.submit("a", 2),
                "b2": await client.submit("b", 2),
            }
            hello = await worker.request({"type": "hello", "name": "ab", "names": ["a", "b"]})
            assert hello["type"] == "hello"
            got = [(await take(worker))["job_id"] for _ in range(4)]
            assert got == [submitted[key] for key in ("b1", "a1", "a2", "b2")]
            reply = await worker.request({"type": "request_job"})
            assert reply == {"type": "no_job"}
            # The same connection with no names in a new hello takes any job again.
            await worker.request({"type": "hello", "name": "any"})
            assert (await take(worker))["job_id"] == submitted["x2"]
            assert (await take(worker))["job_id"] == submitted["x1"]


async def test_parked_workers_are_fed_only_jobs_they_run(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with (
            open_memory_queue() as queue,
            raw_connection(queue) as only_a,
            raw_connection(queue) as only_b,
        ):
            client = queue.client
            await only_a.request({"type": "hello", "names": ["a"]})
            await only_b.request({"type": "hello", "names": ["b"]})
            # only_a has waited longest, so it would be fed first: it must pass.
            await only_a.send({"type": "request_job", "wait": 50})
            await stats_when(client, lambda s: s.waiting_workers == 1)
            await only_b.send({"type": "request_job", "wait": 50, "max": 5})
            await stats_when(client, lambda s: s.waiting_workers == 2)
            b_job = await client.submit("b", 1)
            reply = await only_b.read_reply()
            assert reply["type"] == "jobs_assigned"
            assert [job["job_id"] for job in reply["jobs"]] == [b_job]
            stats = await client.stats()
            assert stats.waiting_workers == 1
            # only_a still parked, only_b holding its job (in either order).
            held = sorted((w["waiting"], w["jobs"]) for w in stats.workers)
            assert held == [(False, [b_job]), (True, [])]
            a_job = await client.submit("a", 2)
            assert (await only_a.read_reply())["job_id"] == a_job
            # A name nobody runs wakes nobody; its wait runs out.
            start = trio.current_time()
            await only_a.send({"type": "request_job", "wait": 20})
            await client.submit("c", 3)
            assert await only_a.read_reply() == {"type": "no_job"}
            assert trio.current_time() == start + 20
            names = await names_in_stats(queue)
            assert names == {
                "a": {"pending": 0, "workers": 1},
                "b": {"pending": 0, "workers": 1},
                "c": {"pending": 1, "workers": 0},
            }


async def test_a_fetch_on_a_report_takes_only_names_the_worker_runs(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as worker:
            client = queue.client
            await worker.request({"type": "hello", "names": ["a"]})
            first = await client.submit("a", 1)
            skipped = await client.submit("z", 2)
            second = await client.submit("a", 3)
            assigned = await take(worker)
            assert assigned["job_id"] == first
            reply = await worker.request(
                {"type": "job_complete", "job_id": first, "attempt": 1, "fetch": {"max": 5}}
            )
            assert [job["job_id"] for job in reply["jobs"]] == [second]
            assert (await client.status(skipped)).state == "pending"


async def test_peers_that_say_no_names_take_any_job_and_are_counted_for_every_name(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as old_worker:
            client = queue.client
            await old_worker.request({"type": "hello", "name": "old-protocol"})
            await old_worker.send({"type": "request_job", "wait": 50})
            await stats_when(client, lambda s: s.waiting_workers == 1)
            stats = await client.stats()
            assert (stats.any_name_workers, stats.names) == (1, {})
            job_id = await client.submit("anything", None)
            assert (await old_worker.read_reply())["job_id"] == job_id
            stats = await client.stats()
            assert stats.any_name_workers == 1  # holding the job now
            # A plain client (no names, not waiting, holding nothing) is no worker.
            async with queue.connect(name="just-a-client") as other:
                await other.submit("other", None)
                stats = await other.stats()
                assert stats.any_name_workers == 1
                assert stats.names == {"other": {"pending": 1, "workers": 1}}
