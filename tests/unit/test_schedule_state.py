"""Schedules in the pure state, with explicit ``now`` and ``wall``: firing, misfires, replay."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from jobqueue._config import QueueRules
from jobqueue._errors import UNKNOWN_SCHEDULE, RuleError
from jobqueue._events import Event, ScheduleAdded, ScheduleFired, Submitted
from jobqueue._job import JobState
from jobqueue._schedule import add_schedule, fire_key, fire_schedules, remove_schedule
from jobqueue._schedule_spec import Schedule
from jobqueue._state import QueueState

#: 2024-01-01T00:00:00Z: a wall clock a whole number of hours, days and minutes.
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()


def recorded() -> tuple[QueueState, list[Event]]:
    events: list[Event] = []
    return QueueState(on_event=events.append), events


def replayed(events: list[Event]) -> QueueState:
    state = QueueState()
    for event in events:
        state.apply(event)
    return state


def test_every_fires_once_per_period_at_multiples_of_it() -> None:
    state = QueueState()
    add_schedule(state, Schedule("tick", "report", {"n": 1}, every=60), T0 + 5)
    assert state.schedules.next_due == T0 + 60
    assert fire_schedules(state, 1.0, T0 + 59.9) == []
    jobs = fire_schedules(state, 2.0, T0 + 60)
    assert [(job.name, job.payload, job.key) for job in jobs] == [
        ("report", {"n": 1}, "schedule:tick:2024-01-01T00:01:00Z")
    ]
    assert jobs[0].state is JobState.PENDING
    assert fire_schedules(state, 3.0, T0 + 61) == []
    assert [job.key for job in fire_schedules(state, 4.0, T0 + 120)] == [fire_key("tick", T0 + 120)]
    assert state.schedules.next_due == T0 + 180


def test_cron_fires_when_its_fields_match_in_its_time_zone() -> None:
    state = QueueState()
    add_schedule(state, Schedule("morning", "mail", cron="0 9 * * *", tz="Europe/Paris"), T0)
    # 9:00 in Paris in January is 8:00 UTC.
    assert state.schedules.next_due == T0 + 8 * 3600
    (job,) = fire_schedules(state, 1.0, T0 + 8 * 3600)
    assert job.key == "schedule:morning:2024-01-01T08:00:00Z"
    assert state.schedules.next_due == T0 + 86400 + 8 * 3600


def test_a_job_takes_the_schedules_queue_priority_and_attempts() -> None:
    state = QueueState(rules=QueueRules(max_attempts=5))
    schedule = Schedule("s", "j", every=10, queue="low", priority=-3, max_attempts=2)
    add_schedule(state, schedule, T0)
    (job,) = fire_schedules(state, 0.0, T0 + 10)
    assert (job.queue, job.priority, job.max_attempts) == ("low", -3, 2)


def test_missed_firings_fire_once_for_the_latest_missed_time() -> None:
    """Down for 10 periods (and a bit): one job, not ten, then back on the beat."""
    state = QueueState()
    add_schedule(state, Schedule("tick", "report", every=60), T0)
    fire_schedules(state, 0.0, T0 + 60)
    jobs = fire_schedules(state, 1.0, T0 + 60 + 10 * 60 + 5)
    assert [job.key for job in jobs] == [fire_key("tick", T0 + 11 * 60)]
    assert state.counts()["pending"] == 2
    assert state.schedules.next_due == T0 + 12 * 60


def test_a_cron_schedule_missed_for_days_fires_once() -> None:
    state = QueueState()
    add_schedule(state, Schedule("hourly", "j", cron="30 * * * *"), T0)
    jobs = fire_schedules(state, 0.0, T0 + 3 * 86400 + 3600)  # 3 days, 1 h later
    assert [job.key for job in jobs] == ["schedule:hourly:2024-01-04T00:30:00Z"]
    assert state.schedules.next_due == T0 + 3 * 86400 + 3600 + 1800


def test_replay_rebuilds_the_schedules_where_they_were() -> None:
    state, events = recorded()
    add_schedule(state, Schedule("a", "j", every=60), T0)
    add_schedule(state, Schedule("b", "j", cron="*/5 * * * *"), T0)
    fire_schedules(state, 0.0, T0 + 300)
    again = replayed(events)
    assert [(e.schedule, e.last, e.due) for e in again.schedules] == [
        (e.schedule, e.last, e.due) for e in state.schedules
    ]
    assert again.schedules.next_due == state.schedules.next_due == T0 + 360
    assert again.counts() == state.counts()


def test_the_key_stops_a_second_firing_when_the_fired_event_was_lost() -> None:
    """A crash after the job's event but before ScheduleFired: on replay it fires again, no job."""
    state, events = recorded()
    add_schedule(state, Schedule("tick", "report", every=60), T0)
    (job,) = fire_schedules(state, 0.0, T0 + 60)
    assert isinstance(events[-1], ScheduleFired)
    assert isinstance(events[-2], Submitted)
    again = replayed(events[:-1])  # the last event never reached the disk
    assert again.schedules.next_due == T0 + 60  # so it is due again
    assert fire_schedules(again, 0.0, T0 + 61) == []  # same key: the same job, no second one
    assert again.counts()["pending"] == 1
    assert again.get(job.id).key == fire_key("tick", T0 + 60)
    assert again.schedules.next_due == T0 + 120


