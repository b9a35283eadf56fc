"""Fault injection: partitions, hung handlers, lost workers, restarts, stalled peers.

Each test breaks something on purpose and checks the queue's promises still hold:
no job lost, a finished job never runs again, the lease holder alone reports, and
one misbehaving peer never slows the others.

Real sockets (loopback only) where the fault is about the network, in-memory
streams and the autojump clock where it is about time. (The protocol fuzz is
in ``test_protocol_fuzz.py``, the coordinator's random interleavings in
``tests/unit/test_coordinator_model.py``, killed worker processes in
``tests/process/``.) Nothing sleeps hoping something happens: tests wait on
events, replies, or (where the server's own view is the only observable) poll
``stats``, and every wait is bounded by ``trio.fail_after``.

A test named ``test_BUG_...`` documents a library bug and fails until it is fixed.
None is open: the two silent-partition tests were ``test_BUG_`` tests until the
worker gained reply deadlines (commit 15c6db5).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import re
import struct
import termios
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from jobqueue import Client, ConnectionLost, Job, RequestError, Stats, Worker, serve_queue
from jobqueue._json import encode
from jobqueue.testing import RunningQueue, open_memory_queue, open_test_queue
from tests.helpers import park, stats_when, submit_raw, take, wait_until

if TYPE_CHECKING:
    from tests.helpers import RawConnection, RawOpener

LOCALHOST = "127.0.0.1"


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
                # Whatever came while partitioned waits for the heal, an end
                # of stream too: a FIN is a packet the partition drops.
                await self._wait_flowing()
                if not data:
                    break
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


# -- 5. lost workers ---------------------------------------------------------------------


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
            job_id = await submit_raw(other)
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
