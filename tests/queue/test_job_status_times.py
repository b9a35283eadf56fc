"""``status`` over the wire: a job's times, its payload when asked, in virtual time."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

import jobqueue.asyncio
import jobqueue.sync
from jobqueue._limits import MAX_STORED_BYTES
from jobqueue.testing import open_memory_queue
from tests import helpers as support
from tests.helpers import take

if TYPE_CHECKING:
    from tests.helpers import RawOpener


async def test_status_reports_each_moment_of_a_job(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue:
            await trio.sleep(7)
            job_id = await queue.client.submit("work", {"n": 1}, delay=3)
            scheduled = await queue.client.status(job_id)
            assert scheduled.state == "scheduled"
            assert scheduled.submitted_at is not None
            assert scheduled.run_at is not None
            assert scheduled.run_at - scheduled.submitted_at == pytest.approx(3.0, abs=1e-5)
            assert (scheduled.started_at, scheduled.finished_at) == (None, None)
            # Wall-clock Unix seconds (virtual time has moved only seconds).
            assert abs(scheduled.submitted_at - time.time()) < 60
            await trio.sleep(5)
            async with raw_connection(queue) as worker:
                assigned = await take(worker)
                await trio.sleep(2)
                done = await worker.request(
                    {"type": "job_complete", "job_id": job_id, "attempt": 1, "result": "done"}
                )
                assert done["type"] == "ok", done
            info = await queue.client.status(job_id)
    assert info.state == "completed"
    assert (info.run_at, info.payload) == (None, None)
    assert info.submitted_at is not None
    assert info.started_at is not None
    assert info.finished_at is not None
    assert info.started_at - info.submitted_at == pytest.approx(5.0, abs=1e-5)
    assert info.finished_at - info.started_at == pytest.approx(2.0, abs=1e-5)
    assert assigned["job_id"] == job_id


async def test_the_payload_comes_only_when_asked(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as raw:
            job_id = await queue.client.submit("work", {"rows": [1, 2, 3]})
            assert (await queue.client.status(job_id)).payload is None
            plain = await raw.request({"type": "job_status", "job_id": job_id})
            assert "payload" not in plain
            asked = await queue.client.status(job_id, payload=True)
            assert asked.payload == {"rows": [1, 2, 3]}
            bad = await raw.request({"type": "job_status", "job_id": job_id, "payload": "yes"})
            assert bad["type"] == "error"
            assert bad["code"] == "bad_request"
            # The connection goes on after the refusal.
            again = await raw.request({"type": "job_status", "job_id": job_id, "payload": True})
            assert again["payload"] == {"rows": [1, 2, 3]}


async def test_a_result_too_big_beside_the_payload_is_left_out_and_said_so(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    big = "x" * (MAX_STORED_BYTES - 10)
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as worker:
            job_id = await queue.client.submit("work", big)
            await take(worker)
            await worker.request(
                {"type": "job_complete", "job_id": job_id, "attempt": 1, "result": big}
            )
            both = await queue.client.status(job_id, payload=True)
            plain = await queue.client.status(job_id)
    assert (both.payload, both.result, both.result_omitted) == (big, None, True)
    assert (plain.result, plain.result_omitted) == (big, False)


async def test_a_failed_job_shows_when_it_failed_until_it_is_retried(
    autojump_clock: trio.testing.MockClock, raw_connection: RawOpener
) -> None:
    with trio.fail_after(100):
        async with open_memory_queue() as queue, raw_connection(queue) as worker:
            job_id = await queue.client.submit("work", max_attempts=1)
            await take(worker)
            await trio.sleep(4)
            failed = await worker.request(
                {
                    "type": "job_failed", "job_id": job_id, "attempt": 1,
                    "error": {"type": "ValueError", "message": "no"},
                }
            )  # fmt: skip
            assert failed["type"] == "ok", failed
            dead = await queue.client.status(job_id)
            revived = await queue.client.retry(job_id)
    assert dead.state == "failed"
    assert dead.finished_at is not None
    assert dead.started_at is not None
    assert dead.finished_at - dead.started_at == pytest.approx(4.0, abs=1e-5)
    assert (revived.state, revived.finished_at) == ("pending", None)


def test_the_blocking_and_asyncio_clients_ask_for_the_payload_too() -> None:
    with (
        support.QueueThread() as running,
        jobqueue.sync.Client.connect(*running.address, timeout=5) as client,
    ):
        job_id = client.submit("later", [1, "two"], delay=60)
        assert client.status(job_id).payload is None
        shown = client.status(job_id, payload=True)
        assert shown.payload == [1, "two"]
        assert shown.run_at is not None
        assert shown.submitted_at is not None
        assert shown.run_at - shown.submitted_at == pytest.approx(60.0, abs=1e-3)

        async def from_asyncio() -> object:
            async with jobqueue.asyncio.Client.connect(*running.address) as other:
                return (await other.status(job_id, payload=True)).payload

        assert asyncio.run(from_asyncio()) == [1, "two"]
