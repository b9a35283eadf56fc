"""The queue's rules as a pure, synchronous state machine.

No trio, no sockets, no clock: every method that depends on time takes
``now`` (seconds on a monotonic clock) as an argument, so the rules can be
tested exhaustively without waiting. Randomness (retry jitter) comes from an
injected ``random.Random`` and the value drawn is recorded in the event.

Every change of state is an *event* (:mod:`jobqueue._events`). Commands
(:meth:`QueueState.submit`, :meth:`QueueState.assign`, ...) check their
preconditions, then build events and pass each through
:meth:`QueueState.apply`, the only code that mutates jobs. Replaying the same
events into a fresh ``QueueState`` rebuilds the same state, which is what an
append-only journal needs.

The state speaks no wire: a refused request raises
:class:`~jobqueue._errors.RuleError` with one of the codes of
:mod:`jobqueue._errors`, and the coordinator builds replies from the
:class:`~jobqueue._job.JobRecord` it gets back.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import attrs

from ._config import DEFAULT_QUEUE, QueueRules
from ._errors import (
    ALREADY_FINISHED,
    NOT_FAILED,
    NOT_FINISHED,
    NOT_LEASED,
    QUEUE_FULL,
    UNKNOWN_JOB,
    RuleError,
)
from ._events import (
    Assigned,
    AttemptFailed,
    Cancelled,
    Completed,
    Forgotten,
    LeaseExtended,
    Progressed,
    Promoted,
    Released,
    Revived,
    Submitted,
)
from ._job import CANCELLED, FAILED, FINISHED, PENDING, RUNNING, SCHEDULED, JobRecord
from ._model import QueueModel
from ._quick import builder
from ._store import line_order

# The events every job makes, built without __init__'s per-field calls
# (jobqueue._quick): the same frozen events, about a quarter cheaper.
_submitted = builder(
    Submitted,
    "job_id", "name", "payload", "seq", "queue", "priority", "max_attempts", "not_before", "key",
    "at",
)  # fmt: skip
_assigned = builder(Assigned, "job_id", "worker", "worker_name", "lease_deadline", "at")
_completed = builder(Completed, "job_id", "result", "at")


# getstate_setstate=False: attrs would give a slotted subclass its own
# pickling, in place of JobStore's, which sorts the key shards again.
@attrs.define(eq=False, getstate_setstate=False)
class QueueState(QueueModel):
    """All queue state, and the rules for changing it.

    Three layers, one object: :class:`~jobqueue._store.JobStore` keeps the
    jobs and answers the queries (``counts``, ``list_jobs``,
    ``next_deadline``, ...); :class:`~jobqueue._model.QueueModel` adds
    :meth:`apply`, the only code that changes them; this class adds the
    commands, which check their preconditions against ``rules`` and decide
    which events to apply. (Layers by inheritance, not by reference: every
    command touches the store several times, and a hop through an attribute
    on each touch is measurable on the hot path.)

    Args:
        rules: Lease length, retry budget and backoff, retention and room.
        id_prefix: Prepended to job ids; the server uses a random one per
            run so ids from a previous run are never mistaken for new ones.
        rng: Source of retry jitter (seed it for reproducible tests).
        on_event: Called with every event after it is applied (a journal).
    """

    rules: QueueRules = attrs.field(factory=QueueRules)
    rng: random.Random = attrs.field(factory=random.Random)
    _last_now: float = attrs.field(default=float("-inf"), init=False)
    # finished_retention_bytes as a number to compare with (inf: no limit),
    # read after every completion.
    _most_finished_bytes: float = attrs.field(default=float("inf"), init=False)

    def __attrs_post_init__(self) -> None:
        self._plan(self.rules.finished_retention)
        most = self.rules.finished_retention_bytes
        if most is not None:
            self._most_finished_bytes = most

    # -- queries --------------------------------------------------------------

    @property
    def lease_timeout(self) -> float:
        """Seconds a lease lasts after assignment or heartbeat (workers are told)."""
        return self.rules.lease_timeout

    def check_room(self, count: int, size: int = 0) -> None:
        """Refuse, before anything changes, a submit of ``count`` new jobs that would not fit.

        ``size`` is their payloads' bytes (``payload_size``), held against
        ``max_payload_bytes``. Only new submissions are limited: a job
        already accepted (a retry, a requeue, a revive) always gets its
        place back, so the limits never drop anything.

        Raises:
            RuleError: ``queue_full``.
        """
        limit = self.rules.max_pending
        # waiting_count written out: this runs for every job submitted.
        waiting = self._pending + len(self._by_state[SCHEDULED])
        if limit is not None and waiting + count > limit:
            raise RuleError(
                QUEUE_FULL,
                f"the queue holds its limit of {limit} waiting jobs; try again later",
            )
        most = self.rules.max_payload_bytes
        if most is not None and self.payload_bytes + size > most:
            raise RuleError(
                QUEUE_FULL,
                f"the unfinished jobs' payloads hold {self.payload_bytes} bytes; "
                f"{size} more would pass the limit of {most} (max_payload_bytes); "
                "try again later",
            )

    def get(self, job_id: str) -> JobRecord:
        """The record of ``job_id``.

        Raises:
            RuleError: ``unknown_job`` if the id was never issued or the
                finished job has been forgotten.
        """
        job = self._lookup(job_id)
        if job is None:
            most = self.rules.finished_retention_bytes
            fewer = (
                "" if most is None else f", fewer if their payloads and results pass {most} bytes"
            )
            raise RuleError(
                UNKNOWN_JOB,
                f"no job {job_id!r}: never submitted, or finished long enough ago "
                f"to be forgotten (the last {self.rules.finished_retention} are kept{fewer})",
            )
        return job

    def limits(self) -> dict[str, dict[str, int | None]]:
        """Each bound the rules put on what the server holds: what it holds now, and the bound.

        ``stats`` shows it (its ``limits``), so an operator sees how near
        submits are to ``queue_full``, and how early finished jobs are
        forgotten. A ``max`` of ``None`` is no bound.
        """
        rules = self.rules
        return {
            "waiting": {"used": self.waiting_count, "max": rules.max_pending},
            "payload_bytes": {"used": self.payload_bytes, "max": rules.max_payload_bytes},
            "finished": {"used": len(self._finished), "max": rules.finished_retention},
            "finished_bytes": {
                "used": self.finished_bytes,
                "max": rules.finished_retention_bytes,
            },
        }

    # -- commands -------------------------------------------------------------

    def submit(
        self,
        name: str,
        payload: Any,
        now: float,
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_attempts: int | None = None,
        delay: float = 0.0,
        key: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """Add a job and return it, with ``True`` if it is new.

        With a ``key`` that a remembered job already has, nothing is added:
        that job is returned, with ``False``.
        """
        if now < self._last_now:  # _tick written out: this runs for every job
            self._tick(now)
        self._last_now = now
        known = None if key is None else self._keyed(key)
        if known is not None:
            return known, False
        rules = self.rules
        limit = rules.max_pending
        size = len(payload) if payload.__class__ is bytes else 0  # payload_size written out
        # check_room(1, size) written out for the usual answer, room to spare.
        if (limit is not None and self._pending + len(self._by_state[SCHEDULED]) >= limit) or (
            rules.max_payload_bytes is not None
            and self.payload_bytes + size > rules.max_payload_bytes
        ):
            self.check_room(1, size)
        seq = self._next_seq
        job_id = f"{self.id_prefix}{seq}"
        self.apply(
            _submitted(
                job_id,
                name,
                payload,
                seq,
                queue,
                priority,
                rules.max_attempts if max_attempts is None else max_attempts,
                now + delay if delay > 0 else None,
                key,
                now,
            )
        )
        return self._jobs[job_id], True

    def assign(
        self,
        worker: Hashable,
        now: float,
        worker_name: str | None = None,
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        names: AbstractSet[str] | None = None,
    ) -> JobRecord | None:
        """Lease the best pending job in ``queues`` that ``worker`` can run; ``None`` if none.

        Best means highest priority, then earliest submitted, across all the
        named queues together. With ``names`` (the job names the worker has
        handlers for; ``None``: any), only jobs of those names are
        candidates; the others keep their places for workers that run them.
        Each queue keeps a line per job name and a heap of their heads
        (:mod:`jobqueue._lines`), so this costs the same whatever the
        number of pending jobs.
        """
        if now < self._last_now:  # _tick written out: this runs for every job
            self._tick(now)
        self._last_now = now
        # The search is written out here, not a store method: one call more
        # per assignment showed in the benchmarks.
        best: JobRecord | None = None
        by_queue, head = self._queues, self._head
        for queue in queues:
            lines = by_queue.get(queue)
            if lines is None:
                continue
            job = lines.best(head) if names is None else lines.best_of(names, head)
            if job is not None and (best is None or line_order(job) < line_order(best)):
                best = job
        if best is None:
            return None
        self.apply(_assigned(best.id, worker, worker_name, now + self.rules.lease_timeout, now))
        return best

    def heartbeat(
        self, job_id: str, worker: Hashable, attempt: int | None, now: float
    ) -> JobRecord:
        """Extend ``worker``'s lease on ``job_id``.

        Raises:
            RuleError: ``unknown_job`` or ``not_leased``.
        """
        self._tick(now)
        job = self._leased(job_id, worker, attempt, "heartbeat")
        self.apply(LeaseExtended(job_id, now + self.rules.lease_timeout))
        return job

    def report_progress(
        self,
        job_id: str,
        worker: Hashable,
        attempt: int | None,
        progress: float | None,
        note: Any,
        now: float,
    ) -> JobRecord:
        """Record the lease holder's progress; this extends the lease too.

        Raises:
            RuleError: ``unknown_job`` or ``not_leased``.
        """
        self._tick(now)
        job = self._leased(job_id, worker, attempt, "report progress on")
        self.apply(Progressed(job_id, progress, note, now + self.rules.lease_timeout))
        return job

    def complete(
        self, job_id: str, worker: Hashable, attempt: int | None, result: Any, now: float
    ) -> JobRecord:
        """Mark ``job_id`` completed by its lease holder.

        Raises:
            RuleError: ``unknown_job`` or ``not_leased``; a job that is
                already finished (completed, failed or cancelled) is never
                completed, or handed out, again.
        """
        if now < self._last_now:  # _tick written out: this runs for every job
            self._tick(now)
        self._last_now = now
        # The lease check written out for the usual case, a report from the
        # holder; anything else goes to _leased, which words the refusal.
        job = self._jobs.get(job_id)
        run = None if job is None else job.run
        if (
            run is None
            or job is None
            or job.state is not RUNNING
            or run.worker != worker
            or (attempt is not None and attempt != run.attempt)
        ):
            job = self._leased(job_id, worker, attempt, "complete")
        self.apply(_completed(job_id, result, now))
        if (
            len(self._finished) > self.rules.finished_retention
            or self.finished_bytes > self._most_finished_bytes
        ):
            self._enforce_retention()
        return job

    def fail(
        self,
        job_id: str,
        worker: Hashable,
        attempt: int | None,
        error_type: str,
        error_message: str,
        now: float,
    ) -> JobRecord:
        """The lease holder's handler raised: retry after a backoff, or fail.

        Raises:
            RuleError: ``unknown_job`` or ``not_leased``.
        """
        self._tick(now)
        job = self._leased(job_id, worker, attempt, "fail")
        if job.attempts_left > 0:
            retries = job.attempt - job.attempt_base
            # The exponent is capped first: 2.0 ** 1024 would overflow a float
            # long before min() could apply the cap.
            rules = self.rules
            ceiling = min(rules.retry_delay * 2.0 ** min(retries - 1, 64), rules.max_retry_delay)
            # "Equal jitter": at least half the backoff, so retries of many
            # jobs failing together spread out without collapsing to zero.
            delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
            self.apply(
                AttemptFailed(job_id, "error", error_type, error_message, now + delay, at=now)
            )
        else:
            self.apply(
                AttemptFailed(job_id, "error", error_type, error_message, final=True, at=now)
            )
            self._enforce_retention()
        return job

    def cancel(self, job_id: str, now: float) -> tuple[JobRecord, Hashable | None]:
        """Cancel a job that has not finished; return it and the worker that held it.

        Cancelling an already cancelled job changes nothing.

        Raises:
            RuleError: ``unknown_job``, or ``already_finished`` for a job
                that completed or failed.
        """
        self._tick(now)
        job = self.get(job_id)
        if job.state is CANCELLED:
            return job, None
        if job.state in FINISHED:
            raise RuleError(ALREADY_FINISHED, f"job {job_id!r} is already {job.state.value}")
        holder = job.worker if job.state is RUNNING else None
        self.apply(Cancelled(job_id, now))
        self._enforce_retention()
        return job, holder

    def revive(self, job_id: str, now: float) -> JobRecord:
        """Put a failed job back in line with a fresh budget of attempts.

        Raises:
            RuleError: ``unknown_job``, or ``not_failed``.
        """
        self._tick(now)
        job = self.get(job_id)
        if job.state is not FAILED:
            raise RuleError(
                NOT_FAILED, f"only failed jobs can be requeued; {job_id!r} is {job.state.value}"
            )
        self.apply(Revived(job_id))
        return job

    def delete(self, job_id: str, now: float) -> None:
        """Forget a finished job now.

        Raises:
            RuleError: ``unknown_job``, or ``not_finished`` (cancel it first).
        """
        self._tick(now)
        job = self.get(job_id)
        if job.state not in FINISHED:
            raise RuleError(
                NOT_FINISHED,
                f"job {job_id!r} is {job.state.value}; cancel it before deleting it",
            )
        self.apply(Forgotten(job_id))

    def give_back(
        self, worker: Hashable, leases: Sequence[tuple[str, int | None]], now: float
    ) -> list[JobRecord]:
        """The lease holder gives jobs back (``release_job``): all of them, or none.

        Each job goes back in line at its original place and the run is not
        counted (see :class:`~jobqueue._events.Released`): a worker that is
        stopping hands back what it has not started, or what it had to
        stop, without using up the job's attempts.

        Args:
            worker: The connection sending the request.
            leases: ``(job_id, attempt)`` pairs; ``attempt`` ``None`` checks
                only that the job is leased to ``worker``.
            now: The current time.

        Raises:
            RuleError: ``unknown_job`` or ``not_leased`` for any of them (in
                a batch, the message starts with ``job <index>:``); then
                nothing was given back.
        """
        self._tick(now)
        jobs = []
        seen: set[str] = set()
        for index, (job_id, attempt) in enumerate(leases):
            try:
                if job_id in seen:
                    raise RuleError(NOT_LEASED, f"cannot release job {job_id!r} twice")
                jobs.append(self._leased(job_id, worker, attempt, "release"))
            except RuleError as exc:
                if len(leases) == 1:
                    raise
                raise RuleError(exc.code, f"job {index}: {exc.message}") from None
            seen.add(job_id)
        for job in jobs:
            self.apply(Released(job.id))
        return jobs

    def release(self, worker: Hashable, now: float) -> list[JobRecord]:
        """End every lease ``worker`` holds (its connection closed)."""
        self._tick(now)
        lost = self._leased_to(worker)
        for job in lost:
            self._lose(job, "worker_lost", "WorkerLost", "the worker's connection closed", now)
        return lost

    def tick(self, now: float) -> list[JobRecord]:
        """Expire leases that ran out and promote scheduled jobs that came due.

        Returns:
            The jobs that changed: back in line, scheduled for a retry, or
            failed for good.
        """
        self._tick(now)
        changed = []
        while (job := self._first_lease()) is not None and job.lease_deadline <= now:
            self._lose(job, "lease_expired", "LeaseExpired", "no heartbeat within the lease", now)
            changed.append(job)
        while (job := self._pop_due(now)) is not None:
            self.apply(Promoted(job.id))
            changed.append(job)
        return changed

    def _lose(self, job: JobRecord, reason: str, error_type: str, message: str, now: float) -> None:
        # A lost lease is a spent attempt (so a job that kills every worker
        # that runs it ends up failed), but it goes back in line at once: the
        # job did not fail, its worker did.
        if job.attempts_left > 0:
            self.apply(AttemptFailed(job.id, reason, error_type, message, at=now))
        else:
            self.apply(AttemptFailed(job.id, reason, error_type, message, final=True, at=now))
            self._enforce_retention()

    def _tick(self, now: float) -> None:
        if now < self._last_now:
            raise ValueError(f"time went backwards: {now} < {self._last_now}")
        self._last_now = now

    def _leased(self, job_id: str, worker: Hashable, attempt: int | None, verb: str) -> JobRecord:
        job = self.get(job_id)
        run = job.run
        if job.state is RUNNING and run is not None and run.worker == worker:
            if attempt is None or attempt == run.attempt:
                return job
            why = f"attempt {attempt} is over; the job is now on attempt {job.attempt}"
        elif job.state is RUNNING:
            why = f"its lease (attempt {job.attempt}) is held by another worker"
        elif job.state is PENDING:
            why = "its lease was lost and it is waiting to be reassigned"
        elif job.state is SCHEDULED:
            why = "it is scheduled to run later (delayed, or backing off before a retry)"
        else:
            why = f"it is already {job.state.value}"
        raise RuleError(NOT_LEASED, f"cannot {verb} job {job_id!r}: {why}")

    def _enforce_retention(self) -> None:
        # A separate step, not part of applying the event that finished a
        # job, so the log reads "completed, then forgotten" and replays in
        # that order.
        # The store's deque read directly, not through a method: this runs
        # after every job that finishes.
        finished, retention = self._finished, self.rules.finished_retention
        while len(finished) > retention or self.finished_bytes > self._most_finished_bytes:
            self.apply(Forgotten(finished[0].id))
