"""Fewer round trips per job: ack and fetch, batch fetch, and prefetching workers.

The wire-level tests run under the autojump clock through in-memory streams
(``open_memory_queue``), so waits and leases are checked at exact virtual
times; a few repeat the essentials over real TCP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from jobqueue import Client, Handler, Job, Worker
from jobqueue._codec import decode_request
from jobqueue._json import encode
from jobqueue._limits import MAX_ERROR_CHARS, MAX_FETCH
from jobqueue.testing import RunningQueue, open_memory_queue
from tests.helpers import StreamWrapper, take

if TYPE_CHECKING:
    from tests.helpers import RawOpener


def worker_through(
    queue: RunningQueue,
    wrap: Callable[[trio.abc.Stream], trio.abc.Stream],
    handlers: Mapping[str, Handler],
    **options: Any,
) -> Worker:
    """A worker of the in-memory ``queue`` whose connections pass through ``wrap``.

    The wrapper sees (``_Recording``) or loses (``_DropFirst``,
    ``_DropNotices``) whole lines: in-memory streams hand over each write whole.
    """
    connector = queue.connector
    assert connector is not None

    async def connect() -> trio.abc.Stream:
        return wrap(await connector())

    return Worker("memory", 0, handlers=dict(handlers), connect=connect, **options)


def job_ids(reply: dict[str, Any]) -> list[str]:
    assert reply["type"] == "jobs_assigned", reply
    return [job["job_id"] for job in reply["jobs"]]


# -- ack and fetch on the wire ------------------------------------------------------


async def test_complete_with_fetch_answers_with_the_next_job(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as worker:
            first = await queue.client.submit("a")
            second = await queue.client.submit("b")
            assigned = await take(worker)
            assert assigned["job_id"] == first
            reply = await worker.request(
                {"type": "job_complete", "job_id": first, "attempt": 1, "result": 7, "fetch": {}}
            )
            assert (reply["type"], reply["job_id"], reply["attempt"]) == (
                "job_assigned",
                second,
                1,
            )
            info = await queue.client.status(first)
            assert (info.state, info.result) == ("completed", 7)
            # Nothing left: a fetch without wait gets no_job, and the report still counts.
            reply = await worker.request({"type": "job_complete", "job_id": second, "fetch": {}})
            assert reply == {"type": "no_job"}
            assert (await queue.client.status(second)).state == "completed"


async def test_waiting_fetch_parks_like_request_job_and_ends_the_wait(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as worker:
            job_id = await queue.client.submit("a")
            await take(worker)
            async with queue.connect() as waiter:
                # A client waiting on the job hears of its end at once, although
                # the report's own reply waits for the next job.
                await worker.send({"type": "job_complete", "job_id": job_id, "fetch": {"wait": 10}})
                assert (await waiter.wait(job_id)).state == "completed"
            start = trio.current_time()
            stats = await queue.client.stats()
            assert stats.waiting_workers == 1
            await trio.sleep(3)
            later = await queue.client.submit("b")
            reply = await worker.read_reply()
            assert (reply["type"], reply["job_id"]) == ("job_assigned", later)
            assert trio.current_time() == start + 3
            # And with nothing submitted, no_job comes when the wait ends.
            await worker.send({"type": "job_complete", "job_id": later, "fetch": {"wait": 10}})
            assert await worker.read_reply() == {"type": "no_job"}
            assert trio.current_time() == start + 13


async def test_refused_report_fetches_nothing(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as worker:
            pending = await queue.client.submit("a")
            reply = await worker.request(
                {"type": "job_complete", "job_id": pending, "fetch": {"wait": 5}}
            )
            assert (reply["type"], reply["code"]) == ("error", "not_leased")
            # The error is the whole reply: the pending job was not handed out.
            assert (await queue.client.status(pending)).state == "pending"
            assert (await queue.client.stats()).waiting_workers == 0


async def test_failed_with_fetch_spends_the_attempt_and_takes_the_next_job(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as worker:
            first = await queue.client.submit("a")
            second = await queue.client.submit("b", queue="other")
            await take(worker)
            reply = await worker.request(
                {
                    "type": "job_failed",
                    "job_id": first,
                    "attempt": 1,
                    "error": {"type": "E", "message": "m"},
                    "fetch": {"queues": ["other"], "max": 5},
                }
            )
            assert job_ids(reply) == [second]
            info = await queue.client.status(first)
            assert (info.state, info.error) == ("scheduled", {"type": "E", "message": "m"})


# -- batch fetch on the wire ----------------------------------------------------------


async def test_request_job_with_max_takes_up_to_max_jobs_in_order(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue(lease_timeout=20) as queue, raw_connection(queue) as worker:
            ids = await queue.client.submit_many([{"name": "n", "payload": i} for i in range(5)])
            reply = await worker.request({"type": "request_job", "max": 3})
            assert job_ids(reply) == ids[:3]
            assert reply["lease_timeout"] == 20
            assert [job["payload"] for job in reply["jobs"]] == [0, 1, 2]
            assert job_ids(await worker.request({"type": "request_job", "max": 3})) == ids[3:]
            assert await worker.request({"type": "request_job", "max": 3}) == {"type": "no_job"}
            stats = await queue.client.stats()
            assert stats.jobs["running"] == 5
            assert sorted(stats.workers[0]["jobs"]) == sorted(ids)


async def test_blocked_batch_fetch_gets_what_arrives(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with (
            open_memory_queue(lease_timeout=100) as queue,
            raw_connection(queue) as worker,
        ):
            await worker.send({"type": "request_job", "max": 10, "wait": 30})
            await trio.testing.wait_all_tasks_blocked()
            ids = await queue.client.submit_many([{"name": "n"}] * 4)
            # The whole batch arrives before the worker is woken: all four at once.
            assert job_ids(await worker.read_reply()) == ids
            await worker.send({"type": "request_job", "max": 10, "wait": 30})
            start = trio.current_time()
            assert await worker.read_reply() == {"type": "no_job"}
            assert trio.current_time() == start + 30


async def test_every_job_of_a_batch_is_leased_and_requeued_with_its_holder(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue(lease_timeout=10) as queue:
            ids = await queue.client.submit_many([{"name": "n"}] * 3)
            async with raw_connection(queue) as lost:
                assert job_ids(await lost.request({"type": "request_job", "max": 3})) == ids
                # Heartbeats on two of them; the third's lease runs out alone.
                await trio.sleep(6)
                for job_id in ids[:2]:
                    reply = await lost.request({"type": "heartbeat", "job_id": job_id})
                    assert reply["type"] == "ok"
                await trio.sleep(5)
                stats = await queue.client.stats()
                assert (stats.jobs["pending"], stats.totals["expired"]) == (1, 1)
            # Closing the connection gives back the two it still held, at once.
            async with raw_connection(queue) as taker:
                reply = await taker.request({"type": "request_job", "max": 10})
                assert sorted(job_ids(reply)) == sorted(ids)
                assert {job["attempt"] for job in reply["jobs"]} == {2}


async def test_fetch_and_batch_fetch_over_tcp(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    with trio.fail_after(10):
        async with raw_connection(tcp_queue) as worker:
            ids = await tcp_queue.client.submit_many([{"name": "n"}] * 3)
            reply = await worker.request({"type": "request_job", "max": 2, "wait": 5})
            assert job_ids(reply) == ids[:2]
            # Two reports pipelined in one write; the last also fetches.
            await worker.send_raw(
                encode({"type": "job_complete", "job_id": ids[0]})
                + encode({"type": "job_complete", "job_id": ids[1], "fetch": {"max": 2}})
            )
            assert await worker.read_reply() == {"type": "ok"}
            assert job_ids(await worker.read_reply()) == ids[2:]
            assert (await tcp_queue.client.stats()).totals["completed"] == 2


# -- the worker -----------------------------------------------------------------------


async def test_worker_with_prefetch_1_sends_two_requests_per_job(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[str] = []

    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            ran: list[int] = []

            async def handler(job: Job) -> int:
                ran.append(job.payload)
                return int(job.payload) * 2

            ids = await queue.client.submit_many([{"name": "h", "payload": i} for i in range(10)])
            worker = worker_through(
                queue, lambda s: _Recording(s, sent), {"h": handler}, prefetch=1
            )
            await queue.nursery.start(worker.run)
            for job_id in ids:
                await queue.client.wait(job_id)
            assert ran == list(range(10))
            assert worker.statistics().completed == 10
            # hello, one request_job, then one job_complete (with fetch) per job.
            assert sent.count("request_job") == 1
            assert sent.count("job_complete") == 10
            assert len(sent) == 12


class _Recording(StreamWrapper):
    """A stream that records the type of every request line written to it.

    ``writes`` (if given) gets the number of lines in each write.
    """

    def __init__(
        self, stream: trio.abc.Stream, sent: list[str], writes: list[int] | None = None
    ) -> None:
        super().__init__(stream)
        self._sent = sent
        self._writes = writes

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        lines = bytes(data).splitlines()
        for line in lines:
            self._sent.append(decode_request(line).TYPE)
        if self._writes is not None:
            self._writes.append(len(lines))
        await self.inner.send_all(data)

    async def send_eof(self) -> None:  # pragma: no cover - not used by the worker
        raise NotImplementedError


async def test_batch_fetch_stops_at_two_lines_worth_of_payloads(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    big = "x" * (600 * 1024)
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as worker:
            ids = [await queue.client.submit("n", big) for _ in range(3)]
            # The first job leaves room under one line's worth, the second crosses it.
            assert job_ids(await worker.request({"type": "request_job", "max": 10})) == ids[:2]
            assert job_ids(await worker.request({"type": "request_job", "max": 10})) == ids[2:]


# -- the prefetching worker -------------------------------------------------------------


async def test_prefetching_worker_takes_and_reports_jobs_in_batches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[str] = []
    writes: list[int] = []

    with trio.fail_after(100):
        async with open_memory_queue() as queue:

            async def double(job: Job) -> int:
                return int(job.payload) * 2

            async def boom(job: Job) -> None:
                raise ValueError("boom")

            async def not_json(job: Job) -> object:
                return {1, 2}

            jobs = [{"name": "double", "payload": i} for i in range(8)]
            jobs[3] = {"name": "boom", "max_attempts": 1}
            jobs[5] = {"name": "not_json", "max_attempts": 1}
            ids = await queue.client.submit_many(jobs)
            worker = worker_through(
                queue,
                lambda s: _Recording(s, sent, writes),
                {"double": double, "boom": boom, "not_json": not_json},
                prefetch=4,
            )
            await queue.nursery.start(worker.run)
            infos = [await queue.client.wait(job_id) for job_id in ids]
            assert [info.result for info in infos] == [0, 2, 4, None, 8, None, 12, 14]
            assert infos[3].error == {"type": "ValueError", "message": "boom"}
            assert infos[5].error is not None
            assert infos[5].error["type"] == "TypeError"
            assert {info.attempt for info in infos} == {1}
            await trio.testing.wait_all_tasks_blocked()  # the worker has read its replies
            stats = worker.statistics()
            assert (stats.completed, stats.failed, stats.lost) == (6, 2, 0)
            # hello; request_job (max 4); 4 reports in one write, the last fetching 4
            # more; 4 reports again; then the last one's fetch finds nothing, and the
            # slot blocks in a plain request_job.
            assert sent.count("job_complete") + sent.count("job_failed") == 8
            assert sent.count("request_job") == 2
            assert writes == [1, 1, 4, 4, 1]


async def test_prefetched_jobs_are_all_heartbeated_while_a_long_batch_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue(lease_timeout=3) as queue:

            async def slow(job: Job) -> int:
                await trio.sleep(2)
                return job.attempt

            ids = await queue.client.submit_many([{"name": "slow"}] * 5)
            worker = await queue.start_worker({"slow": slow}, prefetch=5)
            start = trio.current_time()
            infos = [await queue.client.wait(job_id) for job_id in ids]
            # Ten seconds of work on 3-second leases: nothing expired, nothing re-ran.
            assert trio.current_time() == start + 10
            assert [info.result for info in infos] == [1] * 5
            stats = await queue.client.stats()
            assert (stats.totals["expired"], stats.totals["reassigned"]) == (0, 0)
            assert worker.statistics().lost == 0


async def _lost_worker_jobs_go_back(queue: RunningQueue) -> None:
    started = trio.Event()

    async def hang(job: Job) -> None:
        started.set()
        await trio.sleep_forever()

    async def quick(job: Job) -> int:
        return job.attempt

    ids = await queue.client.submit_many([{"name": "job"}] * 4)
    async with trio.open_nursery() as crash:
        await crash.start(queue.worker({"job": hang}, name="doomed", prefetch=3).run)
        await started.wait()
        stats = await queue.client.stats()
        assert stats.jobs["running"] == 3
        assert stats.workers[0]["name"] == "doomed"
        crash.cancel_scope.cancel()  # the worker dies holding 3 jobs, 2 never started
    await queue.start_worker({"job": quick}, name="taker", prefetch=3)
    infos = [await queue.client.wait(job_id) for job_id in ids]
    assert [info.result for info in infos] == [2, 2, 2, 1]
    assert {info.worker for info in infos} == {"taker"}
    assert (await queue.client.stats()).totals["reassigned"] == 3


async def test_lost_prefetching_worker_gives_back_every_job_it_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            await _lost_worker_jobs_go_back(queue)


async def test_lost_prefetching_worker_gives_back_every_job_it_held_over_tcp(
    tcp_queue: RunningQueue,
) -> None:
    with trio.fail_after(10):
        await _lost_worker_jobs_go_back(tcp_queue)


async def test_prefetched_job_cancelled_before_it_starts_never_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran: list[int] = []
    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            first_running = trio.Event()
            release = trio.Event()

            async def handler(job: Job) -> None:
                ran.append(job.payload)
                if job.payload == 0:
                    first_running.set()
                    await release.wait()

            ids = await queue.client.submit_many([{"name": "h", "payload": i} for i in range(3)])
            worker = await queue.start_worker({"h": handler}, prefetch=3)
            await first_running.wait()
            assert (await queue.client.cancel(ids[1])).state == "cancelled"
            await trio.testing.wait_all_tasks_blocked()
            release.set()
            assert (await queue.client.wait(ids[2])).state == "completed"
            assert ran == [0, 2]
            await trio.testing.wait_all_tasks_blocked()  # the worker has read its replies
            stats = worker.statistics()
            assert (stats.completed, stats.cancelled) == (2, 1)


def test_prefetch_must_be_from_1_to_max_fetch_or_auto() -> None:
    for wrong in (0, MAX_FETCH + 1, "some", True, 2.0):
        with pytest.raises(ValueError, match="prefetch must be 1 to 1000 or 'auto'"):
            Worker(prefetch=wrong)  # type: ignore[arg-type]
    assert Worker(prefetch="auto").prefetch == "auto"


# -- prefetch="auto" --------------------------------------------------------------------


async def test_auto_prefetch_doubles_its_batches_while_a_backlog_of_short_jobs_lasts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[str] = []
    writes: list[int] = []

    with trio.fail_after(100):
        async with open_memory_queue() as queue:

            async def double(job: Job) -> int:
                return int(job.payload) * 2

            ids = await queue.client.submit_many(
                [{"name": "double", "payload": i} for i in range(100)]
            )

            def recording(stream: trio.abc.Stream) -> trio.abc.Stream:
                return _Recording(stream, sent, writes)

            # The default prefetch is "auto".
            worker = worker_through(queue, recording, {"double": double})
            await queue.nursery.start(worker.run)
            infos = [await queue.client.wait(job_id) for job_id in ids]
            await trio.testing.wait_all_tasks_blocked()
    assert [info.result for info in infos] == [2 * i for i in range(100)]
    # hello; a plain request_job (one job); then each batch's reports in one
    # write whose fetch asks for twice as many: 1, 2, 4, ... 32 jobs, then the
    # 37 left (fewer than the 64 asked: the backlog is gone); their fetch finds
    # nothing, and the slot waits in a request_job.
    assert writes == [1, 1, 1, 2, 4, 8, 16, 32, 37, 1]
    assert sent.count("job_complete") == 100
    assert worker.statistics().completed == 100


async def test_auto_prefetch_takes_one_job_at_a_time_when_jobs_are_long(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Three slots, four jobs of a second each, all queued at once: every slot
    # starts one at once (none takes two while another idles), and the fourth
    # starts when the first slot is free.
    started: list[float] = []

    async def slow(job: Job) -> None:
        started.append(trio.current_time())
        await trio.sleep(1)

    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            ids = await queue.client.submit_many([{"name": "slow"}] * 4)
            begin = trio.current_time()
            await queue.start_worker({"slow": slow}, concurrency=3, prefetch="auto")
            for job_id in ids:
                await queue.client.wait(job_id)
            # After a long batch a slot asks for one job again, not two.
            more = await queue.client.submit_many([{"name": "slow"}] * 3)
            again = trio.current_time()
            for job_id in more:
                await queue.client.wait(job_id)
    assert [round(at - begin, 3) for at in started[:4]] == [0.0] * 3 + [1.0]
    assert [round(at - again, 3) for at in started[4:]] == [0.0] * 3


class _LongBatch:
    """A handler whose ``"long"`` job takes a second and the others none, noting starts.

    :meth:`grow` runs seven short jobs first, so an auto worker's ask grows
    to 8 (batches of 1, 2 and 4, all full) and its next batch holds more
    than the long job.
    """

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        #: The (attempt, attempts_spent) each job's handler saw, by payload.
        self.runs: dict[str, tuple[int, int]] = {}

    async def __call__(self, job: Job) -> None:
        self.started[job.payload] = trio.current_time()
        self.runs[job.payload] = (job.attempt, job.attempts_spent)
        if job.payload == "long":
            await trio.sleep(1)

    async def grow(self, client: Client) -> None:
        for job_id in await client.submit_many([{"name": "work", "payload": i} for i in "1234567"]):
            await client.wait(job_id)

    async def a_then_b(self, queue: RunningQueue) -> Worker:
        """Worker "a" (auto), its ask grown to 8; then "b", waiting. Returns "a".

        The next batch submitted goes to "a" whole (up to 8 jobs); "b" runs
        what "a" gives back.
        """
        a = await queue.start_worker({"work": self}, name="a", prefetch="auto")
        await self.grow(queue.client)
        await queue.start_worker({"work": self}, name="b")
        return a


async def test_auto_prefetch_gives_back_what_a_batch_has_not_started_past_its_budget(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobqueue.worker")
    work = _LongBatch()

    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            client = queue.client
            a = await work.a_then_b(queue)
            # a asked first, so its request for 8 takes all four; b waits.
            batch = ["long", "x", "y", "z"]
            begin = trio.current_time()
            ids = await client.submit_many([{"name": "work", "payload": p} for p in batch])
            infos = [await client.wait(job_id) for job_id in ids]
    assert [info.worker for info in infos] == ["a", "b", "b", "b"]
    # Not a second behind the long one: given back once a's batch had run 20 ms.
    assert [round(work.started[p] - begin, 3) for p in batch] == [0.0, 0.02, 0.02, 0.02]
    # A run given back spends none of the job's budget; its number is not reused.
    assert [info.attempt for info in infos] == [1, 2, 2, 2]
    # ...and the handler that runs it next can tell it is no retry.
    assert [work.runs[p] for p in batch] == [(1, 1), (2, 1), (2, 1), (2, 1)]
    assert a.statistics().given_back == 3
    # Routine for an auto batch, so logged at DEBUG (a drain's give-backs are INFO).
    gave = [r for r in caplog.records if r.getMessage().startswith("gave back job")]
    assert [(r.levelno, r.getMessage().endswith("ran past the budget")) for r in gave] == [
        (logging.DEBUG, True)
    ] * 3


async def test_auto_prefetch_reports_what_a_batch_has_finished_once_past_its_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The long job runs third: the two before it are done in no time, and
    # their results must not wait a second for the long one's.
    work = _LongBatch()
    known: dict[str, float] = {}

    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            client = queue.client
            a = await work.a_then_b(queue)
            batch = ["x", "y", "long", "z"]
            begin = trio.current_time()
            ids = await client.submit_many([{"name": "work", "payload": p} for p in batch])

            async def wait(payload: str, job_id: str) -> None:
                await client.wait(job_id)
                known[payload] = round(trio.current_time() - begin, 3)

            async with trio.open_nursery() as nursery:
                for payload, job_id in zip(batch, ids, strict=True):
                    nursery.start_soon(wait, payload, job_id)
            infos = [await client.status(job_id) for job_id in ids]
    assert [info.worker for info in infos] == ["a", "a", "a", "b"]
    assert known == {"x": 0.02, "y": 0.02, "long": 1.0, "z": 0.02}
    stats = a.statistics()
    assert (stats.completed, stats.given_back) == (7 + 3, 1)


async def test_auto_prefetch_leaves_a_held_job_cancelled_meanwhile_to_its_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    work = _LongBatch()

    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            client = queue.client
            a = await work.a_then_b(queue)
            batch = ["long", "x", "y"]
            ids = await client.submit_many([{"name": "work", "payload": p} for p in batch])
            await client.cancel(ids[1])  # while a holds it, not started
            infos = [await client.wait(job_id) for job_id in ids]
            await trio.testing.wait_all_tasks_blocked()  # a has settled what it held
    assert [(info.state, info.worker) for info in infos] == [
        ("completed", "a"),
        ("cancelled", "a"),
        ("completed", "b"),
    ]
    assert "x" not in work.started
    stats = a.statistics()
    assert (stats.given_back, stats.cancelled, stats.lost) == (1, 1, 0)


class _DropFirst(StreamWrapper):
    """A worker's stream that loses, on the way out, the first line ``lose`` picks.

    ``dropped`` is shared by the worker's connections, so one line is lost in all.
    """

    def __init__(
        self, inner: trio.abc.Stream, dropped: list[bytes], lose: Callable[[bytes], bool]
    ) -> None:
        super().__init__(inner)
        self._dropped = dropped
        self._lose = lose

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        kept = []
        for line in bytes(data).splitlines(keepends=True):
            if not self._dropped and self._lose(line):
                self._dropped.append(line)
            else:
                kept.append(line)
        if kept:
            await self.inner.send_all(b"".join(kept))

    async def send_eof(self) -> None:  # pragma: no cover - not used by the worker
        raise NotImplementedError


def _is_release(line: bytes) -> bool:
    return b'"type":"release_job"' in line


@pytest.mark.parametrize("lost", ["release_job", "job_complete"])
async def test_an_unanswered_cut_of_a_batch_ends_the_connection_not_the_worker(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, lost: str
) -> None:
    # An auto batch runs past its budget; what the slot's watcher sends then
    # (the give-back of y and z, or the report of x, which ran) goes
    # unanswered, lost on the way out. After the lease's time the slot gives
    # up on the connection, as for any overdue reply, and reconnects; the
    # worker goes on, and no job is lost.
    dropped: list[bytes] = []
    first: list[bytes] = []
    work = _LongBatch()

    def lose(line: bytes) -> bool:
        if lost == "release_job":
            return _is_release(line)
        return bool(first) and first[0] in line and b'"type":"job_complete"' in line

    with trio.fail_after(1000):
        async with open_memory_queue(lease_timeout=10) as queue:
            client = queue.client
            worker = worker_through(
                queue, lambda s: _DropFirst(s, dropped, lose), {"work": work}, prefetch="auto"
            )
            await queue.nursery.start(worker.run)
            await work.grow(client)
            ids = await client.submit_many(
                [{"name": "work", "payload": p} for p in ["x", "long", "y", "z"]]
            )
            first.append(ids[0].encode())
            infos = [await client.wait(job_id) for job_id in ids]
    assert len(dropped) == 1
    assert f'"type":"{lost}"'.encode() in dropped[0]
    assert [info.state for info in infos] == ["completed"] * 4
    assert any("lost the queue" in r.getMessage() for r in caplog.records)


async def test_an_unanswered_give_back_in_a_drain_ends_the_connection_not_the_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dropped: list[bytes] = []
    first = trio.Event()

    async def work(job: Job) -> None:
        first.set()
        await trio.sleep(60)

    with trio.fail_after(1000):
        async with open_memory_queue(lease_timeout=10) as queue:
            ids = await queue.client.submit_many([{"name": "work"}] * 3)
            worker = worker_through(
                queue, lambda s: _DropFirst(s, dropped, _is_release), {"work": work}, prefetch=3
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.run)
                await first.wait()
                worker.drain(timeout=30)
            # run() returned: the connection ended when the give-back went
            # unanswered, and the server took every job back.
            states = [(await queue.client.status(job_id)).state for job_id in ids]
    assert len(dropped) == 1
    assert states == ["pending"] * 3


async def test_auto_prefetch_takes_single_jobs_from_a_shallow_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A producer that waits for each job's result: nothing is ever waiting
    # behind the job taken, so every report is a write of its own.
    writes: list[int] = []
    sent: list[str] = []

    async def quick(job: Job) -> int:
        return int(job.payload)

    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            worker = worker_through(
                queue, lambda s: _Recording(s, sent, writes), {"quick": quick}, prefetch="auto"
            )
            await queue.nursery.start(worker.run)
            results = []
            for i in range(20):
                job_id = await queue.client.submit("quick", i)
                results.append((await queue.client.wait(job_id)).result)
            await trio.testing.wait_all_tasks_blocked()
    assert results == list(range(20))
    assert writes == [1] * 22  # hello, request_job, then one report a job
    assert sent.count("job_complete") == 20


class _DropNotices(StreamWrapper):
    """A worker's stream that loses every ``job_cancelled`` notice on the way in.

    In-memory streams hand over each write whole, so whole lines can be dropped.
    """

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        while True:
            data = bytes(await self.inner.receive_some(max_bytes))
            if not data:
                return data
            kept = b"".join(
                line
                for line in data.splitlines(keepends=True)
                if b'"type":"job_cancelled"' not in line
            )
            if kept:
                return kept

    async def send_eof(self) -> None:  # pragma: no cover - not used by the worker
        raise NotImplementedError


async def test_prefetched_job_whose_heartbeat_is_refused_is_given_up(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []
    with trio.fail_after(100):
        async with open_memory_queue(lease_timeout=3) as queue:

            async def slow(job: Job) -> int:
                ran.append(job.payload)
                await trio.sleep(2)
                return int(job.payload)

            ids = await queue.client.submit_many([{"name": "slow", "payload": i} for i in range(3)])
            worker = worker_through(queue, _DropNotices, {"slow": slow}, prefetch=3)
            await queue.nursery.start(worker.run)
            await trio.sleep(0.5)
            # The worker never hears of this cancel: its next heartbeat (at 1 s)
            # is refused, and it gives the job up before it starts.
            assert (await queue.client.cancel(ids[1])).state == "cancelled"
            assert (await queue.client.wait(ids[2])).result == 2
            await trio.testing.wait_all_tasks_blocked()
            assert ran == [0, 2]
            stats = worker.statistics()
            assert (stats.completed, stats.lost, stats.cancelled) == (2, 1, 0)
            assert any("gave up job" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("prefetch", [1, 3])
async def test_a_failure_is_reported_with_as_much_text_as_the_server_keeps(
    autojump_clock: trio.testing.MockClock, prefetch: int
) -> None:
    # Both batch sizes report through the one place that cuts the error
    # text, at the server's own limit (it once cut at 2,000 of 4,096).
    async def wordy(job: Job) -> None:
        raise ValueError("x" * (MAX_ERROR_CHARS + 100))

    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            worker = await queue.start_worker({"wordy": wordy}, prefetch=prefetch)
            job_id = await queue.client.submit("wordy", max_attempts=1)
            info = await queue.client.wait(job_id)
            assert info.error == {"type": "ValueError", "message": "x" * MAX_ERROR_CHARS}
            assert worker.statistics().failed == 1
