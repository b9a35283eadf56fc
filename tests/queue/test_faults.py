"""Fault injection: partitions, hung handlers, server restarts, stalled peers, fuzz, chaos.

Each test breaks something on purpose and checks the queue's promises still hold:
no job lost, a finished job never runs again, the lease holder alone reports, and
one misbehaving peer never slows the others.

Real sockets (loopback only) where the fault is about the network, in-memory
streams and the autojump clock where it is about time, the bare ``Coordinator``
where hypothesis drives random interleavings, and real ``python -m jobqueue
worker`` processes killed with ``SIGKILL`` where the claim is about processes.
Nothing sleeps hoping something happens: tests wait on events, replies, or
(where the server's own view is the only observable) poll ``stats``, and every
wait is bounded by ``trio.fail_after``.

A test named ``test_BUG_...`` documents a library bug and fails until it is fixed.
None is open: the two silent-partition tests were ``test_BUG_`` tests until the
worker gained reply deadlines (commit 15c6db5).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import logging
import math
import random
import re
import struct
import termios
from collections import deque
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from jobqueue import Client, ConnectionLost, Job, RequestError, Stats, Worker, serve_queue
from jobqueue._codec import decode_reply
from jobqueue._config import QueueRules
from jobqueue._coordinator import (
    Batch,
    Command,
    Connected,
    Connection,
    Coordinator,
    Disconnected,
    Outgoing,
)
from jobqueue._errors import RuleError
from jobqueue._json import encode
from jobqueue._replies import JobAssigned, JobCancelledNotice, JobInfo, JobSubmitted, NoJob, Ok
from jobqueue._requests import (
    CancelJob,
    DeleteJob,
    GetStatus,
    Heartbeat,
    JobComplete,
    JobFailed,
    Request,
    RequestJob,
    RetryJob,
    SubmitJob,
    WaitJob,
)
from jobqueue._state import QueueState
from jobqueue.testing import open_memory_queue, open_test_queue
from tests.helpers import stats_when, wait_until

if TYPE_CHECKING:
    from tests.helpers import RawOpener
    from tests.process.chaos import ChaosReport

LOCALHOST = "127.0.0.1"
#: Every job state (protocol.md §5).
STATES = ("pending", "scheduled", "running", "completed", "failed", "cancelled")


def wire_lines(data: bytes | bytearray) -> list[dict[str, Any]]:
    """The complete JSON lines in ``data``, decoded."""
    *complete, _partial = bytes(data).split(b"\n")
    return [json.loads(line) for line in complete if line.strip()]


# -- 1. a silent network partition, through a real TCP proxy ----------------------------


@attrs.define(eq=False)
class PartitionProxy:
    """A loopback TCP proxy that can stop forwarding without closing anything.

    ``partition()`` makes every pump stop reading and writing: both TCP
    connections stay open and silent, exactly what a peer sees when the network
    drops packets (no FIN, no RST). ``heal()`` resumes forwarding; bytes a pump
    had already read are delivered then, as TCP would retransmit them.
    Everything forwarded is recorded so tests can read what each side really
    said.
    """

    target: tuple[str, int]
    #: Per connection, bytes forwarded client -> server and server -> client.
    upstream: list[bytearray] = attrs.field(factory=list, init=False)
    downstream: list[bytearray] = attrs.field(factory=list, init=False)
    _flowing: trio.Event = attrs.field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        self._flowing.set()

    def partition(self) -> None:
        """Stop forwarding in both directions; close nothing."""
        if self._flowing.is_set():
            self._flowing = trio.Event()

    def heal(self) -> None:
        """Resume forwarding."""
        self._flowing.set()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1, any free port; ``nursery.start`` returns the port."""
        listeners = await trio.open_tcp_listeners(0, host=LOCALHOST)
        port: int = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(port)

    def sent(self) -> list[dict[str, Any]]:
        """Every message the proxied clients sent that reached the server."""
        return [message for data in self.upstream for message in wire_lines(data)]

    async def _handle(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream(*self.target)
        up, down = bytearray(), bytearray()
        self.upstream.append(up)
        self.downstream.append(down)
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server, up, nursery.cancel_scope)
            nursery.start_soon(self._pump, server, client, down, nursery.cancel_scope)

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        record: bytearray,
        done: trio.CancelScope,
    ) -> None:
        try:
            while True:
                await self._wait_flowing()
                data = await source.receive_some(65536)
                if not data:
                    break
                await self._wait_flowing()
                await sink.send_all(data)
                record += data
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        # One side closed: close the other too, as a real path would.
        done.cancel()

    async def _wait_flowing(self) -> None:
        # Re-read the event each time: partition() swaps in a fresh one.
        while not self._flowing.is_set():
            await self._flowing.wait()


