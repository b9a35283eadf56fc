"""The queue over real TCP on 127.0.0.1: wire contract, failures, bad input, many peers.

Real sockets mean real time, so nothing here sleeps to let something happen:
every test waits on a reply, an event, or (where the only observable is the
server's own view) polls ``stats`` until it shows the condition. Every test is
bounded with ``trio.fail_after`` so a bug fails it instead of hanging it.
Short leases (0.5 s) are the only real-time waits, where expiry is the point.
"""

from __future__ import annotations

import logging
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.lowlevel

from jobqueue import Client, ConnectionLost, Job, RequestError, Worker, serve_queue
from jobqueue._json import encode
from jobqueue._limits import MAX_LINE_BYTES
from jobqueue.testing import RunningQueue, open_test_queue
from tests.helpers import free_port, stats_when, take

if TYPE_CHECKING:
    from tests.helpers import RawConnection, RawOpener

LOCALHOST = "127.0.0.1"


async def park(client: Client, conn: RawConnection, *, wait: float, waiting: int) -> None:
    """Send ``request_job`` with ``wait`` on ``conn``; return once the server has parked it."""
    await conn.send({"type": "request_job", "wait": wait})
    await stats_when(client, lambda s: s.waiting_workers == waiting)


async def submit(conn: RawConnection, name: str = "job", payload: Any = None) -> str:
    reply = await conn.request({"type": "submit_job", "name": name, "payload": payload})
    assert reply["type"] == "job_submitted", reply
    job_id = reply["job_id"]
    assert isinstance(job_id, str)
    return job_id


# -- the server entry point and the wire contract -------------------------------------


async def test_serve_queue_returns_bound_address(
    nursery: trio.Nursery, raw_connection: RawOpener
) -> None:
    with trio.fail_after(5):
        address = await nursery.start(partial(serve_queue, 0, host=LOCALHOST, lease_timeout=12.5))
        host, port = address
        assert host == LOCALHOST
        assert isinstance(port, int)
        assert port > 0
        # Accepting by the time start() returned: no retry needed.
        async with raw_connection(address) as conn:
            reply = await conn.request({"type": "hello", "name": "probe"})
    assert reply["type"] == "hello"
    assert reply["server"] == "jobqueue"
    assert reply["lease_timeout"] == 12.5


