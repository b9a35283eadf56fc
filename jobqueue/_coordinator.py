"""The coordinator: the one task that owns the queue state.

Connection handlers never touch :class:`~jobqueue._state.QueueState`. They
send commands over a trio memory channel; the coordinator applies each one
and answers on the connection's outbox with ``send_nowait`` (a non-blocking
write, or a place in the connection writer's queue), so a slow or vanished
connection can never block it. With a
single owner there is nothing to lock and no interleaving to reason about.

Time is handled the same way: the coordinator waits for its next command
under a cancel scope whose deadline is the earliest one, the first lease to
run out or the first blocked request whose ``wait`` ends, and which commands
move as they change it. One wake-up per deadline, no polling loop, no timer
task per job.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import attrs
import trio

from ._commands import (
    Batch,
    Command,
    Connected,
    Connection,
    CoordinatorStatistics,
    Durability,
    Item,
    Outgoing,
    Snapshot,
)
from ._errors import JOURNAL_UNAVAILABLE, ProtocolError, Refusal, RuleError
from ._job import FINISHED, JobRecord, Run, payload_size
from ._json import encode_stored, stored_form
from ._limits import ENVELOPE_BYTES, MAX_LINE_BYTES
from ._metrics import JobTimes
from ._parking import Parking
from ._replies import (
    OK,
    JobAssigned,
    JobCancelledNotice,
    JobInfo,
    JobList,
    JobsAssigned,
    JobsSubmitted,
    NoJob,
    Ok,
    Reply,
    Stats,
    Welcome,
    build_assigned,
    build_submitted,
)
from ._requests import (
    CancelJob,
    DeleteJob,
    GetStats,
    GetStatus,
    Heartbeat,
    Hello,
    JobComplete,
    JobFailed,
    ListJobs,
    Progress,
    ReleaseJob,
    RequestJob,
    RetryJob,
    SubmitJob,
    SubmitJobs,
    WaitJob,
)
from ._schedule_wire import AddSchedule, ListSchedules, RemoveSchedule
from ._scheduler import Scheduler
from ._state import QueueState
from ._version import __version__
from ._views import job_info, job_list, journal_view, metrics_snapshot, queue_stats

#: A request handler: (coordinator, connection, request, now) to the reply, or
#: ``None`` when the request parks and its reply comes later.
_Handler = Callable[["Coordinator", Connection, Any, float], "Reply | None"]

#: The requests refused while the journal cannot write: those whose ``ok`` or
#: new id acknowledges a change. A worker's request_job, heartbeat and
#: progress go on; their replies wait for the disk (docs/design.md §12a).
_CHANGES = frozenset(
    {
        SubmitJob, SubmitJobs, JobComplete, JobFailed, CancelJob, RetryJob, DeleteJob, ReleaseJob,
        AddSchedule, RemoveSchedule,
    }
)  # fmt: skip


def _journal_unavailable() -> RuleError:
    return RuleError(
        JOURNAL_UNAVAILABLE,
        "the server cannot write its journal (disk full or failing); nothing was changed; "
        "try again later",
    )


#: A ``jobs_assigned`` entry's bytes besides its id, name and payload (an over-estimate,
#: ``attempts_spent`` and ``last_attempt`` included).
_JOB_ENTRY_BYTES = 128


def assigned_job(job: JobRecord, run: Run, lease_timeout: float) -> JobAssigned:
    """The ``job_assigned`` for ``job``'s new ``run``.

    It carries ``attempts_spent`` only when that is not ``attempt`` (a run
    given back or a revive before this one), as ``job_status`` does, so the
    handler can tell a retry from a give-back; and ``last_attempt`` only
    when this run is the last its ``max_attempts`` allow (every run, with
    ``max_attempts`` 1). Either sends the reply down the encoder's general
    path; nearly every assignment has neither.
    """
    attempt, base = run.attempt, run.attempt_base
    if base or attempt >= job.options.max_attempts:
        spent = attempt - base
        return JobAssigned(
            job.id,
            job.name,
            job.payload,
            attempt,
            lease_timeout,
            spent if base else None,
            spent >= job.options.max_attempts,
        )
    return build_assigned(job.id, job.name, job.payload, attempt, lease_timeout)


@attrs.define(eq=False)
class Coordinator:
    """Owns a :class:`QueueState` and serves commands from a channel.

    Args:
        state: The queue state this coordinator alone will touch.
        durability: With a journal: told when each command begins, and given
            every connection's replies, to keep those that depend on events
            not yet on disk (``fsync="always"``); while it cannot write,
            requests that would change jobs are refused.
    """

    state: QueueState
    durability: Durability | None = None
    #: With metrics: the wait and run times it observes (``None``: none kept).
    times: JobTimes | None = None
    _conns: dict[int, Connection] = attrs.field(factory=dict, init=False)
    # Blocking requests waiting for a job or for a job's end.
    _parking: Parking = attrs.field(factory=Parking, init=False)
    # Parked requests answered during this step, with their replies; their
    # backlogs are served by a loop (_serve_woken), not by recursion, so no
    # chain of connections can grow the stack.
    _woken: deque[tuple[Connection, Outgoing]] = attrs.field(factory=deque, init=False)
    # Cancel notices, sent once this step's replies are out so a notice never
    # overtakes the assignment of the job it cancels.
    _notices: list[tuple[Connection, JobCancelledNotice]] = attrs.field(factory=list, init=False)
    # Times run() woke because a deadline arrived (not for a command), and the
    # last such moment: what statistics() reports.
    _timer_wakeups: int = attrs.field(default=0, init=False)
    _last_timer_wakeup: float | None = attrs.field(default=None, init=False)
    # The `now` of the command being applied, for replies that show times.
    _now: float = attrs.field(default=0.0, init=False)
    _offset: float | None = attrs.field(default=None, init=False)
    #: Periodic jobs: their requests, and their next firing as one more deadline.
    scheduler: Scheduler = attrs.field(
        default=attrs.Factory(lambda self: Scheduler(self.state), takes_self=True), init=False
    )

    async def run(self, commands: trio.MemoryReceiveChannel[Command]) -> None:
        """Serve commands until cancelled or until every sender is closed.

        Closing ``commands`` on the way out wakes any handler still trying to
        send with ``BrokenResourceError`` instead of leaving it blocked.
        """
        async with commands:
            while True:
                # One cancel scope per deadline, not per command: it follows
                # the next deadline as commands move it, and exits when it fires.
                with trio.CancelScope(deadline=self.next_deadline()) as timer:
                    while True:
                        try:
                            command = await commands.receive()
                        except trio.EndOfChannel:
                            return
                        self.handle(command, trio.current_time())
                        # Serve whatever else is already queued before sleeping
                        # again: one wake-up, many commands.
                        while True:
                            try:
                                command = commands.receive_nowait()
                            except (trio.WouldBlock, trio.EndOfChannel):
                                break
                            self.handle(command, trio.current_time())
                        # Moved only when it comes sooner: most commands move
                        # it later (a lease renewed, a worker parked again),
                        # and a stale, earlier one costs one wake-up that
                        # finds nothing due, not a reschedule per command.
                        deadline = self.next_deadline()
                        if deadline < timer.deadline:
                            timer.deadline = deadline
                now = trio.current_time()
                if self.next_deadline() <= now:
                    self._timer_wakeups += 1
                    self._last_timer_wakeup = now
                    self.fire_timers(now)

    def statistics(self) -> CoordinatorStatistics:
        """How often this coordinator has woken for a deadline (see the record)."""
        return CoordinatorStatistics(self._timer_wakeups, self._last_timer_wakeup)

    def next_deadline(self) -> float:
        """The next moment something times out (``inf`` if nothing can)."""
        deadline = min(self.state.next_deadline(), self._parking.next_deadline())
        if self.state.schedules.next_due != float("inf"):
            deadline = min(deadline, self.scheduler.deadline())
        return deadline

    def fire_timers(self, now: float) -> None:
        """Expire leases and blocking requests whose time is up; fire due schedules."""
        self._now = now
        if self.durability is not None:
            self.durability.begin()
        self._after_changes(self.state.tick(now) + self.scheduler.fire(now), now)
        for parked in self._parking.expired(now):
            if parked.job_id is None:
                self._woken.append((parked.conn, NoJob()))
            else:
                self._woken.append((parked.conn, self._info(self.state.get(parked.job_id))))
        self._serve_woken(now)

    def handle(self, command: Command, now: float) -> None:
        """Apply one command."""
        self._now = now
        if self.durability is not None:
            self.durability.begin()
        if isinstance(command, Snapshot):
            self._snapshot(command)
            return
        conn = command.conn
        if isinstance(command, Batch):
            if conn.closed:
                return
            if conn.parked is not None:
                conn.backlog.extend(command.items)
            else:
                self._serve_items(conn, command.items, now, [])
        elif isinstance(command, Connected):
            self._conns[conn.id] = conn
        elif not conn.closed:
            conn.closed = True
            # pop: a handler cancelled at shutdown may never have sent Connected.
            self._conns.pop(conn.id, None)
            if conn.parked is not None:
                self._parking.unpark(conn.parked)
            conn.backlog.clear()
            self._after_changes(self.state.release(conn.id, now), now)
            self._send(conn, None)
        self._serve_woken(now)

    def _serve_items(
        self, conn: Connection, items: Iterable[Item], now: float, replies: list[Outgoing]
    ) -> None:
        """Serve ``items`` in order until one parks; queue the rest behind it."""
        handlers = self._HANDLERS
        refusing = self.durability is not None and self.durability.failing
        pending = iter(items)
        for item in pending:
            # One lookup per item: it finds the request's handler, and its
            # miss is how a decoding error, answered in the request's place,
            # is told apart.
            handler = handlers.get(type(item))
            if handler is None:
                if not isinstance(item, ProtocolError):
                    raise TypeError(f"no handler for {type(item).__name__}")
                replies.append(item)
                continue
            if refusing and type(item) in _CHANGES:
                replies.append(_journal_unavailable())
                continue
            reply: Outgoing | None
            try:
                reply = handler(self, conn, item, now)
            except Refusal as exc:
                # Handed back as is: the connection handler is the one place
                # that turns errors into wire replies.
                reply = exc
            if reply is None:
                conn.backlog.extend(pending)
                break
            replies.append(reply)
        if replies:
            self._send(conn, replies)

    def _serve_woken(self, now: float) -> None:
        while self._woken:
            conn, reply = self._woken.popleft()
            if conn.closed:
                continue
            if not conn.backlog:  # the usual case: nothing arrived behind it
                self._send(conn, [reply])
                continue
            backlog, conn.backlog = conn.backlog, deque()
            self._serve_items(conn, backlog, now, [reply])
        if self._notices:
            notices, self._notices = self._notices, []
            for conn, notice in notices:
                if not conn.closed:
                    self._send(conn, [notice])

    # -- request handlers: one per request class, dispatched by _HANDLERS. Each
    # returns the reply, or None when the reply comes later (the request parks).

    def _on_submit_job(self, conn: Connection, request: SubmitJob, now: float) -> Reply:
        submitted, new = self._submit(request, now)
        self._feed_idle_workers(now)
        return build_submitted(submitted.id, not new)

    def _on_job_complete(self, conn: Connection, request: JobComplete, now: float) -> Reply | None:
        result = request.stored_result
        if result is None and request.result is not None:  # built in-process, not decoded
            result = stored_form(request.result)
        job = self.state.complete(request.job_id, conn.id, request.attempt, result, now)
        if self.times is not None:
            self.times.reported(job, now)
        if self._parking.watchers:  # (looked at first: this runs for every job)
            self._notify_watchers(job)
        if request.fetch is not None:
            return self._fetch_after_report(conn, request.fetch, now)
        return OK

    def _fetch_after_report(
        self, conn: Connection, request: RequestJob, now: float
    ) -> Reply | None:
        """Serve a report's ``fetch``: its reply, whatever its kind, acknowledges the report."""
        if self.durability is not None:
            self.durability.owe(conn)
        return self._fetch(conn, request, now)

    def _on_heartbeat(self, conn: Connection, request: Heartbeat, now: float) -> Reply:
        self.state.heartbeat(request.job_id, conn.id, request.attempt, now)
        return Ok(lease_timeout=self.state.lease_timeout)

    def _on_job_status(self, conn: Connection, request: GetStatus, now: float) -> Reply:
        return self._info(self.state.get(request.job_id), payload=request.payload)

    def _info(self, job: JobRecord, *, payload: bool = False) -> JobInfo:
        """``job`` as a reply shows it, its times on the wall clock."""
        return job_info(job, self._wall_offset(), payload=payload)

    def _wall_offset(self) -> float:
        """Wall-clock time minus the state's clock, fixed when first asked.

        Fixed, not read again per reply, so that a job's times read the same
        in every reply (the two clocks drift apart by microseconds between
        two reads); and read only for replies that show times, never per
        command.
        """
        if self._offset is None:
            self._offset = time.time() - self._now
        return self._offset

    def _on_wait_job(self, conn: Connection, request: WaitJob, now: float) -> Reply | None:
        job = self.state.get(request.job_id)
        if job.state in FINISHED or request.wait == 0:
            return self._info(job)
        wait = float("inf") if request.wait is None else request.wait
        self._parking.park(conn, now + wait, job.id)
        return None

    def _on_submit_jobs(self, conn: Connection, request: SubmitJobs, now: float) -> Reply:
        state = self.state
        # All or nothing: refuse the whole batch before adding any of it.
        # (A key repeated within the batch is counted twice: refusing a
        # batch that would just fit errs on the safe side.)
        jobs = request.jobs
        new = len(jobs)
        size = 0
        for job in jobs:
            if job.key is not None and state.knows_key(job.key):
                new -= 1
            else:
                size += payload_size(_stored_payload(job))
        state.check_room(new, size)
        submit = self._submit
        ids = tuple([submit(one, now)[0].id for one in jobs])
        self._feed_idle_workers(now)
        return JobsSubmitted(ids)

    def _on_job_failed(self, conn: Connection, request: JobFailed, now: float) -> Reply | None:
        job = self.state.fail(
            request.job_id,
            conn.id,
            request.attempt,
            request.error_type,
            request.error_message,
            now,
        )
        if self.times is not None:
            self.times.reported(job, now)
        if job.state in FINISHED:
            self._notify_watchers(job)
        if request.fetch is not None:
            return self._fetch_after_report(conn, request.fetch, now)
        return OK

    def _on_progress(self, conn: Connection, request: Progress, now: float) -> Reply:
        self.state.report_progress(
            request.job_id, conn.id, request.attempt, request.progress, request.note, now
        )
        return Ok(lease_timeout=self.state.lease_timeout)

    def _on_cancel_job(self, conn: Connection, request: CancelJob, now: float) -> Reply:
        job, holder = self.state.cancel(request.job_id, now)
        if self.times is not None:
            self.times.ended((job,))
        holder_conn = self._conns.get(holder) if isinstance(holder, int) else None
        if holder_conn is not None:
            # Tell the worker, unasked, so it stops the handler; after any
            # reply still queued this step (the assignment itself, say).
            self._notices.append((holder_conn, JobCancelledNotice(job.id, job.attempt)))
        self._notify_watchers(job)
        return self._info(job)

    def _on_release_job(self, conn: Connection, request: ReleaseJob, now: float) -> Reply:
        self.state.give_back(conn.id, request.leases, now)
        # Back in line: a worker waiting for one of these gets it at once.
        self._feed_idle_workers(now)
        return OK

    def _on_retry_job(self, conn: Connection, request: RetryJob, now: float) -> Reply:
        job = self.state.revive(request.job_id, now)
        self._feed_idle_workers(now)
        return self._info(job)

    def _on_delete_job(self, conn: Connection, request: DeleteJob, now: float) -> Reply:
        self.state.delete(request.job_id, now)
        return OK

    def _on_hello(self, conn: Connection, request: Hello, now: float) -> Reply:
        conn.name = request.name
        conn.names = request.names
        return Welcome("jobqueue", __version__, self.state.lease_timeout)

    def _fetch(self, conn: Connection, request: RequestJob, now: float) -> Reply | None:
        """Serve a ``request_job`` (alone or as a report's ``fetch``)."""
        if request.max is None:
            job = self.state.assign(conn.id, now, conn.label, request.queues, conn.names)
            if job is not None:
                return self._assigned(job, now)
        else:
            reply = self._assign_many(conn, request.queues, request.max, now)
            if reply is not None:
                return reply
        if request.wait > 0:
            self._parking.park(conn, now + request.wait, None, request.queues, request.max)
            return None
        return NoJob()

    def _assign_many(
        self, conn: Connection, queues: Sequence[str], most: int, now: float
    ) -> JobsAssigned | None:
        """Lease up to ``most`` jobs to ``conn``; ``None`` if none is pending.

        The reply stays within two line limits: jobs are added while the
        ones already in it take up less than one line's worth
        (``MAX_LINE_BYTES - ENVELOPE_BYTES``), and any one job fits in that.
        """
        jobs: list[JobAssigned] = []
        budget = MAX_LINE_BYTES - ENVELOPE_BYTES
        # Looked up once, not per job: a batch is up to MAX_FETCH of them.
        state, times = self.state, self.times
        assign, lease_timeout = state.assign, state.lease_timeout
        worker, label, names = conn.id, conn.label, conn.names
        while len(jobs) < most and budget > 0:
            job = assign(worker, now, label, queues, names)
            if job is None:
                break
            # What _assigned does, written out for the batch.
            if times is not None:
                times.assigned(job, now)
            run = job.run
            assert run is not None, "an assigned job has run"
            jobs.append(assigned_job(job, run, lease_timeout))
            budget -= _JOB_ENTRY_BYTES + len(job.id) + len(job.name)
            payload = job.payload
            if type(payload) is bytes:  # stored raw JSON, written as it is
                budget -= len(payload)
            elif payload is not None:
                budget -= len(encode_stored({"": payload}))
        return JobsAssigned(tuple(jobs), lease_timeout) if jobs else None

    def _submit(self, request: SubmitJob, now: float) -> tuple[JobRecord, bool]:
        delay = request.delay
        if request.run_at is not None:
            # The one place wall-clock time enters: the state machine runs on
            # the coordinator's monotonic clock.
            delay = max(0.0, request.run_at - time.time())
        submitted = self.state.submit(
            request.name,
            _stored_payload(request),
            now,
            queue=request.queue,
            priority=request.priority,
            max_attempts=request.max_attempts,
            delay=delay,
            key=request.key,
        )
        if self.times is not None and submitted[1]:
            self.times.submitted(submitted[0], now)
        return submitted

    def _on_list_jobs(self, conn: Connection, request: ListJobs, now: float) -> JobList:
        return job_list(self.state, request, self._wall_offset())

    def _after_changes(self, jobs: list[JobRecord], now: float) -> None:
        """Feed workers if jobs came back in line; tell watchers of jobs that ended."""
        for job in jobs:
            if job.state in FINISHED:
                self._notify_watchers(job)
        if self.times is not None:
            self.times.ended(jobs)
        if jobs:
            self._feed_idle_workers(now)

    def _assigned(self, job: JobRecord, now: float) -> JobAssigned:
        if self.times is not None:
            self.times.assigned(job, now)
        run = job.run
        assert run is not None, "an assigned job has run"
        return assigned_job(job, run, self.state.lease_timeout)

    def _send(self, conn: Connection, replies: list[Outgoing] | None) -> None:
        if self.durability is not None and self.durability.hold(conn, replies):
            return
        # If the handler is gone, its Disconnected command is on its way and
        # will release anything these replies handed out. (try, not
        # contextlib.suppress: this runs for every reply and try costs nothing.)
        try:  # noqa: SIM105
            conn.outbox.send_nowait(replies)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _feed_idle_workers(self, now: float) -> None:
        """Hand pending jobs to blocked workers, longest-waiting first.

        A worker only takes jobs from the queues it serves, and of the
        names it runs, so one that can take none of the pending jobs is
        passed over and keeps its place.
        """
        state, idle = self.state, self._parking.idle
        if not idle or not state.pending_count:
            return
        fed: list[int] = []
        for conn_id, parked in idle.items():
            if not state.pending_count:
                break
            conn = parked.conn
            if not state.pending_in(parked.queues, conn.names):
                continue
            reply: JobAssigned | JobsAssigned | None
            if parked.most is None:
                job = state.assign(conn.id, now, conn.label, parked.queues, conn.names)
                reply = None if job is None else self._assigned(job, now)
            else:
                reply = self._assign_many(conn, parked.queues, parked.most, now)
            assert reply is not None
            fed.append(conn_id)
            conn.parked = None
            self._woken.append((conn, reply))
        # Removed after the loop, not during it: no copy of idle per call.
        for conn_id in fed:
            del idle[conn_id]

    def _notify_watchers(self, job: JobRecord) -> None:
        watchers = self._parking.watchers.pop(job.id, None)
        if watchers:
            info = self._info(job)
            for parked in watchers.values():
                parked.conn.parked = None
                self._woken.append((parked.conn, info))

    def _on_stats(self, conn: Connection, request: GetStats, now: float) -> Stats:
        journal = None if self.durability is None else journal_view(self.durability.figures())
        return queue_stats(self.state, self._conns.values(), len(self._parking.idle), journal)

    def _snapshot(self, command: Snapshot) -> None:
        """Send the metrics endpoint its figures: O(queues + connections), never O(jobs)."""
        snapshot = metrics_snapshot(self.state, self.times, len(self._conns), self._parking.idle)
        # The asker's channel has room for this one reply; if it gave up, so be it.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            command.reply.send_nowait(snapshot)

    #: The handler of each request class: a new request is one entry here.
    _HANDLERS: ClassVar[dict[type[Item], _Handler]] = {
        SubmitJob: _on_submit_job,
        RequestJob: _fetch,
        JobComplete: _on_job_complete,
        JobFailed: _on_job_failed,
        Heartbeat: _on_heartbeat,
        Progress: _on_progress,
        GetStatus: _on_job_status,
        WaitJob: _on_wait_job,
        SubmitJobs: _on_submit_jobs,
        CancelJob: _on_cancel_job,
        RetryJob: _on_retry_job,
        ReleaseJob: _on_release_job,
        DeleteJob: _on_delete_job,
        ListJobs: _on_list_jobs,
        Hello: _on_hello,
        GetStats: _on_stats,
        AddSchedule: lambda self, conn, request, now: self.scheduler.on_add(request, now),
        ListSchedules: lambda self, conn, request, now: self.scheduler.on_list(request, now),
        RemoveSchedule: lambda self, conn, request, now: self.scheduler.on_remove(request, now),
    }


def _stored_payload(request: SubmitJob) -> Any:
    """``request``'s payload as the server keeps it: encoded JSON, compact, sent on as it is.

    Decoded requests carry that form; one built in-process may not.
    """
    payload = request.stored_payload
    if payload is None and request.payload is not None:
        payload = stored_form(request.payload)
    return payload
