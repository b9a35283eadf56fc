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

import heapq
import random
import sys
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Sequence
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
from ._job import FINISHED, TRANSITIONS, InvalidTransition, JobState

#: Table size of one generation of finished jobs (see QueueState): it holds
#: two thirds as many jobs, 5,461, which fill the table exactly (CPython
#: dicts use two thirds of their slots), about 100 KiB. With a retention
#: over 32 generations' worth the size doubles until 32 are enough.
FINISHED_GENERATION_SLOTS = 8192
#: About how many idempotency keys share one of the dicts that find them.
KEYS_PER_SHARD = 1024


#: The states counted per queue (stats' "queues").
_COUNTED = (JobState.PENDING, JobState.SCHEDULED, JobState.RUNNING)


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
    max_attempts: int = QueueRules().max_attempts
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
    max_attempts: int = QueueRules().max_attempts
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


@attrs.define(eq=False, slots=True)
class _Line:
    """One queue's pending jobs, best first, at 8 bytes a job.

    Jobs nearly always become pending in submission order, so each priority
    has a FIFO lane of the records themselves, in ``seq`` order (a heap entry
    tuple cost 72 bytes a job). A job that comes back out of order (requeued,
    promoted after a delay or a backoff, revived) goes to a heap, ``late``,
    keyed like the lanes: ``(-priority, seq, id)``. The best job is the
    better of the top lane's head and the heap's top.

    Entries are deleted lazily: a job cancelled while waiting keeps its entry
    until it reaches the front or the line is compacted; ``size`` counts
    entries, live or not, so the queue knows when to compact.
    """

    #: ``-priority`` -> jobs of that priority in ``seq`` order (never empty
    #: once :meth:`QueueState._head` has looked at it).
    lanes: dict[int, deque[JobRecord]] = attrs.field(factory=dict)
    #: Heap of the keys of ``lanes``: the top lane is ``lanes[ranks[0]]``.
    ranks: list[int] = attrs.field(factory=list)
    late: list[tuple[int, int, str]] = attrs.field(factory=list)
    size: int = 0


