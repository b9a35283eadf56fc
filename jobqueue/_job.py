"""What a job's state can be, every legal change between states, and a job's record.

The one spelling of job states: the state machine keys its indexes by
:class:`JobState`, and the wire's list of state names is derived from it.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from operator import attrgetter
from typing import Any, Final

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

# The states as plain module names, the same members. In CPython 3.11 the
# enum's class has a ``__getattr__`` (EnumType's), so every read of
# ``JobState.PENDING`` goes through the slow attribute hook: about 850
# instructions, where a global read costs a few. The store and the rules read
# states about a dozen times a job, so they use these.
PENDING: Final = JobState.PENDING
SCHEDULED: Final = JobState.SCHEDULED
RUNNING: Final = JobState.RUNNING
COMPLETED: Final = JobState.COMPLETED
FAILED: Final = JobState.FAILED
CANCELLED: Final = JobState.CANCELLED


class InvalidTransition(RuntimeError):
    """An event asked for a state change the table does not allow (a bug)."""


@attrs.define(slots=True, weakref_slot=False)
class Run:
    """What a job's runs leave: holder, lease, progress, and how the job ended.

    The holder and lease are the current (or last) run's. Kept apart from
    :class:`JobRecord` so that a job that has not run yet, nearly every job
    of a deep queue, does not carry its empty slots (104 bytes a job); it is
    made on the first assignment (or on cancelling a job that never ran,
    for its finishing time) and kept from then on. The two fields most jobs
    never set, ``key`` and ``not_before``, are here too (16 bytes off every
    pending job's record): a keyed or delayed job gets its run when it is
    submitted, a job retried after a backoff has had one since it ran.
    """

    #: How many times the job has been assigned (the current run's number).
    attempt: int = 0
    #: Identity of the lease holder while running; of the last holder after.
    worker: Hashable | None = None
    worker_name: str | None = None
    lease_deadline: float = 0.0
    #: When the current (or last) run started, on the state's clock.
    started_at: float | None = None
    progress: float | None = None
    note: Any = None
    result: Any = None
    error: dict[str, str] | None = None
    #: When the job completed, failed for good or was cancelled.
    finished_at: float | None = None
    #: ``attempt`` when the budget last started (a release or a revive moves it).
    attempt_base: int = 0
    #: The job's idempotency key, from its submission.
    key: str | None = None
    #: When a scheduled job may run (``None`` while it is not scheduled).
    not_before: float | None = None


#: The fields a :class:`Run` holds, which :class:`JobRecord` shows as its own.
RUN_FIELDS = tuple(field.name for field in attrs.fields(Run))


@attrs.frozen(weakref_slot=False)
class JobOptions:
    """What a job was submitted with besides its name and payload: queue, priority, attempts.

    Nearly every job of a queue is submitted with the same three, so jobs
    share one of these (:meth:`~jobqueue._store.JobStore._options_for`
    interns them) where each record held three slots of its own.
    """

    queue: str
    #: Higher runs first.
    priority: int
    #: Runs allowed, retries included (a release or a revive starts them again).
    max_attempts: int


#: The fields a :class:`JobOptions` holds, which :class:`JobRecord` shows as its own.
OPTION_FIELDS = tuple(field.name for field in attrs.fields(JobOptions))


def _from_options(name: str) -> Any:
    """A read-only attribute of the record that reads its options' field."""
    # attrgetter: a C-level getter, no Python frame; still two generic
    # lookups a read, so the store's hot paths read ``job.options`` directly.
    return property(attrgetter(f"options.{name}"), doc=f"The options' ``{name}``.")


def _from_run(name: str, default: Any) -> Any:
    """A read-only attribute of the record that reads its run's field (``default``: none yet)."""

    def get(job: JobRecord) -> Any:
        run = job.run
        return default if run is None else getattr(run, name)

    get.__name__ = name
    get.__doc__ = f"The run's ``{name}`` (see :class:`Run`)."
    return property(get)


# No __weakref__ slot (attrs adds one by default): nothing takes weak
# references to records, and a million pending jobs would pay for it. Eight
# slots: 96 bytes a record, GC header included (pymalloc rounds to 16, so
# a ninth or tenth slot would cost 16 bytes more).
@attrs.define(eq=False, slots=True, weakref_slot=False)
class JobRecord:
    """The server's record of one job.

    Only :meth:`~jobqueue._state.QueueState.apply` changes a record; every
    field comes from the ``Submitted`` event or a later one, so none has a
    default of its own. The queue, priority and ``max_attempts`` are in
    ``options``, shared with the other jobs submitted with the same ones.
    What runs leave is in ``run``, and so are the key and ``not_before``,
    which most jobs never set. The record shows the fields of both
    (``queue``, ``priority``, ``key``, ``not_before``, ``worker``,
    ``result``, ``finished_at``, ...) as read-only attributes of its own.
    """

    id: str
    name: str
    payload: Any
    #: Submission order; ties within a priority are broken by it.
    seq: int
    options: JobOptions
    state: JobState = JobState.PENDING
    #: When it was submitted, on the state's clock (like the deadlines);
    #: ``None``: not recorded.
    submitted_at: float | None = None
    run: Run | None = None

    queue = _from_options("queue")
    priority = _from_options("priority")
    max_attempts = _from_options("max_attempts")
    key = _from_run("key", None)
    not_before = _from_run("not_before", None)
    attempt = _from_run("attempt", 0)
    attempt_base = _from_run("attempt_base", 0)
    worker = _from_run("worker", None)
    worker_name = _from_run("worker_name", None)
    lease_deadline = _from_run("lease_deadline", 0.0)
    started_at = _from_run("started_at", None)
    progress = _from_run("progress", None)
    note = _from_run("note", None)
    result = _from_run("result", None)
    error = _from_run("error", None)
    finished_at = _from_run("finished_at", None)

    @property
    def attempts_left(self) -> int:
        """Runs still allowed after the current one."""
        run = self.run
        if run is None:
            return self.options.max_attempts
        return self.options.max_attempts - (run.attempt - run.attempt_base)

    def outcome(self) -> Run:
        """The job's run, made now if it has none (to record how it ended, or a time)."""
        run = self.run
        if run is None:
            run = self.run = Run()
        return run

    def unschedule(self) -> None:
        """Clear ``not_before``; a run left holding nothing is dropped.

        A delayed job's run was made only to hold its time: dropped, the job
        is as if it had never had one, as a snapshot restores it.
        """
        run = self.run
        if run is not None and run.not_before is not None:
            run.not_before = None
            if run == _NO_RUN:
                self.run = None


_NO_RUN = Run()

#: Every field of a record as a snapshot writes it, in the order it always has:
#: the record's own fields, then its run's (``key`` and ``not_before`` stay
#: where they were when the record held them).
FLAT_FIELDS = (
    "id", "name", "payload", "seq", "queue", "priority", "max_attempts", "key", "state",
    "not_before", "submitted_at", "attempt", "worker", "worker_name", "lease_deadline",
    "started_at", "progress", "note", "result", "error", "finished_at", "attempt_base",
)  # fmt: skip


def payload_size(payload: Any) -> int:
    """What a payload counts against ``max_payload_bytes``: its JSON text's bytes.

    The server holds a submitted string, array or object as its JSON text
    (``stored_form``); a number, true, false or null it holds as is, and
    those count nothing.
    """
    return len(payload) if payload.__class__ is bytes else 0


def finished_size(job: JobRecord) -> int:
    """What a finished job counts against ``finished_retention_bytes``.

    Its payload and its result, each as :func:`payload_size` counts it.
    Error messages and progress notes are not counted: each is bounded per
    job (``MAX_ERROR_CHARS``, ``MAX_NOTE_BYTES``), so ``finished_retention``
    bounds them.
    """
    run = job.run
    result = None if run is None else run.result
    return payload_size(job.payload) + payload_size(result)