def reports_for(lines: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    """The job_complete / job_failed messages about ``job_id`` among ``lines``."""
    return [
        line
        for line in lines
        if line.get("type") in ("job_complete", "job_failed") and line.get("job_id") == job_id
    ]


@attrs.define(eq=False)
class BlockingHandler:
    """A handler that records that it started, then blocks until released or cancelled."""

    started: trio.Event = attrs.field(factory=trio.Event)
    cancelled: trio.Event = attrs.field(factory=trio.Event)
    release: trio.Event = attrs.field(factory=trio.Event)
    returned: bool = False

    async def __call__(self, job: Job) -> str:
        self.started.set()
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.cancelled.set()
            raise
        self.returned = True
        return "A"


async def return_b(job: Job) -> str:
    return "B"


PARTITION_LEASE = 0.6  # A heartbeats every 0.2 s


async def test_silent_partition_reassigns_and_the_stale_run_stops_within_its_lease() -> None:
    with trio.fail_after(15):
        async with open_test_queue(lease_timeout=PARTITION_LEASE) as queue:
            client = queue.client
            async with trio.open_nursery() as nursery:
                proxy = PartitionProxy(queue.address)
                proxy_port = await nursery.start(proxy.serve)
                handler_a = BlockingHandler()
                worker_a = Worker(LOCALHOST, proxy_port, handlers={"job": handler_a}, name="A")
                await nursery.start(worker_a.run)

                job_id = await client.submit("job")
                await handler_a.started.wait()
                info = await client.status(job_id)
                assert (info.state, info.attempt, info.worker) == ("running", 1, "A")

                # B connects directly and blocks in request_job: nothing for it yet.
                worker_b = Worker(*queue.address, handlers={"job": return_b}, name="B")
                await nursery.start(worker_b.run)
                await stats_when(client, lambda s: s.waiting_workers == 1)
                # A's heartbeats do reach the server through the proxy.
                await wait_until(lambda: sum(m["type"] == "heartbeat" for m in proxy.sent()) >= 2)

                proxy.partition()
                partitioned_at = trio.current_time()
                final = await client.wait(job_id)
                reassigned_after = trio.current_time() - partitioned_at
                assert (final.state, final.result, final.attempt, final.worker) == (
                    "completed",
                    "B",
                    2,
                    "B",
                ), final
                # The last heartbeat that got through was at most one interval
                # (lease / 3) before the partition: the lease was honoured.
                assert reassigned_after > PARTITION_LEASE * 2 / 3 - 0.1, reassigned_after
                stats = await client.stats()
                assert stats.totals["reassigned"] == stats.totals["expired"] == 1, stats.totals

                # A hears nothing at all, yet stops its run of the job on its own:
                # a heartbeat unanswered before the lease it extends would run
                # out means the lease is gone (design.md §4), so A stops at most
                # one lease after the partition began.
                with trio.move_on_at(partitioned_at + PARTITION_LEASE + 0.5):
                    await handler_a.cancelled.wait()
                stopped_after = trio.current_time() - partitioned_at
                assert handler_a.cancelled.is_set(), (
                    f"worker A still ran {job_id} {stopped_after:.2f}s into a silent partition, "
                    f"with a {PARTITION_LEASE}s lease long given to B"
                )
                await wait_until(lambda: worker_a.statistics().lost == 1)

                # Healed: A is back on a fresh connection, waiting for work.
                proxy.heal()
                await stats_when(
                    client, lambda s: any(w["name"] == "A" and w["waiting"] for w in s.workers)
                )
                nursery.cancel_scope.cancel()

            stats_a = worker_a.statistics()
            assert (stats_a.lost, stats_a.completed, stats_a.failed) == (1, 0, 0), stats_a
            assert not handler_a.returned
            # A never reported the job, on any connection.
            assert reports_for(proxy.sent(), job_id) == []
            assert len(proxy.upstream) >= 2  # it reconnected
            final = await client.status(job_id)
            assert (final.state, final.result, final.attempt, final.worker) == (
                "completed",
                "B",
                2,
                "B",
            )
            totals = (await client.stats()).totals
            assert (totals["completed"], totals["failed"], totals["reassigned"]) == (1, 0, 1)


async def test_idle_worker_behind_a_silent_partition_reconnects() -> None:
    """An idle slot gives up a connection whose request_job reply is overdue.

    The worker allows a reply ``poll_wait`` plus ``reply_grace`` (10 s by
    default) before it calls the connection dead; the grace is shortened
    here to keep the test quick.
    """
    poll_wait, grace = 0.3, 0.5
    with trio.fail_after(15):
        async with open_test_queue() as queue, trio.open_nursery() as nursery:
            proxy = PartitionProxy(queue.address)
            proxy_port = await nursery.start(proxy.serve)
            worker_a = Worker(
                LOCALHOST,
                proxy_port,
                handlers={"job": return_b},
                name="A",
                poll_wait=poll_wait,
                reply_grace=grace,
            )
            await nursery.start(worker_a.run)
            # A's slot is parked in request_job and its polls flow.
            await wait_until(lambda: sum(m["type"] == "request_job" for m in proxy.sent()) >= 2)
            proxy.partition()  # nothing is closed; nothing gets through
            partitioned_at = trio.current_time()
            with trio.move_on_after(poll_wait + grace + 1.0):
                await wait_until(lambda: len(proxy.upstream) > 1)
            waited = trio.current_time() - partitioned_at
            assert len(proxy.upstream) > 1, (
                f"worker A, idle behind a silent partition, still waited on its one "
                f"connection {waited:.1f}s later (poll_wait {poll_wait}s + grace {grace}s)"
            )
            # Healed: the new connection works and A takes a job through it.
            proxy.heal()
            job_id = await queue.client.submit("job")
            info = await queue.client.wait(job_id)
            assert (info.state, info.worker, info.attempt) == ("completed", "A", 1), info
            nursery.cancel_scope.cancel()


async def test_reporting_worker_behind_a_silent_partition_reconnects() -> None:
    """A slot gives up a connection whose report (which also fetches) goes unanswered.

    The report's reply may take as long as a ``request_job``'s (``poll_wait``
    plus ``reply_grace``) or one lease, whichever is longer; the slot's lease
    keeper keeps that deadline. The report that was never answered is not counted.
    """
    poll_wait, grace = 0.3, 0.5
    with trio.fail_after(15):
        async with open_test_queue(lease_timeout=0.6) as queue, trio.open_nursery() as nursery:
            proxy = PartitionProxy(queue.address)
            proxy_port = await nursery.start(proxy.serve)
            partitioned_at: list[float] = []

            async def cut_then_return(job: Job) -> str:
                proxy.partition()  # the report this job's return sends is lost
                partitioned_at.append(trio.current_time())
                return "done"

            worker = Worker(
                LOCALHOST,
                proxy_port,
                handlers={"job": cut_then_return},
                poll_wait=poll_wait,
                reply_grace=grace,
            )
            await nursery.start(worker.run)
            await queue.client.submit("job")
            await wait_until(lambda: bool(partitioned_at))
            with trio.move_on_after(poll_wait + grace + 1.0):
                await wait_until(lambda: len(proxy.upstream) > 1)
            waited = trio.current_time() - partitioned_at[0]
            assert len(proxy.upstream) > 1, (
                f"worker, its report unanswered behind a silent partition, still waited on "
                f"its one connection {waited:.1f}s later (poll_wait {poll_wait}s + grace {grace}s)"
            )
            assert waited >= poll_wait + grace - 0.05, waited
            assert worker.statistics().completed == 0
            nursery.cancel_scope.cancel()


# -- 2. a hung handler keeps its job while heartbeats flow ------------------------------


async def test_hung_handler_keeps_its_lease_while_heartbeats_flow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A lease measures whether the worker is alive, not how long the job takes
    # (there is no run-time limit yet): 1000 s is a hundred leases.
    with trio.fail_after(1100):  # virtual seconds
        async with open_memory_queue(lease_timeout=10) as queue:
            hung = BlockingHandler()  # never released
            worker = await queue.start_worker({"hang": hung})
            job_id = await queue.client.submit("hang")
            await hung.started.wait()
            started_at = trio.current_time()
            await trio.sleep(1000)
            assert trio.current_time() == started_at + 1000
            info = await queue.client.status(job_id)
            stats = await queue.client.stats()
            assert (info.state, info.attempt, info.worker) == ("running", 1, "test-worker"), info
            assert stats.totals["reassigned"] == stats.totals["expired"] == 0, stats.totals
            assert [(w["name"], w["jobs"]) for w in stats.workers] == [("test-worker", [job_id])]
            assert worker.statistics().lost == 0
            assert not hung.cancelled.is_set()


# -- 3. the server goes away and comes back on the same port ----------------------------


@attrs.define(eq=False)
class RestartableServer:
    """``serve_queue`` in a cancel scope of its own, so a test can stop and restart it."""

    lease_timeout: float
    _scope: trio.CancelScope = attrs.field(factory=trio.CancelScope, init=False)
    _stopped: trio.Event = attrs.field(factory=trio.Event, init=False)

    async def start(self, nursery: trio.Nursery, port: int) -> tuple[str, int]:
        """Serve on ``port`` (0: any free one); return the bound address."""
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        address: tuple[str, int] = await nursery.start(self._run, port)
        return address

    def stop_nowait(self) -> None:
        """Cancel the server: its listener and every connection close."""
        self._scope.cancel()

    async def wait_stopped(self) -> None:
        """Until the server's tasks have all exited."""
        await self._stopped.wait()

    async def _run(self, port: int, *, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        try:
            with self._scope:
                await serve_queue(
                    port, host=LOCALHOST, lease_timeout=self.lease_timeout, task_status=task_status
                )
        finally:
            self._stopped.set()


async def add_one(job: Job) -> int:
    assert isinstance(job.payload, int)
    return job.payload + 1


def worker_warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "jobqueue.worker"
        and record.levelno == logging.WARNING
        and text in record.getMessage()
    ]


async def test_server_restart_fails_calls_fast_and_everyone_reconnects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="jobqueue")
    # A short lease: whether the worker notices the close as it happens or at
    # its next heartbeat (every lease / 3), it does so well within the bounds.
    server = RestartableServer(lease_timeout=1.5)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            host, port = await server.start(nursery, 0)
            blocked = BlockingHandler()
            worker = Worker(host, port, handlers={"block": blocked, "add_one": add_one}, name="W")
            await nursery.start(worker.run)
            async with (
                Client.connect(host, port, name="c1", reconnect_timeout=0.5) as client,
                Client.connect(host, port, name="c2") as waiter,
            ):
                old_job = await client.submit("block")
                await blocked.started.wait()

                waited: list[BaseException | object] = []
                wait_ended = trio.Event()

                async def wait_for_old_job() -> None:
                    try:
                        waited.append(await waiter.wait(old_job))
                    except ConnectionLost as exc:
                        waited.append(exc)
                    finally:
                        wait_ended.set()

                nursery.start_soon(wait_for_old_job)
                # The wait_job request is on the wire and the server has parked it.
                await trio.testing.wait_all_tasks_blocked()
                assert not wait_ended.is_set()

                server.stop_nowait()
                stopped_at = trio.current_time()
                await server.wait_stopped()
                # Calls in flight, or sent into the closed connection, fail fast.
                with trio.fail_after(2), pytest.raises(ConnectionLost):
                    await client.stats()
                with trio.fail_after(2):
                    await wait_ended.wait()
                elapsed = trio.current_time() - stopped_at
                assert len(waited) == 1
                assert isinstance(waited[0], ConnectionLost), waited
                assert elapsed < 2, elapsed
                # The next call tries to reconnect, with backoff, for as long
                # as the client allows, then says so.
                tried_at = trio.current_time()
                with trio.fail_after(3), pytest.raises(ConnectionLost) as lost:
                    await client.status(old_job)
                assert "could not reconnect" in str(lost.value)
                assert re.search(r"\(([2-9]|\d\d+) attempts\)", str(lost.value)), lost.value
                # It gives up before a sleep would pass the 0.5 s allowed.
                assert trio.current_time() - tried_at < 1.5

                # A call made while the server is down completes once it is back.
                late: list[Stats] = []

                async def stats_when_back() -> None:
                    late.append(await waiter.stats())

                nursery.start_soon(stats_when_back)
                await trio.sleep(0.3)
                assert late == []

                # The worker notices and drops the job it can no longer report.
                await blocked.cancelled.wait()
                await wait_until(lambda: bool(worker_warnings(caplog, "lost the queue")))

                assert await server.start(nursery, port) == (host, port)
                await wait_until(lambda: bool(worker_warnings(caplog, "reconnected to the queue")))
                await wait_until(lambda: bool(late))
                assert late[0].totals["submitted"] == 0  # answered by the new server

                # The client that gave up reconnects on its next call.
                # A new server knows nothing of the old one's jobs.
                with pytest.raises(RequestError) as excinfo:
                    await client.status(old_job)
                assert excinfo.value.code == "unknown_job"
                new_job = await client.submit("add_one", 41)
                info = await client.wait(new_job)
                assert (info.state, info.result, info.attempt, info.worker) == (
                    "completed",
                    42,
                    1,
                    "W",
                ), info
            nursery.cancel_scope.cancel()
    lost_logs = worker_warnings(caplog, "lost the queue")
    reconnected = worker_warnings(caplog, "reconnected to the queue")
    assert len(lost_logs) == len(reconnected) == 1, [r.getMessage() for r in caplog.records]
    assert lost_logs[0].created <= reconnected[0].created
    assert worker.statistics().completed == 1
    client_logs = [r.getMessage() for r in caplog.records if r.name == "jobqueue.client"]
    assert any("reconnecting" in text for text in client_logs), client_logs
    assert any("reconnected to the queue" in text for text in client_logs), client_logs


