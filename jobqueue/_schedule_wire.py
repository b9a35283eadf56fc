"""The schedule messages: ``add_schedule``, ``list_schedules``, ``remove_schedule`` and replies.

In a module of their own, beside :mod:`jobqueue._requests` and
:mod:`jobqueue._replies` (whose ``Request`` and ``Reply`` unions name them),
so periodic jobs add one file to the codec rather than growing two.
docs/protocol.md §4 describes them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from ._errors import BAD_REQUEST, ProtocolError
from ._fields import field_error, number, optional_int, short_str, stored_value
from ._limits import MAX_ATTEMPTS, MAX_PRIORITY
from ._schedule_spec import Schedule, schedule_fields


@attrs.frozen
class AddSchedule:
    """Add a schedule, or replace the one of the same name (an identical one changes nothing)."""

    TYPE: ClassVar[str] = "add_schedule"
    schedule: Schedule

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> AddSchedule:
        """Validate a decoded ``add_schedule``; the schedule's own checks apply too."""
        every = number(obj, "every") if obj.get("every") is not None else None
        cron = short_str(obj, "cron") if obj.get("cron") is not None else None
        payload, _ = stored_value(obj, "payload")
        try:
            schedule = Schedule(
                name=short_str(obj, "name"),
                job=short_str(obj, "job"),
                payload=payload,
                every=every,
                cron=cron,
                tz=short_str(obj, "tz") if obj.get("tz") is not None else "UTC",
                queue=short_str(obj, "queue") if obj.get("queue") is not None else "default",
                priority=optional_int(obj, "priority", 0, -MAX_PRIORITY, MAX_PRIORITY),
                max_attempts=optional_int(obj, "max_attempts", None, 1, MAX_ATTEMPTS),
            )
        except ValueError as exc:
            raise ProtocolError(BAD_REQUEST, f'"add_schedule": {exc}') from None
        return cls(schedule)

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object (unset options left out)."""
        return {"type": self.TYPE, **_definition(self.schedule)}


@attrs.frozen
class ListSchedules:
    """Ask for every schedule, by name."""

    TYPE: ClassVar[str] = "list_schedules"

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ListSchedules:
        """Validate a decoded ``list_schedules``."""
        return cls()

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE}


@attrs.frozen
class RemoveSchedule:
    """Remove a schedule; the jobs it already submitted stay."""

    TYPE: ClassVar[str] = "remove_schedule"
    name: str

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> RemoveSchedule:
        """Validate a decoded ``remove_schedule``."""
        return cls(short_str(obj, "name"))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE, "name": self.name}


@attrs.frozen
class ScheduleInfo:
    """One schedule as the server reports it (reply type ``schedule``).

    Attributes:
        schedule: Its definition (name, job, payload, every or cron, tz,
            queue, priority, max_attempts).
        next_fire: Wall-clock time (Unix seconds) of its next firing.
        last_fire: Of its last firing (``None``: it has not fired yet).
        payload_omitted: In a ``schedule_list`` only: the payload was left
            out (``schedule.payload`` is then ``None``), because it would
            not fit in the reply's line beside the schedules before it.
    """

    TYPE: ClassVar[str] = "schedule"
    schedule: Schedule
    next_fire: float
    last_fire: float | None = None
    payload_omitted: bool = False

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ScheduleInfo:
        """Validate a decoded ``schedule`` reply."""
        schedule = AddSchedule.from_wire(obj).schedule
        last = obj.get("last_fire")
        return cls(
            schedule,
            number(obj, "next_fire"),
            number(obj, "last_fire") if last is not None else None,
            obj.get("payload_omitted") is True,
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out = {"type": self.TYPE, **_definition(self.schedule), "next_fire": self.next_fire}
        if self.last_fire is not None:
            out["last_fire"] = self.last_fire
        if self.payload_omitted:
            del out["payload"]
            out["payload_omitted"] = True
        return out


@attrs.frozen
class ScheduleList:
    """Reply to ``list_schedules``: every schedule, by name.

    The reply fits one line: a payload that would not fit beside the
    schedules before it is left out (``payload_omitted``).
    """

    TYPE: ClassVar[str] = "schedule_list"
    schedules: tuple[ScheduleInfo, ...]

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ScheduleList:
        """Validate a decoded ``schedule_list``."""
        entries = obj.get("schedules")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise field_error(obj, "schedules", "an array of schedule objects")
        return cls(tuple(ScheduleInfo.from_wire({**e, "type": "schedule"}) for e in entries))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        entries = []
        for info in self.schedules:
            entry = info.to_wire()
            del entry["type"]
            entries.append(entry)
        return {"type": self.TYPE, "schedules": entries}


def _definition(schedule: Schedule) -> dict[str, Any]:
    """A schedule's fields on the wire: the ones left at their defaults are left out."""
    fields = schedule_fields(schedule)
    out = {"name": fields.pop("name"), "job": fields.pop("job"), "payload": fields.pop("payload")}
    defaults = {"every": None, "cron": None, "tz": "UTC", "queue": "default", "priority": 0}
    defaults["max_attempts"] = None
    for key, value in fields.items():
        if value != defaults[key]:
            out[key] = value
    return out
