"""``Worker``: fetch jobs, run their handlers, heartbeat, report.

A worker with ``concurrency=N`` opens N connections ("slots"). Each slot is
one sequential loop: ask for a job (blocking on the server with ``wait``, so
nothing polls), run its handler while heartbeating the lease, report the
outcome, repeat. One connection per slot keeps every request/reply strictly
sequential, so no request ever waits behind another slot's blocked
``request_job``; if the process dies, all its connections close and the
server requeues all its jobs at once.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import attrs
import trio

from ._errors import ConnectionLost, RequestError
from ._handler import BUILTIN_HANDLERS, DEFAULT_JOB_TIMEOUT, Handler, Job
from ._link import Connector, Link
from ._protocol import (
    MAX_FETCH,
    MAX_WAIT_SECONDS,
    Heartbeat,
    Hello,
    JobAssigned,
    JobCancelledNotice,
    JobComplete,
    JobFailed,
    JobsAssigned,
    Ok,
    Progress,
    Reply,
    Request,
    RequestJob,
    Welcome,
    encode,
)
from ._state import DEFAULT_QUEUE

__all__ = [
    "DEFAULT_JOB_TIMEOUT",
    "DEFAULT_REPLY_GRACE",
    "Handler",
    "Job",
    "Worker",
    "WorkerStatistics",
]

log = logging.getLogger("jobqueue.worker")

#: Default for Worker.reply_grace: seconds a reply may take beyond what its
#: request asks the server to wait.
DEFAULT_REPLY_GRACE = 10.0


async def _ask_many(
    link: Link, messages: Sequence[Request], limit: float
) -> list[Reply | RequestError]:
    """``link.request_many`` with a deadline for the replies, as :func:`_ask`."""
    with trio.move_on_after(limit):
        return await link.request_many(messages)
    raise ConnectionLost(
        f"no reply to {len(messages)} pipelined requests within {limit:g}s from {link.address}"
    )


async def _ask(link: Link, message: Request, limit: float) -> Reply:
    """``link.request`` with a deadline for the reply.

    Raises:
        ConnectionLost: no reply within ``limit`` seconds (the connection is
            then unusable, as after any interrupted request).
    """
    with trio.move_on_after(limit):
        return await link.request(message)
    raise ConnectionLost(f"no reply to {message.TYPE} within {limit:g}s from {link.address}")


async def _ask_timed(link: Link, message: Request, limit: float, beat: _Beat) -> Reply:
    """:func:`_ask` with the deadline kept by the slot's beat task, not a cancel scope.

    A slot reports every job, so this is the worker's hottest request; a
    cancel scope of its own would cost more than the rest of the request
    (see :class:`_Beat`).

    Raises:
        ConnectionLost: no reply within ``limit`` seconds (the beat task has
            then cancelled the connection, which is unusable).
    """
    beat.expect_reply(message.TYPE, limit)
    try:
        return await link.request(message)
    except trio.Cancelled:
        if beat.expired is not None:
            raise beat.expired from None
        raise
    finally:
        beat.replied()


#: Error codes meaning "this lease is no longer yours": stop, report nothing.
_LEASE_GONE = frozenset({"not_leased", "unknown_job"})


def _default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@attrs.define(eq=False)
class _Beat:
    """The timers of a slot's running job and outstanding report, for its beat task.

    The beat task (:meth:`Worker._beat_current`) sleeps until the earliest
    of them. Its wake-up is moved only *earlier*, never later: a job or a
    report that ends before its timer simply leaves the wake-up where it
    is, and the beat task, woken with nothing due, sleeps again until what
    is due next. So back-to-back short jobs cost no timer changes at all,
    only one spare wake-up per heartbeat interval.
    """

    key: tuple[str, int] | None = None
    lease: float = 0.0
    interval: float = math.inf
    #: When the next heartbeat is due (``inf``: no job, or one in flight).
    next_at: float = math.inf
    #: When the running handler has run for ``job_timeout`` (``inf``: no limit).
    timeout_at: float = math.inf
    #: Whether the beat task stopped the handler for running past ``timeout_at``.
    timed_out: bool = False
    #: When the slot's outstanding report must have been answered (``inf``: none).
    reply_at: float = math.inf
    #: What that report is and how long it may take, for the error message.
    reply_for: tuple[str, float] = ("", 0.0)
    #: Set when that reply is overdue: the connection is then ended.
    expired: ConnectionLost | None = None
    #: The beat task's current sleep; its deadline is at or before what is due.
    scope: trio.CancelScope | None = None
    handler: trio.CancelScope | None = None
    #: Why the running job's lease was given up, if it was.
    lost: ConnectionLost | RequestError | None = None

    def start(
        self,
        key: tuple[str, int],
        lease: float,
        interval: float,
        handler: trio.CancelScope,
        job_timeout: float | None,
    ) -> None:
        """A job started: its first heartbeat is due ``interval`` from now."""
        self.key, self.lease, self.interval, self.handler = key, lease, interval, handler
        self.lost = None
        self.timed_out = False
        now = trio.current_time()
        self.next_at = now + interval
        self.timeout_at = math.inf if job_timeout is None else now + job_timeout
        self._wake_by(min(self.next_at, self.timeout_at))

    def stop(self) -> None:
        """The job ended: no more heartbeats for it (its wake-up is left as is)."""
        self.key = self.handler = None
        self.next_at = self.timeout_at = math.inf

    def expect_reply(self, what: str, limit: float) -> None:
        """A report went out: its reply is due within ``limit`` seconds."""
        self.reply_at = trio.current_time() + limit
        self.reply_for = (what, limit)
        self._wake_by(self.reply_at)

    def replied(self) -> None:
        """The report was answered (or failed): no reply is outstanding."""
        self.reply_at = math.inf

    def due(self) -> float:
        """When the beat task next has something to do."""
        return min(self.next_at, self.timeout_at, self.reply_at)

    def _wake_by(self, when: float) -> None:
        scope = self.scope
        if scope is not None and when < scope.deadline:
            scope.deadline = when


@attrs.define
class WorkerStatistics:
    """Counters for one :class:`Worker`.

    Attributes:
        completed: Jobs whose handler returned, reported as completed (counted
            when the report is sent; a report the server refuses, or whose
            connection breaks before the reply, is taken back out).
        failed: Jobs whose handler raised, reported as failed (counted likewise).
        lost: Jobs abandoned because the server said the lease was gone.
        cancelled: Jobs stopped because someone cancelled them.
        timed_out: Handlers stopped for running longer than ``job_timeout``
            (also counted in ``failed``).
        running: Handlers running right now.
        connected_slots: Slots connected (``hello`` answered) right now.
    """

    completed: int = 0
    failed: int = 0
    lost: int = 0
    cancelled: int = 0
    timed_out: int = 0
    running: int = 0
    connected_slots: int = 0


def _fetched(reply: Reply) -> Reply | None:
    """A report's reply if it answers the fetch; ``None`` for a plain ``ok``.

    A server that predates ``fetch`` ignores the field and answers ``ok``:
    the worker then asks for its next job with a plain ``request_job``.
    """
    return None if isinstance(reply, Ok) else reply


def _queue_names(queues: Iterable[str]) -> tuple[str, ...]:
    names = (queues,) if isinstance(queues, str) else tuple(queues)
    if not names:
        raise ValueError("a worker needs at least one queue")
    return names


def _merge_handlers(handlers: Mapping[str, Handler]) -> dict[str, Handler]:
    return {**BUILTIN_HANDLERS, **handlers}


@attrs.define(eq=False)
class Worker:
    """Runs jobs from the queue at ``host:port``.

    ``await worker.run()`` (or ``await nursery.start(worker.run)``, which
    returns once every slot has connected) runs until cancelled. Cancelling
    it stops at once: running handlers are cancelled, nothing more is
    reported, and the server puts their jobs back in the queue as soon as
    the connections close.

    Args:
        host: The server's address.
        port: The server's port.
        handlers: Job name -> async handler; added to (and able to replace)
            the built-in ``sleep``.
        concurrency: How many jobs to run at once (one connection each).
        name: How the server names this worker in status and stats.
        poll_wait: How long one ``request_job`` waits on the server for a
            job before asking again. Only bounds how long a slot goes
            without proof the connection is alive; jobs arrive immediately.
        reconnect_delay: First delay after a failed connection; doubles (with
            jitter) on each further failure.
        max_reconnect_delay: Cap on that delay.
        queues: The queues to take jobs from; the best job across all of
            them (highest priority, then oldest) comes first.
        job_timeout: Longest a handler may run, in seconds (``None``: no
            limit). A handler still running then is cancelled and its job
            reported as failed with ``TimeoutError``, so a hung handler
            cannot keep its job for ever by heartbeating.
        token: The server's shared secret, if it was started with one.
        ssl_context: Speak TLS, checking the server's certificate with this
            context (e.g. ``ssl.create_default_context(cafile=...)``).
        connect: Advanced: an async function returning a connected
            ``trio.abc.Stream``, used instead of TCP to ``host:port``
            (``jobqueue.testing`` uses it for in-memory queues).
        prefetch: Jobs each slot takes per round trip (1 to 1000). Above 1, a
            slot takes up to this many at once, runs them one after another,
            then reports them all in one write that also takes the next
            batch. Fewer round trips for short jobs, but a job's result is
            reported only when its batch is done, and a slot holds (and
            heartbeats) jobs it has not started; a lost worker's jobs,
            started or not, go back to the queue.
        reply_grace: Seconds a reply may take beyond what its request asks
            the server to wait (``poll_wait`` for a ``request_job``) before
            the slot gives up on the connection and reconnects: how soon a
            silent partition, which closes nothing, is noticed. Must exceed
            the worst round trip to the server.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    handlers: dict[str, Handler] = attrs.field(factory=dict, converter=_merge_handlers)
    concurrency: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    name: str = attrs.field(factory=_default_name)
    poll_wait: float = attrs.field(
        default=30.0, validator=[attrs.validators.gt(0), attrs.validators.le(MAX_WAIT_SECONDS)]
    )
    reconnect_delay: float = 0.1
    max_reconnect_delay: float = 5.0
    queues: tuple[str, ...] = attrs.field(default=(DEFAULT_QUEUE,), converter=_queue_names)
    job_timeout: float | None = DEFAULT_JOB_TIMEOUT
    token: str | None = attrs.field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = None
    connect: Connector | None = None
    prefetch: int = attrs.field(
        default=1, validator=[attrs.validators.ge(1), attrs.validators.le(MAX_FETCH)]
    )
    reply_grace: float = attrs.field(default=DEFAULT_REPLY_GRACE, validator=attrs.validators.gt(0))
    _stats: WorkerStatistics = attrs.field(factory=WorkerStatistics, init=False)
    _link_down: bool = attrs.field(default=False, init=False)
    # The server's lease, from its hello reply: how long a report may take.
    _lease_timeout: float = attrs.field(default=30.0, init=False)
    # (job id, attempt) -> the cancel scope of its handler, for cancel notices.
    _running: dict[tuple[str, int], trio.CancelScope] = attrs.field(factory=dict, init=False)
    _cancelled: set[tuple[str, int]] = attrs.field(factory=set, init=False)

    def statistics(self) -> WorkerStatistics:
        """A snapshot of this worker's counters."""
        return attrs.evolve(self._stats)

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Run until cancelled; with ``nursery.start``, start once all slots connect.

        Error handling:
            A lost or refused connection is logged and retried with
            exponential backoff, for ever. A handler's exception fails that
            job and is logged; it never stops the worker.
        """
        all_connected = trio.Event()
        remaining = self.concurrency

        def slot_connected() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                all_connected.set()

        async with trio.open_nursery() as nursery:
            for index in range(self.concurrency):
                nursery.start_soon(self._slot, index, slot_connected)
            await all_connected.wait()
            log.info(
                "worker %s connected to %s:%d with %d slot(s); handlers: %s",
                self.name,
                self.host,
                self.port,
                self.concurrency,
                ", ".join(sorted(self.handlers)),
            )
            task_status.started()
        raise AssertionError("slots never return")  # pragma: no cover

    async def _slot(self, index: int, connected: Callable[[], None]) -> None:
        delay = self.reconnect_delay
        first = True
        while True:
            try:
                link = await Link.open(self.host, self.port, self.connect, self.ssl_context)
            except ConnectionLost as exc:
                if index == 0:
                    log.warning("%s; retrying in %.1fs", exc, delay)
            else:
                healthy = False

                def served() -> None:
                    nonlocal healthy, first
                    healthy = True
                    if first:
                        first = False
                        connected()

                try:
                    await self._connection(link, served)
                except (ConnectionLost, RequestError) as exc:
                    if not self._link_down:
                        self._link_down = True
                        log.warning("lost the queue at %s (%s); reconnecting", link.address, exc)
                finally:
                    await link.aclose()
                # Only a connection that did real work resets the backoff: a
                # server that accepts and then drops connections must not
                # send every slot into a tight reconnect loop.
                if healthy:
                    delay = self.reconnect_delay
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.max_reconnect_delay)

    async def _connection(self, link: Link, served: Callable[[], None]) -> None:
        """Serve jobs over one connection until it breaks (raises ConnectionLost)."""
        error: ConnectionLost | RequestError | None = None
        beat = _Beat()
        async with trio.open_nursery() as nursery:
            # The reader runs for the whole connection so a cancel notice is
            # seen even while no request is in flight; when the connection
            # ends it cancels everything here, running handlers included.
            await nursery.start(link.run_reader, self._on_notice, nursery.cancel_scope.cancel)
            self._stats.connected_slots += 1
            try:
                welcome = await _ask(link, Hello(self.name, self.token), self.reply_grace)
                if isinstance(welcome, Welcome):
                    self._lease_timeout = welcome.lease_timeout
                if self._link_down:
                    self._link_down = False
                    log.warning("reconnected to the queue at %s", link.address)
                served()
                if self.prefetch > 1:
                    await self._serve_batches(link, nursery)
                request = RequestJob(wait=self.poll_wait, queues=self.queues)
                # Each report also asks for the next job (ack and fetch), so
                # a job costs two requests, not three; its reply is the next
                # job, or no_job after poll_wait, as for a request_job.
                fetch = request
                await nursery.start(self._beat_current, link, beat, nursery.cancel_scope)
                reply: Reply | None = None
                while True:
                    if reply is None:
                        reply = await _ask(link, request, self.poll_wait + self.reply_grace)
                    if isinstance(reply, JobAssigned):
                        reply = await self._run_job(link, reply, fetch, beat)
                    else:
                        reply = None
            except (ConnectionLost, RequestError) as exc:
                error = exc
            finally:
                self._stats.connected_slots -= 1
                nursery.cancel_scope.cancel()
        if error is None:
            error = beat.expired  # a report went unanswered (the slot was cancelled)
        if error is not None:
            raise error
        raise ConnectionLost(f"connection to {link.address} {link.broken or 'lost'}")

    async def _serve_batches(self, link: Link, nursery: trio.Nursery) -> NoReturn:
        """The slot loop with ``prefetch``: take, run and report jobs in batches.

        Up to ``prefetch`` jobs come in one reply; they run one after another
        and are reported together, pipelined in one write whose last report
        also fetches the next batch (without waiting: an idle slot then blocks
        in a plain ``request_job``, so a heartbeat never waits behind it). A
        heartbeat task renews every lease the slot holds, run or not.

        Raises:
            ConnectionLost, RequestError: as for the single-job loop.
        """
        request = RequestJob(wait=self.poll_wait, queues=self.queues, max=self.prefetch)
        fetch = RequestJob(queues=self.queues, max=self.prefetch)
        held: dict[tuple[str, int], JobAssigned] = {}
        gone: set[tuple[str, int]] = set()
        nursery.start_soon(self._heartbeat_held, link, held, gone, nursery.cancel_scope)
        reply: Reply | None = None
        while True:
            if reply is None:
                reply = await _ask(link, request, self.poll_wait + self.reply_grace)
            if isinstance(reply, JobsAssigned):
                batch = list(reply.jobs)
            elif isinstance(reply, JobAssigned):  # a server that ignores max
                batch = [reply]
            else:
                reply = None
                continue
            for assigned in batch:
                held[assigned.job_id, assigned.attempt] = assigned
            reports: list[tuple[Job, bool, Any]] = []
            for assigned in batch:
                key = (assigned.job_id, assigned.attempt)
                job = self._job(link, assigned)
                outcome: tuple[bool, Any] | None = None
                # Not started at all if cancelled or lost while it waited.
                if key not in self._cancelled and key not in gone:
                    scope = trio.CancelScope()
                    self._running[key] = scope
                    self._stats.running += 1
                    log.debug("job %s (%s) attempt %d started", job.id, job.name, job.attempt)
                    try:
                        outcome = await self._call_handler(job, scope)
                    finally:
                        self._stats.running -= 1
                        del self._running[key]
                if key in self._cancelled:
                    self._cancelled.discard(key)
                    del held[key]
                    self._stats.cancelled += 1
                    log.info("job %s (%s) was cancelled; its handler was stopped", job.id, job.name)
                elif key in gone:
                    # Already counted and logged by the heartbeat task.
                    del held[key]
                    gone.discard(key)
                else:
                    assert outcome is not None
                    reports.append((job, *outcome))
            reply = await self._report_batch(link, reports, held, gone, fetch)

    async def _report_batch(
        self,
        link: Link,
        reports: list[tuple[Job, bool, Any]],
        held: dict[tuple[str, int], JobAssigned],
        gone: set[tuple[str, int]],
        fetch: RequestJob,
    ) -> Reply | None:
        """Report a batch in one write; the last report fetches. Returns as ``_report``."""
        # A lease given up while the rest of the batch ran is not reported.
        for job, _, _ in reports:
            key = (job.id, job.attempt)
            if key in gone:
                del held[key]
                gone.discard(key)
        reports = [report for report in reports if (report[0].id, report[0].attempt) in held]
        messages: list[JobComplete | JobFailed] = [
            JobComplete(job.id, job.attempt, value)
            if ok
            else JobFailed(job.id, type(value).__name__, str(value)[:2000], job.attempt)
            for job, ok, value in reports
        ]
        if not messages:
            return await _ask(link, fetch, self.reply_grace)
        messages[-1] = attrs.evolve(messages[-1], fetch=fetch)
        try:
            replies = await _ask_many(link, messages, self._lease_timeout)
        except (TypeError, ValueError):
            # A result JSON cannot carry: find it, fail it instead, resend all.
            for index, message in enumerate(messages):
                try:
                    encode(message.to_wire())
                except (TypeError, ValueError) as exc:
                    job = reports[index][0]
                    error = f"handler result is not JSON: {exc}"
                    messages[index] = JobFailed(
                        job.id, "TypeError", error[:2000], job.attempt, messages[index].fetch
                    )
            replies = await _ask_many(link, messages, self._lease_timeout)
        refused: list[Request] = []
        for (job, _, _), message, reply in zip(reports, messages, replies, strict=True):
            held.pop((job.id, job.attempt), None)
            gone.discard((job.id, job.attempt))
            if not isinstance(reply, RequestError):
                if isinstance(message, JobComplete):
                    self._stats.completed += 1
                else:
                    self._stats.failed += 1
            elif reply.code in _LEASE_GONE:
                self._abandon(job, reply)
            elif isinstance(message, JobComplete):
                # The server refused the result itself: fail the job instead.
                error = f"the server refused the result: {reply.message}"
                refused.append(JobFailed(job.id, "ValueError", error[:2000], job.attempt))
        if refused:
            for reply in await _ask_many(link, refused, self._lease_timeout):
                if isinstance(reply, RequestError):
                    log.warning("a failure report was refused: %s", reply.message)
                else:
                    self._stats.failed += 1
        last = replies[-1]
        return None if isinstance(last, (RequestError, Ok)) else last

    async def _heartbeat_held(
        self,
        link: Link,
        held: dict[tuple[str, int], JobAssigned],
        gone: set[tuple[str, int]],
        connection: trio.CancelScope,
    ) -> None:
        """Renew every lease the slot holds, in one write, every third of a lease.

        A lease the server says is gone is marked ``gone`` and its handler, if
        running, stopped; a heartbeat not answered in time (or a broken
        connection) ends the connection, cancelling ``connection``.
        """
        try:
            await self._heartbeat_loop(link, held, gone)
        except ConnectionLost as exc:
            log.debug("heartbeats on %s stopped: %s", link.address, exc)
            connection.cancel()

    async def _heartbeat_loop(
        self,
        link: Link,
        held: dict[tuple[str, int], JobAssigned],
        gone: set[tuple[str, int]],
    ) -> NoReturn:
        while True:
            interval = max(self._lease_timeout / 3, 0.001)
            await trio.sleep(interval)
            keys = [key for key in held if key not in gone]
            if not keys:
                continue
            beats: list[Request] = [Heartbeat(job_id, attempt) for job_id, attempt in keys]
            replies = await _ask_many(link, beats, self._lease_timeout - interval)
            for key, reply in zip(keys, replies, strict=True):
                if isinstance(reply, RequestError) and key in held:
                    gone.add(key)
                    scope = self._running.get(key)
                    if scope is not None:
                        scope.cancel()
                    job = held[key]
                    self._stats.lost += 1
                    log.warning("gave up job %s (%s): %s", job.job_id, job.name, reply.message)

    async def _beat_current(
        self,
        link: Link,
        beat: _Beat,
        connection: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep the slot's timers: heartbeats, ``job_timeout``, the report's reply.

        Heartbeats the slot's running job every ``interval`` while it runs,
        and stops a handler still running at ``job_timeout`` (``beat.timed_out``
        tells the slot why). A report not answered in time means the
        connection is dead: ``beat.expired`` says so and ``connection`` is
        cancelled. Sleeps until the earliest of these (see :class:`_Beat`).

        A heartbeat not answered before the lease would run out means the
        lease is surely gone (a silent partition, say), and a refused one
        that it is gone: either way the handler is stopped rather than run a
        job the server has given to someone else, and the slot learns why
        from ``beat.lost``.
        """
        task_status.started()
        while True:
            with trio.CancelScope(deadline=beat.due()) as scope:
                beat.scope = scope
                await trio.sleep_forever()
            now = trio.current_time()
            if now >= beat.reply_at:
                what, limit = beat.reply_for
                beat.expired = ConnectionLost(
                    f"no reply to {what} within {limit:g}s from {link.address}"
                )
                connection.cancel()
                return
            key = beat.key
            if key is None:
                continue
            if now >= beat.timeout_at and beat.handler is not None:
                beat.timeout_at = math.inf
                beat.timed_out = True
                beat.handler.cancel()
            if now < beat.next_at:
                continue
            beat.next_at = math.inf  # the next one is timed from this one's reply
            try:
                await _ask(link, Heartbeat(*key), beat.lease - beat.interval)
            except (ConnectionLost, RequestError) as exc:
                # About a job that has ended since, it no longer matters (a
                # broken connection fails the slot's next request anyway).
                if beat.key == key and beat.handler is not None:
                    beat.lost = exc
                    beat.handler.cancel()
            else:
                if beat.key == key:
                    beat.next_at = trio.current_time() + beat.interval

    def _on_notice(self, notice: JobCancelledNotice) -> None:
        key = (notice.job_id, notice.attempt)
        # Remembered even if the job has not started here yet: the reader can
        # see the notice in the same read as the assignment it cancels.
        self._cancelled.add(key)
        scope = self._running.get(key)
        if scope is not None:
            scope.cancel()

    async def _run_job(
        self, link: Link, assigned: JobAssigned, fetch: RequestJob, beat: _Beat
    ) -> Reply | None:
        """Run one job and report it, asking for the next job in the same request.

        Returns:
            The reply to ``fetch`` (``job_assigned`` or ``no_job``), or ``None``
            if nothing was fetched: the job was cancelled or lost, the report
            was refused, or the server does not know ``fetch``.
        """
        key = (assigned.job_id, assigned.attempt)
        job = self._job(link, assigned)
        outcome: tuple[bool, Any] | None = None
        # The handler runs right here, in its own scope: a cancel notice stops
        # the handler only, never a heartbeat that is waiting for its reply.
        # Heartbeats come from the connection's beat task (_beat_current),
        # woken only if the job is still running an interval after it started.
        handler_scope = trio.CancelScope()
        interval = max(assigned.lease_timeout / 3, 0.001)
        self._stats.running += 1
        self._running[key] = handler_scope
        beat.start(key, assigned.lease_timeout, interval, handler_scope, self.job_timeout)
        try:
            if key not in self._cancelled:  # else cancelled before it started
                log.debug("job %s (%s) attempt %d started", job.id, job.name, job.attempt)
                outcome = await self._call_handler(job, handler_scope, beat)
        finally:
            beat.stop()
            self._stats.running -= 1
            del self._running[key]
        lost = beat.lost
        if key in self._cancelled:
            # Someone cancelled the job: the server already marked it
            # cancelled, so there is nothing to report.
            self._cancelled.discard(key)
            self._stats.cancelled += 1
            log.info("job %s (%s) was cancelled; its handler was stopped", job.id, job.name)
            return None
        if isinstance(lost, ConnectionLost):
            # Silent or broken: either way the server has taken the job back.
            self._stats.lost += 1
            log.warning("gave up job %s (%s): %s", job.id, job.name, lost)
            raise lost
        if lost is not None:
            # The server says this lease is gone (expired and reassigned):
            # the handler was cancelled and nothing is reported.
            self._abandon(job, lost)
            return None
        assert outcome is not None
        return await self._report(link, job, *outcome, fetch, beat)

    def _job(self, link: Link, assigned: JobAssigned) -> Job:
        """The handler's view of ``assigned``, with progress reports sent over ``link``."""

        async def report_progress(progress: float | None, note: Any) -> None:
            # Shielded: a cancel or job_timeout landing mid-request would
            # leave its reply unread and the connection unusable. The
            # handler is stopped as soon as the reply is in, and the shield
            # has its own deadline so a silent connection cannot hold it.
            with trio.move_on_after(self._lease_timeout) as scope:
                scope.shield = True
                try:
                    await link.request(Progress(assigned.job_id, assigned.attempt, progress, note))
                except RequestError as exc:
                    log.debug("progress for job %s not recorded: %s", assigned.job_id, exc)
                except ConnectionLost:
                    pass  # the heartbeat loop notices and ends the connection
            # ...and deliver a pending cancel here, outside the shield, or a
            # handler that does nothing but report would never see it.
            await trio.lowlevel.checkpoint_if_cancelled()

        return Job(
            assigned.job_id,
            assigned.name,
            assigned.payload,
            assigned.attempt,
            progress_reporter=report_progress,
        )

    async def _call_handler(
        self, job: Job, scope: trio.CancelScope | None = None, beat: _Beat | None = None
    ) -> tuple[bool, Any] | None:
        """Run ``job``'s handler under ``job_timeout``: (True, result) or (False, error).

        The handler runs in ``scope`` (a new one by default). Without
        ``beat``, the scope's deadline becomes the job timeout, so one scope
        serves both and a cancel needs no second scope; with ``beat``, the
        slot's beat task keeps the timeout instead and cancels ``scope``.
        ``None`` means something else cancelled ``scope``.
        """
        handler = self.handlers.get(job.name)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return (False, LookupError(f"worker {self.name} has no handler {job.name!r} ({known})"))
        if scope is None:
            scope = trio.CancelScope()
        if beat is None and self.job_timeout is not None:
            scope.deadline = trio.current_time() + self.job_timeout
        with scope:
            try:
                return (True, await handler(job))
            except Exception as exc:
                log.exception("job %s (%s) failed", job.id, job.name)
                return (False, exc)
        if not (beat.timed_out if beat is not None else trio.current_time() >= scope.deadline):
            return None
        self._stats.timed_out += 1
        log.warning("job %s (%s) ran past job_timeout", job.id, job.name)
        return (False, TimeoutError(f"handler ran longer than job_timeout={self.job_timeout:g}s"))

    async def _report(
        self, link: Link, job: Job, ok: bool, value: Any, fetch: RequestJob, beat: _Beat
    ) -> Reply | None:
        # With a waiting fetch, the reply may take as long as a request_job's.
        limit = max(self._lease_timeout, fetch.wait + self.reply_grace)
        reply: Reply
        # Counted once sent (and taken back if refused or lost): with a
        # waiting fetch, the reply comes only with the next job.
        if ok:
            self._stats.completed += 1
            try:
                reply = await _ask_timed(
                    link, JobComplete(job.id, job.attempt, value, fetch), limit, beat
                )
            except RequestError as exc:
                self._stats.completed -= 1
                if exc.code in _LEASE_GONE:
                    self._abandon(job, exc)
                    return None
                # The server refused the result itself (too large, say):
                # the job must end, not be dropped and run again.
                ok, value = False, ValueError(f"the server refused the result: {exc.message}")
            except (TypeError, ValueError) as exc:
                self._stats.completed -= 1
                ok, value = False, TypeError(f"handler result is not JSON: {exc}")
            except ConnectionLost:
                self._stats.completed -= 1
                raise
            else:
                log.debug("job %s (%s) completed", job.id, job.name)
                return _fetched(reply)
        self._stats.failed += 1
        try:
            reply = await _ask_timed(
                link,
                JobFailed(job.id, type(value).__name__, str(value)[:2000], job.attempt, fetch),
                limit,
                beat,
            )
        except RequestError as exc:
            self._stats.failed -= 1
            self._abandon(job, exc)
            return None
        except ConnectionLost:
            self._stats.failed -= 1
            raise
        return _fetched(reply)

    def _abandon(self, job: Job, exc: RequestError) -> None:
        """Give up a job the server no longer leases to us (nothing to report)."""
        self._stats.lost += 1
        log.warning("gave up job %s (%s): %s", job.id, job.name, exc.message)