# -- 4. slow and stalled peers do not slow anyone else ----------------------------------

#: Round trips timed per test (so p99 is the slowest of them).
ROUND_TRIPS = 50
#: Generous for a loaded CI machine; a loopback round trip takes well under 1 ms.
P99_LIMIT = 0.100


def unread_bytes(stream: trio.SocketStream) -> int:
    """Bytes the kernel holds for ``stream`` that nobody has read (FIONREAD)."""
    raw = fcntl.ioctl(stream.socket.fileno(), termios.FIONREAD, struct.pack("i", 0))
    count: int = struct.unpack("i", raw)[0]
    return count


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


async def submit_latencies(client: Client, count: int = ROUND_TRIPS) -> list[float]:
    """Time ``count`` sequential submit round trips."""
    latencies = []
    for index in range(count):
        start = trio.current_time()
        await client.submit("probe", index)
        latencies.append(trio.current_time() - start)
    return latencies


async def send_forever(stream: trio.SocketStream, data: bytes) -> None:
    """Send ``data``; the server may stop reading, so this may block until cancelled."""
    await stream.send_all(data)


#: The stalled reader asks for this many statuses of a job with this big a result:
#: gigabytes of replies, far beyond what socket buffers can absorb, so the
#: server's writer for that connection is stuck for the whole test.
PIPELINED = 5000
BIG_RESULT = "x" * (256 * 1024)


async def test_stalled_reader_does_not_slow_other_clients(raw_connection: RawOpener) -> None:
    with trio.fail_after(15):
        async with open_test_queue() as queue, raw_connection(queue) as fake_worker:
            client = queue.client
            job_id = await client.submit("big")
            assigned = await fake_worker.request({"type": "request_job"})
            assert assigned["job_id"] == job_id
            done = await fake_worker.request(
                {"type": "job_complete", "job_id": job_id, "attempt": 1, "result": BIG_RESULT}
            )
            assert done == {"type": "ok"}
            baseline = (await client.stats()).connections

            stalled = await trio.open_tcp_stream(*queue.address)
            requests = encode({"type": "job_status", "job_id": job_id}) * PIPELINED
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_forever, stalled, requests)
                # The server is answering (and the answers pile up unread).
                await wait_until(lambda: unread_bytes(stalled) >= 65536)

                latencies = await submit_latencies(client)
                assert p99(latencies) < P99_LIMIT, sorted(latencies)[-5:]
                # ...and the stalled connection is still stuck: nowhere near
                # everything it asked for has been written.
                assert unread_bytes(stalled) < PIPELINED * len(BIG_RESULT) // 10
                stats = await client.stats()
                assert stats.connections == baseline + 1
                nursery.cancel_scope.cancel()

            # Closing the stalled peer frees its handler; the server is healthy.
            await trio.aclose_forcefully(stalled)
            await stats_when(client, lambda s: s.connections == baseline)
            info = await client.status(job_id)
            assert (info.state, info.result) == ("completed", BIG_RESULT)


async def test_half_sent_line_does_not_block_other_clients(raw_connection: RawOpener) -> None:
    with trio.fail_after(10):
        async with (
            open_test_queue() as queue,
            raw_connection(queue) as half,
            raw_connection(queue) as hangs_up,
        ):
            client = queue.client
            await half.send_raw(b'{"type":"submit_job","na')
            await hangs_up.send_raw(b'{"type":"stats"')
            # Both partial lines have reached the server before we measure.
            await trio.testing.wait_all_tasks_blocked()
            baseline = (await client.stats()).connections

            latencies = await submit_latencies(client)
            assert p99(latencies) < P99_LIMIT, sorted(latencies)[-5:]

            # The server was only waiting for the rest of the line.
            await half.send_raw(b'me":"late"}\n')
            reply = await half.read_reply()
            assert reply["type"] == "job_submitted", reply
            assert (await client.status(reply["job_id"])).name == "late"

            # A peer that closes mid-line is told so, and only it is closed.
            await hangs_up.stream.send_eof()  # type: ignore[attr-defined]
            reply = await hangs_up.read_reply()
            assert (reply["type"], reply["code"]) == ("error", "incomplete_message"), reply
            with pytest.raises(EOFError):
                await hangs_up.read_reply()
            await half.aclose()
            await stats_when(client, lambda s: s.connections == baseline - 2)
            stats = await client.stats()
            assert stats.totals["submitted"] == ROUND_TRIPS + 1


# -- 5. protocol fuzz against a live server ---------------------------------------------

#: A small line limit for the fuzzed server, so oversized lines are cheap to make.
FUZZ_MAX_LINE = 512
#: Which reply types each request type may get, besides an error (protocol.md §4).
REPLIES_FOR: dict[str, frozenset[str]] = {
    "hello": frozenset({"hello"}),
    "submit_job": frozenset({"job_submitted"}),
    "submit_jobs": frozenset({"jobs_submitted"}),
    "request_job": frozenset({"job_assigned", "no_job"}),
    "heartbeat": frozenset({"ok"}),
    "progress": frozenset({"ok"}),
    "job_complete": frozenset({"ok"}),
    "job_failed": frozenset({"ok"}),
    "job_status": frozenset({"job_status"}),
    "wait_job": frozenset({"job_status"}),
    "cancel_job": frozenset({"job_status"}),
    "retry_job": frozenset({"job_status"}),
    "delete_job": frozenset({"ok"}),
    "list_jobs": frozenset({"job_list"}),
    "stats": frozenset({"stats"}),
}
REQUEST_TYPES = tuple(REPLIES_FOR)
#: Errors about the line itself; a well-formed request of a known type never gets them.
LINE_ERRORS = frozenset({"bad_json", "unknown_type", "message_too_large", "incomplete_message"})
MAX_LINES = 12
#: Pending jobs kept in stock, so a fuzzed request_job never blocks waiting for one.
FUZZ_STOCK = 3 * MAX_LINES


