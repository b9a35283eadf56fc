"""When a schedule fires: five-field cron expressions and fixed periods, as pure code.

A trigger answers two questions about wall-clock time (Unix seconds), and
nothing else: :meth:`next_after` (the first firing strictly after a moment)
and :meth:`latest` (the last firing in an interval, which is how a server that
was down fires a missed schedule once, not once per missed firing).

The cron parser is written here rather than taken from a library: the
well-kept ones are bigger than this module and bring their own dialects,
and the queue's runtime dependencies are trio and attrs only. It reads the
classic five fields, ``minute hour day-of-month month day-of-week``, each a
``*``, a number, a range ``a-b``, any of these with a step (``*/15``,
``1-30/2``, ``5/10`` for ``5-max/10``), or a comma-separated list of them.
Months and weekdays may be named (``jan``, ``mon``); weekday ``0`` and ``7``
are both Sunday; ``@hourly``, ``@daily``, ``@weekly``, ``@monthly`` and
``@yearly`` stand for their usual expressions. As in Vixie cron, when both
day fields are restricted (neither starts with ``*``) a day matches if
*either* does.

Time zones: the fields are read in ``tz`` (a ``zoneinfo`` name, UTC by
default). A local time that does not exist (skipped by a daylight-saving
change) fires at the same offset as before the change (``02:30`` on a spring
night fires at ``03:30``); a local time that happens twice fires once, the
first time.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

#: Shortest and longest period ``every`` accepts, in seconds (the longest:
#: ten years, so every firing is a date that can be written).
MIN_EVERY = 1.0
MAX_EVERY = 10 * 366 * 86400.0

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: Each field's name, lowest and highest value, and names for its values.
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {name: i + 1 for i, name in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {name: i for i, name in enumerate(_WEEKDAYS)}),
)
#: How far ahead a search looks before it calls an expression one that never
#: fires. A date on a given weekday can be decades apart (a 3rd of January on
#: a Sunday: 2027, then 2038; a 29th of February on one: up to 40 years), but
#: the Gregorian calendar repeats every 400 years (146,097 days, a whole number
#: of weeks), so a date and weekday that ever meet meet within any 400.
_HORIZON_YEARS = 400


def parse_field(text: str, low: int, high: int, names: dict[str, int], what: str) -> set[int]:
    """The values one cron field matches.

    Raises:
        ValueError: the field is not valid; the message names it.
    """

    def number(part: str) -> int:
        value = names.get(part.lower())
        if value is None:
            if not part.isdigit():
                raise ValueError(f"cron {what} field {text!r}: {part!r} is not a number")
            value = int(part)
        if not low <= value <= high:
            raise ValueError(f"cron {what} field {text!r}: {value} is not from {low} to {high}")
        return value

    values: set[int] = set()
    for item in text.split(","):
        spec, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"cron {what} field {text!r}: bad step {step_text!r}")
            step = int(step_text)
        if spec == "*":
            start, end = low, high
        elif "-" in spec:
            first, _, last = spec.partition("-")
            start, end = number(first), number(last)
            if start > end:
                raise ValueError(f"cron {what} field {text!r}: range {spec!r} runs backwards")
        else:
            start = number(spec)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return values


def _zone(tz: str) -> tzinfo:
    if tz.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}") from None


@attrs.frozen
class Cron:
    """A parsed five-field cron expression, read in time zone ``tz``.

    Build one with :func:`parse_cron`.
    """

    text: str
    tz: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    #: 0 is Sunday (a 7 in the expression is folded into 0).
    weekdays: frozenset[int]
    #: Whether a day must match both day fields (one of them starts with
    #: ``*``) or either (both restricted), as in Vixie cron.
    both_days: bool
    zone: tzinfo = attrs.field(eq=False, repr=False)

    def day_matches(self, day: datetime) -> bool:
        """Whether the date of ``day`` is one the expression fires on."""
        in_days = day.day in self.days
        # isoweekday: Monday 1 .. Sunday 7; % 7 makes Sunday 0.
        in_weekdays = day.isoweekday() % 7 in self.weekdays
        return in_days and in_weekdays if self.both_days else in_days or in_weekdays

    def next_after(self, moment: float) -> float:
        """The first firing strictly after ``moment`` (Unix seconds).

        Raises:
            ValueError: the expression never fires (``0 0 30 2 *``).
        """
        zone = self.zone
        # Whole seconds: fromtimestamp rounds the fraction to the nearest
        # microsecond, which can carry a moment just before a minute into it.
        local = datetime.fromtimestamp(math.floor(moment), zone).replace(tzinfo=None, fold=0)
        at = local.replace(second=0, microsecond=0) + timedelta(minutes=1)
        end_year = min(at.year + _HORIZON_YEARS, datetime.max.year - 1)
        while at.year <= end_year:
            if at.month not in self.months:
                at = (at.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self.day_matches(at):
                at = at.replace(hour=0, minute=0) + timedelta(days=1)
            elif at.hour not in self.hours:
                at = at.replace(minute=0) + timedelta(hours=1)
            elif at.minute not in self.minutes:
                at += timedelta(minutes=1)
            else:
                fire = at.replace(tzinfo=zone).timestamp()
                if fire > moment:
                    return fire
                # A minute seen already in a repeated (daylight-saving) hour.
                at += timedelta(minutes=1)
        raise ValueError(f"cron expression {self.text!r} never fires")

    def latest(self, after: float, upto: float) -> float | None:
        """The last firing in ``(after, upto]``, or ``None`` if there is none.

        A binary search over :meth:`next_after`, whose answer only grows with
        its argument: a few dozen steps whatever the interval's length.
        """
        if self.next_after(after) > upto:
            return None
        low, high = after, upto  # next_after(low) <= upto < next_after(high)
        while high - low > 30:
            middle = (low + high) / 2
            if self.next_after(middle) <= upto:
                low = middle
            else:
                high = middle
        # Firings are at least a minute apart, so only one lies in (low, upto].
        return self.next_after(low)


def parse_cron(text: str, tz: str = "UTC") -> Cron:
    """Parse a five-field cron expression (or an ``@daily``-style macro).

    Raises:
        ValueError: the expression or the time zone is not valid, or the
            expression never fires; the message says which part.
    """
    expanded = _MACROS.get(text.strip().lower(), text)
    fields = expanded.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron expression {text!r} has {len(fields)} fields; expected 5: "
            "minute hour day-of-month month day-of-week"
        )
    minutes, hours, days, months, weekdays = (
        parse_field(field, low, high, names, what)
        for field, (what, low, high, names) in zip(fields, _FIELDS, strict=True)
    )
    if 7 in weekdays:
        weekdays = (weekdays - {7}) | {0}
    cron = Cron(
        text=text,
        tz=tz,
        minutes=frozenset(minutes),
        hours=frozenset(hours),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(weekdays),
        both_days=fields[2].startswith("*") or fields[4].startswith("*"),
        zone=_zone(tz),
    )
    cron.next_after(0.0)  # one that never fires is refused now, not at its first firing
    return cron


@attrs.frozen
class Every:
    """A fixed period: fires at every multiple of ``seconds`` since the Unix epoch.

    Aligned to the epoch, not to when the schedule was added, so adding the
    same schedule again (a server started with it each time) keeps the same
    firing times, and ``every=3600`` fires on the hour.
    """

    seconds: float

    def __attrs_post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds >= MIN_EVERY):
            raise ValueError(f"every must be at least {MIN_EVERY:g} second, not {self.seconds}")
        if self.seconds > MAX_EVERY:
            raise ValueError(
                f"every must be at most {MAX_EVERY:.0f} seconds (ten years), not {self.seconds:g}"
            )

    def next_after(self, moment: float) -> float:
        """The first multiple of the period strictly after ``moment``."""
        count = math.floor(moment / self.seconds) + 1
        # The division rounds: one step either way puts it right.
        if (count - 1) * self.seconds > moment:
            count -= 1
        if count * self.seconds <= moment:
            count += 1
        return count * self.seconds

    def latest(self, after: float, upto: float) -> float | None:
        """The last multiple of the period in ``(after, upto]``, or ``None``."""
        count = math.floor(upto / self.seconds)
        if count * self.seconds > upto:  # the division rounded up
            count -= 1
        elif (count + 1) * self.seconds <= upto:  # or down
            count += 1
        fire = count * self.seconds
        return fire if fire > after else None


Trigger = Cron | Every
