"""What a job's state can be, every legal change between states, and a job's record.

The one spelling of job states: the state machine keys its indexes by
:class:`JobState`, and the wire's list of state names is derived from it.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from typing import Any

import attrs


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

    # Members are singletons that compare by identity, so identity is a
    # correct hash, and a C-level one: Enum's own __hash__ is Python code,
    # and states key the indexes touched several times per job.
    __hash__ = object.__hash__


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
    # The holder gave the job back (release_job): back in line, no attempt spent.
    (JobState.RUNNING, "release"): JobState.PENDING,
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


@attrs.define(eq=False, slots=True)
class JobRecord:
    """The server's record of one job.

    Only :meth:`~jobqueue._state.QueueState.apply` changes a record; every
    field but ``key`` comes from the ``Submitted`` event or a later one, so
    none has a default of its own.
    """

    id: str
    name: str
    payload: Any
    #: Submission order; ties within a priority are broken by it.
    seq: int
    queue: str
    priority: int
    max_attempts: int
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
    #: When it was submitted, its current (or last) run started, and it
    #: finished: the state's clock, like the deadlines; ``None`` when not yet
    #: (or when replayed from a journal written before these were kept).
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def attempts_left(self) -> int:
        """Runs still allowed after the current one."""
        return self.max_attempts - (self.attempt - self.attempt_base)
