"""Periodic jobs: schedules as queue state, and the rules for firing them.

A schedule lives in the server's state, beside the jobs, so there is one
scheduler however many workers there are. Adding, firing and removing one
are events (:class:`~jobqueue._events.ScheduleAdded`, ``ScheduleFired``,
``ScheduleRemoved``) applied by the model's ``apply``, so a journal replays
them like any other.

Schedules keep wall-clock time (Unix seconds): a cron expression means a
time of day, and a firing's time names its job's idempotency key,
``schedule:<name>:<time>``, which must mean the same after a restart. The
commands here are pure: the caller passes ``now`` (the state's monotonic
clock, for the jobs) and ``wall`` (for the schedules).

The misfire rule: when firings were missed (the server was down), the
schedule fires once, for the latest missed time, then carries on from there.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import attrs

from ._errors import TOO_MANY_SCHEDULES, UNKNOWN_SCHEDULE, RuleError
from ._events import ScheduleAdded, ScheduleFired, ScheduleRemoved
from ._limits import MAX_SCHEDULES
from ._schedule_spec import Schedule

if TYPE_CHECKING:
    from ._job import JobRecord
    from ._state import QueueState


@attrs.define(eq=False)
class Entry:
    """A schedule in the state, with where it is in time (wall clock).

    Attributes:
        schedule: What it fires and when.
        last: Its last firing, or when it was added if it has not fired.
        fired: Whether ``last`` is a firing.
        due: Its next firing: the first after ``last``.
    """

    schedule: Schedule
    last: float
    fired: bool = False
    due: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.due = self.schedule.trigger.next_after(self.last)


@attrs.define(eq=False)
class ScheduleBook:
    """Every schedule by name, and the earliest next firing among them.

    Changed only by :meth:`apply`, which the model calls with schedule events.
    """

    _entries: dict[str, Entry] = attrs.field(factory=dict)
    #: The earliest ``due`` (wall clock; ``inf`` with no schedule): kept up to
    #: date on every change, so the coordinator's deadline reads one number.
    next_due: float = math.inf

    def apply(self, event: ScheduleAdded | ScheduleFired | ScheduleRemoved) -> None:
        """Apply one schedule event."""
        if isinstance(event, ScheduleAdded):
            self._entries[event.name] = Entry(schedule_of(event), event.since)
        elif isinstance(event, ScheduleFired):
            entry = self._entries[event.name]
            entry.last, entry.fired = event.fire_time, True
            entry.due = entry.schedule.trigger.next_after(event.fire_time)
        else:
            del self._entries[event.name]
        self.next_due = min((entry.due for entry in self._entries.values()), default=math.inf)

    def get(self, name: str) -> Entry | None:
        """The entry named ``name``, if there is one."""
        return self._entries.get(name)

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda entry: entry.schedule.name))

    def __len__(self) -> int:
        return len(self._entries)

    def first_due(self) -> Entry:
        """The entry due first (there must be one)."""
        return min(self._entries.values(), key=lambda entry: entry.due)


def added_event(schedule: Schedule, since: float) -> ScheduleAdded:
    """The event that adds ``schedule`` at wall-clock time ``since``."""
    return ScheduleAdded(
        schedule.name, schedule.job, schedule.payload, schedule.every, schedule.cron, schedule.tz,
        schedule.queue, schedule.priority, schedule.max_attempts, since,
    )  # fmt: skip


def schedule_of(event: ScheduleAdded) -> Schedule:
    """The schedule a :class:`ScheduleAdded` event describes."""
    return Schedule(
        event.name, event.job, event.payload, event.every, event.cron, event.tz, event.queue,
        event.priority, event.max_attempts,
    )  # fmt: skip


def fire_key(name: str, fire_time: float) -> str:
    """The idempotency key of ``name``'s firing at ``fire_time``: the same in every run."""
    moment = datetime.fromtimestamp(fire_time, timezone.utc)
    return f"schedule:{name}:{moment.isoformat().replace('+00:00', 'Z')}"


def add_schedule(state: QueueState, schedule: Schedule, wall: float) -> tuple[Entry, bool]:
    """Add ``schedule`` (or replace the one of its name); return it and whether it changed.

    The same schedule added again changes nothing, so a server started with
    its schedules each time keeps their history (and the misfire rule
    applies); a different one of the same name replaces it and starts afresh
    from ``wall``.

    Raises:
        RuleError: ``too_many_schedules``, for a new name when the server
            already keeps ``MAX_SCHEDULES``.
    """
    book = state.schedules
    known = book.get(schedule.name)
    if known is not None and known.schedule == schedule:
        return known, False
    if known is None and len(book) >= MAX_SCHEDULES:
        raise RuleError(
            TOO_MANY_SCHEDULES,
            f"the server keeps at most {MAX_SCHEDULES} schedules; remove one first",
        )
    state.apply(added_event(schedule, wall))
    entry = book.get(schedule.name)
    assert entry is not None
    return entry, True


def remove_schedule(state: QueueState, name: str) -> None:
    """Remove the schedule ``name``; the jobs it already submitted stay.

    Raises:
        RuleError: ``unknown_schedule``.
    """
    if state.schedules.get(name) is None:
        raise RuleError(UNKNOWN_SCHEDULE, f"no schedule {name!r}")
    state.apply(ScheduleRemoved(name))


def fire_schedules(state: QueueState, now: float, wall: float) -> list[JobRecord]:
    """Fire every schedule due by ``wall``; return the jobs that were added.

    Each due schedule fires once, for its latest firing time up to ``wall``
    (the misfire rule), submitting a job keyed ``schedule:<name>:<time>``:
    the job first, then the ``ScheduleFired`` event, so a crash between the
    two fires again on restart and the key turns the second firing into
    the first one's job. A firing the queue has no room for is skipped.
    """
    book = state.schedules
    added = []
    while book.next_due <= wall:
        entry = book.first_due()
        schedule = entry.schedule
        fire_time = schedule.trigger.latest(entry.last, wall)
        assert fire_time is not None  # due <= wall: there is one
        try:
            job, new = state.submit(
                schedule.job,
                schedule.payload,
                now,
                queue=schedule.queue,
                priority=schedule.priority,
                max_attempts=schedule.max_attempts,
                key=fire_key(schedule.name, fire_time),
            )
        except RuleError:
            new = False  # queue_full: this firing is lost, the next one will try
        if new:
            added.append(job)
        state.apply(ScheduleFired(schedule.name, fire_time))
    return added
