"""The queue's rules as a pure, synchronous state machine.

No trio, no sockets, no clock: every method that depends on time takes
``now`` (seconds on a monotonic clock) as an argument, so the rules can be
tested exhaustively without waiting. Randomness (retry jitter) comes from an
injected ``random.Random`` and the value drawn is recorded in the event.

Every change of state is an *event* (``Submitted``, ``Assigned``, ...).
Commands (:meth:`QueueState.submit`, :meth:`QueueState.assign`, ...) check
their preconditions, then build events and pass each through
:meth:`QueueState.apply`, the only code that mutates jobs. Replaying the same
events into a fresh ``QueueState`` rebuilds the same state, which is what an
append-only journal needs.
"""

from __future__ import annotations

import enum
import heapq
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import attrs

from ._protocol import MAX_ATTEMPTS, JobInfo, ProtocolError

#: Default for how long a lease lasts without a heartbeat, in seconds.
DEFAULT_LEASE_TIMEOUT = 30.0
#: Default for how many finished jobs are remembered for status queries.
DEFAULT_FINISHED_RETENTION = 100_000
#: Default for how many times a job may be handed to a worker.
DEFAULT_MAX_ATTEMPTS = 5
#: First retry delay after a handler raised, in seconds; doubles each time.
DEFAULT_RETRY_DELAY = 1.0
#: Longest retry delay, in seconds.
DEFAULT_MAX_RETRY_DELAY = 300.0
#: The queue a job goes to, and a worker listens on, when none is named.
DEFAULT_QUEUE = "default"
#: Jobs that may wait at once before submits get ``queue_full``: about 0.7 GB
#: of server memory with small payloads.
DEFAULT_MAX_PENDING = 1_000_000


class JobState(enum.Enum):
    """Where a job is in its life."""

    #: Waiting for a worker.
    PENDING = "pending"
    #: Waiting for a time (a delayed job, or a retry's backoff).
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    #: Out of attempts: the dead-letter set, until requeued or deleted.
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Every legal change of state: (from, action) -> to. Anything else is a bug
#: and raises :class:`InvalidTransition` with the job left as it was.
#: docs/design.md draws its diagram from this table.
TRANSITIONS: dict[tuple[JobState, str], JobState] = {
    (JobState.PENDING, "assign"): JobState.RUNNING,
    (JobState.PENDING, "cancel"): JobState.CANCELLED,
    (JobState.SCHEDULED, "promote"): JobState.PENDING,
    (JobState.SCHEDULED, "cancel"): JobState.CANCELLED,
    (JobState.RUNNING, "complete"): JobState.COMPLETED,
    # The lease was lost (worker gone, lease expired), attempts remain.
    (JobState.RUNNING, "requeue"): JobState.PENDING,
    # The handler raised, attempts remain: back off, then run again.
    (JobState.RUNNING, "retry"): JobState.SCHEDULED,
    # Any lost attempt when none remain.
    (JobState.RUNNING, "fail"): JobState.FAILED,
    (JobState.RUNNING, "cancel"): JobState.CANCELLED,
    # A person requeues a dead letter, with a fresh budget of attempts.
    (JobState.FAILED, "revive"): JobState.PENDING,
}

FINISHED = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


class InvalidTransition(RuntimeError):
    """An event asked for a state change the table does not allow (a bug)."""


# -- events -------------------------------------------------------------------


@attrs.frozen
class Submitted:
    """A job entered the queue; ``seq`` fixes its place in line for good."""

    job_id: str
    name: str
    payload: Any
    seq: int
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    #: Not to run before this time (``None``: at once).
    not_before: float | None = None
    key: str | None = None


@attrs.frozen
class Promoted:
    """A scheduled job's time came: it joins its queue."""

    job_id: str


@attrs.frozen
class Assigned:
    """A job was leased to ``worker`` until ``lease_deadline``."""

    job_id: str
    worker: Hashable
    worker_name: str | None
    lease_deadline: float


@attrs.frozen
class LeaseExtended:
    """The lease holder heartbeated; its lease now ends at ``lease_deadline``."""

    job_id: str
    lease_deadline: float


@attrs.frozen
class Progressed:
    """The lease holder reported progress (this also extends the lease)."""

    job_id: str
    progress: float | None
    note: Any
    lease_deadline: float


