"""The queue's rules as a pure, synchronous state machine.

No trio, no sockets, no clock: every method that depends on time takes
``now`` (seconds on a monotonic clock) as an argument, so the rules can be
tested exhaustively without waiting.

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
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import attrs

from ._protocol import JobInfo, ProtocolError

#: Default for how long a lease lasts without a heartbeat, in seconds.
DEFAULT_LEASE_TIMEOUT = 30.0
#: Default for how many finished jobs are remembered for status queries.
DEFAULT_FINISHED_RETENTION = 100_000


class JobState(enum.Enum):
    """Where a job is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


#: Every legal change of state: (from, action) -> to. Anything else is a bug
#: and raises :class:`InvalidTransition` with the job left as it was.
#: docs/design.md draws its diagram from this table.
TRANSITIONS: dict[tuple[JobState, str], JobState] = {
    (JobState.PENDING, "assign"): JobState.RUNNING,
    (JobState.RUNNING, "complete"): JobState.COMPLETED,
    (JobState.RUNNING, "fail"): JobState.FAILED,
    (JobState.RUNNING, "requeue"): JobState.PENDING,
}

FINISHED = frozenset({JobState.COMPLETED, JobState.FAILED})


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
class Completed:
    """The lease holder finished the job."""

    job_id: str
    result: Any


@attrs.frozen
class Failed:
    """The lease holder's handler raised."""

    job_id: str
    error_type: str
    error_message: str


@attrs.frozen
class Requeued:
    """The lease was lost; ``reason`` is ``"worker_lost"`` or ``"lease_expired"``."""

    job_id: str
    reason: str


@attrs.frozen
class Forgotten:
    """A finished job's record was dropped to keep memory bounded."""

    job_id: str


Event = Submitted | Assigned | LeaseExtended | Completed | Failed | Requeued | Forgotten


@attrs.define(eq=False, slots=True)
class JobRecord:
    """The server's record of one job."""

    id: str
    name: str
    payload: Any
    #: Submission order; the pending queue is ordered by it.
    seq: int
    state: JobState = JobState.PENDING
    #: How many times the job has been assigned (the current run's number).
    attempt: int = 0
    #: Identity of the lease holder while running; of the last holder after.
    worker: Hashable | None = None
    worker_name: str | None = None
    lease_deadline: float = 0.0
    result: Any = None
    error: dict[str, str] | None = None

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
        )


