"""The coordinator's side of periodic jobs: the schedule requests and the next firing.

:class:`Scheduler` is what the coordinator calls and nothing else does: it
serves ``add_schedule``, ``list_schedules`` and ``remove_schedule``, turns the
state's next firing (wall clock) into one more deadline on the
coordinator's clock, and fires what is due when that deadline comes. No
timer per schedule and no polling: the coordinator's single wake-up covers
schedules as it covers leases.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import attrs
import trio

from ._errors import BAD_REQUEST, RuleError
from ._job import JobRecord
from ._json import stored_form
from ._replies import Ok
from ._schedule import Entry, add_schedule, fire_schedules, remove_schedule
from ._schedule_spec import Schedule
from ._schedule_wire import AddSchedule, ListSchedules, RemoveSchedule, ScheduleInfo, ScheduleList
from ._state import QueueState


@attrs.define(eq=False)
class Scheduler:
    """Schedules as the coordinator serves them.

    Args:
        state: The coordinator's state (schedules live in it).
        wall_clock: Wall-clock time in Unix seconds, read at each use (so
            a clock set by NTP after start is followed); tests under trio's
            mock clock pass one that moves with it.
    """

    state: QueueState
    wall_clock: Callable[[], float] = time.time

    def deadline(self) -> float:
        """When (on trio's clock) the next schedule fires; ``inf`` with none."""
        due = self.state.schedules.next_due
        if due == math.inf:
            return due
        return trio.current_time() + (due - self.wall_clock())

    def fire(self, now: float) -> list[JobRecord]:
        """Fire what is due; return the jobs added (the coordinator hands them out)."""
        if self.state.schedules.next_due > self.wall_clock():
            return []
        return fire_schedules(self.state, now, self.wall_clock())

    def add(self, schedule: Schedule) -> Entry:
        """Add (or replace) ``schedule``, its payload kept as the server keeps payloads."""
        stored = attrs.evolve(schedule, payload=stored_form(schedule.payload))
        return add_schedule(self.state, stored, self.wall_clock())[0]

    def add_all(self, schedules: Iterable[Schedule]) -> None:
        """Add the schedules a server was started with (``ServerConfig.schedules``)."""
        for schedule in schedules:
            self.add(schedule)

    def on_add(self, request: AddSchedule, now: float) -> ScheduleInfo:
        """Serve ``add_schedule``."""
        try:
            return _info(self.add(request.schedule))
        except ValueError as exc:  # a payload JSON cannot hold; the rest was checked
            raise RuleError(BAD_REQUEST, str(exc)) from None

    def on_list(self, request: ListSchedules, now: float) -> ScheduleList:
        """Serve ``list_schedules``."""
        return ScheduleList(tuple(_info(entry) for entry in self.state.schedules))

    def on_remove(self, request: RemoveSchedule, now: float) -> Ok:
        """Serve ``remove_schedule``.

        Raises:
            RuleError: ``unknown_schedule``.
        """
        remove_schedule(self.state, request.name)
        return Ok()


def _info(entry: Entry) -> ScheduleInfo:
    return ScheduleInfo(entry.schedule, entry.due, entry.last if entry.fired else None)