@attrs.frozen
class Completed:
    """The lease holder finished the job."""

    job_id: str
    result: Any


@attrs.frozen
class AttemptFailed:
    """A run ended without a result.

    ``reason`` is ``"error"`` (the handler raised), ``"worker_lost"`` or
    ``"lease_expired"``. ``retry_at`` says what follows: ``None`` with
    attempts left means back in line at once; a time means scheduled for
    then; ``final`` means no attempts are left and the job has failed.
    """

    job_id: str
    reason: str
    error_type: str
    error_message: str
    retry_at: float | None = None
    final: bool = False


@attrs.frozen
class Cancelled:
    """A person cancelled the job."""

    job_id: str


@attrs.frozen
class Revived:
    """A failed job was put back in line with a fresh budget of attempts."""

    job_id: str


@attrs.frozen
class Forgotten:
    """A finished job's record was dropped (retention, or deleted by a person)."""

    job_id: str


Event = (
    Submitted | Promoted | Assigned | LeaseExtended | Progressed | Completed | AttemptFailed
    | Cancelled | Revived | Forgotten
)  # fmt: skip


@attrs.define(eq=False, slots=True)
class JobRecord:
    """The server's record of one job."""

    id: str
    name: str
    payload: Any
    #: Submission order; ties within a priority are broken by it.
    seq: int
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    key: str | None = None
    state: JobState = JobState.PENDING
    #: How many times the job has been assigned (the current run's number).
    attempt: int = 0
    #: ``attempt`` when the budget last started (a revive starts a new one).
    attempt_base: int = 0
    #: Identity of the lease holder while running; of the last holder after.
    worker: Hashable | None = None
    worker_name: str | None = None
    lease_deadline: float = 0.0
    #: When a scheduled job may run.
    not_before: float | None = None
    result: Any = None
    error: dict[str, str] | None = None
    progress: float | None = None
    note: Any = None

    @property
    def attempts_left(self) -> int:
        """Runs still allowed after the current one."""
        return self.max_attempts - (self.attempt - self.attempt_base)

    def info(self) -> JobInfo:
        """This job as ``job_status`` reports it."""
        return JobInfo(
            job_id=self.id,
            name=self.name,
            state=self.state.value,
            attempt=self.attempt,
            worker=self.worker_name,
            result=self.result,
            error=self.error,
            queue=self.queue,
            priority=self.priority,
            max_attempts=self.max_attempts,
            progress=self.progress,
            note=self.note,
        )


