"""``release_job`` on the wire, against a real server over loopback TCP."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobqueue.testing import RunningQueue
    from tests.helpers import RawOpener


async def test_holder_releases_one_job_and_it_goes_out_again(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    client = tcp_queue.client
    first = await client.submit("sleep", {"seconds": 1})
    second = await client.submit("sleep", {"seconds": 2})
    async with raw_connection(tcp_queue) as worker:
        assigned = await worker.request({"type": "request_job"})
        assert (assigned["job_id"], assigned["attempt"]) == (first, 1)
        reply = await worker.request({"type": "release_job", "job_id": first, "attempt": 1})
        assert reply == {"type": "ok"}
        status = await client.status(first)
        assert (status.state, status.attempt, status.error) == ("pending", 1, None)
        # Back at its original place, ahead of the job submitted after it.
        again = await worker.request({"type": "request_job"})
        assert (again["job_id"], again["attempt"]) == (first, 2)
        # The released run spent nothing: this run is the budget's first.
        assert (assigned.get("attempts_spent"), again["attempts_spent"]) == (None, 1)
        # The released run's number is over: its reports are refused.
        stale = await worker.request({"type": "job_complete", "job_id": first, "attempt": 1})
        assert stale["code"] == "not_leased"
        done = await worker.request({"type": "job_complete", "job_id": first, "attempt": 2})
        assert done == {"type": "ok"}
    assert (await client.status(second)).state == "pending"


async def test_batch_release_and_its_refusals(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    client = tcp_queue.client
    ids = [await client.submit("sleep", None, max_attempts=1) for _ in range(3)]
    async with raw_connection(tcp_queue) as holder, raw_connection(tcp_queue) as other:
        taken = await holder.request({"type": "request_job", "max": 3})
        assert [job["job_id"] for job in taken["jobs"]] == ids
        leases = [{"job_id": job_id, "attempt": 1} for job_id in ids]

        # Not the holder: not_leased, and nothing changes.
        refused = await other.request({"type": "release_job", "jobs": leases})
        assert refused["type"] == "error"
        assert refused["code"] == "not_leased"
        assert refused["message"].startswith("job 0: ")
        refused = await other.request({"type": "release_job", "job_id": ids[0]})
        assert refused["code"] == "not_leased"
        # One of the batch is not held any more: the whole batch is refused.
        await client.cancel(ids[1])
        notice = await holder.read_reply()
        assert notice == {"type": "job_cancelled", "job_id": ids[1], "attempt": 1}
        refused = await holder.request({"type": "release_job", "jobs": leases})
        assert (refused["code"], refused["message"][:7]) == ("not_leased", "job 1: ")
        assert {(await client.status(i)).state for i in (ids[0], ids[2])} == {"running"}
        # Malformed forms.
        for bad in (
            {"type": "release_job"},
            {"type": "release_job", "jobs": []},
            {"type": "release_job", "jobs": [leases[0], leases[0]]},
            {"type": "release_job", "job_id": ids[0], "jobs": [leases[0]]},
            {"type": "release_job", "jobs": [{"attempt": 1}]},
        ):
            assert (await holder.request(bad))["code"] == "bad_request", bad
        unknown = await holder.request({"type": "release_job", "job_id": "nope"})
        assert unknown["code"] == "unknown_job"

        ok = await holder.request({"type": "release_job", "jobs": [leases[2], leases[0]]})
        assert ok == {"type": "ok"}
        for job_id in (ids[0], ids[2]):
            status = await client.status(job_id)
            # max_attempts 1, released: the one attempt is still there.
            assert (status.state, status.attempt, status.max_attempts) == ("pending", 1, 1)
        stats = await client.stats()
        assert stats.workers == []
        assert stats.totals["reassigned"] == 0


async def test_a_release_feeds_a_waiting_worker_at_once(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    job_id = await tcp_queue.client.submit("sleep", None)
    async with raw_connection(tcp_queue) as holder, raw_connection(tcp_queue) as waiter:
        assert (await holder.request({"type": "request_job"}))["job_id"] == job_id
        await waiter.send({"type": "request_job", "wait": 60})
        assert await holder.request({"type": "release_job", "job_id": job_id}) == {"type": "ok"}
        assigned = await waiter.read_reply()
        assert (assigned["job_id"], assigned["attempt"]) == (job_id, 2)
