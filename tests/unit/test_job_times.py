"""A job's times: kept on the record, carried by events, kept through replay and snapshots."""

from __future__ import annotations

import json
import random

import attrs
import pytest

from jobqueue._events import Event, Submitted
from jobqueue._job import JobState
from jobqueue._job_text import describe
from jobqueue._journal import decode_event, encode_event, unpack
from jobqueue._replies import JobInfo
from jobqueue._snapshot import capture, encode_snapshot, replay
from jobqueue._state import QueueState
from jobqueue._views import job_info
from tests.unit import journal_support as support

TIMES = ("submitted_at", "started_at", "finished_at", "not_before")


def test_the_record_keeps_when_a_job_was_submitted_started_and_finished() -> None:
    q = support.new_state(max_attempts=2, retry_delay=4.0)
    job, _ = q.submit("n", None, 10.0)
    assert (job.submitted_at, job.started_at, job.finished_at) == (10.0, None, None)
    q.assign("w", 12.5)
    assert (job.started_at, job.finished_at) == (12.5, None)
    q.fail(job.id, "w", 1, "E", "m", 13.0)  # attempts left: a retry, not an end
    assert job.state is JobState.SCHEDULED
    assert (job.started_at, job.finished_at) == (12.5, None)
    q.tick(20.0)
    q.assign("w", 21.0)
    q.fail(job.id, "w", 2, "E", "m", 22.0)  # the last attempt: failed for good
    assert (job.state, job.started_at, job.finished_at) == (JobState.FAILED, 21.0, 22.0)
    q.revive(job.id, 30.0)  # back in line: not finished any more
    assert (job.state, job.finished_at) == (JobState.PENDING, None)
    q.assign("w", 31.0)
    q.complete(job.id, "w", 3, "ok", 33.0)
    assert (job.submitted_at, job.started_at, job.finished_at) == (10.0, 31.0, 33.0)


@pytest.mark.parametrize("where", ["pending", "running"])
def test_cancelling_and_losing_a_lease_set_the_times(where: str) -> None:
    q = support.new_state(max_attempts=1)
    job, _ = q.submit("n", None, 1.0)
    if where == "running":
        q.assign("w", 2.0)
    q.cancel(job.id, 5.0)
    assert job.finished_at == 5.0
    lost, _ = q.submit("n", None, 6.0)
    q.assign("w2", 7.0)
    q.release("w2", 8.0)  # the worker's connection closed, no attempt left
    assert (lost.state, lost.started_at, lost.finished_at) == (JobState.FAILED, 7.0, 8.0)


def _shifted(q: QueueState, by: float) -> dict[str, dict[str, float | None]]:
    jobs = {}
    for state in JobState:
        for job in support.listed(q, state):
            jobs[job.id] = {
                name: None if getattr(job, name) is None else getattr(job, name) + by
                for name in TIMES
            }
    return jobs


def _times(q: QueueState) -> dict[str, dict[str, float | None]]:
    return _shifted(q, 0.0)


def _close(a: dict[str, dict[str, float | None]], b: dict[str, dict[str, float | None]]) -> None:
    assert a.keys() == b.keys()
    for job_id, times in a.items():
        for name, value in times.items():
            other = b[job_id][name]
            assert (value is None) == (other is None), (job_id, name)
            if value is not None:
                assert other == pytest.approx(value, abs=1e-6), (job_id, name)


@pytest.mark.parametrize("seed", range(4))
def test_replay_keeps_the_times_across_a_restart(seed: int) -> None:
    """Written as wall-clock times, read back on another monotonic clock: same moments."""
    events: list[Event] = []
    q = support.new_state()
    q.on_event = events.append
    support.lifecycle(q, random.Random(seed), 300)
    # The old process's wall clock was 1e9 ahead of its monotonic one, the
    # new one's is 1e9 - 500 ahead: every time comes back 500 s later.
    payloads = [encode_event(event, 1e9) for event in events]
    fresh = support.new_state()
    fresh.id_prefix = ""
    replay(fresh, payloads, 1e9 - 500.0)
    _close(_times(fresh), _shifted(q, 500.0))
    assert any(t["submitted_at"] is not None for t in _times(fresh).values())
    assert any(t["finished_at"] is not None for t in _times(fresh).values())


@pytest.mark.parametrize("seed", range(4))
def test_a_snapshot_keeps_the_times_across_a_restart(seed: int) -> None:
    q = support.new_state()
    support.lifecycle(q, random.Random(seed), 300)
    payloads = list(encode_snapshot(capture(q), 1e9))
    fresh = support.new_state()
    fresh.id_prefix = ""
    replay(fresh, payloads, 1e9 - 500.0)
    _close(_times(fresh), _shifted(q, 500.0))
    assert any(t["started_at"] is not None for t in _times(fresh).values())