def test_adding_the_same_schedule_again_changes_nothing_and_a_new_one_replaces_it() -> None:
    state, events = recorded()
    add_schedule(state, Schedule("tick", "report", every=60), T0)
    fire_schedules(state, 0.0, T0 + 60)
    count = len(events)
    entry, changed = add_schedule(state, Schedule("tick", "report", every=60), T0 + 500)
    assert not changed
    assert len(events) == count
    assert entry.last == T0 + 60
    entry, changed = add_schedule(state, Schedule("tick", "report", every=300), T0 + 500)
    assert changed
    assert isinstance(events[-1], ScheduleAdded)
    assert (entry.last, entry.fired, entry.due) == (T0 + 500, False, T0 + 600)


def test_removed_schedules_fire_no_more_and_unknown_ones_are_refused() -> None:
    state = QueueState()
    add_schedule(state, Schedule("tick", "report", every=60), T0)
    remove_schedule(state, "tick")
    assert state.schedules.next_due == float("inf")
    assert fire_schedules(state, 0.0, T0 + 3600) == []
    with pytest.raises(RuleError) as caught:
        remove_schedule(state, "tick")
    assert caught.value.code == UNKNOWN_SCHEDULE


def test_a_firing_with_no_room_is_skipped_not_retried() -> None:
    state = QueueState(rules=QueueRules(max_pending=1))
    state.submit("filler", None, 0.0)
    add_schedule(state, Schedule("tick", "report", every=60), T0)
    assert fire_schedules(state, 0.0, T0 + 60) == []
    assert state.schedules.next_due == T0 + 120
    assert state.counts()["pending"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "either every or cron"),
        ({"every": 60, "cron": "* * * * *"}, "either every or cron"),
        ({"every": 60, "tz": "Europe/Paris"}, "tz applies to cron"),
        ({"every": 0.1}, "at least 1 second"),
        ({"every": 1e300}, "at most 316224000 seconds"),
        # Types, as a journal written elsewhere (or edited) could hold them.
        ({"every": 60, "priority": "x"}, "priority must be an integer"),
        ({"every": 60, "max_attempts": 0}, "max_attempts must be a positive integer"),
        ({"cron": "* * * * *", "tz": 5}, "tz must be a string"),
        ({"every": "60"}, "every must be a number"),
        ({"every": 60, "queue": ""}, "queue must be a non-empty string"),
        ({"cron": "61 * * * *"}, "61 is not from 0 to 59"),
        ({"cron": "* * * * *", "tz": "Nowhere/Else"}, "unknown time zone"),
    ],
)
def test_bad_schedules_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule("s", "j", **kwargs)  # type: ignore[arg-type]
