"""The cron parser and the triggers, against brute-force references.

The parser is checked against the sets a generated field spells; the search
(:meth:`Cron.next_after`, :meth:`Cron.latest`) against a plain day-by-day,
minute-by-minute walk that shares no code with it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobqueue._cron import Cron, Every, parse_cron, parse_field

UTC = timezone.utc
# 2000-01-01 .. 2040-01-01
MOMENTS = st.floats(min_value=946684800.0, max_value=2208988800.0)


@st.composite
def field(draw: st.DrawFn, low: int, high: int) -> tuple[str, set[int]]:
    """A field's text and the values it means, built side by side."""
    items = []
    values: set[int] = set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["star", "one", "range"]))
        step = draw(st.one_of(st.none(), st.integers(1, high - low + 1)))
        if kind == "star":
            text, start, end = "*", low, high
        elif kind == "one":
            start = draw(st.integers(low, high))
            text, end = str(start), (high if step else start)
        else:
            start = draw(st.integers(low, high))
            end = draw(st.integers(start, high))
            text = f"{start}-{end}"
        if step:
            text += f"/{step}"
        items.append(text)
        values.update(range(start, end + 1, step or 1))
    return ",".join(items), values


@st.composite
def expressions(draw: st.DrawFn) -> tuple[str, list[set[int]]]:
    parts = [
        draw(field(0, 59)),
        draw(field(0, 23)),
        draw(field(1, 31)),
        draw(field(1, 12)),
        draw(field(0, 7)),  # 7 is Sunday again
    ]
    return " ".join(text for text, _ in parts), [values for _, values in parts]


def reference_matches(cron: Cron, at: datetime) -> bool:
    """The day rule written out from the definition, independently of Cron.day_matches."""
    dom_star = cron.text.split()[2].startswith("*")
    dow_star = cron.text.split()[4].startswith("*")
    in_dom = at.day in cron.days
    in_dow = (at.weekday() + 1) % 7 in cron.weekdays  # Monday 0 -> 1, Sunday 6 -> 0
    day_ok = (in_dom and in_dow) if dom_star or dow_star else (in_dom or in_dow)
    return (
        at.month in cron.months and day_ok and at.hour in cron.hours and at.minute in cron.minutes
    )


def reference_next(cron: Cron, moment: float) -> float | None:
    """Walk day by day, then minute by minute within a day, in UTC."""
    start = datetime.fromtimestamp(moment, UTC)
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(366 * 401):  # the Gregorian calendar repeats every 400 years
        midday = day + timedelta(hours=12)
        if midday.month in cron.months and reference_matches(
            cron, day.replace(hour=min(cron.hours), minute=min(cron.minutes))
        ):
            for minute in range(24 * 60):
                at = day + timedelta(minutes=minute)
                if at.timestamp() > moment and reference_matches(cron, at):
                    return at.timestamp()
        day += timedelta(days=1)
    return None


@given(expressions())
def test_a_field_means_the_values_it_spells(expr: tuple[str, list[set[int]]]) -> None:
    text, values = expr
    if not fires(text):
        return
    cron = parse_cron(text)
    assert [set(cron.minutes), set(cron.hours), set(cron.days), set(cron.months)] == values[:4]
    assert set(cron.weekdays) == {day % 7 for day in values[4]}


def fires(text: str) -> bool:
    try:
        parse_cron(text)
    except ValueError as exc:
        # Only an impossible date may be refused: the generated fields are valid.
        if "never fires" not in str(exc):
            raise
        return False
    return True


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        # A 3rd of January that is a Sunday: 2027, then not for eleven years.
        ("0 0 3 1 */7", datetime(2027, 1, 4, tzinfo=UTC), datetime(2038, 1, 3, tzinfo=UTC)),
        # A 29th of February that is a Sunday: 2004, 2032, then 2060.
        ("0 0 29 2 */7", datetime(2032, 3, 1, tzinfo=UTC), datetime(2060, 2, 29, tzinfo=UTC)),
    ],
)
def test_a_date_on_a_weekday_is_found_however_far_ahead(
    text: str, after: datetime, expected: datetime
) -> None:
    # Found by hypothesis: a search that gave up after nine years called
    # '* * 3 1 */7' one that never fires when started after 2027-01-03.
    assert parse_cron(text).next_after(after.timestamp()) == expected.timestamp()


@settings(max_examples=150, deadline=None)
@given(expressions(), MOMENTS)
def test_next_after_is_the_first_matching_minute(
    expr: tuple[str, list[set[int]]], moment: float
) -> None:
    text, _ = expr
    if not fires(text):
        return
    cron = parse_cron(text)
    assert cron.next_after(moment) == reference_next(cron, moment)


@settings(max_examples=100, deadline=None)
@given(expressions(), MOMENTS, st.floats(min_value=0, max_value=40 * 86400.0))
def test_latest_is_the_last_firing_in_the_interval(
    expr: tuple[str, list[set[int]]], after: float, span: float
) -> None:
    text, _ = expr
    if not fires(text):
        return
    cron = parse_cron(text)
    upto = after + span
    expected = None
    fire = cron.next_after(after)
    steps = 0
    while fire <= upto and steps < 60 * 24 * 41:
        expected, fire = fire, cron.next_after(fire)
        steps += 1
    assert cron.latest(after, upto) == expected