@attrs.frozen
class FuzzCase:
    """What one example sends on a fresh connection: ``data``, cut into ``chunks``."""

    data: bytes
    chunk_sizes: list[int]

    def chunks(self) -> list[bytes]:
        out, rest = [], self.data
        sizes = self.chunk_sizes or [len(rest) or 1]
        for index in range(len(rest)):  # bounded: every chunk takes at least a byte
            if not rest:
                break
            size = sizes[index % len(sizes)]
            out.append(rest[:size])
            rest = rest[size:]
        return out


TOO_LARGE = b"<too large>"


def expected_lines(data: bytes) -> tuple[list[bytes], bool]:
    """The lines the server must answer one each, and whether EOF leaves a partial one.

    The framing rules of docs/protocol.md §2: lines end at ``\\n``, one trailing
    ``\\r`` is dropped, blank lines are skipped, a line over the limit gets one
    ``message_too_large`` (reported as :data:`TOO_LARGE` here), and non-blank
    bytes left at EOF get ``incomplete_message``.
    """
    *complete, tail = data.split(b"\n")
    lines = []
    for raw in complete:
        if len(raw) > FUZZ_MAX_LINE:
            lines.append(TOO_LARGE)
            continue
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if line.strip():
            lines.append(line)
    if len(tail) > FUZZ_MAX_LINE:
        lines.append(TOO_LARGE)  # detected while streaming, before EOF
        return lines, False
    return lines, bool(tail.strip())


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def line_error(line: bytes) -> str | None:
    """The error code a line must get before its fields are even read, if any."""
    if line is TOO_LARGE:
        return "message_too_large"
    try:
        value = json.loads(
            line.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return "bad_json"
    if depth(value) > 64:
        return "bad_json"
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return "bad_request"
    if value["type"] not in REPLIES_FOR:
        return "unknown_type"
    return None


def check_reply(line: bytes, reply: dict[str, Any]) -> None:
    """``reply`` is a valid answer to ``line``, or the right kind of error."""
    # Our own strict reply parser accepts it: every field has the documented type.
    decode_reply(encode(reply))
    if reply["type"] == "error":
        code = reply.get("code")
        assert isinstance(code, str), reply
        assert code.isidentifier(), reply
        assert code == code.lower(), reply
        assert isinstance(reply.get("message"), str), reply
    expected_error = line_error(line)
    if expected_error is not None:
        assert (reply["type"], reply.get("code")) == ("error", expected_error), (line, reply)
        return
    request_type = json.loads(line)["type"]
    if reply["type"] == "error":
        assert reply["code"] not in LINE_ERRORS, (line, reply)
    else:
        assert reply["type"] in REPLIES_FOR[request_type], (line, reply)


def never_blocks(message: dict[str, Any]) -> dict[str, Any]:
    """Drop ``wait`` from a request_job naming queues: the stock is only in ``default``."""
    if message.get("type") == "request_job" and "queues" in message:
        return {key: value for key, value in message.items() if key != "wait"}
    return message


def fuzz_cases(known_ids: list[str]) -> Any:
    """Hypothesis strategy for :class:`FuzzCase`; ``known_ids`` are real, finished jobs."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=10)
    )
    values = st.recursive(
        scalars,
        lambda kids: (
            st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3)
        ),
        max_leaves=6,
    )
    texts = st.text(max_size=10)
    fields = {
        "name": texts | values,
        "job_id": st.sampled_from(known_ids) | st.text(max_size=12) | values,
        "wait": st.floats(-1, 4000) | st.integers(-1, 4000) | values,
        "attempt": st.integers(-1, 4) | values,
        "payload": values,
        "result": values,
        "error": st.fixed_dictionaries({"type": texts}, optional={"message": texts}) | values,
        "queue": texts | values,
        "queues": st.lists(texts, max_size=3) | values,
        "priority": st.integers(-(10**7), 10**7) | values,
        "max_attempts": st.integers(-1, 1001) | values,
        "delay": st.floats(-1, 4e7) | values,
        "run_at": st.floats(0, 4e9) | values,
        "key": texts | values,
        "jobs": st.lists(
            st.dictionaries(st.sampled_from(["name", "payload", "x"]), values), max_size=3
        ),
        "progress": st.floats(allow_nan=False, allow_infinity=False) | values,
        "note": values,
        "state": st.sampled_from(STATES) | texts | values,
        "limit": st.integers(-1, 1001) | values,
    }
    # Mostly well-typed fields, so many requests get past validation...
    names = st.text(min_size=1, max_size=10)
    good_fields = {
        "name": names,
        "job_id": st.sampled_from(known_ids),
        "wait": st.floats(0, 3600) | st.integers(0, 5),
        "attempt": st.integers(1, 3),
        "payload": values,
        "result": values,
        "error": st.fixed_dictionaries({"type": texts}, optional={"message": texts}),
        "queue": st.just("default") | names,
        "queues": st.lists(st.just("default") | names, min_size=1, max_size=3),
        "priority": st.integers(-5, 5),
        "max_attempts": st.integers(1, 5),
        "delay": st.floats(0, 100),
        "key": names,
        "jobs": st.lists(
            st.fixed_dictionaries({"name": names}, optional={"payload": values}), max_size=3
        ),
        "progress": st.floats(0, 1),
        "note": values,
        "state": st.sampled_from(STATES),
        "limit": st.integers(1, 5),
    }
    plausible = st.fixed_dictionaries(
        {"type": st.sampled_from(REQUEST_TYPES)}, optional=good_fields
    )
    # ...and some with any type and any field values at all.
    types = st.sampled_from(REQUEST_TYPES) | st.text(max_size=12) | values
    junk = st.fixed_dictionaries({"type": types}, optional=fields)
    encoded = st.builds(
        lambda message, ascii_only: json.dumps(message, ensure_ascii=ascii_only).encode(),
        (plausible | plausible | junk).map(never_blocks),
        st.booleans(),
    )
    tricky = st.sampled_from(
        [
            b"1e400",
            b'{"type":"submit_job","name":"x","payload":1e400}',
            b'{"type":"submit_job","name":"x","payload":NaN}',
            b'{"type":"request_job","wait":Infinity}',
            b'{"type":"submit_job","name":"x","payload":' + b"9" * 4400 + b"}",
            b"[" * 70 + b"]" * 70,
            b'{"type":"hello","name":"' + b"[" * 100 + b'"}',
            b'{"type":"hello"',
            b'{"type":"stats"}\r',
            b"\xff\xfe",
            b'{"type":"hello","name":"\xc3"}',
            b'{"type":"job_status","job_id":"\\ud800"}',
            b'{"type":"stats","type":"hello"}',
            b" \t\x0b\x0c",
            b"\r",
        ]
    )
    oversized = st.builds(
        lambda n, filler: b'{"type":"hello","name":"' + filler * n + b'"}',
        st.integers(FUZZ_MAX_LINE - 30, FUZZ_MAX_LINE + 30),
        st.sampled_from([b"n", b" ", b"\r"]),
    )
    # Requests (mostly well-formed) weigh most: they reach the queue's rules.
    pieces = st.lists(
        st.one_of(
            encoded,
            encoded,
            encoded,
            encoded,
            values.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=40),
            tricky | oversized,
        ),
        min_size=1,
        max_size=MAX_LINES,
    )
    separators = st.lists(st.sampled_from([b"\n", b"\r\n", b"\n\n"]), min_size=MAX_LINES)
    tails = st.just(b"") | st.binary(max_size=12) | encoded.map(lambda b: b[:-3])
    return st.builds(
        lambda ps, seps, tail, sizes: FuzzCase(
            b"".join(p + sep for p, sep in zip(ps, seps, strict=False)) + tail, sizes
        ),
        pieces,
        separators,
        tails,
        st.lists(st.integers(1, 64), max_size=8),
    )


async def run_fuzz_case(address: tuple[str, int], case: FuzzCase) -> None:
    """Send ``case`` on a fresh connection, half-close it, and check every reply.

    Nothing a fuzzed line asks for can block (see ``FUZZ_STOCK``), so the server
    answers every line before it acts on the end of stream: what arrives before
    it closes must be exactly one reply per line, in order, plus
    ``incomplete_message`` if a partial line was left over.
    """
    lines, partial_tail = expected_lines(case.data)
    received = b""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(*address)
        async with stream, trio.open_nursery() as nursery:

            async def send_all() -> None:
                for chunk in case.chunks():
                    await stream.send_all(chunk)
                await stream.send_eof()

            nursery.start_soon(send_all)
            while data := await stream.receive_some(65536):
                received += data
    *reply_lines, unterminated = received.split(b"\n")
    assert unterminated == b"", f"a reply was cut short: {unterminated!r}"
    messages = [json.loads(line) for line in reply_lines]
    # A job_cancelled notice is not a reply (protocol.md §3.3): set it aside.
    replies = [m for m in messages if m["type"] != "job_cancelled"]
    for notice in messages:
        if notice["type"] == "job_cancelled":
            assert notice.keys() == {"type", "job_id", "attempt"}, notice
    expected_count = len(lines) + partial_tail
    assert len(replies) == expected_count, (
        f"{len(replies)} replies to {len(lines)} lines "
        f"{'and a partial one ' if partial_tail else ''}in {case.data!r}: {replies}"
    )
    for line, reply in zip(lines, replies, strict=False):
        check_reply(line, reply)
    if partial_tail:
        assert (replies[-1]["type"], replies[-1].get("code")) == ("error", "incomplete_message")


async def test_protocol_fuzz_one_reply_per_line_and_others_unaffected(
    raw_connection: RawOpener,
) -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            partial(serve_queue, 0, host=LOCALHOST, max_line_bytes=FUZZ_MAX_LINE)
        )
        async with (
            Client.connect(*address, name="well-behaved") as good,
            raw_connection(address) as fake_worker,
        ):
            # Real, finished jobs for fuzzed job_ids to name (a wait_job on them
            # answers at once), then a stock of pending jobs so that a fuzzed
            # request_job is always answered at once too.
            finished = [await good.submit("done") for _ in range(3)]
            for job_id in finished:
                assert (await fake_worker.request({"type": "request_job"}))["job_id"] == job_id
                await fake_worker.request({"type": "job_complete", "job_id": job_id})
            baseline = (await good.stats()).connections
            probes: list[str] = []

            async def one_example(case: FuzzCase) -> None:
                with trio.fail_after(5):
                    # Jobs a fuzzed connection took came back when it closed
                    # (spending an attempt: hence the big budget), and any it
                    # finished or cancelled are replaced.
                    pending = (await good.stats()).jobs["pending"]
                    for _ in range(FUZZ_STOCK - pending):
                        await good.submit("stock", max_attempts=1000)
                await run_fuzz_case(address, case)
                with trio.fail_after(5):
                    # The fuzzed connection is gone; the good one works as ever.
                    await stats_when(good, lambda s: s.connections == baseline)
                    probe = await good.submit("probe", len(probes), priority=-1)
                    info = await good.status(probe)
                assert (info.job_id, info.name, info.state) == (probe, "probe", "pending")
                probes.append(probe)

            @settings(
                max_examples=30,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=fuzz_cases([*finished, "nope", "00000000-1"]))
            def fuzz_property(case: FuzzCase) -> None:
                trio.from_thread.run(one_example, case)

            # Hypothesis drives from a thread; every example runs back in this
            # trio run, against the one server and the one good connection.
            await trio.to_thread.run_sync(fuzz_property)
            assert len(probes) >= 30
        nursery.cancel_scope.cancel()


async def test_protocol_fuzz_before_the_token_changes_nothing() -> None:
    # With a token, whatever a stranger sends gets at most one error line and
    # a closed connection: nothing reaches the queue.
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            partial(serve_queue, 0, host=LOCALHOST, max_line_bytes=FUZZ_MAX_LINE, token="t0ken")
        )
        async with Client.connect(*address, name="well-behaved", token="t0ken") as good:
            job_id = await good.submit("done")
            before = await good.stats()

            async def one_example(case: FuzzCase) -> None:
                received = b""
                with trio.fail_after(5):
                    stream = await trio.open_tcp_stream(*address)
                    async with stream:
                        with contextlib.suppress(trio.BrokenResourceError):
                            for chunk in case.chunks():
                                await stream.send_all(chunk)
                            await stream.send_eof()
                        with contextlib.suppress(trio.BrokenResourceError):
                            while data := await stream.receive_some(65536):
                                received += data
                replies = [json.loads(line) for line in received.splitlines()]
                assert len(replies) <= 1, replies
                if replies:
                    assert replies[0]["type"] == "error", replies
                    assert replies[0]["code"] in LINE_ERRORS | {"unauthorized", "bad_request"}
                with trio.fail_after(5):
                    await stats_when(good, lambda s: s.connections == before.connections)
                    after = await good.stats()
                assert (after.totals, after.jobs) == (before.totals, before.jobs)
                assert (await good.status(job_id)).state == "pending"

            @settings(
                max_examples=30,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=fuzz_cases([job_id, "nope"]))
            def fuzz_property(case: FuzzCase) -> None:
                trio.from_thread.run(one_example, case)

            await trio.to_thread.run_sync(fuzz_property)
        nursery.cancel_scope.cancel()


# -- 6. the coordinator under random interleavings, against a reference model ----------


MODEL_LEASE = 10.0
MODEL_MAX_ATTEMPTS = 3
MODEL_RETRY_DELAY = 1.0
MODEL_MAX_RETRY_DELAY = 4.0
MAX_CONNECTIONS = 5
FINISHED_STATES = ("completed", "failed", "cancelled")
#: What may queue behind a parked request: nothing that changes a job another
#: connection could touch in the same step (see ``CoordinatorModel``).
QUEUEABLE = (SubmitJob, RequestJob, GetStatus, WaitJob)


@attrs.define(eq=False)
class SentRequest:
    """A request the model is owed exactly one reply to."""

    request: Request
    #: When it reached the head of its connection's line and was served...
    served_at: float | None = None
    #: ...and in which step (steps can share a time; they are still ordered).
    served_step: int = -1
    #: Served first thing in its step, against the state as the step began.
    first_in_step: bool = False

    def parked_deadline(self) -> float:
        """When the coordinator must answer it if it is parked."""
        assert self.served_at is not None
        wait = getattr(self.request, "wait", None)
        return math.inf if wait is None else self.served_at + wait


@attrs.define(eq=False)
class ModelConn:
    conn: Connection
    replies: trio.MemoryReceiveChannel[list[Outgoing] | None]
    outstanding: deque[SentRequest] = attrs.field(factory=deque)
    closed: bool = False
    #: The coordinator has sent the end-of-connection marker (``None``).
    told_closed: bool = False


@attrs.define(eq=False)
class ModelJob:
    seq: int
    priority: int
    max_attempts: int
    state: str = "pending"
    holder: int | None = None
    attempt: int = 0
    attempt_base: int = 0
    deadline: float = math.inf  # of the lease, while running
    not_before: float = math.inf  # while scheduled

    @property
    def rank(self) -> tuple[int, int]:
        """Place in line: highest priority first, then first submitted."""
        return (-self.priority, self.seq)

    @property
    def attempts_left(self) -> int:
        return self.max_attempts - (self.attempt - self.attempt_base)


class CoordinatorModel(RuleBasedStateMachine):
    """Random commands and clock jumps against a bare ``Coordinator``.

    The model is deliberately not a second implementation: it does not decide
    which connection gets which job, nor draw retry jitter. It tracks what the
    replies say happened and checks the rules every interleaving must keep: one
    reply per request, a ``job_cancelled`` notice only to the holder of a job
    just cancelled and never ahead of a reply; only the lease holder on the
    current attempt reports; a running job has one holder and a finished job is
    never handed out (unless revived); a job never waits in line behind a worse
    one (priority, then submission order) while that one is handed out, and
    the longest-parked workers are served first; no worker stays parked while a
    job is pending; a lost run spends an attempt and the last one fails the
    job; leases expire exactly ``lease_timeout`` after the last assignment or
    heartbeat, blocking requests exactly ``wait`` after they were served, and
    retries back off within ``[ceiling / 2, ceiling]``; ``next_deadline()`` is
    the earliest of those; totals and counts agree with what was seen.

    Within one step the coordinator serves the commanding connection's requests
    first, then the connections it woke, in an order the replies do not show.
    So only requests that cannot conflict across connections (``QUEUEABLE``)
    are ever queued behind a parked one, and the commander's replies are
    checked first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.state = QueueState(
            rules=QueueRules(
                lease_timeout=MODEL_LEASE,
                max_attempts=MODEL_MAX_ATTEMPTS,
                retry_delay=MODEL_RETRY_DELAY,
                max_retry_delay=MODEL_MAX_RETRY_DELAY,
            ),
            id_prefix="j",
            rng=random.Random(0),
        )
        self.coordinator = Coordinator(self.state)
        self.now = 0.0
        self.steps = 0
        self.conns: dict[int, ModelConn] = {}
        self.next_id = 1
        self.jobs: dict[str, ModelJob] = {}
        self.highest_seq = 0
        self.totals = dict.fromkeys(
            ("submitted", "completed", "failed", "cancelled", "retried", "reassigned", "expired"),
            0,
        )
        # Per step: what replies are checked against.
        self.states_before: dict[str, str] = {}
        self.line_before: list[str] = []
        self.status_replies: list[JobInfo] = []
        self.expected_notices: set[tuple[int, str, int]] = set()

    # -- helpers -------------------------------------------------------------------

    def open_conns(self) -> list[ModelConn]:
        return [c for c in self.conns.values() if not c.closed]

    def pick_conn(self, index: int, request: Request | None = None) -> ModelConn | None:
        """An open connection; one that is not parked unless ``request`` may queue."""
        conns = self.open_conns()
        if not isinstance(request, QUEUEABLE):
            conns = [c for c in conns if not c.outstanding]
        return conns[index % len(conns)] if conns else None

    def pick_job(self, index: int) -> str:
        ids = [*self.jobs, "no-such-job"]
        return ids[index % len(ids)]

    def attempt_for(self, job_id: str, choice: str) -> int | None:
        current = self.jobs[job_id].attempt if job_id in self.jobs else 1
        return {
            "none": None,
            "current": max(current, 1),
            "stale": max(current - 1, 1),
            "next": current + 1,
        }[choice]

    def in_state(self, state: str) -> list[str]:
        return [job_id for job_id, job in self.jobs.items() if job.state == state]

    def parked_idle(self) -> list[ModelConn]:
        """Open connections whose oldest unanswered request is a parked request_job."""
        return [
            c
            for c in self.open_conns()
            if c.outstanding and isinstance(c.outstanding[0].request, RequestJob)
        ]

    def serve_head(self, model: ModelConn) -> None:
        model.outstanding[0].served_at = self.now
        model.outstanding[0].served_step = self.steps

    def served_first(self, sent: SentRequest) -> bool:
        """Whether ``sent`` was served first thing in this step, as the step began."""
        return sent.first_in_step and sent.served_step == self.steps

    def send(self, model: ModelConn | None, *requests: Request) -> None:
        if model is None:
            return
        was_idle = not model.outstanding
        model.outstanding.extend(SentRequest(r) for r in requests)
        self.steps += 1
        if was_idle:
            self.serve_head(model)
            model.outstanding[0].first_in_step = len(requests) == 1
        self.step(Batch(model.conn, list(requests)), model)

    def lose(self, job_ids: list[str], *, expired: bool) -> None:
        """Runs lost to a closed connection or an expired lease: each spends an attempt."""
        for job_id in job_ids:
            job = self.jobs[job_id]
            job.holder, job.deadline = None, math.inf
            if job.attempts_left > 0:
                job.state = "pending"
            else:
                job.state = "failed"
                self.totals["failed"] += 1
        self.totals["reassigned"] += len(job_ids)
        if expired:
            self.totals["expired"] += len(job_ids)

    # -- one step: a command (or a timer firing), then every check ------------------

    def step(self, command: Command | None, commander: ModelConn | None = None) -> None:
        if command is None:
            self.steps += 1
        self.states_before = {job_id: job.state for job_id, job in self.jobs.items()}
        self.line_before = sorted(self.in_state("pending"), key=lambda j: self.jobs[j].rank)
        self.status_replies = []
        self.expected_notices = set()
        if command is not None:
            self.coordinator.handle(command, self.now)
        # As the real run loop does after every wake-up.
        self.coordinator.fire_timers(self.now)

        assigned: dict[str, SentRequest] = {}
        drained = {id(model): (model, self.drain(model)) for model in self.conns.values()}
        submitted = self.register_submissions(list(drained.values()))
        order = sorted(drained.values(), key=lambda pair: pair[0] is not commander)
        notices: set[tuple[int, str, int]] = set()
        for model, items in order:
            noticed = False
            for item in items:
                if isinstance(item, JobCancelledNotice):
                    notices.add((model.conn.id, item.job_id, item.attempt))
                    noticed = True
                    continue
                assert not noticed, f"a reply after a notice on {model.conn.id}: {items}"
                self.check_reply(model, item, assigned)
        assert notices == self.expected_notices, (notices, self.expected_notices)

        # What a status said, the job was at some moment of this step.
        for info in self.status_replies:
            if info.job_id in self.jobs:
                job = self.jobs[info.job_id]
                assert info.attempt <= job.attempt, info
                if info.state in FINISHED_STATES:
                    assert job.state == info.state, info
        # Order: a job handed out in this step never overtook one that was
        # waiting in line all along, ahead of it (priority, then submission).
        waited_throughout = [j for j in self.line_before if self.jobs[j].state == "pending"]
        for job_id in assigned:
            assert job_id in submitted or self.states_before.get(job_id) in (
                "pending",
                "scheduled",
                "running",
                "failed",
            ), job_id
            for ahead in waited_throughout:
                assert not self.jobs[ahead].rank < self.jobs[job_id].rank, (
                    f"{job_id} was handed out while {ahead} waited ahead of it"
                )
        # Longest-waiting parked workers first (among those parked in earlier
        # steps; within one step the order is not visible from outside).
        served = [r.served_step for r in assigned.values() if r.served_step < self.steps]
        still = [
            c.outstanding[0].served_step
            for c in self.parked_idle()
            if c.outstanding[0].served_step < self.steps
        ]
        if served and still:
            assert max(served) <= min(still), f"a later waiter was served first: {served} {still}"
        self.check_rules()

    def drain(self, model: ModelConn) -> list[Outgoing | JobCancelledNotice]:
        items: list[Outgoing | JobCancelledNotice] = []
        for _ in range(10_000):
            try:
                batch = model.replies.receive_nowait()
            except trio.WouldBlock:
                return items
            assert not model.told_closed, f"{batch} after connection {model.conn.id} ended"
            if batch is None:
                assert model.closed, f"connection {model.conn.id} ended while open"
                model.told_closed = True
            else:
                assert not model.closed, f"{batch} after connection {model.conn.id} closed"
                items.extend(batch)
        raise AssertionError("unbounded replies")

    def register_submissions(
        self, drained: list[tuple[ModelConn, list[Outgoing | JobCancelledNotice]]]
    ) -> set[str]:
        """Jobs submitted in this step, first: another connection may already hold one."""
        new: list[tuple[int, str, ModelJob]] = []
        for model, items in drained:
            replies = [item for item in items if not isinstance(item, JobCancelledNotice)]
            for sent, reply in zip(model.outstanding, replies, strict=False):
                if isinstance(sent.request, SubmitJob) and isinstance(reply, JobSubmitted):
                    assert not reply.duplicate, reply
                    assert reply.job_id not in self.jobs, reply
                    request = sent.request
                    record = self.state.get(reply.job_id)
                    max_attempts = request.max_attempts or MODEL_MAX_ATTEMPTS
                    assert (record.priority, record.queue, record.max_attempts) == (
                        request.priority,
                        "default",
                        max_attempts,
                    ), record
                    job = ModelJob(record.seq, request.priority, max_attempts)
                    new.append((record.seq, reply.job_id, job))
        for seq, job_id, job in sorted(new, key=lambda entry: entry[0]):
            assert seq > self.highest_seq, f"{job_id} numbered {seq} after {self.highest_seq}"
            self.highest_seq = seq
            self.jobs[job_id] = job
        self.totals["submitted"] += len(new)
        return {job_id for _, job_id, _ in new}

    def check_reply(
        self, model: ModelConn, reply: Outgoing, assigned: dict[str, SentRequest]
    ) -> None:
        assert model.outstanding, f"connection {model.conn.id} got {reply!r}, asked nothing"
        sent = model.outstanding.popleft()
        request, cid = sent.request, model.conn.id
        if model.outstanding:
            self.serve_head(model)
        where = f"{request!r} from connection {cid} at {self.now}: {reply!r}"

        if isinstance(request, SubmitJob):
            assert isinstance(reply, JobSubmitted), where
        elif isinstance(request, RequestJob):
            if isinstance(reply, JobAssigned):
                job = self.jobs[reply.job_id]
                # Never a running job (two holders) nor a finished one (run again).
                assert job.state == "pending", where
                assert reply.job_id not in assigned, where
                if self.served_first(sent):  # the best job as the step began
                    assert reply.job_id == self.line_before[0], where
                job.state, job.holder, job.attempt = "running", cid, job.attempt + 1
                job.deadline = self.now + MODEL_LEASE
                assert reply.attempt == job.attempt, where
                assert reply.lease_timeout == MODEL_LEASE, where
                assigned[reply.job_id] = sent
            else:
                assert isinstance(reply, NoJob), where
                # Only once its wait is over, or at once with nothing pending.
                assert sent.served_at is not None, where
                assert self.now >= sent.served_at + request.wait, where
                if self.served_first(sent):
                    assert not self.line_before, where
        elif isinstance(request, (JobComplete, JobFailed, Heartbeat)):
            job_or_none = self.jobs.get(request.job_id)
            holds = (
                job_or_none is not None
                and job_or_none.state == "running"
                and job_or_none.holder == cid
                and request.attempt in (None, job_or_none.attempt)
            )
            if not holds:
                assert isinstance(reply, RuleError), where
                expected = "unknown_job" if job_or_none is None else "not_leased"
                assert reply.code == expected, where
                return
            assert job_or_none is not None
            job = job_or_none
            assert isinstance(reply, Ok), where
            if isinstance(request, Heartbeat):
                assert reply.lease_timeout == MODEL_LEASE, where
                job.deadline = self.now + MODEL_LEASE
                return
            job.deadline = math.inf
            if isinstance(request, JobComplete):
                job.state = "completed"
                self.totals["completed"] += 1
            elif job.attempts_left > 0:
                job.state = "scheduled"
                self.totals["retried"] += 1
                # Backoff: ceiling doubles per failure, capped; at least half of it.
                retries = job.attempt - job.attempt_base
                ceiling = min(MODEL_RETRY_DELAY * 2 ** (retries - 1), MODEL_MAX_RETRY_DELAY)
                not_before = self.state.get(request.job_id).not_before
                assert not_before is not None, where
                assert self.now + ceiling / 2 <= not_before <= self.now + ceiling, where
                job.not_before = not_before
            else:
                job.state = "failed"
                self.totals["failed"] += 1
        elif isinstance(request, (CancelJob, RetryJob, DeleteJob)):
            self.check_action(request, reply, cid, where)
        else:
            assert isinstance(request, (GetStatus, WaitJob)), where
            if request.job_id not in self.jobs:
                assert isinstance(reply, RuleError), where
                assert reply.code == "unknown_job", where
                return
            assert isinstance(reply, JobInfo), where
            assert reply.job_id == request.job_id, where
            if isinstance(request, WaitJob) and reply.state not in FINISHED_STATES:
                # An unfinished answer only when the wait ran out.
                assert request.wait is not None, where
                assert sent.served_at is not None, where
                assert self.now >= sent.served_at + request.wait, where
            if self.states_before.get(request.job_id) in FINISHED_STATES:
                assert reply.state == self.states_before[request.job_id], where
            self.status_replies.append(reply)

    def check_action(
        self, request: CancelJob | RetryJob | DeleteJob, reply: Outgoing, cid: int, where: str
    ) -> None:
        """cancel_job, retry_job, delete_job: only ever sent as a step's command."""
        job = self.jobs.get(request.job_id)
        if job is None:
            assert isinstance(reply, RuleError), where
            assert reply.code == "unknown_job", where
            return
        if request.TYPE == "cancel_job":
            if job.state in ("completed", "failed"):
                assert isinstance(reply, RuleError), where
                assert reply.code == "already_finished", where
                return
            assert isinstance(reply, JobInfo), where
            assert reply.state == "cancelled", where
            if job.state == "running":
                assert job.holder is not None
                if not self.conns[job.holder].closed:
                    self.expected_notices.add((job.holder, request.job_id, job.attempt))
            if job.state != "cancelled":
                self.totals["cancelled"] += 1
            job.state, job.holder = "cancelled", None
            job.deadline = job.not_before = math.inf
        elif request.TYPE == "retry_job":
            if job.state != "failed":
                assert isinstance(reply, RuleError), where
                assert reply.code == "not_failed", where
                return
            assert isinstance(reply, JobInfo), where
            # Revived: back in line with a fresh budget (another worker may
            # already have it, later in this step).
            job.state, job.attempt_base = "pending", job.attempt
        else:
            if job.state not in FINISHED_STATES:
                assert isinstance(reply, RuleError), where
                assert reply.code == "not_finished", where
                return
            assert isinstance(reply, Ok), where
            del self.jobs[request.job_id]

    def check_rules(self) -> None:
        state = self.state
        held: dict[int, set[str]] = {}
        for job_id, job in self.jobs.items():
            record = state.get(job_id)  # never lost: every job is still known
            assert (record.state.value, record.attempt) == (job.state, job.attempt), job_id
            if job.state == "running":
                assert record.worker == job.holder, job_id
                assert record.lease_deadline == job.deadline, job_id
                assert job.deadline > self.now, f"lease on {job_id} outlived its deadline"
                assert job.holder is not None
                held.setdefault(job.holder, set()).add(job_id)
            if job.state == "scheduled":
                assert record.not_before == job.not_before > self.now, job_id
        assert {worker: set(jobs) for worker, jobs in state.holders()} == held
        counts = dict.fromkeys(STATES, 0)
        for job in self.jobs.values():
            counts[job.state] += 1
        assert state.counts() == counts
        assert state.totals == self.totals

        # Every unanswered request is legitimately parked (the rest queue behind it).
        deadlines = [job.deadline for job in self.jobs.values() if job.state == "running"]
        deadlines += [job.not_before for job in self.jobs.values() if job.state == "scheduled"]
        for model in self.open_conns():
            if not model.outstanding:
                continue
            head = model.outstanding[0]
            where = f"connection {model.conn.id} at {self.now}: {head.request!r}"
            if isinstance(head.request, RequestJob):
                assert head.request.wait > 0, f"unanswered non-blocking request: {where}"
                assert not self.in_state("pending"), f"parked while jobs are pending: {where}"
            else:
                assert isinstance(head.request, WaitJob), f"unanswered request: {where}"
                assert head.request.wait != 0, where
                waited_for = self.jobs.get(head.request.job_id)
                assert waited_for is not None, where
                assert waited_for.state not in FINISHED_STATES, f"waiter not told: {where}"
            assert head.parked_deadline() > self.now, f"missed its deadline: {where}"
            deadlines.append(head.parked_deadline())
        assert self.coordinator.next_deadline() == min(deadlines, default=math.inf)

    # -- rules -----------------------------------------------------------------------

    @precondition(lambda self: len(self.open_conns()) < MAX_CONNECTIONS)
    @rule()
    def connect(self) -> None:
        outbox, replies = trio.open_memory_channel[list[Outgoing] | None](math.inf)
        conn = Connection(self.next_id, f"peer-{self.next_id}", outbox)
        self.conns[self.next_id] = ModelConn(conn, replies)
        self.next_id += 1
        self.step(Connected(conn))

    @precondition(lambda self: self.open_conns())
    @rule(
        c=st.integers(0, 99),
        priority=st.sampled_from([0, 0, 0, 1, -1]),
        max_attempts=st.sampled_from([None, None, 1, 2]),
        then_request=st.booleans(),
    )
    def submit(self, c: int, priority: int, max_attempts: int | None, then_request: bool) -> None:
        requests: list[Request] = [
            SubmitJob("job", None, priority=priority, max_attempts=max_attempts)
        ]
        if then_request:  # pipelined in one batch
            requests.append(RequestJob(wait=5.0))
        self.send(self.pick_conn(c, requests[0]), *requests)

    @precondition(lambda self: self.open_conns())
    @rule(c=st.integers(0, 99), wait=st.sampled_from([0.0, 0.0, 1.0, 5.0, 30.0]))
    def request_job(self, c: int, wait: float) -> None:
        request = RequestJob(wait=wait)
        self.send(self.pick_conn(c, request), request)

    @precondition(lambda self: self.open_conns())
    @rule(
        c=st.integers(0, 99),
        j=st.integers(0, 99),
        wait=st.sampled_from([None, 0.0, 2.0, 20.0]),
        poll=st.booleans(),
    )
    def ask_about_job(self, c: int, j: int, wait: float | None, poll: bool) -> None:
        job_id = self.pick_job(j)
        request: Request = GetStatus(job_id) if poll else WaitJob(job_id, wait)
        self.send(self.pick_conn(c, request), request)

    @precondition(lambda self: self.open_conns())
    @rule(
        c=st.integers(0, 99),
        from_holder=st.booleans(),
        j=st.integers(0, 99),
        running=st.booleans(),
        attempt=st.sampled_from(["none", "current", "current", "stale", "next"]),
        kind=st.sampled_from(["complete", "fail", "heartbeat", "heartbeat"]),
    )
    def report(
        self, c: int, from_holder: bool, j: int, running: bool, attempt: str, kind: str
    ) -> None:
        """A report or heartbeat, often from the holder of a running job."""
        held = self.in_state("running")
        job_id = held[j % len(held)] if running and held else self.pick_job(j)
        tries = self.attempt_for(job_id, attempt)
        request: Request
        if kind == "complete":
            request = JobComplete(job_id, tries, {"c": c})
        elif kind == "fail":
            request = JobFailed(job_id, "Boom", "it broke", tries)
        else:
            request = Heartbeat(job_id, tries)
        model = self.pick_conn(c, request)
        holder = self.jobs[job_id].holder if job_id in self.jobs else None
        if from_holder and holder is not None:
            model = self.conns[holder]
            if model.outstanding:
                return  # parked: would have to queue behind its blocking request
        self.send(model, request)

    @precondition(lambda self: self.open_conns())
    @rule(
        c=st.integers(0, 99),
        j=st.integers(0, 99),
        kind=st.sampled_from([CancelJob, CancelJob, RetryJob, DeleteJob]),
    )
    def act(self, c: int, j: int, kind: type[CancelJob | RetryJob | DeleteJob]) -> None:
        request = kind(self.pick_job(j))
        self.send(self.pick_conn(c, request), request)

    @precondition(lambda self: self.open_conns())
    @rule(c=st.integers(0, 99))
    def disconnect(self, c: int) -> None:
        conns = self.open_conns()
        model = conns[c % len(conns)]
        model.closed = True
        model.outstanding.clear()  # dropped: a closed connection is owed nothing
        cid = model.conn.id
        held = [j for j, job in self.jobs.items() if job.state == "running" and job.holder == cid]
        self.lose(held, expired=False)
        # A step of its own (as `send` counts one): without it, a request
        # parked in the previous step looked "served first thing in this
        # step" and had to get the head of the line, though the disconnect
        # may requeue several jobs for several parked workers at once.
        self.steps += 1
        self.step(Disconnected(model.conn))
        assert model.told_closed

    @rule(dt=st.sampled_from([0.5, 2.0, 5.0, MODEL_LEASE, MODEL_LEASE + 0.5]) | st.floats(0, 40))
    def advance(self, dt: float) -> None:
        self.advance_to(self.now + dt)

    def advance_to(self, target: float) -> None:
        """Move the clock to ``target``, firing every deadline on the way, in order."""
        for _ in range(10_000):
            deadline = self.coordinator.next_deadline()
            if deadline > target:
                break
            self.now = max(self.now, deadline)
            # As QueueState.tick: expire leases (oldest deadline first), then
            # promote scheduled jobs that came due.
            expired = sorted(
                (
                    j
                    for j, job in self.jobs.items()
                    if job.state == "running" and job.deadline <= self.now
                ),
                key=lambda j: self.jobs[j].deadline,
            )
            self.lose(expired, expired=True)
            for job in self.jobs.values():
                if job.state == "scheduled" and job.not_before <= self.now:
                    job.state, job.not_before = "pending", math.inf
            self.step(None)
        else:  # pragma: no cover
            raise AssertionError("deadlines kept coming")
        self.now = target
        self.step(None)

    def teardown(self) -> None:
        # Eventually: past every finite wait, lease and backoff, each
        # connection's unanswered requests are only an endless wait_job on an
        # unfinished job and what is queued behind it.
        self.advance_to(self.now + 3600 + 10 * MODEL_LEASE * MAX_CONNECTIONS * MODEL_MAX_ATTEMPTS)
        for model in self.open_conns():
            if model.outstanding:
                head = model.outstanding[0].request
                assert isinstance(head, WaitJob), head
                assert head.wait is None, head
        for model in self.open_conns():
            self.disconnect(self.open_conns().index(model))
        assert not self.in_state("running")
        assert not self.in_state("scheduled")
        assert self.coordinator.next_deadline() == math.inf


def test_coordinator_keeps_its_rules_under_random_interleavings() -> None:
    run_state_machine_as_test(
        CoordinatorModel,
        settings=settings(
            max_examples=300,
            stateful_step_count=50,
            deadline=None,
            database=None,
            report_multiple_bugs=False,
        ),
    )


def test_coordinator_model_disconnect_requeuing_two_jobs_for_two_parked_workers() -> None:
    # Found by the test above: one connection holds two jobs and two others
    # are parked; its disconnect requeues both, and each parked worker gets
    # one. The server was right; the model wrongly demanded the head of the
    # line for the second waiter (it counted the disconnect as no new step).
    model = CoordinatorModel()
    for _ in range(5):
        model.connect()
    model.advance(1.0)
    model.submit(c=0, priority=0, max_attempts=None, then_request=False)
    model.advance(2.0)
    model.request_job(c=2, wait=0.0)  # connection 3 takes j1
    model.disconnect(c=0)
    model.connect()
    model.submit(c=1, priority=0, max_attempts=None, then_request=True)  # 3 takes j2 too
    model.advance(0.5)
    model.request_job(c=0, wait=1.0)  # connection 2 parks
    model.request_job(c=2, wait=1.0)  # connection 4 parks
    model.disconnect(c=1)  # connection 3 goes: j1 to connection 2, j2 to 4
    assert {job_id: (job.state, job.holder) for job_id, job in model.jobs.items()} == {
        "j1": ("running", 2),
        "j2": ("running", 4),
    }
    model.teardown()


# -- 7. chaos: real worker processes SIGKILLed at random ---------------------------------


@pytest.mark.slow
async def test_chaos_short_run_loses_nothing_and_completes_each_job_once(tmp_path: Path) -> None:
    """The chaos run of ``python -m tests.process.chaos``, scaled down for the quick suite."""
    chaos = importlib.import_module("tests.process.chaos")
    report: ChaosReport = await chaos.run_chaos(
        jobs=300,
        kills=2,
        kill_every=(0.3, 0.6),
        job_seconds=(0.02, 0.08),
        seed=20240611,
        log_dir=tmp_path,
        time_limit=30,
    )
    print(report.summary())
    assert report.violations == [], report.summary()
    assert len(report.kills) == 2
    assert sum(report.runs_per_job.values()) == 300


async def test_worker_says_once_that_its_connection_was_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Regression: the reader task marked the connection "lost: <why>", and the
    # request waiting on it wrapped that reason in a second "lost:", so the
    # worker logged "connection to ... lost: lost: the server closed ...".
    caplog.set_level(logging.WARNING, logger="jobqueue.worker")
    server = RestartableServer(lease_timeout=30)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            host, port = await server.start(nursery, 0)
            await nursery.start(Worker(host, port, name="W", poll_wait=60).run)
            async with Client.connect(host, port) as client:
                await stats_when(client, lambda s: s.waiting_workers == 1)
            server.stop_nowait()  # the worker is parked in request_job
            await wait_until(lambda: bool(worker_warnings(caplog, "lost the queue")))
            nursery.cancel_scope.cancel()
    [record] = worker_warnings(caplog, "lost the queue")
    message = record.getMessage()
    assert message.count("lost:") == 1, message
    assert f"connection to {host}:{port} lost: the server closed the connection" in message