@attrs.define(eq=False)
class QueueState:
    """All queue state, and the rules for changing it.

    Storage: ``_jobs`` maps id -> :class:`JobRecord` for every job the
    server remembers. Pending jobs also sit in one heap per queue, keyed by
    ``(-priority, seq)``: highest priority first, then first come, first
    served, and a requeued job goes back to its original place. Scheduled
    jobs sit in a heap keyed by the time they may run. Running jobs sit in
    ``_leases``, ordered by lease deadline. ``_by_state`` indexes ids by
    state for listing; finished ids sit in ``_finished`` in finishing order,
    so the oldest can be forgotten.

    Heaps are cleaned lazily: cancelling a pending job only changes its
    state, and its heap entry is dropped when it reaches the top.

    Args:
        lease_timeout: Seconds a lease lasts after assignment or heartbeat.
        finished_retention: How many finished jobs to remember.
        id_prefix: Prepended to job ids; the server uses a random one per
            run so ids from a previous run are never mistaken for new ones.
        max_attempts: Default for jobs that do not set their own.
        retry_delay: First backoff after a handler raised, in seconds.
        max_retry_delay: Cap on the backoff.
        max_pending: Most jobs that may wait (pending or scheduled) at once;
            a submit beyond it is refused with ``queue_full`` (``None``: no limit).
        rng: Source of retry jitter (seed it for reproducible tests).
        on_event: Called with every event after it is applied (a journal).
    """

    lease_timeout: float = DEFAULT_LEASE_TIMEOUT
    finished_retention: int = DEFAULT_FINISHED_RETENTION
    id_prefix: str = ""
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_delay: float = DEFAULT_RETRY_DELAY
    max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY
    max_pending: int | None = DEFAULT_MAX_PENDING
    rng: random.Random = attrs.field(factory=random.Random)
    on_event: Callable[[Event], None] | None = None
    _jobs: dict[str, JobRecord] = attrs.field(factory=dict, init=False)
    _queues: dict[str, list[tuple[int, int, str]]] = attrs.field(factory=dict, init=False)
    _scheduled: list[tuple[float, int, str]] = attrs.field(factory=list, init=False)
    # Every lease has the same length and `now` never goes backwards, so
    # deadlines grow in the order leases are granted or renewed: an OrderedDict
    # with move_to_end keeps them sorted in O(1), no heap needed.
    _leases: OrderedDict[str, None] = attrs.field(factory=OrderedDict, init=False)
    _held: dict[Hashable, dict[str, None]] = attrs.field(factory=dict, init=False)
    _by_state: dict[JobState, dict[str, None]] = attrs.field(
        factory=lambda: {state: {} for state in JobState}, init=False
    )
    _queue_counts: dict[str, dict[str, int]] = attrs.field(factory=dict, init=False)
    _finished: deque[str] = attrs.field(factory=deque, init=False)
    _keys: dict[str, str] = attrs.field(factory=dict, init=False)
    _next_seq: int = attrs.field(default=1, init=False)
    _last_now: float = attrs.field(default=float("-inf"), init=False)
    totals: dict[str, int] = attrs.field(
        factory=lambda: dict.fromkeys(
            (
                "submitted", "completed", "failed", "cancelled", "retried", "reassigned",
                "expired",
            ),
            0,
        ),
        init=False,
    )  # fmt: skip

    def __attrs_post_init__(self) -> None:
        if self.lease_timeout <= 0:
            raise ValueError("lease_timeout must be positive")
        if self.finished_retention < 0:
            raise ValueError("finished_retention must be >= 0")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            raise ValueError(f"max_attempts must be from 1 to {MAX_ATTEMPTS}")
        if self.max_pending is not None and self.max_pending < 1:
            raise ValueError("max_pending must be >= 1 (or None for no limit)")

    # -- queries --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def pending_count(self) -> int:
        """Jobs waiting for a worker, in all queues."""
        return len(self._by_state[JobState.PENDING])

    @property
    def waiting_count(self) -> int:
        """Jobs waiting to run: pending, or scheduled for later (retries included)."""
        return self.pending_count + len(self._by_state[JobState.SCHEDULED])

    def knows_key(self, key: str) -> bool:
        """Whether a remembered job was submitted with idempotency ``key``."""
        return key in self._keys

    def check_room(self, count: int) -> None:
        """Refuse, before anything changes, a submit of ``count`` new jobs that would not fit.

        Only new submissions are limited: a job already accepted (a retry, a
        requeue, a revive) always gets its place back, so the limit never
        drops anything.

        Raises:
            ProtocolError: ``queue_full``.
        """
        limit = self.max_pending
        if limit is not None and self.waiting_count + count > limit:
            raise ProtocolError(
                "queue_full",
                f"the queue holds its limit of {limit} waiting jobs; try again later",
            )

    @property
    def running_count(self) -> int:
        """Jobs leased to a worker."""
        return len(self._leases)

    def get(self, job_id: str) -> JobRecord:
        """The record of ``job_id``.

        Raises:
            ProtocolError: ``unknown_job`` if the id was never issued or the
                finished job has been forgotten.
        """
        job = self._jobs.get(job_id)
        if job is None:
            raise ProtocolError(
                "unknown_job",
                f"no job {job_id!r}: never submitted, or finished long enough ago "
                f"to be forgotten (the last {self.finished_retention} are kept)",
            )
        return job

    def held_by(self, worker: Hashable) -> list[str]:
        """Ids of the jobs ``worker`` holds leases on, oldest first."""
        return list(self._held.get(worker, ()))

    def holders(self) -> Iterable[tuple[Hashable, list[str]]]:
        """Each worker holding leases, with its job ids."""
        return ((worker, list(jobs)) for worker, jobs in self._held.items())

    def counts(self) -> dict[str, int]:
        """How many remembered jobs are in each state."""
        return {state.value: len(ids) for state, ids in self._by_state.items()}

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """Per queue: jobs pending, scheduled and running (queues in use only)."""
        counts = self._queue_counts
        return {queue: dict(by) for queue, by in counts.items() if any(by.values())}

    def pending_in(self, queues: Sequence[str]) -> bool:
        """Whether any of ``queues`` has a job waiting for a worker."""
        counts = self._queue_counts
        return any(counts.get(queue, {}).get("pending", 0) for queue in queues)

    def list_jobs(
        self, state: JobState, queue: str | None, limit: int
    ) -> tuple[list[JobRecord], bool]:
        """Up to ``limit`` jobs in ``state`` (oldest change first); and whether more exist."""
        found: list[JobRecord] = []
        for job_id in self._by_state[state]:
            job = self._jobs[job_id]
            if queue is not None and job.queue != queue:
                continue
            if len(found) == limit:
                return found, True
            found.append(job)
        return found, False

    def next_deadline(self) -> float:
        """When the earliest lease runs out or scheduled job comes due (or ``inf``)."""
        deadline = float("inf")
        if self._leases:
            deadline = self._jobs[next(iter(self._leases))].lease_deadline
        scheduled = self._scheduled
        while scheduled and not self._is_due_entry(scheduled[0]):
            heapq.heappop(scheduled)
        if scheduled:
            deadline = min(deadline, scheduled[0][0])
        return deadline

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
        self._tick(now)
        if key is not None and key in self._keys:
            return self._jobs[self._keys[key]], False
        self.check_room(1)
        seq = self._next_seq
        job_id = f"{self.id_prefix}{seq}"
        self.apply(
            Submitted(
                job_id,
                name,
                payload,
                seq,
                queue,
                priority,
                self.max_attempts if max_attempts is None else max_attempts,
                now + delay if delay > 0 else None,
                key,
            )
        )
        return self._jobs[job_id], True

    def assign(
        self,
        worker: Hashable,
        now: float,
        worker_name: str | None = None,
        queues: Sequence[str] = (DEFAULT_QUEUE,),
    ) -> JobRecord | None:
        """Lease the best pending job in ``queues`` to ``worker``; ``None`` if none.

        Best means highest priority, then earliest submitted, across all the
        named queues together.
        """
        self._tick(now)
        best: tuple[int, int, str] | None = None
        for queue in queues:
            heap = self._queues.get(queue)
            while heap and self._jobs.get(heap[0][2], _GONE).state is not JobState.PENDING:
                heapq.heappop(heap)  # cancelled while waiting
            if heap and (best is None or heap[0] < best):
                best = heap[0]
        if best is None:
            return None
        job_id = best[2]
        self.apply(Assigned(job_id, worker, worker_name, now + self.lease_timeout))
        return self._jobs[job_id]

    def heartbeat(
        self, job_id: str, worker: Hashable, attempt: int | None, now: float
    ) -> JobRecord:
        """Extend ``worker``'s lease on ``job_id``.

        Raises:
            ProtocolError: ``unknown_job`` or ``not_leased``.
        """
        self._tick(now)
        job = self._leased(job_id, worker, attempt, "heartbeat")
        self.apply(LeaseExtended(job_id, now + self.lease_timeout))
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
            ProtocolError: ``unknown_job`` or ``not_leased``.
        """
        self._tick(now)
        job = self._leased(job_id, worker, attempt, "report progress on")
        self.apply(Progressed(job_id, progress, note, now + self.lease_timeout))
        return job

    def complete(
        self, job_id: str, worker: Hashable, attempt: int | None, result: Any, now: float
    ) -> JobRecord:
        """Mark ``job_id`` completed by its lease holder.

        Raises:
            ProtocolError: ``unknown_job`` or ``not_leased``; a job that is
                already finished (completed, failed or cancelled) is never
                completed, or handed out, again.
        """
        self._tick(now)
        job = self._leased(job_id, worker, attempt, "complete")
        self.apply(Completed(job_id, result))
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
            ProtocolError: ``unknown_job`` or ``not_leased``.
        """
        self._tick(now)
        job = self._leased(job_id, worker, attempt, "fail")
        if job.attempts_left > 0:
            retries = job.attempt - job.attempt_base
            # The exponent is capped first: 2.0 ** 1024 would overflow a float
            # long before min() could apply the cap.
            ceiling = min(self.retry_delay * 2.0 ** min(retries - 1, 64), self.max_retry_delay)
            # "Equal jitter": at least half the backoff, so retries of many
            # jobs failing together spread out without collapsing to zero.
            delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
            self.apply(AttemptFailed(job_id, "error", error_type, error_message, now + delay))
        else:
            self.apply(AttemptFailed(job_id, "error", error_type, error_message, final=True))
            self._enforce_retention()
        return job

    def cancel(self, job_id: str, now: float) -> tuple[JobRecord, Hashable | None]:
        """Cancel a job that has not finished; return it and the worker that held it.

        Cancelling an already cancelled job changes nothing.

        Raises:
            ProtocolError: ``unknown_job``, or ``already_finished`` for a job
                that completed or failed.
        """
        self._tick(now)
        job = self.get(job_id)
        if job.state is JobState.CANCELLED:
            return job, None
        if job.state in FINISHED:
            raise ProtocolError("already_finished", f"job {job_id!r} is already {job.state.value}")
        holder = job.worker if job.state is JobState.RUNNING else None
        self.apply(Cancelled(job_id))
        self._enforce_retention()
        return job, holder

    def revive(self, job_id: str, now: float) -> JobRecord:
        """Put a failed job back in line with a fresh budget of attempts.

        Raises:
            ProtocolError: ``unknown_job``, or ``not_failed``.
        """
        self._tick(now)
        job = self.get(job_id)
        if job.state is not JobState.FAILED:
            raise ProtocolError(
                "not_failed", f"only failed jobs can be requeued; {job_id!r} is {job.state.value}"
            )
        self.apply(Revived(job_id))
        return job

    def delete(self, job_id: str, now: float) -> None:
        """Forget a finished job now.

        Raises:
            ProtocolError: ``unknown_job``, or ``not_finished`` (cancel it first).
        """
        self._tick(now)
        job = self.get(job_id)
        if job.state not in FINISHED:
            raise ProtocolError(
                "not_finished",
                f"job {job_id!r} is {job.state.value}; cancel it before deleting it",
            )
        self.apply(Forgotten(job_id))

    def release(self, worker: Hashable, now: float) -> list[JobRecord]:
        """End every lease ``worker`` holds (its connection closed)."""
        self._tick(now)
        lost = [self._jobs[job_id] for job_id in self._held.get(worker, ())]
        for job in lost:
            self._lose(job, "worker_lost", "WorkerLost", "the worker's connection closed")
        return lost

    def tick(self, now: float) -> list[JobRecord]:
        """Expire leases that ran out and promote scheduled jobs that came due.

        Returns:
            The jobs that changed: back in line, scheduled for a retry, or
            failed for good.
        """
        self._tick(now)
        changed = []
        while self._leases:
            job = self._jobs[next(iter(self._leases))]
            if job.lease_deadline > now:
                break
            self._lose(job, "lease_expired", "LeaseExpired", "no heartbeat within the lease")
            changed.append(job)
        scheduled = self._scheduled
        while scheduled and scheduled[0][0] <= now:
            entry = heapq.heappop(scheduled)
            if self._is_due_entry(entry):
                self.apply(Promoted(entry[2]))
                changed.append(self._jobs[entry[2]])
        return changed

    def _lose(self, job: JobRecord, reason: str, error_type: str, message: str) -> None:
        # A lost lease is a spent attempt (so a job that kills every worker
        # that runs it ends up failed), but it goes back in line at once: the
        # job did not fail, its worker did.
        if job.attempts_left > 0:
            self.apply(AttemptFailed(job.id, reason, error_type, message))
        else:
            self.apply(AttemptFailed(job.id, reason, error_type, message, final=True))
            self._enforce_retention()

    def _is_due_entry(self, entry: tuple[float, int, str]) -> bool:
        job = self._jobs.get(entry[2])
        return job is not None and job.state is JobState.SCHEDULED and job.not_before == entry[0]

    def _tick(self, now: float) -> None:
        if now < self._last_now:
            raise ValueError(f"time went backwards: {now} < {self._last_now}")
        self._last_now = now

    def _leased(self, job_id: str, worker: Hashable, attempt: int | None, verb: str) -> JobRecord:
        job = self.get(job_id)
        if job.state is JobState.RUNNING and job.worker == worker:
            if attempt is None or attempt == job.attempt:
                return job
            why = f"attempt {attempt} is over; the job is now on attempt {job.attempt}"
        elif job.state is JobState.RUNNING:
            why = f"its lease (attempt {job.attempt}) is held by another worker"
        elif job.state is JobState.PENDING:
            why = "its lease was lost and it is waiting to be reassigned"
        elif job.state is JobState.SCHEDULED:
            why = "it is scheduled to run later (delayed, or backing off before a retry)"
        else:
            why = f"it is already {job.state.value}"
        raise ProtocolError("not_leased", f"cannot {verb} job {job_id!r}: {why}")

    # -- the one place state changes ------------------------------------------

    def apply(self, event: Event) -> None:
        """Apply one event; the only method that mutates jobs.

        Raises:
            InvalidTransition: if the event asks for a change the transition
                table forbids; nothing is changed.
        """
        if isinstance(event, Submitted):
            self._on_submitted(event)
        elif isinstance(event, Assigned):
            job = self._move(event.job_id, "assign")
            job.attempt += 1
            job.worker = event.worker
            job.worker_name = event.worker_name
            job.lease_deadline = event.lease_deadline
            job.progress = None
            job.note = None
            self._leases[job.id] = None
            self._held.setdefault(event.worker, {})[job.id] = None
        elif isinstance(event, (LeaseExtended, Progressed)):
            job = self._running(event.job_id)
            job.lease_deadline = event.lease_deadline
            self._leases.move_to_end(job.id)
            if isinstance(event, Progressed):
                job.progress = event.progress
                job.note = event.note
        elif isinstance(event, Completed):
            job = self._move(event.job_id, "complete")
            self._end_lease(job)
            job.result = event.result
            self.totals["completed"] += 1
        elif isinstance(event, AttemptFailed):
            self._on_attempt_failed(event)
        elif isinstance(event, Promoted):
            job = self._move(event.job_id, "promote")
            job.not_before = None
            self._enqueue(job)
        elif isinstance(event, Cancelled):
            job = self._jobs.get(event.job_id, _GONE)
            source = job.state
            self._move(event.job_id, "cancel")
            if source is JobState.RUNNING:
                self._end_lease(job)
            else:
                # Its heap entry stays (lazy deletion) until it reaches the
                # top; compacting when dead entries outnumber live ones keeps
                # a heap's size within twice its live jobs, amortised O(1).
                self._compact(job.queue)
            job.not_before = None
            self.totals["cancelled"] += 1
        elif isinstance(event, Revived):
            job = self._move(event.job_id, "revive")
            self._finished.remove(job.id)  # O(retained), but a person's action
            job.attempt_base = job.attempt
            self._enqueue(job)
        else:
            self._on_forgotten(event)
        if self.on_event is not None:
            self.on_event(event)

    def _on_submitted(self, event: Submitted) -> None:
        if event.job_id in self._jobs:
            raise InvalidTransition(f"job {event.job_id!r} already exists")
        job = JobRecord(
            event.job_id,
            event.name,
            event.payload,
            event.seq,
            queue=event.queue,
            priority=event.priority,
            max_attempts=event.max_attempts,
            key=event.key,
        )
        self._jobs[job.id] = job
        self._next_seq = max(self._next_seq, event.seq + 1)
        self.totals["submitted"] += 1
        if event.key is not None:
            self._keys[event.key] = job.id
        if event.not_before is not None:
            job.state = JobState.SCHEDULED
        self._by_state[job.state][job.id] = None
        self._counts_of(job.queue)[job.state.value] += 1
        if event.not_before is None:
            self._enqueue(job)
        else:
            self._schedule(job, event.not_before)

    def _on_attempt_failed(self, event: AttemptFailed) -> None:
        job = self._jobs.get(event.job_id, _GONE)
        if event.final:
            action = "fail"
        elif event.retry_at is not None:
            action = "retry"
        else:
            action = "requeue"
        self._move(event.job_id, action)
        self._end_lease(job)
        job.error = {"type": event.error_type, "message": event.error_message}
        if event.reason != "error":
            self.totals["reassigned"] += 1
            if event.reason == "lease_expired":
                self.totals["expired"] += 1
        if action == "requeue":
            self._enqueue(job)
        elif action == "retry":
            assert event.retry_at is not None
            self.totals["retried"] += 1
            self._schedule(job, event.retry_at)
        else:
            self.totals["failed"] += 1

    def _on_forgotten(self, event: Forgotten) -> None:
        job = self._jobs.get(event.job_id)
        if job is None or job.state not in FINISHED:
            raise InvalidTransition(f"cannot forget job {event.job_id!r}: not finished")
        del self._jobs[event.job_id]
        del self._by_state[job.state][job.id]
        if job.key is not None and self._keys.get(job.key) == job.id:
            del self._keys[job.key]
        if self._finished[0] == event.job_id:
            self._finished.popleft()
        else:  # deleted by a person, or a hand-made log
            self._finished.remove(event.job_id)

    def _move(self, job_id: str, action: str) -> JobRecord:
        job = self._jobs.get(job_id)
        if job is None:
            raise InvalidTransition(f"no job {job_id!r} to {action}")
        source = job.state
        target = TRANSITIONS.get((source, action))
        if target is None:
            raise InvalidTransition(f"cannot {action} a {source.value} job ({job_id!r})")
        if action == "assign":
            heap = self._queues.get(job.queue, [])
            while heap and self._jobs.get(heap[0][2], _GONE).state is not JobState.PENDING:
                heapq.heappop(heap)  # cancelled while waiting: not part of the state
            if not heap or heap[0][2] != job_id:
                raise InvalidTransition(f"{job_id!r} is not first in its queue")
            heapq.heappop(heap)
        job.state = target
        del self._by_state[source][job_id]
        self._by_state[target][job_id] = None
        counts = self._counts_of(job.queue)
        if source.value in counts:
            counts[source.value] -= 1
        if target.value in counts:
            counts[target.value] += 1
        if not counts["pending"]:
            # No live entry left: whatever is in the heap is stale.
            self._queues.pop(job.queue, None)
            if not any(counts.values()):
                del self._queue_counts[job.queue]  # a queue name costs nothing once idle
        if target in FINISHED:
            self._finished.append(job_id)
        return job

    def _running(self, job_id: str) -> JobRecord:
        job = self._jobs.get(job_id)
        if job is None or job.state is not JobState.RUNNING:
            raise InvalidTransition(f"cannot extend the lease of {job_id!r}: not running")
        return job

    def _counts_of(self, queue: str) -> dict[str, int]:
        counts = self._queue_counts.get(queue)
        if counts is None:
            counts = self._queue_counts[queue] = {"pending": 0, "scheduled": 0, "running": 0}
        return counts

    def _compact(self, queue: str) -> None:
        jobs = self._jobs
        heap = self._queues.get(queue)
        live = self._queue_counts.get(queue, {}).get("pending", 0)
        if heap is not None and len(heap) > 2 * live + 64:
            heap[:] = [e for e in heap if jobs.get(e[2], _GONE).state is JobState.PENDING]
            heapq.heapify(heap)
        scheduled = self._scheduled
        if len(scheduled) > 2 * len(self._by_state[JobState.SCHEDULED]) + 64:
            scheduled[:] = [e for e in scheduled if self._is_due_entry(e)]
            heapq.heapify(scheduled)

    def _enqueue(self, job: JobRecord) -> None:
        heapq.heappush(self._queues.setdefault(job.queue, []), (-job.priority, job.seq, job.id))

    def _schedule(self, job: JobRecord, not_before: float) -> None:
        job.not_before = not_before
        heapq.heappush(self._scheduled, (not_before, job.seq, job.id))

    def _end_lease(self, job: JobRecord) -> None:
        del self._leases[job.id]
        held = self._held[job.worker]
        del held[job.id]
        if not held:
            del self._held[job.worker]

    def _enforce_retention(self) -> None:
        # A separate step, not part of applying the event that finished a
        # job, so the log reads "completed, then forgotten" and replays in
        # that order.
        while len(self._finished) > self.finished_retention:
            self.apply(Forgotten(self._finished[0]))


#: Stands in for a missing job so lookups can test ``.state`` without a None check.
_GONE = JobRecord("", "", None, 0, state=JobState.CANCELLED)
