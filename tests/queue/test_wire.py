"""The queue over real TCP on 127.0.0.1: the wire contract and bad input.

(Lost workers are in ``test_faults.py``, the Client and Worker in ``test_client.py``.)

Real sockets mean real time, so nothing here sleeps to let something happen:
every test waits on a reply, an event, or (where the only observable is the
server's own view) polls ``stats`` until it shows the condition. Every test is
bounded with ``trio.fail_after`` so a bug fails it instead of hanging it.
Short leases (0.5 s) are the only real-time waits, where expiry is the point.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.lowlevel

from jobqueue import serve_queue
from jobqueue._json import encode
from jobqueue._limits import MAX_LINE_BYTES
from jobqueue.testing import RunningQueue
from tests.helpers import park, stats_when, submit_raw, take

if TYPE_CHECKING:
    from tests.helpers import RawOpener

LOCALHOST = "127.0.0.1"


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
            # When it was submitted: wall-clock Unix seconds, checked in test_job_status_times.
            assert isinstance(status.pop("submitted_at"), float)
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
            times = [status.pop(name) for name in ("submitted_at", "started_at", "finished_at")]
            assert times == sorted(times)
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


async def test_the_last_allowed_run_is_marked_last_attempt(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    client = tcp_queue.client
    with trio.fail_after(5):
        twice = await client.submit("echo", None, max_attempts=2)
        once = await client.submit("echo", None, max_attempts=1)
        async with raw_connection(tcp_queue) as lost:
            first = await lost.request({"type": "request_job"})
            assert (first["job_id"], "last_attempt" in first) == (twice, False)
            # Given back unstarted: spends nothing, so the next run is not the last either.
            release = {"type": "release_job", "job_id": twice, "attempt": 1}
            assert await lost.request(release) == {"type": "ok"}
            again = await lost.request({"type": "request_job"})
            assert (again["attempt"], again["attempts_spent"]) == (2, 1)
            assert "last_attempt" not in again
        # That holder vanished: its run was spent, and the one run left is the last.
        await stats_when(client, lambda stats: stats.jobs["pending"] == 2)  # close noticed
        async with raw_connection(tcp_queue) as worker:
            batch = await worker.request({"type": "request_job", "max": 2, "wait": 5})
            assert [(j["job_id"], j["attempt"], j.get("last_attempt")) for j in batch["jobs"]] == [
                (twice, 3, True),
                (once, 1, True),
            ]
            assert batch["jobs"][0]["attempts_spent"] == 2
            report = {"type": "job_failed", "job_id": twice, "attempt": 3, "error": {"type": "E"}}
            assert await worker.request(report) == {"type": "ok"}
        assert (await client.status(twice)).state == "failed"  # not retried


async def test_request_job_wait_blocks_until_a_submission_elsewhere(
    tcp_queue: RunningQueue, raw_connection: RawOpener
) -> None:
    with trio.fail_after(5):
        async with raw_connection(tcp_queue) as worker, raw_connection(tcp_queue) as client:
            await park(tcp_queue.client, worker, wait=10, waiting=1)
            job_id = await submit_raw(client, "late", {"k": 1})
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
            ids = [await submit_raw(client, f"job{i}", i) for i in range(20)]
            taken = [await take(worker) for _ in ids]
            assert await worker.request({"type": "request_job"}) == {"type": "no_job"}
    assert [job["job_id"] for job in taken] == ids
    assert [job["payload"] for job in taken] == list(range(20))
    assert {job["attempt"] for job in taken} == {1}


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
            job_id = await submit_raw(conn, "after", [1])
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