@attrs.define(eq=False)
class QueueState:
    """All queue state, and the rules for changing it.

    Storage: ``_jobs`` maps id -> :class:`JobRecord` for every job the server
    remembers; pending jobs also sit in a heap keyed by submission number
    (first come, first served, and a requeued job goes back to its original
    place, ahead of everything submitted after it); running jobs also sit in
    ``_leases``, ordered by lease deadline; finished jobs' ids sit in
    ``_finished`` in finishing order, so the oldest can be forgotten.

    Args:
        lease_timeout: Seconds a lease lasts after assignment or heartbeat.
        finished_retention: How many finished jobs to remember.
        id_prefix: Prepended to job ids; the server uses a random one per
            run so ids from a previous run are never mistaken for new ones.
        on_event: Called with every event after it is applied (a journal).
    """

    lease_timeout: float = DEFAULT_LEASE_TIMEOUT
    finished_retention: int = DEFAULT_FINISHED_RETENTION
    id_prefix: str = ""
    on_event: Callable[[Event], None] | None = None
    _jobs: dict[str, JobRecord] = attrs.field(factory=dict, init=False)
    _pending: list[tuple[int, str]] = attrs.field(factory=list, init=False)
    # Every lease has the same length and `now` never goes backwards, so
    # deadlines grow in the order leases are granted or renewed: an OrderedDict
    # with move_to_end keeps them sorted in O(1), no heap needed.
    _leases: OrderedDict[str, None] = attrs.field(factory=OrderedDict, init=False)
    _held: dict[Hashable, dict[str, None]] = attrs.field(factory=dict, init=False)
    _finished: deque[str] = attrs.field(factory=deque, init=False)
    _finished_counts: dict[str, int] = attrs.field(
        factory=lambda: {"completed": 0, "failed": 0}, init=False
    )
    _next_seq: int = attrs.field(default=1, init=False)
    _last_now: float = attrs.field(default=float("-inf"), init=False)
    totals: dict[str, int] = attrs.field(
        factory=lambda: dict.fromkeys(
            ("submitted", "completed", "failed", "reassigned", "expired"), 0
        ),
        init=False,
    )

    def __attrs_post_init__(self) -> None:
        if self.lease_timeout <= 0:
            raise ValueError("lease_timeout must be positive")
        if self.finished_retention < 0:
            raise ValueError("finished_retention must be >= 0")

    # -- queries --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def pending_count(self) -> int:
        """Jobs waiting for a worker."""
        return len(self._pending)

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
        return {
            "pending": len(self._pending),
            "running": len(self._leases),
            **self._finished_counts,
        }

    def next_deadline(self) -> float:
        """When the earliest lease runs out (``inf`` if nothing is running)."""
        if not self._leases:
            return float("inf")
        return self._jobs[next(iter(self._leases))].lease_deadline

    # -- commands -------------------------------------------------------------

    def submit(self, name: str, payload: Any, now: float) -> JobRecord:
        """Add a job at the back of the line and return it."""
        self._tick(now)
        seq = self._next_seq
        self.apply(Submitted(f"{self.id_prefix}{seq}", name, payload, seq))
        return self._jobs[f"{self.id_prefix}{seq}"]

    def assign(
        self, worker: Hashable, now: float, worker_name: str | None = None
    ) -> JobRecord | None:
        """Lease the first pending job to ``worker``; ``None`` if none is pending."""
        self._tick(now)
        if not self._pending:
            return None
        job_id = self._pending[0][1]
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

    def complete(
        self, job_id: str, worker: Hashable, attempt: int | None, result: Any, now: float
    ) -> JobRecord:
        """Mark ``job_id`` completed by its lease holder.

        Raises:
            ProtocolError: ``unknown_job`` or ``not_leased``; a job that is
                already completed is never completed (or handed out) again.
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
        """Mark ``job_id`` failed by its lease holder.

        Raises:
            ProtocolError: ``unknown_job`` or ``not_leased``.
        """
        self._tick(now)
        job = self._leased(job_id, worker, attempt, "fail")
        self.apply(Failed(job_id, error_type, error_message))
        self._enforce_retention()
        return job

    def release(self, worker: Hashable, now: float) -> list[JobRecord]:
        """Requeue every job ``worker`` holds (its connection closed)."""
        self._tick(now)
        lost = [self._jobs[job_id] for job_id in self._held.get(worker, ())]
        for job in lost:
            self.apply(Requeued(job.id, "worker_lost"))
        return lost

    def expire(self, now: float) -> list[JobRecord]:
        """Requeue every job whose lease ran out at or before ``now``."""
        self._tick(now)
        expired = []
        while self._leases:
            job = self._jobs[next(iter(self._leases))]
            if job.lease_deadline > now:
                break
            self.apply(Requeued(job.id, "lease_expired"))
            expired.append(job)
        return expired

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
            heapq.heappop(self._pending)
            job.attempt += 1
            job.worker = event.worker
            job.worker_name = event.worker_name
            job.lease_deadline = event.lease_deadline
            self._leases[job.id] = None
            self._held.setdefault(event.worker, {})[job.id] = None
        elif isinstance(event, LeaseExtended):
            extended = self._jobs.get(event.job_id)
            if extended is None or extended.state is not JobState.RUNNING:
                raise InvalidTransition(f"cannot extend the lease of {event.job_id!r}: not running")
            job = extended
            job.lease_deadline = event.lease_deadline
            self._leases.move_to_end(job.id)
        elif isinstance(event, Completed):
            job = self._move(event.job_id, "complete")
            self._end_lease(job)
            job.result = event.result
            self._finish(job, "completed")
        elif isinstance(event, Failed):
            job = self._move(event.job_id, "fail")
            self._end_lease(job)
            job.error = {"type": event.error_type, "message": event.error_message}
            self._finish(job, "failed")
        elif isinstance(event, Requeued):
            job = self._move(event.job_id, "requeue")
            self._end_lease(job)
            heapq.heappush(self._pending, (job.seq, job.id))
            self.totals["reassigned"] += 1
            if event.reason == "lease_expired":
                self.totals["expired"] += 1
        else:
            forgotten = self._jobs.get(event.job_id)
            if forgotten is None or forgotten.state not in FINISHED:
                raise InvalidTransition(f"cannot forget job {event.job_id!r}: not finished")
            del self._jobs[event.job_id]
            self._finished_counts[forgotten.state.value] -= 1
            if self._finished[0] == event.job_id:
                self._finished.popleft()
            else:  # only reachable by replaying a hand-made log
                self._finished.remove(event.job_id)
        if self.on_event is not None:
            self.on_event(event)

    def _on_submitted(self, event: Submitted) -> None:
        if event.job_id in self._jobs:
            raise InvalidTransition(f"job {event.job_id!r} already exists")
        self._jobs[event.job_id] = JobRecord(event.job_id, event.name, event.payload, event.seq)
        heapq.heappush(self._pending, (event.seq, event.job_id))
        self._next_seq = max(self._next_seq, event.seq + 1)
        self.totals["submitted"] += 1

    def _move(self, job_id: str, action: str) -> JobRecord:
        job = self._jobs.get(job_id)
        if job is None:
            raise InvalidTransition(f"no job {job_id!r} to {action}")
        target = TRANSITIONS.get((job.state, action))
        if target is None:
            raise InvalidTransition(f"cannot {action} a {job.state.value} job ({job_id!r})")
        if action == "assign" and self._pending[0][1] != job_id:
            raise InvalidTransition(f"{job_id!r} is not first in line")
        job.state = target
        return job

    def _end_lease(self, job: JobRecord) -> None:
        del self._leases[job.id]
        held = self._held[job.worker]
        del held[job.id]
        if not held:
            del self._held[job.worker]

    def _finish(self, job: JobRecord, total: str) -> None:
        self.totals[total] += 1
        self._finished_counts[job.state.value] += 1
        self._finished.append(job.id)

    def _enforce_retention(self) -> None:
        # A separate step, not part of applying Completed/Failed, so the log
        # reads "completed, then forgotten" and replays in that order.
        while len(self._finished) > self.finished_retention:
            self.apply(Forgotten(self._finished[0]))