def test_records_that_leave_their_times_out_replay_with_none() -> None:
    # Times are trailing fields with a default, so a record may leave them out
    # (the journal's format: docs/design.md); the job then has no times.
    events = [
        b'["Submitted",0,"1","n",null,1]',
        b'["Assigned",0,"1","w",null,50.0]',
        b'["Completed",0,"1",null]',
    ]
    q = support.new_state()
    q.id_prefix = ""
    replay(q, events, 0.0)
    job = q.get("1")
    assert (job.state, job.submitted_at, job.started_at, job.finished_at) == (
        JobState.COMPLETED, None, None, None,
    )  # fmt: skip
    info = job_info(job, 1e9)
    assert "submitted_at" not in info.to_wire()
    # A snapshot's job record that stops before its times restores too.
    header = {
        "$": "snapshot", "next_seq": 3, "id_prefix": "", "foreign_ids": False,
        "totals": {}, "leases": [], "jobs": 1,
    }  # fmt: skip
    records = [
        json.dumps(header, separators=(",", ":")).encode(),
        b'["$",0,"2","n",null,2,"default",0,3,null,"pending"]',
    ]
    restored = support.new_state()
    replay(restored, records, 0.0)
    job = restored.get("2")
    assert (job.state, job.submitted_at, job.run) == (JobState.PENDING, None, None)


def test_events_carry_their_time_on_the_wall_clock() -> None:
    events: list[Event] = []
    q = support.new_state()
    q.on_event = events.append
    q.submit("n", None, 2.0)
    row = unpack([encode_event(events[0], 1000.0)])[0]
    assert row[0] == "Submitted"
    assert row[-1] == 1002.0  # "at", the last field
    submitted = events[0]
    assert isinstance(submitted, Submitted)
    assert decode_event(encode_event(submitted, 1000.0), 990.0) == attrs.evolve(submitted, at=12.0)


def test_status_shows_wall_clock_times_and_run_at_only_while_scheduled() -> None:
    q = support.new_state()
    job, _ = q.submit("n", {"big": "payload"}, 10.0, delay=5.0)
    info = job_info(job, 1_700_000_000.0)
    assert (info.submitted_at, info.run_at, info.started_at) == (
        1_700_000_010.0,
        1_700_000_015.0,
        None,
    )
    assert info.payload is None
    assert "payload" not in info.to_wire()
    assert job_info(job, 0.0, payload=True).payload == {"big": "payload"}
    q.tick(15.0)
    assert job_info(job, 0.0).run_at is None
    wire = job_info(job, 0.0, payload=True).to_wire()
    assert JobInfo.from_wire(wire) == job_info(job, 0.0, payload=True)


def test_status_counts_the_attempts_spent_not_runs_given_back_or_before_a_revive() -> None:
    q = support.new_state(max_attempts=2)
    job, _ = q.submit("n", None, 0.0)
    q.assign("w", 1.0)
    info = job_info(job)
    assert (info.attempt, info.attempts_spent) == (1, 1)  # the same: left out
    assert "attempts_spent" not in info.to_wire()
    assert JobInfo.from_wire(info.to_wire()).attempts_spent == 1  # a client reads it back
    q.give_back("w", [(job.id, 1)], 2.0)  # an auto batch cut short, say
    q.assign("w", 3.0)
    info = job_info(job)
    assert (info.attempt, info.attempts_spent) == (2, 1)
    assert JobInfo.from_wire(info.to_wire()) == info
    lines = dict(line.split(None, 1) for line in describe(info, 4.0).splitlines())
    assert lines["state"] == "running (attempt 1 of 2)"
    # Its first run to get under way: it waited from its submit to this one.
    assert lines["started"].endswith("(waited 3.000 s)")
    q.fail(job.id, "w", 2, "E", "m", 4.0)
    q.tick(100.0)
    q.assign("w", 100.0)
    started = dict(line.split(None, 1) for line in describe(job_info(job), 100.5).splitlines())
    assert "waited" not in started["started"]  # a retry
    q.fail(job.id, "w", 3, "E", "m", 101.0)
    assert (job.state, job_info(job).attempts_spent) == (JobState.FAILED, 2)
    q.revive(job.id, 102.0)  # a fresh budget
    assert (job_info(job).attempt, job_info(job).attempts_spent) == (3, 0)
    q.assign("w", 103.0)
    info = job_info(job)
    assert (info.attempt, info.attempts_spent) == (4, 1)
    lines = dict(line.split(None, 1) for line in describe(info, 104.0).splitlines())
    assert lines["state"] == "running (attempt 1 of 2)"
    assert "waited" not in lines["started"]  # it ran before the revive


def test_describe_shows_dates_and_durations() -> None:
    q = support.new_state()
    job, _ = q.submit("resize", [1, 2], 100.0)
    q.assign("w", 102.5, "worker-7")
    q.fail(job.id, "w", 1, "ValueError", "bad size", 103.0)
    q.tick(200.0)
    q.assign("w", 200.0, "worker-7")
    q.complete(job.id, "w", 2, {"ok": True}, 290.25)
    text = describe(job_info(job, 1_700_000_000.0, payload=True), 1_700_000_400.0)
    lines = dict(line.split(None, 1) for line in text.splitlines())
    assert lines["state"] == "completed (attempt 2 of 3)"
    assert lines["worker"] == "worker-7"
    assert lines["submitted"].endswith("(5 min 0 s ago)")
    assert lines["finished"].endswith("(ran 1 min 30 s)")
    assert lines["result"] == '{"ok": true}'
    assert lines["payload"] == "[1, 2]"
    assert lines["error"] == "ValueError: bad size"
    assert "waited" not in lines["started"]  # the last run's start, not the first's
