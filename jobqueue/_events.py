"""The events of a job's life: every change of queue state is one of these.

:meth:`~jobqueue._state.QueueState.apply` is the only code that changes the
state, and it takes one event at a time; replaying the same events into a
fresh state rebuilds the same state, which is what an append-only journal
needs. So an event carries everything its change depends on, the outcome of
any decision (the retry time, the jitter already drawn) included.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import attrs

from ._config import DEFAULT_QUEUE, QueueRules


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
    #: When it was submitted (``None``: not recorded).
    at: float | None = None


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
    #: When the run started (``None``: not recorded).
    at: float | None = None


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
    #: When (``None``: not recorded).
    at: float | None = None


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
    #: When the run ended: the job's finishing time when ``final``.
    at: float | None = None


@attrs.frozen
class Released:
    """The lease holder gave a job back (``release_job``) without spending an attempt.

    The job goes back in line at its original place. ``attempt`` keeps the
    released run's number, so every run's number stays unique for the lease
    check; the run is not counted against the budget instead (the budget
    starts one run later: ``attempt_base`` goes up by one).
    """

    job_id: str


@attrs.frozen
class Cancelled:
    """A person cancelled the job."""

    job_id: str
    #: When (``None``: not recorded).
    at: float | None = None


@attrs.frozen
class Revived:
    """A failed job was put back in line with a fresh budget of attempts."""

    job_id: str


@attrs.frozen
class Forgotten:
    """A finished job's record was dropped (retention, or deleted by a person)."""

    job_id: str


@attrs.frozen
class ScheduleAdded:
    """A schedule was added, or replaced the one of the same name.

    The fields are :class:`~jobqueue._schedule.Schedule`'s, flat, so the
    journal writes them as they are. Times here are wall-clock (Unix
    seconds), never shifted: a firing's time names its job's key.
    """

    name: str
    job: str
    payload: Any
    every: float | None
    cron: str | None
    tz: str
    queue: str
    priority: int
    max_attempts: int | None
    #: When it was added: its first firing is the first after this.
    since: float


@attrs.frozen
class ScheduleFired:
    """A schedule fired (or a missed firing was made up) for ``fire_time`` (wall clock)."""

    name: str
    fire_time: float


@attrs.frozen
class ScheduleRemoved:
    """A schedule was removed: it fires no more."""

    name: str


Event = (
    Submitted | Promoted | Assigned | LeaseExtended | Progressed | Completed | AttemptFailed
    | Released | Cancelled | Revived | Forgotten | ScheduleAdded | ScheduleFired | ScheduleRemoved
)  # fmt: skip