@attrs.define(eq=False)
class QueueState:
    """All queue state, and the rules for changing it.

    Storage: ``_jobs`` maps id -> :class:`JobRecord` for every job that has
    not finished. Pending jobs also wait in one :class:`_Line` per queue:
    highest priority first, then first come, first served, and a requeued
    job goes back to its original place. Scheduled jobs sit in a heap keyed
    by the time they may run. Running jobs sit in ``_leases``, ordered by
    lease deadline. ``_by_state`` indexes unfinished ids by state for
    listing.

    Finished jobs leave ``_jobs`` for ``_done``, a deque of *generations*:
    dicts of up to ``_generation`` jobs each, in finishing order. They also
    sit in ``_finished`` in finishing order, so the oldest can be forgotten
    and a listing of a finished state filters it in order. Why not one dict
    of all finished jobs: a dict that keeps gaining and losing entries never
    reuses a deleted entry's slot, so every so often it is rebuilt into a new
    table, at twice the size it had while growing; one table of 100,000 jobs
    is 7 MiB, and rebuilding it fragments glibc's heap so that the server's
    RSS steps up over a long run. A generation only ever gains jobs until it
    is full and then only loses them, so it is never rebuilt, and it is freed
    whole once its last job is forgotten. Finding a finished job costs one
    probe per generation (at most about 32), newest first.

    Lines and heaps are cleaned lazily: cancelling a pending job only changes
    its state, and its entry is dropped when it reaches the front.

    Args:
        rules: Lease length, retry budget and backoff, retention and room
            (``max_pending``: beyond it a submit is refused with ``queue_full``).
        id_prefix: Prepended to job ids; the server uses a random one per
            run so ids from a previous run are never mistaken for new ones.
        rng: Source of retry jitter (seed it for reproducible tests).
        on_event: Called with every event after it is applied (a journal).
    """

    rules: QueueRules = attrs.field(factory=QueueRules)
    id_prefix: str = ""
    rng: random.Random = attrs.field(factory=random.Random)
    on_event: Callable[[Event], None] | None = None
    _jobs: dict[str, JobRecord] = attrs.field(factory=dict, init=False)
    _done: deque[dict[str, JobRecord]] = attrs.field(factory=lambda: deque([{}]), init=False)
    _generation: int = attrs.field(default=0, init=False)
    #: Jobs added to ``_done[-1]`` (deleted ones included: their slots are spent).
    _generation_filled: int = attrs.field(default=0, init=False)
    _queues: dict[str, _Line] = attrs.field(factory=dict, init=False)
    _scheduled: list[tuple[float, int, str]] = attrs.field(factory=list, init=False)
    # Every lease has the same length and `now` never goes backwards, so
    # deadlines grow in the order leases are granted or renewed: an OrderedDict
    # with move_to_end keeps them sorted in O(1), no heap needed.
    _leases: OrderedDict[str, None] = attrs.field(factory=OrderedDict, init=False)
    _held: dict[Hashable, dict[str, None]] = attrs.field(factory=dict, init=False)
    _by_state: dict[JobState, dict[str, None]] = attrs.field(
        factory=lambda: {state: {} for state in JobState if state not in FINISHED}, init=False
    )
    _finished_counts: dict[JobState, int] = attrs.field(
        factory=lambda: dict.fromkeys(FINISHED, 0), init=False
    )
    # Per queue in use: jobs pending, scheduled and running.
    _queue_counts: dict[str, dict[JobState, int]] = attrs.field(factory=dict, init=False)
    _finished: deque[JobRecord] = attrs.field(factory=deque, init=False)
    # Keyed jobs churn through their keys' dicts like finished jobs; a key can
    # belong to a job of any state, so the dicts are picked by the key's hash.
    _keys: list[dict[str, str]] = attrs.field(factory=list, init=False)
    _keys_mask: int = attrs.field(default=0, init=False)
    _next_seq: int = attrs.field(default=1, init=False)
    #: Whether a Submitted event ever named a job other than ``id_prefix`` + ``seq``.
    _foreign_ids: bool = attrs.field(default=False, init=False)
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
        retention = self.rules.finished_retention
        slots = FINISHED_GENERATION_SLOTS
        while slots * 2 // 3 * 32 < retention:
            slots *= 2
        self._generation = slots * 2 // 3
        shards = 1 << (retention // KEYS_PER_SHARD).bit_length()
        self._keys = [{} for _ in range(shards)]
        self._keys_mask = shards - 1

    def __getstate__(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in attrs.fields(type(self))}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # _keys picks a dict by hash(), and str hashes are salted per
        # process: a state pickled in one process is sorted again for this
        # one's hashes.
        for name, value in state.items():
            object.__setattr__(self, name, value)
        keys: list[dict[str, str]] = [{} for _ in self._keys]
        for shard in self._keys:
            for key, job_id in shard.items():
                keys[hash(key) & self._keys_mask][key] = job_id
        self._keys = keys

    # -- queries --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._jobs) + len(self._finished)

    @property
    def lease_timeout(self) -> float:
        """Seconds a lease lasts after assignment or heartbeat (workers are told)."""
        return self.rules.lease_timeout

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
        return key in self._keys_for(key)

    def check_room(self, count: int) -> None:
        """Refuse, before anything changes, a submit of ``count`` new jobs that would not fit.

        Only new submissions are limited: a job already accepted (a retry, a
        requeue, a revive) always gets its place back, so the limit never
        drops anything.

        Raises:
            RuleError: ``queue_full``.
        """
        limit = self.rules.max_pending
        if limit is not None and self.waiting_count + count > limit:
            raise RuleError(
                QUEUE_FULL,
                f"the queue holds its limit of {limit} waiting jobs; try again later",
            )

    @property
    def running_count(self) -> int:
        """Jobs leased to a worker."""
        return len(self._leases)

    def get(self, job_id: str) -> JobRecord:
        """The record of ``job_id``.

        Raises:
            RuleError: ``unknown_job`` if the id was never issued or the
                finished job has been forgotten.
        """
        job = self._lookup(job_id)
        if job is None:
            raise RuleError(
                UNKNOWN_JOB,
                f"no job {job_id!r}: never submitted, or finished long enough ago "
                f"to be forgotten (the last {self.rules.finished_retention} are kept)",
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
        by_state, finished = self._by_state, self._finished_counts
        return {
            state.value: finished[state] if state in FINISHED else len(by_state[state])
            for state in JobState
        }

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """Per queue: jobs pending, scheduled and running (queues in use only)."""
        counts = self._queue_counts
        return {
            queue: {state.value: count for state, count in by.items()}
            for queue, by in counts.items()
            if any(by.values())
        }

    def pending_in(self, queues: Sequence[str]) -> bool:
        """Whether any of ``queues`` has a job waiting for a worker."""
        counts = self._queue_counts
        return any(counts.get(queue, {}).get(JobState.PENDING, 0) for queue in queues)

    def list_jobs(
        self, state: JobState, queue: str | None, limit: int
    ) -> tuple[list[JobRecord], bool]:
        """Up to ``limit`` jobs in ``state`` (oldest change first); and whether more exist.

        A finished state is found by filtering all retained finished jobs in
        finishing order (the order they entered their state), so a listing of
        a rare one may scan up to ``finished_retention`` records.
        """
        found: list[JobRecord] = []
        jobs: Iterable[JobRecord]
        if state in FINISHED:
            jobs = (job for job in self._finished if job.state is state)
        else:
            jobs = map(self._jobs.__getitem__, self._by_state[state])
        for job in jobs:
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
        known_id = None if key is None else self._keys_for(key).get(key)
        if known_id is not None:
            known = self._lookup(known_id)
            assert known is not None
            return known, False
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
                self.rules.max_attempts if max_attempts is None else max_attempts,
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
        best: JobRecord | None = None
        for queue in queues:
            line = self._queues.get(queue)
            job = None if line is None else self._head(line)
            if job is not None and (best is None or _rank(job) < _rank(best)):
                best = job
        if best is None:
            return None
        self.apply(Assigned(best.id, worker, worker_name, now + self.rules.lease_timeout))
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
            self.apply(AttemptFailed(job_id, "error", error_type, error_message, now + delay))
        else:
            self.apply(AttemptFailed(job_id, "error", error_type, error_message, final=True))
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
        if job.state is JobState.CANCELLED:
            return job, None
        if job.state in FINISHED:
            raise RuleError(ALREADY_FINISHED, f"job {job_id!r} is already {job.state.value}")
        holder = job.worker if job.state is JobState.RUNNING else None
        self.apply(Cancelled(job_id))
        self._enforce_retention()
        return job, holder

    def revive(self, job_id: str, now: float) -> JobRecord:
        """Put a failed job back in line with a fresh budget of attempts.

        Raises:
            RuleError: ``unknown_job``, or ``not_failed``.
        """
        self._tick(now)
        job = self.get(job_id)
        if job.state is not JobState.FAILED:
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
        raise RuleError(NOT_LEASED, f"cannot {verb} job {job_id!r}: {why}")

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
            source = (self._lookup(event.job_id) or _GONE).state
            job = self._move(event.job_id, "cancel")
            if source is JobState.RUNNING:
                self._end_lease(job)
            else:
                # Its line or heap entry stays (lazy deletion) until it
                # reaches the front; compacting when dead entries outnumber
                # live ones keeps a line within twice its live jobs,
                # amortised O(1).
                self._compact(job.queue)
            job.not_before = None
            self.totals["cancelled"] += 1
        elif isinstance(event, Revived):
            job = self._move(event.job_id, "revive")
            job.attempt_base = job.attempt
            self._enqueue(job)
        else:
            self._on_forgotten(event)
        if self.on_event is not None:
            self.on_event(event)

    def _on_submitted(self, event: Submitted) -> None:
        regular = event.job_id == f"{self.id_prefix}{event.seq}"
        # While every id is id_prefix + seq, a seq never used before makes an
        # id never used before: no need to look through every generation.
        fresh = regular and not self._foreign_ids and event.seq >= self._next_seq
        if not fresh and self._lookup(event.job_id) is not None:
            raise InvalidTransition(f"job {event.job_id!r} already exists")
        self._foreign_ids = self._foreign_ids or not regular
        # Every job of a kind shares one name string, and of a queue one
        # queue string, instead of one decoded per submit (53 bytes a job).
        # Interned strings die with their last user, so this cannot leak.
        job = JobRecord(
            event.job_id,
            sys.intern(event.name),
            event.payload,
            event.seq,
            queue=sys.intern(event.queue),
            priority=event.priority,
            max_attempts=event.max_attempts,
            key=event.key,
        )
        self._jobs[job.id] = job
        self._next_seq = max(self._next_seq, event.seq + 1)
        self.totals["submitted"] += 1
        if event.key is not None:
            self._keys_for(event.key)[event.key] = job.id
        if event.not_before is not None:
            job.state = JobState.SCHEDULED
        self._by_state[job.state][job.id] = None
        self._counts_of(job.queue)[job.state] += 1
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
        finished = self._finished
        if finished and finished[0].id == event.job_id:
            job: JobRecord | None = finished[0]  # retention: the oldest, no search
        else:
            job = self._lookup(event.job_id)
        if job is None or job.state not in FINISHED:
            raise InvalidTransition(f"cannot forget job {event.job_id!r}: not finished")
        self._unfinish(job)
        if job.key is not None:
            keys = self._keys_for(job.key)
            if keys.get(job.key) == job.id:
                del keys[job.key]

    def _keys_for(self, key: str) -> dict[str, str]:
        return self._keys[hash(key) & self._keys_mask]

    def _lookup(self, job_id: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        if job is None:
            for generation in reversed(self._done):
                job = generation.get(job_id)
                if job is not None:
                    break
        return job

    def _finish(self, job: JobRecord) -> None:
        if self._generation_filled >= self._generation:
            if not self._done[-1]:
                self._done.pop()  # all forgotten while it was the newest
            self._done.append({})
            self._generation_filled = 0
        self._done[-1][job.id] = job
        self._generation_filled += 1
        self._finished.append(job)
        self._finished_counts[job.state] += 1

    def _unfinish(self, job: JobRecord) -> None:
        """Take a finished job out of the finished records (forgotten or revived)."""
        done = self._done
        # The oldest generation when forgetting; any when a person deletes or revives.
        for index, generation in enumerate(done):
            if generation.pop(job.id, None) is not None:
                if not generation and index < len(done) - 1:
                    del done[index]  # freed whole
                break
        self._finished_counts[job.state] -= 1
        if self._finished[0] is job:
            self._finished.popleft()
        else:  # deleted or revived by a person (O(retained)), or a hand-made log
            self._finished.remove(job)

    def _move(self, job_id: str, action: str) -> JobRecord:
        job = self._lookup(job_id)
        if job is None:
            raise InvalidTransition(f"no job {job_id!r} to {action}")
        source = job.state
        target = TRANSITIONS.get((source, action))
        if target is None:
            raise InvalidTransition(f"cannot {action} a {source.value} job ({job_id!r})")
        if action == "assign":
            line = self._queues.get(job.queue)
            if line is None or self._head(line) is not job:
                raise InvalidTransition(f"{job_id!r} is not first in its queue")
            self._pop_head(line, job)
        if source in FINISHED:  # revived
            self._unfinish(job)
            self._jobs[job_id] = job
        else:
            del self._by_state[source][job_id]
        job.state = target
        if target in FINISHED:
            del self._jobs[job_id]
            self._finish(job)
        else:
            self._by_state[target][job_id] = None
        counts = self._counts_of(job.queue)
        if source in counts:
            counts[source] -= 1
        if target in counts:
            counts[target] += 1
        if not counts[JobState.PENDING]:
            # No live entry left: whatever is in the heap is stale.
            self._queues.pop(job.queue, None)
            if not any(counts.values()):
                del self._queue_counts[job.queue]  # a queue name costs nothing once idle
        return job

    def _running(self, job_id: str) -> JobRecord:
        job = self._jobs.get(job_id)
        if job is None or job.state is not JobState.RUNNING:
            raise InvalidTransition(f"cannot extend the lease of {job_id!r}: not running")
        return job

    def _counts_of(self, queue: str) -> dict[JobState, int]:
        counts = self._queue_counts.get(queue)
        if counts is None:
            counts = self._queue_counts[queue] = dict.fromkeys(_COUNTED, 0)
        return counts

    def _head(self, line: _Line) -> JobRecord | None:
        """The best pending job in ``line``, dropping dead entries in front of it."""
        lanes, ranks = line.lanes, line.ranks
        first = None
        while ranks:
            lane = lanes[ranks[0]]
            while lane and lane[0].state is not JobState.PENDING:
                lane.popleft()  # cancelled while waiting: not part of the state
                line.size -= 1
            if lane:
                first = lane[0]
                break
            del lanes[heapq.heappop(ranks)]
        late, jobs = line.late, self._jobs
        while late and jobs.get(late[0][2], _GONE).state is not JobState.PENDING:
            heapq.heappop(late)
            line.size -= 1
        if late and (first is None or late[0] < _rank(first)):
            return jobs[late[0][2]]
        return first

    def _pop_head(self, line: _Line, job: JobRecord) -> None:
        """Remove ``job``, which :meth:`_head` just returned, from ``line``."""
        late = line.late
        if late and late[0][2] == job.id:
            heapq.heappop(late)
        else:
            rank = line.ranks[0]
            lane = line.lanes[rank]
            lane.popleft()
            if not lane:
                del line.lanes[rank]
                heapq.heappop(line.ranks)
        line.size -= 1

    def _compact(self, queue: str) -> None:
        jobs = self._jobs
        line = self._queues.get(queue)
        live = self._queue_counts.get(queue, {}).get(JobState.PENDING, 0)
        if line is not None and line.size > 2 * live + 64:
            pending = JobState.PENDING
            lanes = {}
            for rank, lane in line.lanes.items():
                kept = deque(job for job in lane if job.state is pending)
                if kept:
                    lanes[rank] = kept
            line.lanes = lanes
            line.ranks = sorted(lanes)
            line.late = [e for e in line.late if jobs.get(e[2], _GONE).state is pending]
            heapq.heapify(line.late)
            line.size = live
        scheduled = self._scheduled
        if len(scheduled) > 2 * len(self._by_state[JobState.SCHEDULED]) + 64:
            scheduled[:] = [e for e in scheduled if self._is_due_entry(e)]
            heapq.heapify(scheduled)

    def _enqueue(self, job: JobRecord) -> None:
        line = self._queues.get(job.queue)
        if line is None:
            line = self._queues[job.queue] = _Line()
        rank = -job.priority
        lane = line.lanes.get(rank)
        if lane is None:
            line.lanes[rank] = deque((job,))
            heapq.heappush(line.ranks, rank)
        elif not lane or lane[-1].seq < job.seq:
            lane.append(job)
        else:  # back in line ahead of later jobs
            heapq.heappush(line.late, (rank, job.seq, job.id))
        line.size += 1

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
        finished, retention = self._finished, self.rules.finished_retention
        while len(finished) > retention:
            self.apply(Forgotten(finished[0].id))


#: Stands in for a missing job so lookups can test ``.state`` without a None check.
_GONE = JobRecord("", "", None, 0, state=JobState.CANCELLED)


def _rank(job: JobRecord) -> tuple[int, int, str]:
    """A pending job's place in line: smaller runs first (as in ``_Line.late``)."""
    return (-job.priority, job.seq, job.id)