async def test_wire_contract_submit_assign_complete(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as client, raw_connection(tcp_queue) as worker:
            payload = {"x": [1, 2.5, None, "é"], "nested": {"ok": True}}
            reply = await client.request({"type": "submit_job", "name": "echo", "payload": payload})
            assert reply.keys() == {"type", "job_id"}
            assert reply["type"] == "job_submitted"
            job_id = reply["job_id"]

            status = await client.request({"type": "job_status", "job_id": job_id})
            assert status == {
                "type": "job_status",
                "job_id": job_id,
                "name": "echo",
                "state": "pending",
                "attempt": 0,
                "queue": "default",
                "priority": 0,
                "max_attempts": 5,
            }

            assert (await worker.request({"type": "hello", "name": "w1"}))["type"] == "hello"
            assigned = await worker.request({"type": "request_job"})
            assert assigned == {
                "type": "job_assigned",
                "job_id": job_id,
                "name": "echo",
                "payload": payload,
                "attempt": 1,
                "lease_timeout": 30.0,
            }

            status = await client.request({"type": "job_status", "job_id": job_id})
            assert status["state"] == "running"
            assert status["attempt"] == 1
            assert status["worker"] == "w1"

            beat = await worker.request({"type": "heartbeat", "job_id": job_id, "attempt": 1})
            assert beat == {"type": "ok", "lease_timeout": 30.0}

            done = await worker.request(
                {"type": "job_complete", "job_id": job_id, "attempt": 1, "result": {"n": 3}}
            )
            assert done == {"type": "ok"}

            status = await client.request({"type": "job_status", "job_id": job_id})
            assert status == {
                "type": "job_status",
                "job_id": job_id,
                "name": "echo",
                "state": "completed",
                "attempt": 1,
                "queue": "default",
                "priority": 0,
                "max_attempts": 5,
                "worker": "w1",
                "result": {"n": 3},
            }
            # Completed means never handed out again.
            assert await worker.request({"type": "request_job"}) == {"type": "no_job"}
            assert await worker.request({"type": "request_job", "wait": 0}) == {"type": "no_job"}


async def test_request_job_wait_blocks_until_a_submission_elsewhere(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as worker, raw_connection(tcp_queue) as client:
            await park(tcp_queue.client, worker, wait=10, waiting=1)
            job_id = await submit(client, "late", {"k": 1})
            # 10 s wait, 5 s budget: only the submission can have answered it.
            assigned = await worker.read_reply()
    assert assigned["type"] == "job_assigned"
    assert assigned["job_id"] == job_id
    assert assigned["payload"] == {"k": 1}
    assert assigned["attempt"] == 1


async def test_jobs_are_handed_out_in_submission_order(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as client, raw_connection(tcp_queue) as worker:
            ids = [await submit(client, f"job{i}", i) for i in range(20)]
            taken = [await take(worker) for _ in ids]
            assert await worker.request({"type": "request_job"}) == {"type": "no_job"}
    assert [job["job_id"] for job in taken] == ids
    assert [job["payload"] for job in taken] == list(range(20))
    assert {job["attempt"] for job in taken} == {1}


# -- lost workers ------------------------------------------------------------------------


async def test_crashed_worker_job_goes_straight_to_a_blocked_worker(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    client = tcp_queue.client
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as b:
            await b.request({"type": "hello", "name": "B"})
            async with raw_connection(tcp_queue) as a:
                job_id = await client.submit("work", 1)
                assert (await take(a))["job_id"] == job_id
                await park(client, b, wait=10, waiting=1)
            # `a` is closed abruptly here: no job_complete, no goodbye.
            # The 30 s lease cannot explain a reassignment within 1 s.
            with trio.fail_after(1):
                again = await b.read_reply()
            info = await client.status(job_id)
            stats = await client.stats()
    assert again["type"] == "job_assigned"
    assert again["job_id"] == job_id
    assert again["attempt"] == 2
    assert (info.state, info.attempt, info.worker) == ("running", 2, "B")
    assert stats.totals["reassigned"] == 1
    assert stats.totals["expired"] == 0


async def test_crashed_worker_job_keeps_its_place_ahead_of_later_jobs(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    client = tcp_queue.client
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as a:
            first = await client.submit("work", "first")
            assert (await take(a))["job_id"] == first
            later = [await client.submit("work", f"later{i}") for i in range(3)]
        await stats_when(client, lambda s: s.jobs["pending"] == 4)
        async with raw_connection(tcp_queue) as b:
            order = [await take(b) for _ in range(4)]
    assert [(job["job_id"], job["attempt"]) for job in order] == [
        (first, 2),
        *((job_id, 1) for job_id in later),
    ]


async def test_blocked_worker_that_disconnects_is_forgotten(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    client = tcp_queue.client
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as live:
            async with raw_connection(tcp_queue) as doomed:
                # `doomed` parks first, so it would be first in line for a job.
                await park(client, doomed, wait=10, waiting=1)
                await park(client, live, wait=10, waiting=2)
            stats = await stats_when(client, lambda s: s.waiting_workers == 1)
            assert stats.connections == 2  # the queue's own client and `live`
            job_id = await client.submit("work")
            assigned = await live.read_reply()
            stats = await client.stats()
    assert (assigned["job_id"], assigned["attempt"]) == (job_id, 1)
    assert stats.totals["reassigned"] == 0


async def test_silent_worker_loses_its_lease_to_a_blocked_worker(
    raw_connection: RawOpener,
) -> None:
    lease = 0.5
    with trio.fail_after(10):
        async with (
            open_test_queue(lease_timeout=lease) as queue,
            raw_connection(queue) as a,
            raw_connection(queue) as b,
        ):
            client = queue.client
            await a.request({"type": "hello", "name": "A"})
            await b.request({"type": "hello", "name": "B"})
            job_id = await client.submit("work", {"n": 1})
            before_assign = trio.current_time()
            assert (await take(a))["attempt"] == 1
            # A now stays silent with its connection open. B waits far longer
            # than the lease, so what answers it is the expiry.
            await b.send({"type": "request_job", "wait": 10})
            again = await b.read_reply()
            assert trio.current_time() - before_assign >= lease
            assert (again["type"], again["job_id"], again["attempt"]) == ("job_assigned", job_id, 2)

            late = await a.request(
                {"type": "job_complete", "job_id": job_id, "attempt": 1, "result": "A"}
            )
            assert (late["type"], late["code"]) == ("error", "not_leased")
            late = await a.request({"type": "job_complete", "job_id": job_id, "result": "A"})
            assert (late["type"], late["code"]) == ("error", "not_leased")
            beat = await a.request({"type": "heartbeat", "job_id": job_id, "attempt": 1})
            assert (beat["type"], beat["code"]) == ("error", "not_leased")

            ok = await b.request(
                {"type": "job_complete", "job_id": job_id, "attempt": 2, "result": "B"}
            )
            assert ok == {"type": "ok"}
            info = await client.status(job_id)
            assert (info.state, info.attempt, info.worker, info.result) == (
                "completed",
                2,
                "B",
                "B",
            )
            assert await a.request({"type": "request_job"}) == {"type": "no_job"}
            assert await b.request({"type": "request_job"}) == {"type": "no_job"}
            stats = await client.stats()
            assert stats.totals["reassigned"] == 1
            assert stats.totals["expired"] == 1
            assert stats.totals["completed"] == 1


async def test_completion_must_come_from_the_current_lease(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as holder, raw_connection(tcp_queue) as other:
            job_id = await submit(other)
            assert (await take(holder))["attempt"] == 1

            async def code_of(conn: RawConnection, message: dict[str, Any]) -> str:
                reply = await conn.request(message)
                assert reply["type"] == "error", reply
                assert isinstance(reply["message"], str)
                assert reply["message"]
                code: str = reply["code"]
                return code

            complete = {"type": "job_complete", "job_id": job_id, "result": 1}
            assert await code_of(holder, {**complete, "attempt": 2}) == "not_leased"
            assert await code_of(holder, {"type": "heartbeat", "job_id": job_id, "attempt": 2}) == (
                "not_leased"
            )
            assert await code_of(other, complete) == "not_leased"
            assert await code_of(other, {**complete, "attempt": 1}) == "not_leased"
            failed = {
                "type": "job_failed",
                "job_id": job_id,
                "error": {"type": "E", "message": "m"},
            }
            assert await code_of(other, failed) == "not_leased"
            assert await code_of(other, {**complete, "job_id": "no-such-job"}) == "unknown_job"
            assert await code_of(other, {"type": "job_status", "job_id": "nope"}) == "unknown_job"
            assert await code_of(other, {"type": "wait_job", "job_id": "nope"}) == "unknown_job"

            # None of that disturbed the real lease.
            status = await other.request({"type": "job_status", "job_id": job_id})
            assert (status["state"], status["attempt"]) == ("running", 1)
            assert await holder.request({**complete, "attempt": 1}) == {"type": "ok"}
            # A finished job cannot be finished again, by anyone.
            assert await code_of(holder, {**complete, "attempt": 1}) == "not_leased"
            assert await code_of(holder, {**failed, "attempt": 1}) == "not_leased"
            status = await other.request({"type": "job_status", "job_id": job_id})
            assert (status["state"], status["result"]) == ("completed", 1)


# -- bad input -------------------------------------------------------------------------

BAD_LINES = [
    pytest.param(b"{not json", "bad_json", id="malformed"),
    pytest.param(b'{"type": "stats", "x": NaN}', "bad_json", id="nan"),
    pytest.param(
        b'{"type": "submit_job", "name": "a", "payload": -Infinity}', "bad_json", id="infinity"
    ),
    pytest.param(b'{"type": "st\xffats"}', "bad_json", id="invalid-utf8"),
    pytest.param(b'{"type": "stats"} trailing', "bad_json", id="trailing-garbage"),
    pytest.param(b"[" * 100 + b"]" * 100, "bad_json", id="too-deep"),
    pytest.param(b'{"type": "stats", "n": ' + b"9" * 5000 + b"}", "bad_json", id="huge-int"),
    pytest.param(b'[{"type": "stats"}]', "bad_request", id="array"),
    pytest.param(b'"stats"', "bad_request", id="string"),
    pytest.param(b"null", "bad_request", id="null"),
    pytest.param(b'{"name": "x"}', "bad_request", id="missing-type"),
    pytest.param(b'{"type": 5}', "bad_request", id="non-string-type"),
    pytest.param(b'{"type": "launch_missiles"}', "unknown_type", id="unknown-type"),
    pytest.param(b'{"type": "job_assigned"}', "unknown_type", id="reply-type"),
    pytest.param(b'{"type": "submit_job"}', "bad_request", id="submit-no-name"),
    pytest.param(b'{"type": "submit_job", "name": 5}', "bad_request", id="submit-int-name"),
    pytest.param(
        b'{"type": "submit_job", "name": "' + b"n" * 201 + b'"}',
        "bad_request",
        id="submit-long-name",
    ),
    pytest.param(b'{"type": "request_job", "wait": "soon"}', "bad_request", id="wait-string"),
    pytest.param(b'{"type": "request_job", "wait": -1}', "bad_request", id="wait-negative"),
    pytest.param(b'{"type": "request_job", "wait": true}', "bad_request", id="wait-bool"),
    pytest.param(b'{"type": "request_job", "wait": 1e9}', "bad_request", id="wait-huge"),
    pytest.param(b'{"type": "job_complete", "job_id": 7}', "bad_request", id="int-job-id"),
    pytest.param(
        b'{"type": "job_complete", "job_id": "x", "attempt": 0}', "bad_request", id="attempt-zero"
    ),
    pytest.param(
        b'{"type": "job_complete", "job_id": "x", "attempt": 1.5}',
        "bad_request",
        id="attempt-float",
    ),
    pytest.param(
        b'{"type": "heartbeat", "job_id": "x", "attempt": "1"}', "bad_request", id="attempt-string"
    ),
    pytest.param(
        b'{"type": "job_failed", "job_id": "x", "error": "boom"}', "bad_request", id="error-string"
    ),
    pytest.param(
        b'{"type": "job_failed", "job_id": "x", "error": {"message": "m"}}',
        "bad_request",
        id="error-no-type",
    ),
    pytest.param(b'{"type": "hello", "name": ["w"]}', "bad_request", id="hello-list-name"),
    pytest.param(b'{"type": "job_status"}', "bad_request", id="status-no-id"),
    pytest.param(
        b'{"type": "wait_job", "job_id": "x", "wait": "later"}',
        "bad_request",
        id="wait-job-bad-wait",
    ),
]


@pytest.mark.parametrize(("line", "code"), BAD_LINES)
async def test_bad_line_gets_an_error_and_the_connection_keeps_working(
    tcp_queue: RunningQueue, raw_connection: RawOpener, line: bytes, code: str
) -> None:
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as conn:
            await conn.send_line(line)
            error = await conn.read_reply()
            assert error["type"] == "error"
            assert error["code"] == code, error
            assert isinstance(error["message"], str)
            assert error["message"]
            # Same connection, next request: its proper reply.
            job_id = await submit(conn, "after", [1])
            status = await conn.request({"type": "job_status", "job_id": job_id})
            assert status["state"] == "pending"
        stats = await tcp_queue.client.stats()
    assert stats.totals["submitted"] == 1  # the bad line submitted nothing


async def test_oversized_line_is_refused_and_the_connection_keeps_working(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    def padded(message: bytes, total: int) -> bytes:
        """``message`` (a JSON object) grown to exactly ``total`` bytes by an ignored field.

        The pad is not a payload: payloads have a tighter limit of their own.
        """
        head = message[:-1] + b',"pad":"'
        return head + b"x" * (total - len(head) - 2) + b'"}'

    submit = b'{"type":"submit_job","name":"big"}'
    with trio.fail_after(10):
        async with raw_connection(tcp_queue) as conn:
            # One byte over, then lines exactly at the limit, then a small one.
            await conn.send_raw(
                padded(submit, MAX_LINE_BYTES + 1)
                + b"\n"
                + padded(submit, MAX_LINE_BYTES)
                + b"\n"
                + padded(b'{"type":"stats"}', MAX_LINE_BYTES)
                + b"\n"
                + b'{"type":"stats"}\n'
            )
            too_large = await conn.read_reply()
            assert (too_large["type"], too_large["code"]) == ("error", "message_too_large")
            assert (await conn.read_reply())["type"] == "job_submitted"
            assert (await conn.read_reply())["type"] == "stats"
            stats = await conn.read_reply()
            assert stats["type"] == "stats"
            assert stats["totals"]["submitted"] == 1
            # Far over the limit, in pieces, no newline for a while.
            for _ in range(5):
                await conn.send_raw(b"y" * (MAX_LINE_BYTES // 2))
            await conn.send_raw(b'"}\n{"type":"stats"}\n')
            too_large = await conn.read_reply()
            assert (too_large["type"], too_large["code"]) == ("error", "message_too_large")
            assert (await conn.read_reply())["type"] == "stats"


async def test_oversized_line_behind_a_blocked_request(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    # While a connection is parked in request_job the server keeps reading it
    # (to notice a close); a huge pipelined line must neither be buffered
    # without bound nor break the parked request.
    with trio.fail_after(10):
        async with raw_connection(tcp_queue) as conn:
            await park(tcp_queue.client, conn, wait=10, waiting=1)
            await conn.send_raw(b"z" * (MAX_LINE_BYTES + 100_000) + b'\n{"type":"stats"}\n')
            job_id = await tcp_queue.client.submit("work")
            assigned = await conn.read_reply()
            assert (assigned["type"], assigned["job_id"]) == ("job_assigned", job_id)
            too_large = await conn.read_reply()
            assert (too_large["type"], too_large["code"]) == ("error", "message_too_large")
            stats = await conn.read_reply()
            assert stats["type"] == "stats"
            assert stats["jobs"]["running"] == 1


async def test_pipelined_requests_are_answered_in_order(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as conn:
            await conn.send_raw(
                b'{"type":"hello","name":"piper"}\n'
                b'{"type":"submit_job","name":"a","payload":1}\n'
                b"\n"  # blank lines are skipped
                b'{"type":"submit_job","name":"b","payload":2}\r\n'  # CRLF is fine
                b"garbage\n"
                b'{"type":"request_job"}\n'
                b'{"type":"request_job","wait":5}\n'  # may block, but a job is there
                b'{"type":"request_job"}\n'
                b'{"type":"stats"}\n'
            )
            replies = [await conn.read_reply() for _ in range(8)]
    types = [reply["type"] for reply in replies]
    assert types == [
        "hello",
        "job_submitted",
        "job_submitted",
        "error",
        "job_assigned",
        "job_assigned",
        "no_job",
        "stats",
    ]
    assert replies[3]["code"] == "bad_json"
    assert (replies[4]["name"], replies[4]["payload"]) == ("a", 1)
    assert (replies[5]["name"], replies[5]["payload"]) == ("b", 2)
    assert replies[7]["jobs"]["running"] == 2
    assert replies[7]["workers"] == [
        {"name": "piper", "jobs": [replies[4]["job_id"], replies[5]["job_id"]], "waiting": False}
    ]


async def test_hundreds_of_requests_in_one_send(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    count = 300
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as client, raw_connection(tcp_queue) as worker:
            await client.send_raw(
                b"".join(
                    encode({"type": "submit_job", "name": "p", "payload": i}) for i in range(count)
                )
                + encode({"type": "stats"})
            )
            submitted = [await client.read_reply() for _ in range(count)]
            stats = await client.read_reply()
            await worker.send_raw(encode({"type": "request_job"}) * (count + 1))
            assigned = [await worker.read_reply() for _ in range(count + 1)]
    assert {reply["type"] for reply in submitted} == {"job_submitted"}
    assert (stats["type"], stats["totals"]["submitted"]) == ("stats", count)
    assert [reply["job_id"] for reply in assigned[:-1]] == [r["job_id"] for r in submitted]
    assert [reply["payload"] for reply in assigned[:-1]] == list(range(count))
    assert assigned[-1] == {"type": "no_job"}


async def test_requests_pipelined_behind_a_blocked_request_wait_their_turn(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as conn:
            await conn.send_raw(b'{"type":"request_job","wait":10}\n{"type":"stats"}\n')
            await stats_when(tcp_queue.client, lambda s: s.waiting_workers == 1)
            job_id = await tcp_queue.client.submit("work")
            assigned = await conn.read_reply()
            stats = await conn.read_reply()
    assert (assigned["type"], assigned["job_id"]) == ("job_assigned", job_id)
    assert stats["type"] == "stats"
    assert (stats["waiting_workers"], stats["jobs"]["running"]) == (0, 1)


async def test_half_sent_line_then_close_does_not_hurt_the_server(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    client = tcp_queue.client
    with trio.fail_after(5):
        baseline = (await client.stats()).connections
        async with raw_connection(tcp_queue) as gone:
            await gone.send_raw(b'{"type":"submit_job","na')
        # Half a line and a half-close: the peer is told, then the server hangs up.
        async with raw_connection(tcp_queue) as polite:
            await polite.send_raw(b'{"type":"stats"}\n{"type":"submit_job","name":"x"')
            assert isinstance(polite.stream, trio.SocketStream)
            await polite.stream.send_eof()
            assert (await polite.read_reply())["type"] == "stats"
            incomplete = await polite.read_reply()
            assert (incomplete["type"], incomplete["code"]) == ("error", "incomplete_message")
            with pytest.raises(EOFError):
                await polite.read_reply()
        stats = await stats_when(client, lambda s: s.connections == baseline)
        assert stats.totals["submitted"] == 0
        job_id = await client.submit("still-fine")
        assert (await client.status(job_id)).state == "pending"


async def test_garbage_from_one_peer_does_not_disturb_another_mid_protocol(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    client = tcp_queue.client
    with trio.fail_after(10):
        async with (
            raw_connection(tcp_queue) as holder,
            raw_connection(tcp_queue) as waiter,
        ):
            first = await client.submit("work", 1)
            assert (await take(holder))["job_id"] == first
            await park(client, waiter, wait=10, waiting=1)

            async with raw_connection(tcp_queue) as vandal:
                await vandal.send_raw(
                    b'\x00\xff\xfe garbage\n[1,2,3]\n{"type":"nope"}\n' + b"{" * 70 + b"\n"
                )
                codes = [(await vandal.read_reply())["code"] for _ in range(4)]
                assert codes == ["bad_json", "bad_request", "unknown_type", "bad_json"]
                await vandal.send_raw(b"q" * (MAX_LINE_BYTES + 10) + b'{"type":"subm')
                assert (await vandal.read_reply())["code"] == "message_too_large"
            # The vandal is gone mid-line; the others carry on as if nothing happened.
            beat = await holder.request({"type": "heartbeat", "job_id": first})
            assert beat["type"] == "ok"
            assert await holder.request({"type": "job_complete", "job_id": first}) == {"type": "ok"}
            second = await client.submit("work", 2)
            assigned = await waiter.read_reply()
            assert (assigned["job_id"], assigned["attempt"]) == (second, 1)
            stats = await client.stats()
    assert stats.totals["reassigned"] == 0
    assert stats.totals["submitted"] == 2


# -- Client and Worker over TCP ---------------------------------------------------------


async def test_many_clients_and_workers_run_every_job_exactly_once(
    tcp_queue: RunningQueue,
) -> None:
    clients, jobs_per_client = 5, 40
    executions: Counter[str] = Counter()
    attempts: set[int] = set()

    async def record(job: Job) -> dict[str, Any]:
        executions[job.id] += 1
        attempts.add(job.attempt)
        await trio.lowlevel.checkpoint()  # let the other slots interleave
        return {"echo": job.payload}

    results: dict[str, Any] = {}

    async def client_task(index: int) -> None:
        async with tcp_queue.connect(name=f"client{index}") as client:
            ids = []
            for i in range(jobs_per_client):
                payload = {"client": index, "i": i}
                ids.append((await client.submit("record", payload), payload))
            for job_id, payload in ids:
                info = await client.wait(job_id)
                assert (info.state, info.result) == ("completed", {"echo": payload})
                results[job_id] = info.result

    with trio.fail_after(15):
        for index, concurrency in enumerate((2, 3, 2, 3)):
            await tcp_queue.start_worker(
                {"record": record}, concurrency=concurrency, name=f"worker{index}"
            )
        async with trio.open_nursery() as nursery:
            for index in range(clients):
                nursery.start_soon(client_task, index)
        # Every slot goes back to waiting for work.
        stats = await stats_when(tcp_queue.client, lambda s: s.waiting_workers == 10)

    total = clients * jobs_per_client
    assert len(results) == total
    assert set(executions) == set(results)
    assert set(executions.values()) == {1}
    assert attempts == {1}
    assert stats.totals == {
        "submitted": total,
        "completed": total,
        "failed": 0,
        "cancelled": 0,
        "retried": 0,
        "reassigned": 0,
        "expired": 0,
    }
    assert stats.jobs == {
        "pending": 0,
        "scheduled": 0,
        "running": 0,
        "completed": total,
        "failed": 0,
        "cancelled": 0,
    }
    assert stats.queues == {}  # no queue has anything waiting or running
    assert sorted(entry["name"] for entry in stats.workers) == sorted(
        f"worker{index}" for index, n in enumerate((2, 3, 2, 3)) for _ in range(n)
    )
    assert all(
        (entry["jobs"], entry["waiting"], entry["queues"]) == ([], True, ["default"])
        for entry in stats.workers
    )


async def test_client_api(tcp_queue: RunningQueue) -> None:
    client = tcp_queue.client
    with trio.fail_after(5):
        job_id = await client.submit("sleep", {"seconds": 0})
        info = await client.status(job_id)
        assert (info.job_id, info.name, info.state, info.attempt) == (job_id, "sleep", "pending", 0)
        assert not info.finished
        stats = await client.stats()
        assert stats.jobs["pending"] == 1
        assert stats.totals["submitted"] == 1

        # A payload JSON cannot carry is refused before anything is sent.
        with pytest.raises(TypeError):
            await client.submit("sleep", {"bad": object()})
        with pytest.raises(ValueError, match=r"JSON|[Oo]ut of range"):
            await client.submit("sleep", float("nan"))
        with pytest.raises(RequestError) as excinfo:
            await client.status("bogus")
        assert excinfo.value.code == "unknown_job"
        with pytest.raises(RequestError) as excinfo:
            await client.wait("bogus")
        assert excinfo.value.code == "unknown_job"
        with pytest.raises(RequestError) as excinfo:
            await client.submit("n" * 500)
        assert excinfo.value.code == "bad_request"

        # The client is still usable after all of that.
        await tcp_queue.start_worker()
        info = await client.wait(job_id)
    assert (info.state, info.attempt, info.result, info.worker) == (
        "completed",
        1,
        {"slept": 0},
        "test-worker",
    )
    assert info.finished


async def test_connecting_to_a_port_with_nothing_listening_is_connection_lost() -> None:
    port = free_port()
    with trio.fail_after(5), pytest.raises(ConnectionLost):
        async with Client.connect(LOCALHOST, port):
            pass  # pragma: no cover


async def test_worker_reports_failures(
    tcp_queue: RunningQueue, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(job: Job) -> None:
        raise KeyError(f"kaput {job.payload}")

    async def not_json(job: Job) -> object:
        return {"value": object()}

    async def not_a_number(job: Job) -> float:
        return float("nan")

    async def fine(job: Job) -> str:
        return "fine"

    client = tcp_queue.client
    caplog.set_level(logging.CRITICAL, logger="jobqueue.worker")  # the tracebacks are expected
    with trio.fail_after(5):
        worker = await tcp_queue.start_worker(
            {"boom": boom, "not_json": not_json, "nan": not_a_number, "fine": fine}
        )
        # One attempt each: a failure ends the job (retries are test_lifecycle's).
        once = partial(client.submit, max_attempts=1)
        ids = {
            "boom": await once("boom", 7),
            "not_json": await once("not_json"),
            "nan": await once("nan"),
            "unknown": await once("no_such_handler"),
            "sleep_bad": await once("sleep", {"seconds": "soon"}),
            "sleep_negative": await once("sleep", {"seconds": -1}),
            "sleep_no_payload": await once("sleep"),
            "fine": await once("fine"),
        }
        infos = {key: await client.wait(job_id) for key, job_id in ids.items()}
        # The worker counts a job once the server acknowledged its report; it
        # is waiting for work again only after that.
        await stats_when(client, lambda s: s.waiting_workers == 1)

    def error_type(key: str) -> str:
        info = infos[key]
        assert info.state == "failed", info
        assert info.result is None
        assert info.error is not None
        return info.error["type"]

    assert error_type("boom") == "KeyError"
    assert infos["boom"].error is not None
    assert "kaput 7" in infos["boom"].error["message"]
    assert error_type("not_json") == "TypeError"
    assert error_type("nan") == "TypeError"
    assert error_type("unknown") == "LookupError"
    assert infos["unknown"].error is not None
    assert "no_such_handler" in infos["unknown"].error["message"]
    for key in ("sleep_bad", "sleep_negative", "sleep_no_payload"):
        assert error_type(key) == "ValueError"
    assert (infos["fine"].state, infos["fine"].result) == ("completed", "fine")
    assert {(info.attempt, info.max_attempts) for info in infos.values()} == {(1, 1)}
    statistics = worker.statistics()
    assert (statistics.failed, statistics.completed, statistics.lost) == (7, 1, 0)
    stats = await client.stats()
    assert (stats.totals["failed"], stats.totals["completed"], stats.totals["retried"]) == (7, 1, 0)
    assert stats.jobs["failed"] == 7


async def _serve_until_cancelled(
    scope: trio.CancelScope,
    stopped: trio.Event,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        with scope:
            await serve_queue(port, host=LOCALHOST, task_status=task_status)
    finally:
        stopped.set()


async def test_worker_reconnects_to_a_restarted_server(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobqueue.worker")
    with trio.fail_after(10):
        first_scope, first_stopped = trio.CancelScope(), trio.Event()
        host, port = await nursery.start(_serve_until_cancelled, first_scope, first_stopped, 0)
        worker = Worker(
            host,
            port,
            name="phoenix",
            reconnect_delay=0.01,
            max_reconnect_delay=0.05,
        )
        await nursery.start(worker.run)
        async with Client.connect(host, port) as client:
            job_id = await client.submit("sleep", {"seconds": 0})
            assert (await client.wait(job_id)).state == "completed"
            assert "lost the queue" not in caplog.text

        first_scope.cancel()
        await first_stopped.wait()
        second_scope, second_stopped = trio.CancelScope(), trio.Event()
        address = await nursery.start(_serve_until_cancelled, second_scope, second_stopped, port)
        assert address == (host, port)
        async with Client.connect(host, port) as client:
            job_id = await client.submit("sleep", {"seconds": 0})
            info = await client.wait(job_id)
    assert (info.state, info.worker, info.attempt) == ("completed", "phoenix", 1)
    messages = [r.getMessage() for r in caplog.records if r.name == "jobqueue.worker"]
    lost = [i for i, m in enumerate(messages) if "lost the queue" in m]
    regained = [i for i, m in enumerate(messages) if "reconnected to the queue" in m]
    assert len(lost) == 1, messages
    assert len(regained) == 1, messages
    assert lost[0] < regained[0]
    assert worker.statistics().connected_slots == 1
    second_scope.cancel()


async def test_tcp_links_use_the_socket_directly_and_memory_links_do_not(
    tcp_queue: RunningQueue,
) -> None:
    # The TCP tests in this file then exercise Link's direct socket path; the
    # in-memory queues (tests/test_timing.py, ...) exercise the stream path.
    assert tcp_queue.client._link._bytes._raw is not None
    from jobqueue.testing import open_memory_queue

    async with open_memory_queue() as queue:
        assert queue.client._link._bytes._raw is None
        assert (await queue.client.stats()).connections == 1
    with trio.fail_after(5):
        job_id = await tcp_queue.client.submit("x", {"big": "y" * 300_000})
        assert (await tcp_queue.client.status(job_id)).state == "pending"