@pytest.mark.parametrize(
    ("text", "moment", "expected"),
    [
        ("*/15 * * * *", "2024-03-01T10:07:30", "2024-03-01T10:15:00"),
        ("0 9 * * mon-fri", "2024-03-01T10:00:00", "2024-03-04T09:00:00"),  # Friday -> Monday
        ("0 0 1 jan *", "2024-06-01T00:00:00", "2025-01-01T00:00:00"),
        ("0 0 29 2 *", "2024-03-01T00:00:00", "2028-02-29T00:00:00"),
        ("0 12 13 * 5", "2024-09-01T00:00:00", "2024-09-06T12:00:00"),  # a Friday, or a 13th
        ("0 0 * * 7", "2024-03-01T00:00:00", "2024-03-03T00:00:00"),  # 7 is Sunday
        ("@hourly", "2024-03-01T10:00:00", "2024-03-01T11:00:00"),  # strictly after
        ("5/20 * * * *", "2024-03-01T10:26:00", "2024-03-01T10:45:00"),
    ],
)
def test_examples_in_utc(text: str, moment: str, expected: str) -> None:
    start = datetime.fromisoformat(moment).replace(tzinfo=UTC).timestamp()
    fire = parse_cron(text).next_after(start)
    assert datetime.fromtimestamp(fire, UTC).isoformat() == expected + "+00:00"


def test_a_moment_a_rounding_step_before_a_minute_fires_at_that_minute() -> None:
    # Found by hypothesis: fromtimestamp rounds 0.9999995 s up into the next
    # second, which carried the moment into the minute and skipped it.
    assert parse_cron("* * * * *").next_after(1104494399.9999995) == 1104494400.0


def test_a_named_time_zone_fires_on_its_local_clock_across_daylight_saving() -> None:
    cron = parse_cron("0 9 * * *", tz="Europe/Paris")
    # 9:00 in Paris is 8:00 UTC in winter and 7:00 UTC in summer (from 31 March 2024).
    start = datetime(2024, 3, 29, 12, tzinfo=UTC).timestamp()
    fires = [start := cron.next_after(start) for _ in range(3)]
    assert [datetime.fromtimestamp(f, UTC).strftime("%d %H:%M") for f in fires] == [
        "30 08:00",
        "31 07:00",
        "01 07:00",
    ]


def test_a_skipped_local_time_fires_once_after_the_change_and_a_repeated_one_once() -> None:
    # New York: 2:30 did not exist on 10 March 2024, and 1:30 happened twice on 3 November.
    spring = parse_cron("30 2 * * *", tz="America/New_York")
    fire = spring.next_after(datetime(2024, 3, 10, 5, tzinfo=UTC).timestamp())
    assert datetime.fromtimestamp(fire, UTC).isoformat() == "2024-03-10T07:30:00+00:00"  # 3:30 EDT
    autumn = parse_cron("30 1 * * *", tz="America/New_York")
    start = datetime(2024, 11, 3, 4, tzinfo=UTC).timestamp()  # midnight EDT
    first = autumn.next_after(start)
    assert datetime.fromtimestamp(first, UTC).isoformat() == "2024-11-03T05:30:00+00:00"
    second = autumn.next_after(first)
    assert datetime.fromtimestamp(second, UTC).isoformat() == "2024-11-04T06:30:00+00:00"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("* * * *", "has 4 fields"),
        ("60 * * * *", "60 is not from 0 to 59"),
        ("* * * * 8", "8 is not from 0 to 7"),
        ("5-1 * * * *", "runs backwards"),
        ("*/0 * * * *", "bad step"),
        ("x * * * *", "'x' is not a number"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 * foo *", "'foo' is not a number"),
    ],
)
def test_bad_expressions_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cron(text)


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        parse_cron("* * * * *", tz="Mars/Olympus")


def test_parse_field_names() -> None:
    assert parse_field("MON-wed", 0, 7, {"mon": 1, "wed": 3}, "day of week") == {1, 2, 3}


@given(st.floats(min_value=1, max_value=86400 * 7), MOMENTS, st.floats(0, 86400 * 30))
def test_every_fires_on_multiples_of_its_period(period: float, after: float, span: float) -> None:
    every = Every(period)
    fire = every.next_after(after)
    assert after < fire <= after + period + 1e-6  # float rounding of k * period
    assert fire / period == pytest.approx(round(fire / period))
    latest = every.latest(after, after + span)
    if latest is None:
        assert fire > after + span
    else:
        assert after < latest <= after + span
        assert every.next_after(latest) > after + span - 1e-6 * period


def test_every_refuses_a_period_under_a_second() -> None:
    with pytest.raises(ValueError, match="at least 1 second"):
        Every(0.5)
