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
from collections.abc import Callable

import attrs
import trio

from ._errors import BAD_REQUEST, TOO_MANY_SCHEDULES, RuleError
from ._job import JobRecord
from ._json import encode_stored, stored_form
from ._limits import ENVELOPE_BYTES, MAX_LINE_BYTES, MAX_NAME_CHARS, MAX_SCHEDULES
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
    #: Per name, a schedule's size in a listing without its payload, kept
    #: with the schedule it is for: :meth:`add` sums every schedule's, and
    #: computing them afresh made each add past a few hundred schedules cost
    #: milliseconds of the coordinator's time (and a start with 1,000
    #: configured schedules take seconds).
    _sizes: dict[str, tuple[Schedule, int]] = attrs.field(factory=dict, init=False)

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
        """Add (or replace) ``schedule``, its payload kept as the server keeps payloads.

        Raises:
            RuleError: ``bad_request``: a text longer than the wire allows
                (a configured schedule; the codec checks a request's).
                ``too_many_schedules``: the server keeps ``MAX_SCHEDULES``,
                or the schedules, without their payloads, would no longer
                fit one ``list_schedules`` reply.
        """
        # Checked here, for new schedules only, not by Schedule itself: a
        # journal written before this limit may hold longer ones, and must
        # still open.
        for field, text in schedule.texts():
            if len(text) > MAX_NAME_CHARS:
                raise RuleError(
                    BAD_REQUEST, f"a schedule's {field} is longer than {MAX_NAME_CHARS} characters"
                )
        stored = attrs.evolve(schedule, payload=stored_form(schedule.payload))
        self._check_room(stored)
        return add_schedule(self.state, stored, self.wall_clock())[0]

    def _check_room(self, schedule: Schedule) -> None:
        book = self.state.schedules
        others = (entry.schedule for entry in book if entry.schedule.name != schedule.name)
        if sum(map(self._listed_bytes, others)) + _listed_bytes(schedule) > _ROOM:
            raise RuleError(
                TOO_MANY_SCHEDULES,
                f"schedule {schedule.name!r} would not fit in a list_schedules reply "
                "beside the others (their names, jobs, queues, zones and cron "
                "expressions take most of a line): remove one first",
            )

    def _listed_bytes(self, schedule: Schedule) -> int:
        """:func:`_listed_bytes` of a schedule kept, computed once per schedule."""
        known = self._sizes.get(schedule.name)
        if known is not None and known[0] is schedule:
            return known[1]
        if len(self._sizes) >= 2 * MAX_SCHEDULES:  # names removed since
            self._sizes.clear()
        size = _listed_bytes(schedule)
        self._sizes[schedule.name] = (schedule, size)
        return size

    def on_add(self, request: AddSchedule, now: float) -> ScheduleInfo:
        """Serve ``add_schedule``."""
        try:
            return _info(self.add(request.schedule))
        except ValueError as exc:  # a payload JSON cannot hold; the rest was checked
            raise RuleError(BAD_REQUEST, str(exc)) from None

    def on_list(self, request: ListSchedules, now: float) -> ScheduleList:
        """Serve ``list_schedules``: every schedule, in one line.

        A schedule's payload may take most of a line by itself, so each is
        listed with its payload while that fits, and without it after.
        Without payloads every schedule fits: :meth:`add` refuses one that
        would not.
        """
        listed = []
        # The reply around the entries is short: any one schedule fits with
        # its payload, as in its own ``schedule`` reply.
        room = MAX_LINE_BYTES
        for entry in self.state.schedules:
            info = _info(entry)
            size = len(encode_stored(info.to_wire()))
            if size > room:
                omitted = attrs.evolve(info, payload_omitted=True)
                shorter = len(encode_stored(omitted.to_wire()))
                # A payload as short as the mark (null, 0, "") stays: leaving
                # it out would lengthen the line and hide the payload.
                if shorter < size:
                    info, size = omitted, shorter
            room -= size
            listed.append(info)
        return ScheduleList(tuple(listed))

    def on_remove(self, request: RemoveSchedule, now: float) -> Ok:
        """Serve ``remove_schedule``.

        Raises:
            RuleError: ``unknown_schedule``.
        """
        remove_schedule(self.state, request.name)
        return Ok()


#: Bytes a reply line has for a listing.
_ROOM = MAX_LINE_BYTES - ENVELOPE_BYTES


def _listed_bytes(schedule: Schedule) -> int:
    """What ``schedule`` takes in a listing without its payload."""
    # (payload_omitted leaves the payload out: no need to make a copy without it)
    info = ScheduleInfo(schedule, 0.0, 0.0, payload_omitted=True)
    return len(encode_stored(info.to_wire())) + 32  # times with all their digits


def _info(entry: Entry) -> ScheduleInfo:
    return ScheduleInfo(entry.schedule, entry.due, entry.last if entry.fired else None)
