"""The worker's engine: one slot's connection, taking, running and reporting jobs.

Every slot runs the same loop, whatever its ``prefetch``: take a batch of
jobs (with the default ``"auto"``, as many as
:class:`~jobqueue._prefetch.AutoPrefetch` asks for; with a number, up to
that many), run them one after another,
report them all in one write whose last report also asks for the next
batch (protocol §4, *ack and fetch*), repeat. Beside the loop run the
connection's reader (replies, and ``job_cancelled`` notices at once) and
its :class:`~jobqueue._lease.LeaseKeeper` (heartbeats, ``job_timeout``,
reply deadlines).

The loop has three single places: :meth:`_Engine._run` runs a handler
under cancellation and the job timeout and returns an
:class:`~jobqueue._handler.Outcome` (handlers share one cancel scope
until a stop spends it, see :meth:`_Engine.serve`);
:meth:`_Engine._settled` decides whether a job may still be reported
(not cancelled, lease not lost); :meth:`_Engine._report` turns outcomes
into reports and applies the rules for a refused one.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._errors import JOURNAL_UNAVAILABLE, LEASE_GONE_CODES, ConnectionLost, RequestError
from ._handler import Job, Outcome, build_job, build_returned, report_for
from ._interrupts import may_be_ctrl_c, only_cancelled
from ._json import encode
from ._lease import Key, LeaseKeeper, ask_many
from ._link import Link
from ._logformat import write_info
from ._prefetch import AUTO_BUDGET, AutoPrefetch, fetch_request, job_requests
from ._replies import JobAssigned, JobCancelledNotice, JobsAssigned, Ok, Reply, Welcome
from ._requests import Hello, JobComplete, JobFailed, Progress, ReleaseJob, Request, RequestJob
from ._runners import HandlerInterrupt
from ._worker_statistics import WorkerStatistics

if TYPE_CHECKING:
    from ._worker import Worker

log = logging.getLogger("jobqueue.worker")

#: The line logged for each job that completes (at INFO).
_COMPLETED = "job %s (%s) completed in %.3fs"

#: Seconds before a report ``journal_unavailable`` refused is sent again; it
#: doubles up to the max, as the server's own retries of its journal do.
_JOURNAL_PAUSE = 0.1
_JOURNAL_PAUSE_MAX = 5.0

#: The outcome of every handler that returns ``None`` (frozen, so one serves all).
_RETURNED_NONE = Outcome()

#: A job the slot ran, and how the run ended.
_Ran = tuple[Job, Outcome]


def round_seconds(seconds: float) -> float:
    """``round(seconds, 6)``, the same float, without its cost for the usual duration.

    ``round`` with digits converts through a correctly rounded decimal
    string (about 3,000 instructions); the worker rounds a duration for
    every job's log line. For a positive duration under a million seconds
    whose millionths are not within a thousandth of a half, the product by a
    million is off by far less than that margin, so its nearest integer is
    the one ``round`` finds, and dividing that integer (exact in a float) by
    a million gives the float nearest the decimal, as ``round`` does.
    Anything else goes to ``round``.
    """
    if 0.0 < seconds < 1e6:
        scaled = seconds * 1e6
        fraction = scaled % 1.0
        if fraction < 0.499:
            return (scaled - fraction) / 1e6
        if fraction > 0.501:
            return (scaled - fraction + 1.0) / 1e6
    return round(seconds, 6)


async def serve_connection(
    worker: Worker, stats: WorkerStatistics, link: Link, served: Callable[[], None]
) -> None:
    """Serve jobs over ``link``; ``served()`` once ``hello`` is answered.

    Returns once the worker drains (:meth:`Worker.drain`) and this slot has
    finished, reported or given back everything it held.

    Raises:
        ConnectionLost: the connection broke, or a reply was overdue.
        RequestError: the server refused a request outside any job (``hello``).
    """
    error: ConnectionLost | RequestError | None = None
    async with trio.open_nursery() as nursery:
        keeper = LeaseKeeper(link, nursery.cancel_scope)

        def on_notice(notice: JobCancelledNotice) -> None:
            keeper.notice((notice.job_id, notice.attempt))

        # The reader runs for the whole connection so a cancel notice is
        # seen even while no request is in flight; when the connection
        # ends it cancels everything here, running handlers included.
        await nursery.start(link.run_reader, on_notice, nursery.cancel_scope.cancel)
        await nursery.start(keeper.run)
        engine = _Engine(worker, stats, link, keeper, nursery.cancel_scope)
        if not isinstance(worker.prefetch, int):
            engine.auto = AutoPrefetch()
        nursery.start_soon(engine.watch_drain)
        if engine.auto is not None:
            nursery.start_soon(engine.watch_batches)
        stats.connected_slots += 1
        try:
            await engine.serve(served)
            engine.drained = True
        except (ConnectionLost, RequestError) as exc:
            error = exc
        finally:
            stats.connected_slots -= 1
            nursery.cancel_scope.cancel()
    if engine.drained:
        return
    error = error or keeper.failure or engine.failure
    if error is not None:
        raise error
    raise ConnectionLost(f"connection to {link.address} {link.broken or 'lost'}")


@attrs.define(eq=False)
class _Engine:
    """One slot's loop over one connection (see the module docstring)."""

    worker: Worker
    stats: WorkerStatistics
    link: Link
    keeper: LeaseKeeper
    #: Cancelled to end the connection (a drain that finds the slot idle).
    connection: trio.CancelScope
    #: The server's lease, from its hello reply: how long a report may take.
    lease_timeout: float = 30.0
    #: Whether the slot ended because the worker drained (not a failure).
    drained: bool = False
    #: Why a watcher (a drain's or an auto batch's give-back) ended the connection.
    failure: ConnectionLost | None = None
    #: Whether the slot holds nothing and only waits for a reply: to its
    #: hello, or to a blocking request_job. A drain then ends the connection.
    _idle: bool = False
    #: The batch's jobs not started yet (a drain gives them back at once).
    _queue: deque[JobAssigned] = attrs.field(factory=deque)
    #: Leases whose handler the drain's deadline stopped: given back, not reported.
    _stopped: set[Key] = attrs.field(factory=set)
    #: Set once the drain has given back the jobs it found not started.
    _early: trio.Event = attrs.field(factory=trio.Event)
    #: The batch's jobs that have run, and how, not reported yet.
    _ran: list[_Ran] = attrs.field(factory=list)
    #: The reply to the last report's fetch, not handled yet.
    _reply: Reply | None = None
    #: The cancel scope handlers run in (see :meth:`serve`).
    _stoppable: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    #: The run's clock, read twice a job: ``trio.current_time()`` finds it
    #: through two more calls each time.
    _clock: trio.abc.Clock = attrs.field(factory=trio.lowlevel.current_clock)
    #: With ``prefetch="auto"``: the batch size it picks (``None``: fixed).
    auto: AutoPrefetch | None = None
    #: With ``prefetch="auto"``: how many jobs the batch running brought, and when it began.
    _taken: int = 0
    _began: float = 0.0
    #: With ``prefetch="auto"``: set when a batch holds jobs not started (see watch_batches).
    _holding: trio.Event = attrs.field(factory=trio.Event)

    async def serve(self, served: Callable[[], None]) -> None:
        """Say hello, then take, run and report jobs until the worker drains."""
        worker = self.worker
        grace = worker.reply_grace
        # Until hello is answered the slot holds nothing: a drain need not
        # wait for a server that is slow to answer, or never does.
        self._idle = True
        try:
            welcome = await self._ask_one(
                Hello(worker.name, worker.token, frozenset(worker.handlers)), grace
            )
        finally:
            self._idle = False
        if isinstance(welcome, Welcome):
            self.lease_timeout = welcome.lease_timeout
        served()
        if isinstance(worker.prefetch, int):
            request, fetch = job_requests(worker.poll_wait, worker.queues, worker.prefetch)
        else:  # "auto": see _next_fetch
            request = fetch = fetch_request(worker.poll_wait, worker.queues, 1, True)
        # Handlers run in a cancel scope the keeper cancels to stop one (a
        # cancel notice, job_timeout, a lost lease, a drain's deadline). A
        # cancel scope costs as much as a tenth of a short job, so one serves
        # job after job until a stop spends it: the keeper cancels it only
        # while a handler runs, and the slot then goes on in a new one.
        while True:
            with trio.CancelScope() as self._stoppable:
                if await self._work(request, fetch):
                    return

    async def _work(self, request: RequestJob, fetch: RequestJob) -> bool:
        """Take, run and report jobs; ``True`` once drained, ``False`` if the scope is spent.

        Resumes where a stopped handler left it: the batch's jobs that ran
        are in :attr:`_ran` (the stopped one included), those not started
        in :attr:`_queue`, and a report's fetched reply in :attr:`_reply`.
        """
        worker = self.worker
        draining = worker.draining
        queue = self._queue
        ran = self._ran
        if self.auto is not None:  # resumed: as the last batch left it
            request = fetch_request(worker.poll_wait, worker.queues, self.auto.ask, True)
        while True:
            if not ran and not queue:
                reply = self._reply
                self._reply = None
                if reply is None:
                    if draining.is_set():
                        return True
                    self._idle = True
                    try:
                        reply = await self._ask_one(request, worker.poll_wait + worker.reply_grace)
                    finally:
                        self._idle = False
                if isinstance(reply, JobAssigned):
                    batch: Sequence[JobAssigned] = (reply,)
                elif isinstance(reply, JobsAssigned):
                    batch = reply.jobs
                else:
                    continue
                self.keeper.hold(batch, reply.lease_timeout)
                if draining.is_set():  # taken as the drain began: none of it starts
                    await self._give_back((a.job_id, a.attempt) for a in batch)
                    return True
                queue.extend(batch)
                if self.auto is not None:
                    self._taken = len(batch)
                    self._began = self._clock.current_time()
                    if len(batch) > 1:
                        self._holding.set()
            while queue and not draining.is_set():
                job = self._job(queue.popleft())
                ran.append((job, await self._run(job)))
                # Only the keeper cancels the scope, and it says so: cheaper
                # than the scope's cancel_called, which reads the clock.
                if self.keeper.stopped:
                    return False  # the handler outlived its stop: go on in a new scope
            if draining.is_set():
                await self._end_drain(ran)
                return True
            # A report whose fetch waits is the slot's wait for work: a
            # drain may end it by closing the connection (see watch_drain).
            reports = ran[:]
            ran.clear()
            if self.auto is not None:
                request, fetch = self._next_fetch(len(reports))
            self._idle = fetch.wait > 0
            try:
                self._reply = await self._report(reports, fetch)
            finally:
                self._idle = False

    def _next_fetch(self, reports: int) -> tuple[RequestJob, RequestJob]:
        """With ``prefetch="auto"``: the request for when idle, and the fetch for ``reports``.

        The fetch waits for a job only when it rides on a single report: a
        batch's reports are pipelined, and a refused one must be failed at
        once, not behind a waiting fetch (as for a fixed ``prefetch``).
        """
        assert self.auto is not None
        worker = self.worker
        ask = self.auto.ran(self._taken, self._clock.current_time() - self._began)
        request = fetch_request(worker.poll_wait, worker.queues, ask, True)
        if reports == 1:
            return request, request
        return request, fetch_request(worker.poll_wait, worker.queues, ask, False)

    async def watch_batches(self) -> None:
        """With ``prefetch="auto"``: cut short a batch that runs past its budget.

        A batch is meant to be about :data:`~jobqueue._prefetch.AUTO_BUDGET`
        seconds of work. Once it has run that long, the jobs it has not
        started go back in line (their places kept, no attempt spent) for
        another slot or worker, and those it has finished are reported, so
        no job waits unstarted behind a long one, and no result waits
        unreported for it, for more than the budget. One wake-up a batch,
        and none for a batch of one job.
        """
        queue = self._queue
        ran = self._ran
        draining = self.worker.draining
        while True:
            await self._holding.wait()
            self._holding = trio.Event()
            while queue or ran:
                # The batch may end, and the next begin, while this sleeps:
                # a changed start means the deadline moved with it. While
                # the batch's reports are on their way, nothing is left here.
                began = self._began
                await trio.sleep_until(began + AUTO_BUDGET)
                if began == self._began and (queue or ran) and not draining.is_set():
                    await self._cut_batch()
                    break

    async def _cut_batch(self) -> None:
        """Give back the batch's jobs not started, and report those that ran.

        Meanwhile the slot is running one of the batch's jobs: that is the
        only wait in which it holds jobs not started or not reported, and it
        touches neither list before that job ends. A job cancelled meanwhile
        stays for the slot to settle.
        """
        queue, ran = self._queue, self._ran
        cancelled = self.keeper.cancelled
        held = [(a.job_id, a.attempt) for a in queue]
        kept = [a for a in queue if (a.job_id, a.attempt) in cancelled]
        queue.clear()
        queue.extend(kept)
        finished = ran[:]
        ran.clear()
        why = "not started: its batch ran past the budget"
        await self._settle_beside(held, finished, why, logging.DEBUG)

    async def watch_drain(self) -> None:
        """On a drain: stop waiting, give back what has not started, stop what overruns.

        What has not started is given back at once, while the running
        handler goes on; at the drain's deadline that handler is stopped,
        and its job given back too (by :meth:`_end_drain`).

        A slot that is only waiting for work (a blocking ``request_job``, or
        a report's waiting ``fetch``) and holds no lease ends its connection
        at once: the server requeues a job it handed out in that instant.
        """
        worker = self.worker
        await worker.draining.wait()
        if self._idle and not self.keeper.held:
            self.drained = True
            self.connection.cancel()
            return
        early = [(assigned.job_id, assigned.attempt) for assigned in self._queue]
        self._queue.clear()
        try:
            await self._settle_beside(early, [])
        finally:
            self._early.set()
        await trio.sleep_until(worker.drain_deadline)
        key = self.keeper.stop_running()
        if key is not None:
            self._stopped.add(key)
            log.warning("drain deadline: stopping job %s to give it back", key[0])

    async def _end_drain(self, ran: list[_Ran]) -> None:
        """Report the jobs that ran to the end; give back those the deadline stopped."""
        stopped = self._stopped
        finished = [(job, outcome) for job, outcome in ran if (job.id, job.attempt) not in stopped]
        if finished:
            await self._report(finished, None)
        await self._give_back(
            (job.id, job.attempt) for job, _ in ran if (job.id, job.attempt) in stopped
        )
        await self._early.wait()

    async def _settle_beside(
        self,
        leases: Iterable[Key],
        finished: list[_Ran],
        why: str = "unfinished",
        level: int = logging.INFO,
    ) -> None:
        """From a watcher task, beside the slot's loop: give back ``leases``, report ``finished``.

        An unanswered request ends the connection (the slot reconnects, as
        for any overdue reply) instead of escaping the connection's nursery
        as a group, which would end the worker.
        """
        try:
            await self._give_back(leases, why, level)
            if finished:
                await self._report(finished, None, beside=True)
        except ConnectionLost as exc:
            self.failure = self.failure or exc
            self.connection.cancel()

    async def _give_back(
        self, leases: Iterable[Key], why: str = "unfinished", level: int = logging.INFO
    ) -> None:
        """Release these leases (``release_job``): back in line, no attempt spent.

        Each is logged at ``level``: a drain's give-backs are news, an auto
        batch's are routine.

        The batch form is all or nothing; if it is refused (one of the jobs
        was cancelled or lost meanwhile), each is released on its own. A
        release refused with ``journal_unavailable`` changed nothing: its
        job stays held (heartbeated) and is released again after a pause,
        as a refused report is (see :meth:`_journal_pause`).
        """
        keeper = self.keeper
        keys = [key for key in leases if key not in keeper.cancelled]
        limit = self.lease_timeout
        pause = _JOURNAL_PAUSE
        while keys:
            replies = await ask_many(self.link, [ReleaseJob(tuple(keys))], limit)
            if isinstance(replies[0], RequestError) and len(keys) > 1:
                replies = await ask_many(self.link, [ReleaseJob((key,)) for key in keys], limit)
            else:
                replies = replies * len(keys)
            again: list[Key] = []
            for key, reply in zip(keys, replies, strict=True):
                if isinstance(reply, RequestError) and reply.code == JOURNAL_UNAVAILABLE:
                    again.append(key)
                    continue
                keeper.release(key)
                if isinstance(reply, RequestError):
                    log.info("job %s was not given back: %s", key[0], reply.message)
                else:
                    self.stats.given_back += 1
                    log.log(level, "gave back job %s (attempt %d) %s", key[0], key[1], why)
            keys = []
            if again and await self._wait_for_journal(pause):
                pause = min(2 * pause, _JOURNAL_PAUSE_MAX)
                keys = [k for k in again if k not in keeper.cancelled and k not in keeper.lost]
            for key in set(again).difference(keys):
                keeper.release(key)
                log.info(
                    "job %s was not given back: the server could not write its journal", key[0]
                )

    async def _run(self, job: Job) -> Outcome:
        """Run ``job``'s handler under cancellation and ``job_timeout``.

        The handler runs right here, in the slot's stoppable scope (see
        :meth:`serve`): a cancel notice or a lost lease stops the handler
        only, never a heartbeat that is waiting for its reply. The keeper
        cancels the scope for those and for the job timeout. A job
        cancelled or lost before it starts never runs.

        Returns:
            The handler's result or exception. A handler that outlives its
            stop (it caught the cancel) ends with what it returned or raised.
            Whatever ``BaseException`` the handler raised of its own (its
            ``SystemExit``, a thread's or process's ``KeyboardInterrupt``,
            which is never Ctrl-C's, a class of its own) ends here as a failure.

        Raises:
            trio.Cancelled: the handler was stopped; its outcome is already
                in :attr:`_ran` (see :meth:`_stopped_outcome`). Or the
                connection is ending.
            KeyboardInterrupt: from an async handler, where it may be
                Ctrl-C: it stops the worker, logged with the job it ended.
        """
        handler = self.worker.handlers.get(job.name)
        if handler is None:
            known = ", ".join(sorted(self.worker.handlers))
            error = LookupError(f"worker {self.worker.name} has no handler {job.name!r} ({known})")
            log.error("job %s failed: %s", job.id, error, extra=self._fields(job))
            return Outcome(error=error)
        keeper = self.keeper
        scope = self._stoppable
        started = self._clock.current_time()
        if not keeper.start((job.id, job.attempt), scope, self.worker.job_timeout, started):
            return Outcome()
        if log.isEnabledFor(logging.DEBUG):  # (the call alone costs more than the check)
            log.debug("job %s (%s) attempt %d started", job.id, job.name, job.attempt)
        self.stats.running += 1
        try:
            # An async handler as it is; a def in a thread or a process.
            result = await self.worker._runner.resolve(handler)(job)
        except (SystemExit, HandlerInterrupt) as exc:
            # The handler's own sys.exit() or KeyboardInterrupt: its job's
            # failure, not the end of a worker that other jobs share.
            raised = exc.interrupt if isinstance(exc, HandlerInterrupt) else exc
            return self._handler_raised(job, started, raised)
        except Exception as exc:
            log.exception("job %s (%s) failed", job.id, job.name, extra=self._fields(job, started))
            return Outcome(error=exc)
        except BaseException as exc:
            if scope.cancel_called:  # stopped: serve's scope catches the cancel
                self._ran.append((job, self._stopped_outcome(job, started)))
            elif not may_be_ctrl_c(exc):
                # An async handler's own BaseException (GeneratorExit, a
                # class of its own): its job's failure, as for SystemExit.
                return self._handler_raised(job, started, exc)
            elif not only_cancelled(exc):
                # A KeyboardInterrupt in an async handler may be Ctrl-C, so
                # it stops the worker, but not without naming the job.
                log.error(
                    "job %s (%s) was ended by %s; the worker stops",
                    job.id,
                    job.name,
                    type(exc).__name__,
                    exc_info=exc,
                    extra=self._fields(job, started),
                )
            raise
        finally:
            keeper.stop()
            self.stats.running -= 1
        if log.isEnabledFor(logging.INFO):  # (the fields cost more than the check)
            seconds = round_seconds(self._clock.current_time() - started)
            # The text line straight to our handler when that is all logging
            # would do with it (logging's own path cost a fifth to a third of
            # the worker's instructions a job), else as usual.
            if not write_info(log, _COMPLETED, (job.id, job.name, seconds)):
                fields = self._fields(job)
                fields["seconds"] = seconds
                log.info(_COMPLETED, job.id, job.name, seconds, extra=fields)
        return _RETURNED_NONE if result is None else build_returned(result)

    def _stopped_outcome(self, job: Job, started: float) -> Outcome:
        """How a run the keeper stopped ended: a ``TimeoutError`` past ``job_timeout``.

        If the handler was stopped for any other reason, the outcome is
        moot (:meth:`_settled` drops the job, or a drain gives it back) and
        is an empty one.
        """
        if not self.keeper.timed_out:
            return Outcome()
        self.stats.timed_out += 1
        log.warning(
            "job %s (%s) ran past job_timeout", job.id, job.name, extra=self._fields(job, started)
        )
        return Outcome(
            error=TimeoutError(f"handler ran longer than job_timeout={self.worker.job_timeout:g}s")
        )

    def _settled(self, job: Job) -> bool:
        """Whether ``job`` is out of this slot's hands: cancelled, or its lease lost.

        Such a job is counted (``cancelled`` or ``lost``), logged and
        released, and nothing is reported for it: the server has already
        marked it cancelled, or taken it back.

        Raises:
            ConnectionLost: the lease was lost because the connection is
                silent or broken; the connection must end.
        """
        key = (job.id, job.attempt)
        keeper = self.keeper
        if key in keeper.cancelled:
            keeper.release(key)
            self.stats.cancelled += 1
            log.info(
                "job %s (%s) was cancelled; its handler was stopped",
                job.id,
                job.name,
                extra=self._fields(job),
            )
            return True
        lost = keeper.lost.get(key)
        if lost is None:
            return False
        keeper.release(key)
        self._abandon(job, lost)
        if isinstance(lost, ConnectionLost):
            raise lost
        return True

    async def _report(
        self, ran: list[_Ran], fetch: RequestJob | None, *, beside: bool = False
    ) -> Reply | None:
        """Report what ran, in one write whose last report also carries ``fetch``.

        A completion the server refuses for itself (a result too large, say)
        is failed instead, so the job ends rather than run again; a report
        refused because the lease is gone (``LEASE_GONE_CODES``), or a
        refused failure, abandons its job. A report refused with
        ``journal_unavailable`` changed nothing and the server retries its
        journal by itself, so the job is held (and heartbeated) and its
        report sent again, after a growing pause (see :meth:`_journal_pause`).
        Whatever is refused fetched nothing, so the fetch then rides on the
        reports that follow.

        ``beside``: sent by a watcher task while the slot runs a handler
        (see :meth:`_send`).

        Returns:
            The reply to ``fetch`` (``job_assigned``, ``jobs_assigned`` or
            ``no_job``), or ``None`` if nothing was fetched: every job was
            cancelled or lost, the report was refused, or the server does
            not know ``fetch``.
        """
        keeper = self.keeper
        reports = ran
        if keeper.cancelled or keeper.lost:  # else, as nearly always, nothing to settle
            reports = [(job, outcome) for job, outcome in ran if not self._settled(job)]
        fetched: Reply | None = None
        asked: RequestJob | None = fetch
        pause = _JOURNAL_PAUSE
        while reports:
            replies = await self._send(reports, asked, beside)
            refused: list[_Ran] = []
            again: list[_Ran] = []
            for (job, outcome), reply in zip(reports, replies, strict=True):
                if not isinstance(reply, RequestError):
                    continue
                self._count(outcome, -1)
                if reply.code == JOURNAL_UNAVAILABLE:
                    again.append((job, outcome))
                    unavailable = reply
                elif reply.code in LEASE_GONE_CODES or outcome.error is not None:
                    self._abandon(job, reply)
                else:
                    error = ValueError(f"the server refused the result: {reply.message}")
                    self._result_failed(job, error)
                    refused.append((job, Outcome(error=error)))
            if asked is not None and not isinstance(replies[-1], RequestError):
                fetched = replies[-1]
                asked = None
            if again:
                again = await self._journal_pause(again, pause, unavailable)
                pause = min(2 * pause, _JOURNAL_PAUSE_MAX)
            reports = refused + again
        return None if isinstance(fetched, Ok) else fetched

    async def _journal_pause(
        self, again: list[_Ran], pause: float, unavailable: RequestError
    ) -> list[_Ran]:
        """Hold the jobs of reports ``journal_unavailable`` refused for ``pause`` seconds.

        Their leases are heartbeated meanwhile, as before the report. Returns
        those to report again: not the ones cancelled or lost meanwhile, and
        none once a drain's deadline has passed (they are abandoned: the
        drain closes the connection, and the server puts them back in line).
        """
        keeper = self.keeper
        keeper.hold(
            (
                JobAssigned(job.id, job.name, None, job.attempt, self.lease_timeout)
                for job, _ in again
            ),
            self.lease_timeout,
            renew_now=True,
        )
        if not await self._wait_for_journal(pause):
            for job, _ in again:
                keeper.release((job.id, job.attempt))
                self._abandon(job, unavailable)
            return []
        return [(job, outcome) for job, outcome in again if not self._settled(job)]

    async def _wait_for_journal(self, pause: float) -> bool:
        """Wait ``pause`` seconds to send again what ``journal_unavailable`` refused; whether to.

        Not past a drain's deadline: the drain then ends, and what is still
        held goes back in line when its connection closes.
        """
        deadline = self.worker.drain_deadline
        await trio.sleep_until(min(self._clock.current_time() + pause, deadline))
        return self._clock.current_time() < self.worker.drain_deadline

    async def _send(
        self, reports: list[_Ran], fetch: RequestJob | None, beside: bool = False
    ) -> list[Reply | RequestError]:
        """Send the reports of ``reports``, ``fetch`` on the last; counted once sent.

        A result JSON cannot carry (a set, NaN, a list that holds itself, one
        nested too deeply) fails its job with ``TypeError`` instead (nothing
        was sent, so the connection is still usable).

        ``beside``: sent by a watcher task, beside a request the slot may
        make meanwhile, so its deadline is its own, not the keeper's (which
        keeps one request's).

        Raises:
            ConnectionLost: the connection broke, or (``beside``) the
                replies were overdue.
        """
        keeper, stats = self.keeper, self.stats
        last = len(reports) - 1
        messages: list[JobComplete | JobFailed] = []
        for index, (job, outcome) in enumerate(reports):
            keeper.release((job.id, job.attempt))  # a report renews nothing
            messages.append(report_for(job, outcome, fetch if index == last else None))
            # Counted once sent (and taken back if refused or lost): with a
            # waiting fetch, the reply comes only with the next job.
            if outcome.error is None:
                stats.completed += 1
            else:
                stats.failed += 1
        # With a waiting fetch, the reply may take as long as a request_job's.
        limit = self.lease_timeout
        if fetch is not None:
            limit = max(limit, fetch.wait + self.worker.reply_grace)
        # The deadline is the keeper's, not a cancel scope's: a slot reports
        # every job, so this is the worker's hottest request, and a cancel
        # scope of its own would cost more than the rest of the request.
        # (A watcher's report, at most one a batch, keeps its own.)
        if not beside:
            keeper.expect_reply(messages, limit)
        try:
            if beside:
                return await ask_many(self.link, messages, limit)
            return await self.link.request_many(messages)
        except (TypeError, ValueError):
            # (A result that holds itself, or is nested too deeply, is a
            # ValueError too: see _json.encode.)
            for _, outcome in reports:
                self._count(outcome, -1)
            for index, message in enumerate(messages):
                try:
                    encode(message.to_wire())
                except (TypeError, ValueError) as exc:
                    job = reports[index][0]
                    error = TypeError(f"handler result is not JSON: {exc}")
                    self._result_failed(job, error)
                    reports[index] = (job, Outcome(error=error))
            return await self._send(reports, fetch, beside)
        except (ConnectionLost, trio.Cancelled) as exc:
            # Lost or overdue, the report may never have been applied. (A
            # worker that is being stopped leaves its counts as they are.)
            if isinstance(exc, ConnectionLost) or keeper.failure is not None:
                for _, outcome in reports:
                    self._count(outcome, -1)
            raise
        finally:
            if not beside:
                keeper.replied()

    def _result_failed(self, job: Job, error: Exception) -> None:
        """Log that ``job``, logged as completed, fails for its result after all.

        The result is encoded only in its report, well after the handler
        returned and the completion was logged: encoding it there too, to
        know sooner, would cost every job a second encoding.
        """
        log.error("job %s (%s) failed: %s", job.id, job.name, error, extra=self._fields(job))

    def _count(self, outcome: Outcome, sign: int) -> None:
        if outcome.error is None:
            self.stats.completed += sign
        else:
            self.stats.failed += sign

    def _abandon(self, job: Job, why: ConnectionLost | RequestError) -> None:
        """Give up a job the server no longer leases to us (nothing to report)."""
        self.stats.lost += 1
        reason = why.message if isinstance(why, RequestError) else str(why)
        log.warning("gave up job %s (%s): %s", job.id, job.name, reason, extra=self._fields(job))

    def _handler_raised(self, job: Job, started: float, raised: BaseException) -> Outcome:
        """A handler's ``BaseException`` that is not the worker's to stop on: its job fails.

        ``SystemExit``, a thread's or process's ``KeyboardInterrupt``, or a
        class of the handler's own: logged with the job's fields, and the
        job's failure rather than the end of a worker other jobs share.
        """
        log.error(
            "job %s (%s) failed: its handler raised %s",
            job.id,
            job.name,
            type(raised).__name__,
            exc_info=raised,
            extra=self._fields(job, started),
        )
        return Outcome(error=raised)

    def _fields(self, job: Job, started: float | None = None) -> dict[str, Any]:
        """What a job's log line carries for ``--log-format json`` (``extra=``).

        The queue is known only to a worker serving one: ``job_assigned``
        does not say which of a worker's queues the job came from.
        """
        worker = self.worker
        fields: dict[str, Any] = {
            "job_id": job.id,
            "job_name": job.name,
            "attempt": job.attempt,
            "worker": worker.name,
        }
        if len(worker.queues) == 1:
            fields["queue"] = worker.queues[0]
        if started is not None:
            fields["seconds"] = round_seconds(trio.current_time() - started)
        return fields

    async def _ask_one(self, message: Request, limit: float) -> Reply:
        """Send ``message``; its reply must come within ``limit`` seconds.

        The deadline is kept by the keeper, as for reports (see :meth:`_send`):
        a reply that misses it ends the connection, and the keeper says why.

        Raises:
            RequestError: the server refused it.
        """
        keeper = self.keeper
        keeper.expect_reply((message,), limit)
        try:
            return await self.link.request(message)
        finally:
            keeper.replied()

    def _job(self, assigned: JobAssigned) -> Job:
        """The handler's view of ``assigned``, with progress reports sent over the link."""
        link = self.link

        async def report_progress(progress: float | None, note: Any) -> None:
            # Shielded: a cancel or job_timeout landing mid-request would
            # leave its reply unread and the connection unusable. The
            # handler is stopped as soon as the reply is in, and the shield
            # has its own deadline so a silent connection cannot hold it.
            with trio.move_on_after(self.lease_timeout) as scope:
                scope.shield = True
                try:
                    await link.request(Progress(assigned.job_id, assigned.attempt, progress, note))
                except RequestError as exc:
                    log.debug("progress for job %s not recorded: %s", assigned.job_id, exc)
                except ConnectionLost:
                    pass  # the next heartbeat or request notices and ends the connection
            # ...and deliver a pending cancel here, outside the shield, or a
            # handler that does nothing but report would never see it.
            await trio.lowlevel.checkpoint_if_cancelled()

        return build_job(
            assigned.job_id,
            assigned.name,
            assigned.payload,
            assigned.attempt,
            report_progress,
            assigned.attempts_spent,
            assigned.last_attempt,
        )
