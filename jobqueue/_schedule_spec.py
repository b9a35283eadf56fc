"""A periodic schedule's definition: what it submits and when, checked when it is built.

Kept apart from the state's schedule book (:mod:`jobqueue._schedule`) so the
configuration records can name it (``ServerConfig.schedules``) without an
import cycle: this module needs only the triggers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import attrs

from ._cron import Every, Trigger, parse_cron

#: A job's queue when none is named (``_config.DEFAULT_QUEUE``, which this
#: module cannot import).
_DEFAULT_QUEUE = "default"


@attrs.frozen
class Schedule:
    """What a schedule fires, and when: ``every`` seconds or a ``cron`` expression.

    Attributes:
        name: Names the schedule (unique in a server) and its jobs' keys.
        job: The handler name of the job each firing submits.
        payload: The job's payload.
        every: Fire at every multiple of this many seconds since the Unix epoch.
        cron: Or: fire when this five-field expression matches, read in ``tz``.
        tz: A ``zoneinfo`` name for ``cron`` (``UTC`` by default).
        queue: The queue the jobs go to.
        priority: The jobs' priority.
        max_attempts: The jobs' budget of runs (``None``: the server's default).

    Raises:
        ValueError: not exactly one of ``every`` and ``cron``, a bad
            expression, time zone or period; the message says which.
    """

    name: str
    job: str
    payload: Any = None
    every: float | None = None
    cron: str | None = None
    tz: str = "UTC"
    queue: str = _DEFAULT_QUEUE
    priority: int = 0
    max_attempts: int | None = None
    trigger: Trigger = attrs.field(init=False, eq=False, repr=False)

    def texts(self) -> Iterator[tuple[str, str]]:
        """Its texts by field: name, job, queue, tz and (with one) cron."""
        yield from (("name", self.name), ("job", self.job), ("queue", self.queue), ("tz", self.tz))
        if self.cron is not None:
            yield "cron", self.cron

    def __attrs_post_init__(self) -> None:
        # Types first: a schedule can come from a journal written elsewhere
        # (or edited), where no request's checks ran.
        for field, value in (("name", self.name), ("job", self.job), ("tz", self.tz)):
            if type(value) is not str:
                raise ValueError(f"a schedule's {field} must be a string, not {value!r}")
        if type(self.queue) is not str or not self.queue:
            raise ValueError(f"a schedule's queue must be a non-empty string, not {self.queue!r}")
        if type(self.priority) is not int:
            raise ValueError(f"a schedule's priority must be an integer, not {self.priority!r}")
        if self.max_attempts is not None and (
            type(self.max_attempts) is not int or self.max_attempts < 1
        ):
            raise ValueError(
                f"a schedule's max_attempts must be a positive integer, not {self.max_attempts!r}"
            )
        if self.cron is not None and type(self.cron) is not str:
            raise ValueError(f"a schedule's cron must be a string, not {self.cron!r}")
        if self.every is not None and type(self.every) not in (int, float):
            raise ValueError(f"a schedule's every must be a number, not {self.every!r}")
        if not self.name or not self.job:
            raise ValueError("a schedule needs a name and a job name")
        if self.every is None and self.cron is None:
            raise ValueError(f"schedule {self.name!r} needs either every or cron")
        if self.every is not None and self.cron is not None:
            raise ValueError(f"schedule {self.name!r} needs either every or cron, not both")
        if self.every is not None:
            if self.tz != "UTC":
                raise ValueError(f"schedule {self.name!r}: tz applies to cron, not every")
            trigger: Trigger = Every(float(self.every))
        else:
            assert self.cron is not None
            trigger = parse_cron(self.cron, self.tz)
        object.__setattr__(self, "trigger", trigger)

    @property
    def when(self) -> str:
        """The timing in words: ``every 60s``, ``cron 0 9 * * * (Europe/Paris)``."""
        if self.every is not None:
            return f"every {self.every:g}s"
        return f"cron {self.cron}" + ("" if self.tz == "UTC" else f" ({self.tz})")


def parse_schedule_option(text: str) -> Schedule:
    """A schedule from the command line: ``NAME=SPEC:JOB``.

    ``SPEC`` is a number of seconds (``every 60`` or ``60``), or a cron
    expression (five fields or a macro such as ``@daily``), optionally
    followed by a time zone: ``nightly=0 3 * * * Europe/Paris:cleanup``.

    Raises:
        ValueError: it is not of that shape, or the schedule is not valid.
    """
    name, equals, rest = text.partition("=")
    spec, colon, job = rest.rpartition(":")
    if not equals or not colon or not name.strip() or not job.strip() or not spec.strip():
        raise ValueError(f"{text!r} is not NAME=SPEC:JOB, e.g. tick=every 60:report")
    words = spec.split()
    if words[0] == "every":
        words = words[1:]
    if len(words) == 1 and not words[0].startswith("@"):
        try:
            every = float(words[0])
        except ValueError:
            raise ValueError(f"{text!r}: {words[0]!r} is not a number of seconds") from None
        return Schedule(name.strip(), job.strip(), every=every)
    fields = 1 if words[0].startswith("@") else 5
    tz = " ".join(words[fields:]) or "UTC"
    return Schedule(name.strip(), job.strip(), cron=" ".join(words[:fields]), tz=tz)


def schedules_from_json(text: str, source: str) -> tuple[Schedule, ...]:
    """Schedules from a JSON array of objects with :class:`Schedule`'s fields.

    Raises:
        ValueError: not such an array, or a schedule that is not valid; the
            message names ``source`` and the entry.
    """
    try:
        entries = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source}: not JSON: {exc}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{source}: expected a JSON array of schedule objects")
    fields = {field.name for field in attrs.fields(Schedule) if field.init}
    schedules = []
    for index, entry in enumerate(entries):
        unknown = sorted(set(entry) - fields)
        if unknown:
            raise ValueError(f"{source}: schedule {index}: unknown field {unknown[0]!r}")
        try:
            schedules.append(Schedule(**entry))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: schedule {index}: {exc}") from None
    return tuple(schedules)


def schedule_fields(schedule: Schedule) -> dict[str, Any]:
    """``schedule``'s definition as a JSON object (the fields a file or a listing shows)."""
    return {
        field.name: getattr(schedule, field.name) for field in attrs.fields(Schedule) if field.init
    }
