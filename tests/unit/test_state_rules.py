"""The rules of the pure queue state machine, with explicit ``now`` values.

Construction, the order jobs are handed out in, release and tick, who may
report on a job, retention, time and the transition table; then the job
lifecycle: retries and their backoff, the attempt budget, dead letters and
reviving them, delays, priorities and queues, cancellation, idempotency
keys, deleting, progress, listing and counts; last, replaying all of it
from the journal, in one section.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Hashable
from typing import Any

import attrs
import pytest

import jobqueue._store
from jobqueue._config import DEFAULT_QUEUE, QueueRules
from jobqueue._errors import RuleError
from jobqueue._events import (
    Assigned,
    AttemptFailed,
    Cancelled,
    Completed,
    Event,
    Forgotten,
    LeaseExtended,
    Progressed,
    Promoted,
    Released,
    Revived,
    Submitted,
)
from jobqueue._job import FINISHED, TRANSITIONS, InvalidTransition, JobOptions, JobRecord, JobState
from jobqueue._json import stored_form
from jobqueue._replies import JobInfo
from jobqueue._state import QueueState
from jobqueue._views import job_info
from tests.helpers import (
    STATES,
    ZERO_TOTALS,
    counts,
    drain,
    ids,
    listed,
    new_state,
    not_leased,
    pending_order,
    refused,
    run,
    submit,
    totals,
    unknown_job,
)

INF = math.inf


def record(q: QueueState, job_id: str) -> dict[str, Any] | None:
    """Every field of a job's record, or None if the queue does not remember it."""
    try:
        job = q.get(job_id)
    except RuleError as exc:
        code = exc.code
    else:
        return attrs.asdict(job, recurse=False)
    assert code == "unknown_job"
    return None


def snapshot(q: QueueState, ids: list[str]) -> dict[str, Any]:
    """Everything observable about ``q``, for the jobs in ``ids``."""
    return {
        "jobs": {job_id: record(q, job_id) for job_id in ids},
        "len": len(q),
        "pending": pending_order(q),
        "pending_count": q.pending_count,
        "running_count": q.running_count,
        "counts": q.counts(),
        "queue_counts": q.queue_counts(),
        "listed": listed(q),
        "totals": dict(q.totals),
        "next_deadline": q.next_deadline(),
        "holders": sorted((str(w), jobs) for w, jobs in q.holders()),
    }


def queue_snapshot(q: QueueState, job_ids: list[str], queues: list[str]) -> dict[str, Any]:
    """Everything observable about ``q``, with each queue's own order, for ``job_ids``."""
    records: dict[str, dict[str, Any] | str] = {}
    for job_id in job_ids:
        try:
            records[job_id] = attrs.asdict(q.get(job_id), recurse=False)
        except RuleError as exc:
            records[job_id] = exc.code
    return {
        "jobs": records,
        "len": len(q),
        "order": drain(q, queues),
        "per_queue": {queue: drain(q, [queue]) for queue in queues},
        "counts": q.counts(),
        "queue_counts": q.queue_counts(),
        "listed": {state.value: ids(q.list_jobs(state, None, 1 << 30)[0]) for state in JobState},
        "totals": dict(q.totals),
        "next_deadline": q.next_deadline(),
        "holders": sorted((str(w), jobs) for w, jobs in q.holders()),
    }


def expected_backoff(rng: random.Random, retry_delay: float, cap: float, n: int) -> float:
    """The documented formula: equal jitter over min(retry_delay * 2**(n-1), cap)."""
    ceiling: float = min(retry_delay * 2 ** (n - 1), cap)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


# -- construction -----------------------------------------------------------------


def test_defaults() -> None:
    q = QueueState()
    assert q.rules == QueueRules()
    assert attrs.asdict(q.rules) == {
        "lease_timeout": 30.0,
        "max_attempts": 5,
        "retry_delay": 1.0,
        "max_retry_delay": 300.0,
        "finished_retention": 100_000,
        "finished_retention_bytes": 1 << 30,
        "max_pending": 1_000_000,
        "max_payload_bytes": 1 << 30,
    }
    assert q.lease_timeout == 30.0
    assert (q.id_prefix, q.on_event) == ("", None)
    assert len(q) == 0
    assert q.counts() == counts()
    assert list(q.counts()) == STATES
    assert q.queue_counts() == {}
    assert q.totals == ZERO_TOTALS
    assert q.next_deadline() == INF
    assert q.assign("w", 0.0) is None
    assert not q.pending_in([DEFAULT_QUEUE])
    assert list(q.holders()) == []
    assert listed(q) == {state: [] for state in STATES}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lease_timeout": 0.0}, "lease_timeout"),
        ({"lease_timeout": -1.0}, "lease_timeout"),
        ({"finished_retention": -1}, "finished_retention"),
        ({"finished_retention_bytes": 0}, "finished_retention_bytes"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -3}, "max_attempts"),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        new_state(**kwargs)


def test_ids_and_records() -> None:
    q = new_state(id_prefix="r7-")
    a, a_new = q.submit("resize", {"w": 10}, 0.0)
    b, b_new = q.submit("crop", [1, 2], 0.0)
    assert a_new
    assert b_new
    assert (a.id, b.id) == ("r7-1", "r7-2")
    assert (a.seq, b.seq) == (1, 2)
    assert attrs.asdict(a, recurse=False) == {
        "id": "r7-1",
        "name": "resize",
        "payload": {"w": 10},
        "seq": 1,
        # Shared by every job submitted with the same queue, priority and attempts.
        "options": JobOptions("default", 0, 5),
        "state": JobState.PENDING,
        "submitted_at": 0.0,
        # Not run yet, no key, no delay: no attempt, worker, lease, result,
        # error, progress, note, key or time to wait for.
        "run": None,
    }
    assert (a.attempt, a.attempt_base, a.worker, a.lease_deadline, a.result, a.error) == (
        0, 0, None, 0.0, None, None,
    )  # fmt: skip
    assert (a.key, a.not_before) == (None, None)
    assert (a.queue, a.priority, a.max_attempts) == ("default", 0, 5)
    assert b.options is a.options
    assert a.attempts_left == 5
    assert q.get("r7-1") is a
    unknown_job(lambda: q.get("1"))
    assert job_info(a) == JobInfo(
        job_id="r7-1", name="resize", state="pending", attempt=0, max_attempts=5, submitted_at=0.0
    )


def test_submit_options_reach_the_record_and_the_event() -> None:
    events: list[Event] = []
    q = new_state(max_attempts=3, on_event=events.append)
    job, new = q.submit(
        "n", 1, 2.0, queue="mail", priority=-4, max_attempts=9, delay=1.5, key="k-1"
    )
    assert new
    assert (job.queue, job.priority, job.max_attempts, job.key) == ("mail", -4, 9, "k-1")
    assert (job.state, job.not_before) == (JobState.SCHEDULED, 3.5)
    other, _ = q.submit("n", 2, 2.0)
    assert (other.queue, other.priority, other.max_attempts, other.key) == ("default", 0, 3, None)
    assert events == [
        Submitted(job.id, "n", 1, 1, "mail", -4, 9, 3.5, "k-1", at=2.0),
        Submitted(other.id, "n", 2, 2, "default", 0, 3, None, None, at=2.0),
    ]
    info = job_info(job)
    assert (info.state, info.queue, info.priority, info.max_attempts) == (
        "scheduled",
        "mail",
        -4,
        9,
    )


def test_jobs_share_their_options_and_the_table_of_them_stays_small(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobqueue._store, "MAX_SHARED_OPTIONS", 2)
    q = new_state(max_attempts=3)
    first = [q.submit("n", i, 0.0)[0] for i in range(2)]
    assert first[0].options is first[1].options
    others = [q.submit("n", i, 0.0, queue=f"q{i}", priority=i)[0] for i in range(5)]
    assert [(job.queue, job.priority, job.max_attempts) for job in others] == [
        (f"q{i}", i, 3) for i in range(5)
    ]
    assert len(q._options) <= 2  # started again, not grown: only sharing is lost
    again = q.submit("n", 0, 0.0, queue="q4", priority=4)[0]
    assert again.options is others[4].options
    assert (first[0].queue, first[0].priority, first[0].max_attempts) == ("default", 0, 3)


# -- first come, first served (within a priority) ----------------------------------


def test_assigned_in_submission_order_with_attempt_from_one() -> None:
    q = new_state(lease_timeout=10.0)
    ids = [q.submit(f"job{i}", i, float(i))[0].id for i in range(5)]
    got = []
    for t in range(5, 10):
        job = q.assign(f"w{t}", float(t), f"name{t}")
        assert job is not None
        assert job.state is JobState.RUNNING
        assert job.attempt == 1
        assert job.worker == f"w{t}"
        assert job.worker_name == f"name{t}"
        assert job.lease_deadline == t + 10.0
        got.append(job.id)
    assert got == ids
    assert q.assign("w", 10.0) is None
    assert q.running_count == 5
    assert q.pending_count == 0


def test_requeued_jobs_come_back_in_submission_order() -> None:
    # A(seq1) and B(seq2) are running, C and D pending; the workers holding B
    # and then A are lost. A must come out first, then B, then C and D.
    q = QueueState()
    a, b, c, d = (q.submit(n, None, 0.0)[0].id for n in "abcd")
    assert q.assign("wa", 0.0) is not None
    assert q.assign("wb", 0.0) is not None
    assert [j.id for j in q.release("wb", 1.0)] == [b]
    assert [j.id for j in q.release("wa", 2.0)] == [a]
    assert pending_order(q) == [a, b, c, d]
    out = [q.assign("w", 3.0) for _ in range(4)]
    assert [(j.id, j.attempt) for j in out if j] == [(a, 2), (b, 2), (c, 1), (d, 1)]


def test_requeued_job_goes_behind_earlier_pending_and_ahead_of_later() -> None:
    q = new_state(lease_timeout=10.0)
    a, b, c, d, e = (q.submit(n, None, 0.0)[0].id for n in "abcde")
    for worker in ("w1", "w2", "w3"):
        q.assign(worker, 0.0)
    # A (seq 1) back in line, then C (seq 3): pending A, C, D, E.
    q.release("w1", 1.0)
    q.release("w3", 1.0)
    assert pending_order(q) == [a, c, d, e]
    # B's lease expires: it goes behind A (earlier, still pending) and ahead
    # of C, D and E (all submitted after it).
    assert [j.id for j in q.tick(10.0)] == [b]
    assert pending_order(q) == [a, b, c, d, e]
    out = [q.assign("w", 11.0) for _ in range(5)]
    assert [(j.id, j.attempt) for j in out if j] == [(a, 2), (b, 2), (c, 2), (d, 1), (e, 1)]


def test_attempt_counts_every_assignment() -> None:
    q = new_state(lease_timeout=5.0)
    job_id = q.submit("n", None, 0.0, max_attempts=6)[0].id
    now = 0.0
    for attempt in range(1, 6):
        job = q.assign("w", now)
        assert job is not None
        assert (job.id, job.attempt) == (job_id, attempt)
        if attempt % 2:
            assert q.release("w", now) == [job]
        else:
            now += 5.0
            assert q.tick(now) == [job]
        assert job.state is JobState.PENDING
        assert job.attempt == attempt
        assert job.attempts_left == 6 - attempt
    assert q.totals == totals(submitted=1, reassigned=5, expired=2)


# -- release and tick --------------------------------------------------------------


def test_release_requeues_exactly_that_workers_jobs() -> None:
    q = new_state(lease_timeout=10.0)
    ids = [q.submit("n", i, 0.0)[0].id for i in range(5)]
    for worker in ("w1", "w2", "w1", "w3"):
        q.assign(worker, 1.0)
    assert q.held_by("w1") == [ids[0], ids[2]]
    assert q.held_by("w2") == [ids[1]]
    assert q.held_by("nobody") == []
    before_w2 = record(q, ids[1])
    lost = q.release("w1", 2.0)
    assert [j.id for j in lost] == [ids[0], ids[2]]
    assert all(j.state is JobState.PENDING for j in lost)
    assert [(j.error or {}).get("type") for j in lost] == ["WorkerLost", "WorkerLost"]
    assert q.held_by("w1") == []
    assert sorted((str(w), jobs) for w, jobs in q.holders()) == [("w2", [ids[1]]), ("w3", [ids[3]])]
    assert record(q, ids[1]) == before_w2
    assert q.get(ids[3]).state is JobState.RUNNING
    assert pending_order(q) == [ids[0], ids[2], ids[4]]
    assert q.totals == totals(submitted=5, reassigned=2)
    # Releasing again, or a worker that holds nothing, changes nothing.
    assert q.release("w1", 3.0) == []
    assert q.release("ghost", 3.0) == []
    assert q.totals["reassigned"] == 2


def test_release_leaves_finished_jobs_alone() -> None:
    q = QueueState()
    a = q.submit("n", None, 0.0)[0].id
    b = q.submit("n", None, 0.0)[0].id
    q.assign("w", 0.0)
    q.assign("w", 0.0)
    q.complete(a, "w", 1, "done", 1.0)
    assert [j.id for j in q.release("w", 2.0)] == [b]
    assert q.get(a).state is JobState.COMPLETED
    assert q.get(a).result == "done"
    assert q.assign("w2", 3.0) is q.get(b)
    assert q.assign("w2", 3.0) is None


def test_tick_uses_exact_deadlines() -> None:
    q = new_state(lease_timeout=10.0)
    a, b, c, d = (q.submit(n, None, 0.0)[0].id for n in "abcd")
    assert q.next_deadline() == INF  # pending jobs have no deadline
    assert q.assign("w1", 0.0) is q.get(a)
    assert q.next_deadline() == 10.0
    assert q.assign("w2", 3.0) is q.get(b)
    assert q.assign("w3", 5.0) is q.get(c)
    assert q.next_deadline() == 10.0
    assert q.heartbeat(a, "w1", 1, 6.0) is q.get(a)
    assert [q.get(i).lease_deadline for i in (a, b, c)] == [16.0, 13.0, 15.0]
    assert q.next_deadline() == 13.0
    assert q.tick(12.999) == []
    assert q.tick(12.999) == []
    assert [j.id for j in q.tick(13.0)] == [b]
    assert q.next_deadline() == 15.0
    assert q.assign("w4", 14.0) is q.get(b)  # b comes back before d
    assert q.get(b).lease_deadline == 24.0
    assert q.get(b).attempt == 2
    assert sorted(j.id for j in q.tick(16.0)) == [a, c]
    assert q.next_deadline() == 24.0
    assert q.get(d).state is JobState.PENDING
    assert pending_order(q) == [a, c, d]
    assert q.totals == totals(submitted=4, reassigned=3, expired=3)
    assert [(q.get(i).error or {}).get("type") for i in (a, b, c, d)] == [
        "LeaseExpired",
        "LeaseExpired",
        "LeaseExpired",
        None,
    ]
    q.complete(b, "w4", 2, None, 20.0)
    assert q.next_deadline() == INF
    assert q.tick(1e9) == []


def test_heartbeat_extends_from_now_not_from_old_deadline() -> None:
    q = new_state(lease_timeout=4.0)
    job_id = q.submit("n", None, 0.0)[0].id
    q.assign("w", 1.0)
    for now in (2.0, 2.5, 4.75, 8.5):
        q.heartbeat(job_id, "w", None, now)
        assert q.get(job_id).lease_deadline == now + 4.0
        assert q.next_deadline() == now + 4.0
    assert q.tick(12.4) == []
    assert [j.id for j in q.tick(12.5)] == [job_id]


def test_heartbeat_reorders_lease_deadlines() -> None:
    q = new_state(lease_timeout=10.0)
    a = q.submit("n", None, 0.0)[0].id
    b = q.submit("n", None, 0.0)[0].id
    q.assign("w", 0.0)
    q.assign("w", 1.0)
    q.heartbeat(a, "w", 1, 2.0)
    assert q.next_deadline() == 11.0
    assert [j.id for j in q.tick(11.0)] == [b]
    assert q.next_deadline() == 12.0
    assert [j.id for j in q.tick(12.0)] == [a]
    assert q.next_deadline() == INF


def test_tick_returns_expired_leases_then_promoted_jobs() -> None:
    q = new_state(lease_timeout=10.0)
    late = q.submit("late", None, 0.0, delay=10.0)[0]
    early = q.submit("early", None, 0.0, delay=4.0)[0]
    running = q.submit("run", None, 0.0)[0]
    assert q.assign("w", 0.0) is running
    assert q.next_deadline() == 4.0
    assert q.tick(4.0) == [early]
    assert q.next_deadline() == 10.0
    assert q.tick(10.0) == [running, late]
    assert [running.state, late.state, early.state] == [JobState.PENDING] * 3
    # Line order is by submission: the delay did not cost the jobs their place.
    assert pending_order(q) == [late.id, early.id, running.id]
    assert q.next_deadline() == INF


# -- who may report on a job -------------------------------------------------------


def reporters(
    job_id: str, worker: Hashable, attempt: int | None, now: float
) -> list[Callable[[QueueState], object]]:
    return [
        lambda q: q.heartbeat(job_id, worker, attempt, now),
        lambda q: q.report_progress(job_id, worker, attempt, 0.5, {"n": 1}, now),
        lambda q: q.complete(job_id, worker, attempt, "r", now),
        lambda q: q.fail(job_id, worker, attempt, "E", "m", now),
    ]


def test_only_the_lease_holder_may_report() -> None:
    q = new_state(lease_timeout=10.0)
    a = q.submit("n", None, 0.0)[0].id
    b = q.submit("n", None, 0.0)[0].id
    c = q.submit("n", None, 0.0, delay=50.0)[0].id
    q.assign("w1", 0.0)
    ids = [a, b, c]
    before = snapshot(q, ids)
    for call in (
        *reporters(a, "w2", None, 1.0),  # not the holder
        *reporters(a, "w2", 1, 1.0),  # not the holder, right attempt
        *reporters(a, "w1", 2, 1.0),  # the holder, an attempt that never was
        *reporters(b, "w1", None, 1.0),  # pending, never assigned
        *reporters(c, "w1", None, 1.0),  # scheduled, never assigned
    ):
        not_leased(call, q)
        assert snapshot(q, ids) == before


def test_stale_attempt_is_refused() -> None:
    q = new_state(lease_timeout=10.0)
    a = q.submit("n", None, 0.0)[0].id
    q.assign("w1", 0.0)
    q.release("w1", 1.0)
    job = q.assign("w1", 2.0)  # the same worker, a new attempt
    assert job is not None
    assert job.attempt == 2
    before = snapshot(q, [a])
    for call in reporters(a, "w1", 1, 3.0):
        not_leased(call, q)
        assert snapshot(q, [a]) == before
    assert q.heartbeat(a, "w1", 2, 4.0).lease_deadline == 14.0
    assert q.heartbeat(a, "w1", None, 5.0).lease_deadline == 15.0
    assert q.complete(a, "w1", 2, "ok", 6.0) is job
    assert job.state is JobState.COMPLETED
    assert job.result == "ok"


def test_unknown_job() -> None:
    q = QueueState()
    q.submit("n", None, 0.0)
    q.assign("w", 0.0)
    before = snapshot(q, ["1"])
    for call in reporters("2", "w", None, 1.0) + reporters("", "w", 1, 1.0):
        unknown_job(call, q)
    unknown_job(lambda: q.get("nope"))
    unknown_job(lambda: q.cancel("nope", 1.0))
    unknown_job(lambda: q.revive("nope", 1.0))
    unknown_job(lambda: q.delete("nope", 1.0))
    assert snapshot(q, ["1"]) == before


@pytest.mark.parametrize("finish", ["complete", "fail", "cancel"])
def test_finished_job_is_final(finish: str) -> None:
    q = new_state(lease_timeout=10.0)
    a = q.submit("n", {"x": 1}, 0.0, max_attempts=1)[0].id
    b = q.submit("n", None, 0.0)[0].id
    q.assign("w1", 0.0)
    if finish == "complete":
        job = q.complete(a, "w1", 1, [1, 2], 1.0)
        assert (job.state, job.result, job.error) == (JobState.COMPLETED, [1, 2], None)
    elif finish == "fail":
        job = q.fail(a, "w1", 1, "KeyError", "'x'", 1.0)
        assert (job.state, job.result) == (JobState.FAILED, None)
        assert job.error == {"type": "KeyError", "message": "'x'"}
    else:
        job, holder = q.cancel(a, 1.0)
        assert holder == "w1"
        assert (job.state, job.result, job.error) == (JobState.CANCELLED, None, None)
    assert job.not_before is None
    assert q.held_by("w1") == []
    before = snapshot(q, [a, b])
    for worker in ("w1", "w2"):
        for attempt in (None, 1, 2):
            for call in reporters(a, worker, attempt, 2.0):
                not_leased(call, q)
                assert snapshot(q, [a, b]) == before
    # Never handed out again, whatever happens to the workers.
    assert q.release("w1", 3.0) == []
    assert q.tick(100.0) == []
    assert q.assign("w3", 100.0) is q.get(b)
    assert q.assign("w3", 100.0) is None
    state = {"complete": JobState.COMPLETED, "fail": JobState.FAILED}.get(
        finish, JobState.CANCELLED
    )
    assert q.get(a).state is state
    assert q.get(a).attempt == 1
    assert q.totals[state.value] == 1
    assert sum(q.totals[s] for s in ("completed", "failed", "cancelled")) == 1


def test_completing_after_lease_expiry_is_refused() -> None:
    q = new_state(lease_timeout=10.0)
    a = q.submit("n", None, 0.0)[0].id
    q.assign("w1", 0.0)
    q.heartbeat(a, "w1", 1, 5.0)
    assert q.tick(14.0) == []
    assert [j.id for j in q.tick(15.0)] == [a]
    # The lease is gone: waiting to be reassigned.
    before = snapshot(q, [a])
    for call in reporters(a, "w1", 1, 15.0) + reporters(a, "w1", None, 15.0):
        not_leased(call, q)
        assert snapshot(q, [a]) == before
    # Reassigned elsewhere: the old holder still may not report.
    job = q.assign("w2", 16.0)
    assert job is not None
    assert (job.id, job.attempt, job.worker) == (a, 2, "w2")
    for call in reporters(a, "w1", 1, 17.0) + reporters(a, "w1", None, 17.0):
        not_leased(call, q)
    # Reassigned to the same worker again: the old attempt may not report.
    q.release("w2", 18.0)
    job = q.assign("w1", 19.0)
    assert job is not None
    assert job.attempt == 3
    for call in reporters(a, "w1", 1, 20.0) + reporters(a, "w1", 2, 20.0):
        not_leased(call, q)
    assert q.complete(a, "w1", 3, "late but valid", 21.0).result == "late but valid"
    not_leased(lambda: q.complete(a, "w1", 3, "twice", 22.0))
    assert q.get(a).result == "late but valid"
    assert q.totals == totals(submitted=1, completed=1, reassigned=2, expired=1)


# -- retention ---------------------------------------------------------------------


def test_only_the_last_n_finished_jobs_are_remembered() -> None:
    q = new_state(finished_retention=3, max_attempts=1)
    ids = [q.submit("n", i, 0.0)[0].id for i in range(8)]
    for _ in range(7):
        q.assign("w", 0.0)
    # Finish out of submission order: retention follows finishing order.
    order = [ids[4], ids[1], ids[6], ids[0], ids[5], ids[2]]
    for i, job_id in enumerate(order):
        if i % 2:
            q.fail(job_id, "w", 1, "E", str(i), 1.0)
        else:
            q.complete(job_id, "w", 1, i, 1.0)
    # ids[3] still running, ids[7] pending, the last three finished remembered.
    for job_id in order[:3]:
        unknown_job(q.get, job_id)
        unknown_job(q.complete, job_id, "w", 1, None, 2.0)
    assert [q.get(i).state for i in order[3:]] == [
        JobState.FAILED,
        JobState.COMPLETED,
        JobState.FAILED,
    ]
    assert q.get(ids[3]).state is JobState.RUNNING
    assert q.get(ids[7]).state is JobState.PENDING
    assert len(q) == 5
    assert q.counts() == counts(pending=1, running=1, completed=1, failed=2)
    assert q.totals == totals(submitted=8, completed=3, failed=3)
    # A cancelled job counts as finished too.
    q.cancel(ids[7], 3.0)
    unknown_job(q.get, order[3])
    assert q.counts() == counts(running=1, completed=1, failed=1, cancelled=1)


def test_retention_never_drops_unfinished_jobs() -> None:
    q = new_state(finished_retention=0)
    a = q.submit("n", None, 0.0)[0].id
    b = q.submit("n", None, 0.0)[0].id
    c = q.submit("n", None, 0.0)[0].id
    d = q.submit("n", None, 0.0, delay=5.0)[0].id
    q.assign("w", 0.0)
    q.assign("w", 0.0)
    q.complete(a, "w", 1, "x", 1.0)
    unknown_job(lambda: q.get(a))
    q.fail(b, "w", 1, "E", "retried, not finished", 1.0)
    assert q.get(b).state is JobState.SCHEDULED
    assert q.get(c).state is JobState.PENDING
    assert q.get(d).state is JobState.SCHEDULED
    assert len(q) == 3
    assert q.counts() == counts(pending=1, scheduled=2)
    assert q.totals["completed"] == 1


def test_finished_jobs_past_the_byte_limit_are_forgotten_oldest_first() -> None:
    # Each completed job holds 54 bytes: a 22-byte payload and a 32-byte result.
    q = new_state(finished_retention=100, finished_retention_bytes=120, max_attempts=1)
    payload, result = stored_form("p" * 20), stored_form("r" * 30)
    ids = [q.submit("n", payload, 0.0)[0].id for _ in range(5)]
    for job_id in ids[:3]:
        q.assign("w", 1.0)
        q.complete(job_id, "w", 1, result, 1.0)
    # 3 x 54 = 162 > 120: the oldest is forgotten, two remembered (108).
    assert q.finished_bytes == 108
    with pytest.raises(RuleError, match="fewer if their payloads and results pass 120 bytes"):
        q.get(ids[0])
    assert [q.get(i).result for i in ids[1:3]] == [result, result]
    # A cancelled job holds its payload only: 108 + 22 = 130 > 120.
    q.cancel(ids[3], 2.0)
    unknown_job(q.get, ids[1])
    assert q.finished_bytes == 54 + 22
    # A failed job, revived, holds nothing as a finished job any more; deleted, neither.
    q.assign("w", 3.0)
    q.fail(ids[4], "w", 1, "E", "m", 3.0)
    assert q.finished_bytes == 54 + 22 + 22
    q.revive(ids[4], 4.0)
    assert (q.finished_bytes, q.payload_bytes) == (54 + 22, 22)
    q.delete(ids[3], 5.0)
    assert q.finished_bytes == 54
    assert q.counts() == counts(pending=1, completed=1)
    assert q.totals == totals(submitted=5, completed=3, failed=1, cancelled=1)


def test_finished_retention_bytes_none_means_no_limit() -> None:
    q = new_state(finished_retention=100, finished_retention_bytes=None)
    for _ in range(50):
        job = q.submit("n", stored_form("p" * 1000), 0.0)[0]
        q.assign("w", 0.0)
        q.complete(job.id, "w", 1, stored_form("r" * 1000), 0.0)
    assert (len(q), q.finished_bytes) == (50, 50 * 2004)
    with pytest.raises(RuleError, match=r"are kept\)$"):
        q.get("nope")


# -- time --------------------------------------------------------------------------


def test_time_going_backwards_is_refused() -> None:
    q = QueueState()
    a = q.submit("n", None, 5.0)[0].id
    q.submit("n", None, 5.0)
    q.assign("w", 5.0)
    before = snapshot(q, [a, "2"])
    for call in (
        lambda: q.submit("n", None, 4.0),
        lambda: q.assign("w", 4.999),
        lambda: q.heartbeat(a, "w", 1, 4.0),
        lambda: q.report_progress(a, "w", 1, 1.0, None, 4.0),
        lambda: q.complete(a, "w", 1, None, 4.0),
        lambda: q.fail(a, "w", 1, "E", "m", 4.0),
        lambda: q.cancel(a, 4.0),
        lambda: q.revive(a, 4.0),
        lambda: q.delete(a, 4.0),
        lambda: q.release("w", 4.0),
        lambda: q.tick(-INF),
    ):
        with pytest.raises(ValueError, match="backwards"):
            call()
        assert snapshot(q, [a, "2"]) == before
    # The same instant is fine.
    assert q.heartbeat(a, "w", 1, 5.0).lease_deadline == 35.0


# -- the transition table -----------------------------------------------------------

ACTIONS: dict[str, Callable[[str], Event]] = {
    "assign": lambda job_id: Assigned(job_id, "w9", "nine", 99.0),
    "cancel": lambda job_id: Cancelled(job_id),
    "promote": lambda job_id: Promoted(job_id),
    "complete": lambda job_id: Completed(job_id, "r"),
    "requeue": lambda job_id: AttemptFailed(job_id, "worker_lost", "WorkerLost", "m"),
    "retry": lambda job_id: AttemptFailed(job_id, "error", "E", "m", retry_at=50.0),
    "fail": lambda job_id: AttemptFailed(job_id, "error", "E", "m", final=True),
    "revive": lambda job_id: Revived(job_id),
    "release": lambda job_id: Released(job_id),
}


def queue_with_job_in(state: JobState) -> tuple[QueueState, list[Event], str, list[str]]:
    """A queue with a running job, a job X in ``state`` first in line, and a later job."""
    events: list[Event] = []
    q = new_state(lease_timeout=10.0, on_event=events.append)
    z = q.submit("z", None, 0.0)[0].id
    q.assign("w1", 0.0)
    max_attempts = 1 if state is JobState.FAILED else None
    x = q.submit("x", None, 0.0, max_attempts=max_attempts)[0].id
    y = q.submit("y", None, 0.0)[0].id
    if state not in (JobState.PENDING, JobState.CANCELLED):
        assert q.assign("w2", 1.0) is q.get(x)
    if state is JobState.COMPLETED:
        q.complete(x, "w2", 1, "done", 2.0)
    elif state in (JobState.FAILED, JobState.SCHEDULED):
        q.fail(x, "w2", 1, "E", "boom", 2.0)
    elif state is JobState.CANCELLED:
        # Cancelled while first in line: its heap entry is left behind.
        assert q.cancel(x, 2.0) == (q.get(x), None)
    assert q.get(x).state is state
    return q, events, x, [x, y, z]


def test_table_is_what_the_design_says() -> None:
    p, s, r = JobState.PENDING, JobState.SCHEDULED, JobState.RUNNING
    assert {
        (p, "assign"): r,
        (p, "cancel"): JobState.CANCELLED,
        (s, "promote"): p,
        (s, "cancel"): JobState.CANCELLED,
        (r, "complete"): JobState.COMPLETED,
        (r, "requeue"): p,
        (r, "release"): p,
        (r, "retry"): s,
        (r, "fail"): JobState.FAILED,
        (r, "cancel"): JobState.CANCELLED,
        (JobState.FAILED, "revive"): p,
    } == TRANSITIONS
    assert {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED} == FINISHED
    # Only a person's revive leaves a finished state; nothing leaves completed
    # or cancelled, and every state but those two has a way out.
    assert [key for key in TRANSITIONS if key[0] in FINISHED] == [(JobState.FAILED, "revive")]
    assert {state for state, _ in TRANSITIONS} == set(JobState) - {
        JobState.COMPLETED,
        JobState.CANCELLED,
    }
    assert {action for _, action in TRANSITIONS} == set(ACTIONS)


@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize("state", list(JobState), ids=lambda s: s.value)
def test_every_transition_not_in_the_table_is_refused(state: JobState, action: str) -> None:
    q, events, x, ids = queue_with_job_in(state)
    before = snapshot(q, ids)
    events_before = list(events)
    event = ACTIONS[action](x)
    if (state, action) in TRANSITIONS:
        q.apply(event)
        assert q.get(x).state is TRANSITIONS[state, action]
        assert events == [*events_before, event]
        assert q.counts()[state.value] == before["counts"][state.value] - 1
        assert sum(q.counts().values()) == len(q) == before["len"]
    else:
        with pytest.raises(InvalidTransition):
            q.apply(event)
        assert snapshot(q, ids) == before
        assert events == events_before


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_event_for_unknown_job_is_refused(action: str) -> None:
    q, _, _, ids = queue_with_job_in(JobState.RUNNING)
    before = snapshot(q, ids)
    with pytest.raises(InvalidTransition):
        q.apply(ACTIONS[action]("no-such-job"))
    assert snapshot(q, ids) == before


def test_assigning_a_job_out_of_line_is_refused() -> None:
    # Out of line means behind an earlier job of its own name: a job of
    # another name may go first, to a worker that runs only that name.
    q, _, x, ids = queue_with_job_in(JobState.PENDING)
    y = ids[1]
    later_y = q.submit("y", None, 0.0)[0].id
    ids.append(later_y)
    before = snapshot(q, ids)
    with pytest.raises(InvalidTransition):
        q.apply(Assigned(later_y, "w3", None, 50.0))
    assert snapshot(q, ids) == before
    assert pending_order(q) == [x, y, later_y]


def test_assigning_behind_a_cancelled_head_is_allowed() -> None:
    # X was cancelled while first in line; its stale entry does not hold Y back.
    q, events, x, ids = queue_with_job_in(JobState.CANCELLED)
    y = ids[1]
    q.apply(Assigned(y, "w3", None, 50.0))
    assert q.get(y).state is JobState.RUNNING
    assert q.get(x).state is JobState.CANCELLED
    assert events[-1] == Assigned(y, "w3", None, 50.0)


@pytest.mark.parametrize(
    "state",
    [JobState.PENDING, JobState.SCHEDULED, JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED],
    ids=lambda s: s.value,
)
@pytest.mark.parametrize("kind", [LeaseExtended, Progressed])
def test_lease_extension_of_a_job_not_running_is_refused(state: JobState, kind: type) -> None:
    q, _, x, ids = queue_with_job_in(state)
    before = snapshot(q, ids)
    event = LeaseExtended(x, 50.0) if kind is LeaseExtended else Progressed(x, 0.5, "n", 50.0)
    with pytest.raises(InvalidTransition):
        q.apply(event)
    assert snapshot(q, ids) == before


def test_lease_extension_of_unknown_job_is_refused() -> None:
    q, events, _, ids = queue_with_job_in(JobState.RUNNING)
    before = snapshot(q, ids)
    events_before = list(events)
    for event in (LeaseExtended("no-such-job", 50.0), Progressed("no-such-job", 1.0, None, 50.0)):
        with pytest.raises(InvalidTransition):
            q.apply(event)
    assert snapshot(q, ids) == before
    assert events == events_before


@pytest.mark.parametrize(
    "state", [JobState.PENDING, JobState.SCHEDULED, JobState.RUNNING], ids=lambda s: s.value
)
def test_forgetting_an_unfinished_job_is_refused(state: JobState) -> None:
    q, _, x, ids = queue_with_job_in(state)
    before = snapshot(q, ids)
    for job_id in (x, "no-such-job"):
        with pytest.raises(InvalidTransition):
            q.apply(Forgotten(job_id))
        assert snapshot(q, ids) == before


@pytest.mark.parametrize(
    "state", [JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED], ids=lambda s: s.value
)
def test_forgetting_a_finished_job(state: JobState) -> None:
    q, events, x, _ = queue_with_job_in(state)
    q.apply(Forgotten(x))
    unknown_job(q.get, x)
    assert events[-1] == Forgotten(x)
    assert q.counts()[state.value] == 0
    with pytest.raises(InvalidTransition):
        q.apply(Forgotten(x))


def test_submitting_an_existing_id_is_refused() -> None:
    q, _, x, ids = queue_with_job_in(JobState.COMPLETED)
    before = snapshot(q, ids)
    with pytest.raises(InvalidTransition):
        q.apply(Submitted(x, "again", None, 42))
    assert snapshot(q, ids) == before


# -- retries and backoff ----------------------------------------------------------------


def test_retry_backoff_exact_times_with_a_seeded_rng() -> None:
    events: list[Event] = []
    q = new_state(
        lease_timeout=1000.0,
        retry_delay=0.5,
        max_retry_delay=6.0,
        rng=random.Random(2024),
        on_event=events.append,
    )
    twin = random.Random(2024)
    job = submit(q, max_attempts=8)
    now = 0.0
    ceilings = []
    for attempt in range(1, 8):
        run(q, job, "w", now)
        assert job.attempt == attempt
        del events[:]
        q.fail(job.id, "w", attempt, "ValueError", f"try {attempt}", now)
        delay = expected_backoff(twin, 0.5, 6.0, attempt)
        ceiling = min(0.5 * 2 ** (attempt - 1), 6.0)
        ceilings.append(ceiling)
        assert ceiling / 2 <= delay <= ceiling
        assert events == [
            AttemptFailed(job.id, "error", "ValueError", f"try {attempt}", now + delay, at=now)
        ]
        assert job_info(job).state == "scheduled"
        assert job.not_before == now + delay
        assert job.error == {"type": "ValueError", "message": f"try {attempt}"}
        assert job.attempts_left == 8 - attempt
        # Not before its time: not promoted, not assignable.
        assert q.next_deadline() == now + delay
        assert q.tick(math.nextafter(now + delay, -INF)) == []
        assert q.assign("w", math.nextafter(now + delay, -INF)) is None
        now += delay
        assert q.tick(now) == [job]
        assert events[-1] == Promoted(job.id)
        promoted = q.get(job.id)  # (a fresh reference: mypy narrowed `job`'s fields)
        assert (promoted.state, promoted.not_before) == (JobState.PENDING, None)
    # Doubling from retry_delay, then held at the cap.
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 6.0, 6.0, 6.0]
    assert q.totals["retried"] == 7
    # The last attempt fails for good, and draws no jitter.
    run(q, job, "w", now)
    del events[:]
    q.fail(job.id, "w", 8, "ValueError", "last", now)
    assert events == [
        AttemptFailed(job.id, "error", "ValueError", "last", None, final=True, at=now)
    ]
    assert job.state is JobState.FAILED
    assert job.not_before is None
    assert q.rng.random() == twin.random()
    assert q.totals["failed"] == 1
    assert q.next_deadline() == INF


def test_jitter_spreads_jobs_that_fail_together() -> None:
    q = new_state(retry_delay=8.0, rng=random.Random(7))
    twin = random.Random(7)
    jobs = [submit(q) for _ in range(20)]
    for job in jobs:
        run(q, job, "w", 0.0)
    for job in jobs:
        q.fail(job.id, "w", 1, "E", "m", 0.0)
    retry_at = [job.not_before for job in jobs]
    assert retry_at == [expected_backoff(twin, 8.0, 300.0, 1) for _ in jobs]
    assert all(t is not None and 4.0 <= t <= 8.0 for t in retry_at)
    assert len(set(retry_at)) == 20
    # Promoted in the order they come due.
    due_order = sorted(jobs, key=lambda j: (j.not_before, j.seq))
    assert q.tick(8.0) == due_order
    # Back in line in submission order, whatever order they came due in.
    assert drain(q, [DEFAULT_QUEUE]) == ids(jobs)


def test_a_lost_lease_spends_an_attempt_and_makes_the_next_backoff_longer() -> None:
    q = new_state(lease_timeout=5.0, retry_delay=2.0, rng=random.Random(3))
    twin = random.Random(3)
    job = submit(q)
    run(q, job, "w1", 0.0)
    assert q.release("w1", 1.0) == [job]
    assert job.state is JobState.PENDING  # a lost worker: back in line at once
    run(q, job, "w2", 1.0)
    assert q.tick(6.0) == [job]
    assert job.state is JobState.PENDING  # an expired lease: likewise
    run(q, job, "w3", 6.0)
    q.fail(job.id, "w3", 3, "E", "m", 7.0)
    # Third spent attempt: the ceiling is retry_delay * 2**2.
    assert job.not_before == 7.0 + expected_backoff(twin, 2.0, 300.0, 3)
    assert q.totals == {
        "submitted": 1,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "retried": 1,
        "reassigned": 2,
        "expired": 1,
    }


def test_cap_below_the_first_delay_caps_every_delay() -> None:
    q = new_state(retry_delay=10.0, max_retry_delay=3.0, rng=random.Random(5))
    twin = random.Random(5)
    job = submit(q)
    now = 0.0
    for attempt in range(1, 5):
        run(q, job, "w", now)
        q.fail(job.id, "w", attempt, "E", "m", now)
        delay = expected_backoff(twin, 10.0, 3.0, attempt)
        assert 1.5 <= delay <= 3.0
        assert job.not_before == now + delay
        now += delay
        q.tick(now)


def test_zero_retry_delay_is_refused_by_the_rules() -> None:
    # The state once took a zero backoff (retry at the next tick); the rules
    # now want a positive one, as the command line always did.
    for name in ("retry_delay", "max_retry_delay"):
        with pytest.raises(ValueError, match=name):
            new_state(**{name: 0.0})


def test_max_attempts_is_bounded() -> None:
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="max_attempts"):
            new_state(max_attempts=bad)


def test_backoff_stays_capped_through_the_largest_budget() -> None:
    # 2 ** (retries - 1) as a float overflows at 1025 retries; the largest
    # budget (1000) must still back off within the cap on every retry.
    q = new_state(max_attempts=1000, lease_timeout=1e9, rng=random.Random(0))
    job = submit(q)
    now = 0.0
    for attempt in range(1, 1000):
        run(q, job, "w", now)
        q.fail(job.id, "w", attempt, "E", "m", now)
        assert job.not_before is not None
        assert job.not_before - now <= q.rules.max_retry_delay
        now = job.not_before
        q.tick(now)
    assert job.state is JobState.PENDING


# -- the attempt budget -----------------------------------------------------------------


LOSSES: dict[str, tuple[str, str]] = {
    "error": ("ValueError", "bad input"),
    "worker_lost": ("WorkerLost", "the worker's connection closed"),
    "lease_expired": ("LeaseExpired", "no heartbeat within the lease"),
}


def lose(q: QueueState, job: JobRecord, reason: str, now: float) -> list[JobRecord]:
    """End ``job``'s current run by ``reason`` at ``now``; what the command returned."""
    if reason == "error":
        q.fail(job.id, "w", job.attempt, *LOSSES[reason], now)
        return [job]
    if reason == "worker_lost":
        return q.release("w", now)
    return q.tick(now)


@pytest.mark.parametrize("reason", sorted(LOSSES))
@pytest.mark.parametrize("max_attempts", [1, 3])
def test_running_out_of_attempts_fails_the_job(reason: str, max_attempts: int) -> None:
    events: list[Event] = []
    q = new_state(lease_timeout=5.0, retry_delay=1.0, on_event=events.append)
    job = submit(q, max_attempts=max_attempts)
    bystander = submit(q)
    now = 0.0
    for attempt in range(1, max_attempts + 1):
        if job.state is JobState.SCHEDULED:
            assert job.not_before is not None
            now = job.not_before
            assert q.tick(now) == [job]
        run(q, job, "w", now)
        now = job.lease_deadline if reason == "lease_expired" else now + 1.0
        changed = lose(q, job, reason, now)
        assert changed == [job]
        failed = events[-1]
        assert isinstance(failed, AttemptFailed)
        assert (failed.job_id, failed.reason) == (job.id, reason)
        assert failed.error_type == LOSSES[reason][0]
        assert job.error is not None
        assert job.error["type"] == LOSSES[reason][0]
        if attempt < max_attempts:
            assert not failed.final
            assert (failed.retry_at is None) == (reason != "error")
            expected = JobState.SCHEDULED if reason == "error" else JobState.PENDING
            assert job.state is expected
        else:
            assert failed.final
            assert failed.retry_at is None
    assert job.state is JobState.FAILED
    assert job.attempt == max_attempts
    assert job.attempts_left == 0
    assert job.error == {"type": LOSSES[reason][0], "message": LOSSES[reason][1]}
    assert job_info(job).state == "failed"
    assert job_info(job).finished
    # A dead letter: listed, never handed out again.
    assert ids(q.list_jobs(JobState.FAILED, None, 10)[0]) == [job.id]
    assert q.assign("w2", now) is bystander
    assert q.assign("w2", now) is None
    lost = max_attempts if reason != "error" else 0
    assert q.totals == {
        "submitted": 2,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
        "retried": max_attempts - 1 if reason == "error" else 0,
        "reassigned": lost,
        "expired": lost if reason == "lease_expired" else 0,
    }


def test_every_kind_of_loss_spends_the_same_budget() -> None:
    q = new_state(lease_timeout=5.0, retry_delay=1.0, rng=random.Random(0))
    job = submit(q, max_attempts=3)
    run(q, job, "w", 0.0)
    q.fail(job.id, "w", 1, "E", "m", 0.0)
    retry_at = job.not_before
    assert retry_at is not None
    assert q.tick(retry_at) == [job]
    run(q, job, "w", retry_at)
    assert q.release("w", 2.0) == [job]
    run(q, job, "w", 2.0)
    assert q.tick(7.0) == [job]
    assert job.state is JobState.FAILED
    assert job.error == {"type": "LeaseExpired", "message": LOSSES["lease_expired"][1]}


def test_default_budget_comes_from_the_queue() -> None:
    q = new_state(max_attempts=2)
    default = submit(q)
    own = submit(q, max_attempts=4)
    assert (default.max_attempts, own.max_attempts) == (2, 4)
    for _ in range(2):
        run(q, default, "a", 0.0)
        run(q, own, "b", 0.0)
        q.release("a", 0.0)
        q.release("b", 0.0)
    assert default.state is JobState.FAILED
    assert own.state is JobState.PENDING
    assert own.attempts_left == 2


# -- reviving a dead letter ---------------------------------------------------------------


def test_revive_gives_a_fresh_budget() -> None:
    events: list[Event] = []
    q = new_state(retry_delay=1.0, rng=random.Random(9), on_event=events.append)
    twin = random.Random(9)
    job = submit(q, max_attempts=2)
    later = submit(q)
    run(q, job, "w", 0.0)
    q.release("w", 0.0)
    run(q, job, "w", 0.0)
    q.release("w", 0.0)
    assert job.state is JobState.FAILED
    assert q.counts()["failed"] == 1
    del events[:]
    assert q.revive(job.id, 1.0) is job
    assert events == [Revived(job.id)]
    assert (job.state, job.attempt, job.attempt_base, job.attempts_left) == (
        JobState.PENDING,
        2,
        2,
        2,
    )
    # Back in its old place in line, ahead of a job submitted after it.
    assert drain(q, [DEFAULT_QUEUE]) == [job.id, later.id]
    assert ids(q.list_jobs(JobState.FAILED, None, 10)[0]) == []
    assert q.counts()["failed"] == 0
    # The attempt number keeps counting; the backoff starts over.
    run(q, job, "w", 1.0)
    assert job.attempt == 3
    q.fail(job.id, "w", 3, "E", "m", 1.0)
    assert job_info(job).state == "scheduled"
    retry_at = job.not_before
    assert retry_at == 1.0 + expected_backoff(twin, 1.0, 300.0, 1)
    q.tick(retry_at)
    run(q, job, "w", retry_at)
    q.fail(job.id, "w", 4, "E", "m", retry_at)
    assert job.state is JobState.FAILED
    assert q.totals["failed"] == 2
    # And it can be revived again.
    q.revive(job.id, 10.0)
    assert (job.state, job.attempts_left) == (JobState.PENDING, 2)


# -- delays ----------------------------------------------------------------------------------


def test_delayed_job_runs_exactly_at_its_time() -> None:
    events: list[Event] = []
    q = new_state(on_event=events.append)
    job = submit(q, 10.0, delay=5.0)
    assert events == [Submitted(job.id, "n", None, 1, not_before=15.0, at=10.0)]
    assert (job.state, job.not_before) == (JobState.SCHEDULED, 15.0)
    assert q.counts()["scheduled"] == 1
    assert q.queue_counts() == {"default": {"pending": 0, "scheduled": 1, "running": 0}}
    assert not q.pending_in([DEFAULT_QUEUE])
    assert q.next_deadline() == 15.0
    for now in (10.0, 14.0, math.nextafter(15.0, 0.0)):
        assert q.tick(now) == []
        assert q.assign("w", now) is None
    assert q.tick(15.0) == [job]
    assert events[-1] == Promoted(job.id)
    assert (job.state, job.not_before) == (JobState.PENDING, None)
    assert q.pending_in([DEFAULT_QUEUE])
    assert q.next_deadline() == INF
    run(q, job, "w", 15.0)
    assert job.attempt == 1


def test_assign_does_not_promote_by_itself() -> None:
    # Promotion is tick's job; the server ticks at next_deadline.
    q = QueueState()
    job = submit(q, delay=1.0)
    assert q.assign("w", 2.0) is None
    assert q.next_deadline() == 1.0
    assert q.tick(2.0) == [job]
    run(q, job, "w", 2.0)


def test_next_deadline_is_the_earlier_of_leases_and_scheduled_jobs() -> None:
    q = new_state(lease_timeout=10.0)
    submit(q, 0.0)
    late = submit(q, 0.0, delay=20.0)
    assert q.assign("w", 0.0) is not None
    assert q.next_deadline() == 10.0
    assert len(q.tick(10.0)) == 1
    run(q, q.get("1"), "w", 10.0)
    assert q.next_deadline() == 20.0
    # The lease and the delay end together: the lost lease first, then the promotion.
    assert q.tick(20.0) == [q.get("1"), late]


def test_a_zero_or_negative_delay_means_at_once() -> None:
    q = QueueState()
    assert submit(q, delay=0.0).state is JobState.PENDING
    assert submit(q, delay=-5.0).state is JobState.PENDING


# -- priorities and queues ---------------------------------------------------------------


def test_higher_priority_first_then_first_come_first_served() -> None:
    q = QueueState()
    prios = [0, 5, -1, 5, 0, 10, -1]
    jobs = [submit(q, priority=p) for p in prios]
    expected = [jobs[5], jobs[1], jobs[3], jobs[0], jobs[4], jobs[2], jobs[6]]
    assert drain(q, [DEFAULT_QUEUE]) == ids(expected)
    got = [q.assign("w", 1.0) for _ in jobs]
    assert got == expected
    # A requeued job keeps its priority and its place.
    q.release("w", 2.0)
    assert drain(q, [DEFAULT_QUEUE]) == ids(expected)
    # A later, higher-priority submission jumps the line.
    urgent = submit(q, 3.0, priority=6)
    assert drain(q, [DEFAULT_QUEUE])[:3] == [jobs[5].id, urgent.id, jobs[1].id]


def test_a_retried_job_keeps_its_priority() -> None:
    q = new_state(retry_delay=1.0, rng=random.Random(0))
    high = submit(q, priority=3)
    low = [submit(q) for _ in range(3)]
    run(q, high, "w", 0.0)
    q.fail(high.id, "w", 1, "E", "m", 0.0)
    assert high.not_before is not None
    q.tick(high.not_before)
    assert drain(q, [DEFAULT_QUEUE]) == [high.id, *ids(low)]


def test_queues_are_separate_lines() -> None:
    q = QueueState()
    a1 = submit(q, queue="a")
    b1 = submit(q, queue="b", priority=1)
    d1 = submit(q)
    a2 = submit(q, queue="a", priority=2)
    b2 = submit(q, queue="b")
    assert q.queue_counts() == {
        "a": {"pending": 2, "scheduled": 0, "running": 0},
        "b": {"pending": 2, "scheduled": 0, "running": 0},
        "default": {"pending": 1, "scheduled": 0, "running": 0},
    }
    assert q.pending_in(["a"])
    assert q.pending_in(["nowhere", "b"])
    assert not q.pending_in(["nowhere"])
    assert not q.pending_in([])
    # A worker only ever gets jobs from the queues it names.
    assert q.assign("w", 0.0, queues=["nowhere"]) is None
    assert q.assign("w", 0.0, queues=[]) is None
    assert drain(q, ["a"]) == [a2.id, a1.id]
    assert drain(q, ["b"]) == [b1.id, b2.id]
    assert drain(q, [DEFAULT_QUEUE]) == [d1.id]
    # Across queues: the best job of all of them (priority, then seq), in
    # whatever order the queues are named.
    for queues in (["a", "b", "default"], ["default", "b", "a"]):
        assert drain(q, queues) == [a2.id, b1.id, a1.id, d1.id, b2.id]
    assert q.assign("w", 0.0) is d1  # the default queue by default
    assert q.assign("w", 0.0, queues=["b", "a"]) is a2
    assert q.assign("w", 0.0, queues=["b", "b"]) is b1
    assert q.queue_counts() == {
        "a": {"pending": 1, "scheduled": 0, "running": 1},
        "b": {"pending": 1, "scheduled": 0, "running": 1},
        "default": {"pending": 0, "scheduled": 0, "running": 1},
    }
    # A lost job goes back to its own queue.
    q.release("w", 1.0)
    assert drain(q, ["a"]) == [a2.id, a1.id]
    assert drain(q, ["b"]) == [b1.id, b2.id]
    assert [j.queue for j in (a1, a2, b1, b2, d1)] == ["a", "a", "b", "b", "default"]


def test_queue_counts_drop_queues_no_longer_in_use() -> None:
    q = QueueState()
    job = submit(q, queue="tmp", delay=1.0)
    assert q.queue_counts() == {"tmp": {"pending": 0, "scheduled": 1, "running": 0}}
    q.tick(1.0)
    assert q.queue_counts() == {"tmp": {"pending": 1, "scheduled": 0, "running": 0}}
    run(q, job, "w", 1.0, queues=["tmp"])
    assert q.queue_counts() == {"tmp": {"pending": 0, "scheduled": 0, "running": 1}}
    q.complete(job.id, "w", 1, None, 2.0)
    assert q.queue_counts() == {}


# -- cancellation ------------------------------------------------------------------------


def test_cancel_a_pending_job() -> None:
    events: list[Event] = []
    q = new_state(on_event=events.append)
    job = submit(q)
    nxt = submit(q)
    del events[:]
    assert q.cancel(job.id, 1.0) == (job, None)
    assert events == [Cancelled(job.id, at=1.0)]
    assert job.state is JobState.CANCELLED
    assert job_info(job).finished
    assert q.counts()["cancelled"] == 1
    assert q.pending_count == 1
    assert q.totals["cancelled"] == 1
    # Its stale heap entry at the head of the line is skipped.
    assert q.assign("w", 1.0) is nxt
    assert q.assign("w", 1.0) is None
    assert job.state is JobState.CANCELLED
    assert job.attempt == 0


def test_cancel_the_only_pending_job() -> None:
    q = QueueState()
    job = submit(q, queue="solo")
    q.cancel(job.id, 0.0)
    assert not q.pending_in(["solo"])
    assert q.queue_counts() == {}
    assert q.assign("w", 0.0, queues=["solo"]) is None
    assert q.next_deadline() == INF


def test_a_cancelled_head_does_not_hide_another_queues_job() -> None:
    q = QueueState()
    high = submit(q, queue="a", priority=9)
    low = submit(q, queue="b")
    q.cancel(high.id, 0.0)
    assert q.assign("w", 0.0, queues=["a", "b"]) is low


def test_cancel_a_scheduled_job() -> None:
    q = QueueState()
    job = submit(q, delay=5.0)
    other = submit(q, delay=8.0)
    assert q.next_deadline() == 5.0
    assert q.cancel(job.id, 1.0) == (job, None)
    assert (job.state, job.not_before) == (JobState.CANCELLED, None)
    # Its time comes and goes: it is not promoted, and no longer a deadline.
    assert q.next_deadline() == 8.0
    assert q.tick(5.0) == []
    assert q.assign("w", 5.0) is None
    assert q.tick(8.0) == [other]
    assert job.state is JobState.CANCELLED


def test_cancel_a_retrying_job() -> None:
    q = new_state(rng=random.Random(0))
    job = submit(q)
    run(q, job, "w", 0.0)
    q.fail(job.id, "w", 1, "E", "m", 0.0)
    assert job.state is JobState.SCHEDULED
    assert q.cancel(job.id, 0.1) == (job, None)
    assert q.tick(1e6) == []
    assert job.error == {"type": "E", "message": "m"}  # the last error is kept


def test_cancel_a_running_job() -> None:
    q = new_state(lease_timeout=10.0)
    job = submit(q)
    other = submit(q)
    worker = ("conn", 7)
    run(q, job, worker, 0.0)
    run(q, other, worker, 0.0)
    assert q.cancel(job.id, 1.0) == (job, worker)
    assert job.state is JobState.CANCELLED
    assert job.worker == worker  # the last holder, as for any finished job
    assert q.held_by(worker) == [other.id]
    assert q.running_count == 1
    # Late reports from the old holder are refused and change nothing.
    for call in (
        lambda: q.complete(job.id, worker, 1, "late", 2.0),
        lambda: q.heartbeat(job.id, worker, 1, 2.0),
        lambda: q.report_progress(job.id, worker, None, 0.9, None, 2.0),
        lambda: q.fail(job.id, worker, None, "E", "m", 2.0),
    ):
        error = refused("not_leased", call)
        assert "cancelled" in error.message
    assert (job.state, job.result, job.error) == (JobState.CANCELLED, None, None)
    # Neither its lease running out nor its worker going away revives it.
    assert q.next_deadline() == 10.0  # the other job's lease
    assert q.tick(10.0) == [other]
    assert q.release(worker, 11.0) == []
    assert job.state is JobState.CANCELLED
    assert q.assign("w2", 11.0) is other
    assert q.assign("w2", 11.0) is None
    assert q.totals["cancelled"] == 1
    assert q.totals["reassigned"] == 1


def test_cancel_twice_is_a_no_op() -> None:
    events: list[Event] = []
    q = new_state(on_event=events.append)
    job = submit(q)
    run(q, job, "w", 0.0)
    assert q.cancel(job.id, 0.0) == (job, "w")
    del events[:]
    assert q.cancel(job.id, 1.0) == (job, None)
    assert events == []
    assert q.totals["cancelled"] == 1


@pytest.mark.parametrize("finish", ["complete", "fail"])
def test_cancel_a_finished_job_is_refused(finish: str) -> None:
    q = QueueState()
    job = submit(q, max_attempts=1)
    run(q, job, "w", 0.0)
    if finish == "complete":
        q.complete(job.id, "w", 1, "r", 0.0)
    else:
        q.fail(job.id, "w", 1, "E", "m", 0.0)
    state = job.state
    error = refused("already_finished", q.cancel, job.id, 1.0)
    assert state.value in error.message
    assert job.state is state
    assert q.totals["cancelled"] == 0


def test_cancelled_jobs_are_subject_to_retention() -> None:
    events: list[Event] = []
    q = new_state(finished_retention=0, on_event=events.append)
    job = submit(q)
    q.cancel(job.id, 0.0)
    assert events[-2:] == [Cancelled(job.id, at=0.0), Forgotten(job.id)]
    refused("unknown_job", q.get, job.id)
    assert q.assign("w", 0.0) is None


# -- idempotency keys ----------------------------------------------------------------------


def test_a_key_returns_the_same_job() -> None:
    events: list[Event] = []
    q = new_state(on_event=events.append)
    job, new = q.submit("n", {"v": 1}, 0.0, key="order-17")
    assert new
    assert job.key == "order-17"
    del events[:]
    # Different options, even a different name: the first job wins.
    again, new = q.submit("other", {"v": 2}, 1.0, key="order-17", priority=5, queue="x")
    assert (again, new) == (job, False)
    assert (job.name, job.payload, job.priority, job.queue) == ("n", {"v": 1}, 0, "default")
    assert events == []
    assert q.totals["submitted"] == 1
    assert len(q) == 1
    # Other keys, and no key, add jobs.
    assert q.submit("n", None, 1.0, key="order-18")[1]
    assert q.submit("n", None, 1.0)[1]
    assert q.submit("n", None, 1.0)[1]


@pytest.mark.parametrize("state", ["running", "completed", "failed", "cancelled"])
def test_a_key_is_remembered_while_its_job_is(state: str) -> None:
    q = QueueState()
    job, _ = q.submit("n", None, 0.0, key="k", max_attempts=1)
    if state != "cancelled":
        run(q, job, "w", 0.0)
    if state == "completed":
        q.complete(job.id, "w", 1, None, 0.0)
    elif state == "failed":
        q.fail(job.id, "w", 1, "E", "m", 0.0)
    elif state == "cancelled":
        q.cancel(job.id, 0.0)
    assert job.state.value == state
    assert q.submit("n", None, 1.0, key="k") == (job, False)


def test_a_key_is_forgotten_with_its_job() -> None:
    q = new_state(finished_retention=1)
    first, _ = q.submit("n", None, 0.0, key="k")
    q.cancel(first.id, 0.0)
    refused("unknown_job", q.delete, "nope", 0.0)
    q.delete(first.id, 0.0)
    second, new = q.submit("n", None, 1.0, key="k")
    assert new
    assert second.id != first.id
    # Forgotten by retention: the key goes too.
    q.cancel(second.id, 1.0)
    assert q.submit("n", None, 1.0, key="k") == (second, False)
    q.cancel(submit(q, 1.0).id, 1.0)  # pushes `second` out
    refused("unknown_job", q.get, second.id)
    third, new = q.submit("n", None, 2.0, key="k")
    assert new
    assert third.id not in (first.id, second.id)


def test_a_replayed_journal_remembers_keys() -> None:
    events: list[Event] = []
    q = new_state(on_event=events.append)
    job, _ = q.submit("n", None, 0.0, key="k")
    replayed = QueueState()
    for event in events:
        replayed.apply(event)
    assert replayed.submit("n", None, 1.0, key="k")[0].id == job.id
    assert not replayed.submit("n", None, 1.0, key="k")[1]


# -- delete and revive errors ----------------------------------------------------------------


def job_in(q: QueueState, state: JobState) -> JobRecord:
    """A new job brought to ``state``, all at time 0."""
    delay = 100.0 if state is JobState.SCHEDULED else 0.0
    job = submit(q, queue=state.value, delay=delay, max_attempts=1)
    if state in (JobState.RUNNING, JobState.COMPLETED, JobState.FAILED):
        run(q, job, "w", 0.0, queues=[state.value])
    if state is JobState.COMPLETED:
        q.complete(job.id, "w", 1, "r", 0.0)
    elif state is JobState.FAILED:
        q.fail(job.id, "w", 1, "E", "m", 0.0)
    elif state is JobState.CANCELLED:
        q.cancel(job.id, 0.0)
    assert job.state is state
    return job


@pytest.mark.parametrize("state", list(JobState), ids=lambda s: s.value)
def test_delete(state: JobState) -> None:
    events: list[Event] = []
    q = new_state(on_event=events.append)
    job = job_in(q, state)
    before = attrs.asdict(job, recurse=False)
    del events[:]
    if state.value in ("pending", "scheduled", "running"):
        error = refused("not_finished", q.delete, job.id, 1.0)
        assert state.value in error.message
        assert attrs.asdict(job, recurse=False) == before
        assert q.get(job.id) is job
        assert events == []
    else:
        q.delete(job.id, 1.0)
        assert events == [Forgotten(job.id)]
        refused("unknown_job", q.get, job.id)
        refused("unknown_job", q.delete, job.id, 1.0)
        assert len(q) == 0
        assert q.counts()[state.value] == 0


@pytest.mark.parametrize("state", list(JobState), ids=lambda s: s.value)
def test_revive_only_failed_jobs(state: JobState) -> None:
    q = QueueState()
    job = job_in(q, state)
    if state is JobState.FAILED:
        assert q.revive(job.id, 1.0) is job
        assert job.state is JobState.PENDING
        refused("not_failed", q.revive, job.id, 1.0)
    else:
        before = attrs.asdict(job, recurse=False)
        error = refused("not_failed", q.revive, job.id, 1.0)
        assert state.value in error.message
        assert attrs.asdict(job, recurse=False) == before
    refused("unknown_job", q.revive, "nope", 1.0)


def test_a_deleted_failed_job_cannot_be_revived() -> None:
    q = QueueState()
    job = job_in(q, JobState.FAILED)
    q.delete(job.id, 1.0)
    refused("unknown_job", q.revive, job.id, 1.0)


# -- progress ------------------------------------------------------------------------------


def test_progress_is_stored_and_extends_the_lease() -> None:
    events: list[Event] = []
    q = new_state(lease_timeout=10.0, on_event=events.append)
    job = submit(q)
    other = submit(q)
    run(q, job, "w", 0.0)
    run(q, other, "w", 1.0)
    assert (job.progress, job.note) == (None, None)
    assert q.report_progress(job.id, "w", 1, 0.25, {"stage": "download"}, 4.0) is job
    assert events[-1] == Progressed(job.id, 0.25, {"stage": "download"}, 14.0)
    assert (job.progress, job.note, job.lease_deadline) == (0.25, {"stage": "download"}, 14.0)
    info = job_info(job)
    assert (info.progress, info.note) == (0.25, {"stage": "download"})
    # The extended lease now ends after the other job's.
    assert q.next_deadline() == 11.0
    assert q.tick(11.0) == [other]
    assert q.tick(13.9) == []
    # A note alone, or a number alone, replaces both.
    q.report_progress(job.id, "w", None, None, "almost", 13.9)
    assert (job.progress, job.note, job.lease_deadline) == (None, "almost", 23.9)
    q.report_progress(job.id, "w", None, 7.0, None, 14.0)
    assert (job.progress, job.note) == (7.0, None)


def test_progress_survives_a_lost_lease_until_the_next_run() -> None:
    q = new_state(lease_timeout=10.0)
    job = submit(q)
    run(q, job, "w1", 0.0)
    q.report_progress(job.id, "w1", 1, 0.5, "half", 1.0)
    q.release("w1", 2.0)
    assert (job.state, job.progress, job.note) == (JobState.PENDING, 0.5, "half")
    refused("not_leased", q.report_progress, job.id, "w1", 1, 0.6, None, 2.0)
    run(q, job, "w2", 3.0)
    assert (job.attempt, job.progress, job.note) == (2, None, None)
    q.report_progress(job.id, "w2", 2, 0.1, None, 4.0)
    q.complete(job.id, "w2", 2, "r", 5.0)
    assert (job.progress, job.note) == (0.1, None)  # the finished run's last report


def test_progress_from_a_stale_attempt_is_refused() -> None:
    q = QueueState()
    job = submit(q)
    run(q, job, "w", 0.0)
    q.release("w", 0.0)
    run(q, job, "w", 0.0)
    refused("not_leased", q.report_progress, job.id, "w", 1, 0.5, None, 1.0)
    refused("not_leased", q.report_progress, job.id, "x", 2, 0.5, None, 1.0)
    refused("unknown_job", q.report_progress, "nope", "w", 2, 0.5, None, 1.0)
    assert (job.progress, job.note) == (None, None)


# -- listing ------------------------------------------------------------------------------


def test_list_jobs_in_order_with_limit() -> None:
    q = QueueState()
    jobs = [submit(q, queue="a" if i % 2 else "b") for i in range(6)]
    # Pending in the order they will run: here, submission order.
    assert q.list_jobs(JobState.PENDING, None, 100) == (jobs, False)
    # A job that leaves and comes back is back in its place in line.
    run(q, jobs[0], "w", 0.0, queues=["b"])
    q.release("w", 1.0)
    assert ids(q.list_jobs(JobState.PENDING, None, 100)[0]) == ids(jobs)
    urgent = submit(q, 1.0, queue="a", priority=5)
    assert q.list_jobs(JobState.PENDING, None, 2) == ([urgent, jobs[0]], True)
    q.cancel(urgent.id, 1.0)
    # Limit and truncation.
    assert q.list_jobs(JobState.PENDING, None, 6) == (jobs, False)
    assert q.list_jobs(JobState.PENDING, None, 5) == (jobs[:5], True)
    assert q.list_jobs(JobState.PENDING, None, 1) == ([jobs[0]], True)
    # The queue filter counts only that queue's jobs toward the limit.
    assert q.list_jobs(JobState.PENDING, "a", 100) == ([jobs[1], jobs[3], jobs[5]], False)
    assert q.list_jobs(JobState.PENDING, "a", 3) == ([jobs[1], jobs[3], jobs[5]], False)
    assert q.list_jobs(JobState.PENDING, "a", 2) == ([jobs[1], jobs[3]], True)
    assert q.list_jobs(JobState.PENDING, "b", 2) == ([jobs[0], jobs[2]], True)
    assert q.list_jobs(JobState.PENDING, "nowhere", 5) == ([], False)
    assert q.list_jobs(JobState.RUNNING, None, 5) == ([], False)
    # Finished jobs in finishing order.
    for job in (jobs[3], jobs[1]):
        q.cancel(job.id, 2.0)
    assert q.list_jobs(JobState.CANCELLED, None, 5) == ([urgent, jobs[3], jobs[1]], False)
    assert q.list_jobs(JobState.CANCELLED, "b", 5) == ([], False)


def test_list_jobs_covers_every_state() -> None:
    q = QueueState()
    by_state = {state: job_in(q, state) for state in JobState}
    for state, job in by_state.items():
        assert q.list_jobs(state, None, 10) == ([job], False)
    assert q.counts() == dict.fromkeys(STATES, 1)


# -- counts stay consistent ---------------------------------------------------------------


def random_lifecycle(
    q: QueueState,
    rng: random.Random,
    steps: int,
    check: Callable[[QueueState, list[str]], None] | None = None,
) -> list[str]:
    """Random commands of every kind, each either applied or refused."""
    queues = ["a", "b", DEFAULT_QUEUE]
    issued: list[str] = []
    refusals: set[str] = set()
    now = 0.0
    for _ in range(steps):
        now += rng.choice([0.0, 0.25, 1.0, 4.0])
        action = rng.choices(
            ["submit", "assign", "report", "release", "tick", "cancel", "revive", "delete"],
            weights=[5, 6, 8, 1, 2, 2, 2, 1],
        )[0]
        try:
            if action == "submit":
                job, new = q.submit(
                    "n",
                    len(issued),
                    now,
                    queue=rng.choice(queues),
                    priority=rng.choice([-1, 0, 0, 2]),
                    max_attempts=rng.choice([None, 1, 2, 3]),
                    delay=rng.choice([0.0, 0.0, 1.5, 6.0]),
                    key=rng.choice([None, None, "x", "y"]),
                )
                if new:
                    issued.append(job.id)
            elif action == "assign":
                served = rng.sample(queues, rng.randint(1, 3))
                q.assign(rng.choice(["w1", "w2"]), now, queues=served)
            elif action == "release":
                q.release(rng.choice(["w1", "w2"]), now)
            elif action == "tick":
                q.tick(now)
            elif issued and action in ("cancel", "revive", "delete"):
                # Mostly a job the action suits, sometimes any job.
                want = {
                    "cancel": rng.choice([JobState.PENDING, JobState.SCHEDULED, JobState.RUNNING]),
                    "revive": JobState.FAILED,
                    "delete": rng.choice([JobState.COMPLETED, JobState.CANCELLED]),
                }[action]
                suited = ids(q.list_jobs(want, None, 50)[0])
                pool = suited if suited and rng.random() < 0.7 else issued
                getattr(q, action)(rng.choice(pool), now)
            elif issued:
                held = [(w, j) for w, js in q.holders() for j in js]
                worker, job_id = rng.choice(held) if held else ("w1", rng.choice(issued))
                verb = rng.choice(["heartbeat", "progress", "complete", "fail", "fail"])
                if verb == "heartbeat":
                    q.heartbeat(job_id, worker, None, now)
                elif verb == "progress":
                    q.report_progress(job_id, worker, None, now, [now], now)
                elif verb == "complete":
                    q.complete(job_id, worker, None, now, now)
                else:
                    q.fail(job_id, worker, None, "E", str(now), now)
        except RuleError as exc:
            refusals.add(exc.code)
        if check is not None:
            check(q, issued)
    assert refusals <= {
        "not_leased",
        "unknown_job",
        "already_finished",
        "not_failed",
        "not_finished",
    }
    return issued


def check_counts(q: QueueState, issued: list[str]) -> None:
    remembered = []
    for job_id in issued:
        with contextlib.suppress(RuleError):
            remembered.append(q.get(job_id))
    assert len(q) == len(remembered)
    assert q.counts() == {s: sum(j.state.value == s for j in remembered) for s in STATES}
    expected: dict[str, dict[str, int]] = {}
    for job in remembered:
        if job.state.value in ("pending", "scheduled", "running"):
            by = expected.setdefault(
                job.queue, dict.fromkeys(("pending", "scheduled", "running"), 0)
            )
            by[job.state.value] += 1
    assert q.queue_counts() == expected
    assert q.pending_count == q.counts()["pending"]
    assert q.running_count == q.counts()["running"]
    for state in JobState:
        listed, truncated = q.list_jobs(state, None, len(q) + 1)
        assert not truncated
        assert sorted(ids(listed)) == sorted(j.id for j in remembered if j.state is state)


@pytest.mark.parametrize("seed", range(6))
def test_counts_stay_consistent(seed: int) -> None:
    q = new_state(lease_timeout=3.0, finished_retention=5, rng=random.Random(seed))
    rng = random.Random(seed)
    issued = random_lifecycle(q, rng, 300, check_counts)
    assert len(issued) > 20


# -- event replay --------------------------------------------------------------------


def run_scenario(q: QueueState, rng: random.Random, steps: int) -> list[str]:
    """Drive ``q`` through ``steps`` random legal-or-refused commands."""
    workers = ["w1", "w2", "w3"]
    queues = ["default", "default", "q2"]
    ids: list[str] = []
    now = 0.0
    for _ in range(steps):
        now += rng.choice([0.0, 0.0, 0.5, 1.0, 3.0])
        action = rng.choices(
            ["submit", "assign", "report", "release", "tick", "cancel", "revive", "delete"],
            weights=[4, 6, 8, 1, 2, 1, 1, 1],
        )[0]
        try:
            if action == "submit":
                job, new = q.submit(
                    f"n{len(ids)}",
                    {"i": len(ids)},
                    now,
                    queue=rng.choice(queues),
                    priority=rng.choice([0, 0, 1, -1]),
                    max_attempts=rng.choice([None, 1, 2]),
                    delay=rng.choice([0.0, 0.0, 0.0, 2.0]),
                    key=rng.choice([None, None, None, "k1", "k2"]),
                )
                if new:
                    ids.append(job.id)
            elif action == "assign":
                served = rng.choice([["default"], ["q2"], ["default", "q2"]])
                q.assign(rng.choice(workers), now, rng.choice([None, "name"]), queues=served)
            elif action == "release":
                q.release(rng.choice(workers), now)
            elif action == "tick":
                q.tick(now)
            elif action in ("cancel", "revive", "delete") and ids:
                getattr(q, action)(rng.choice(ids), now)
            elif ids:
                held = sorted((str(w), j) for w, jobs in q.holders() for j in jobs)
                if held and rng.random() < 0.8:
                    # Mostly the real holder, sometimes with a stale attempt.
                    worker, job_id = rng.choice(held)
                    attempt = rng.choice([None, q.get(job_id).attempt, 1])
                else:
                    job_id = rng.choice(ids)
                    worker = rng.choice(workers)
                    attempt = rng.choice([None, 1, 2])
                verb = rng.choice(["heartbeat", "progress", "complete", "fail", "fail"])
                if verb == "heartbeat":
                    q.heartbeat(job_id, worker, attempt, now)
                elif verb == "progress":
                    q.report_progress(job_id, worker, attempt, now, {"at": now}, now)
                elif verb == "complete":
                    q.complete(job_id, worker, attempt, [job_id, now], now)
                else:
                    q.fail(job_id, worker, attempt, "E", job_id, now)
        except RuleError:
            pass
    return ids


def replay(events: list[Event], **kwargs: Any) -> QueueState:
    replayed = new_state(**kwargs)
    for event in events:
        replayed.apply(event)
    return replayed


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("retention", [0, 1, 4, 1000])
def test_replaying_events_rebuilds_the_same_state(seed: int, retention: int) -> None:
    events: list[Event] = []
    q = new_state(
        lease_timeout=4.0,
        finished_retention=retention,
        rng=random.Random(seed),
        on_event=events.append,
    )
    ids = run_scenario(q, random.Random(seed), 150)
    assert q.totals["submitted"] > 10
    # A different seed for the replay: jitter is recorded, never drawn again.
    replayed = replay(
        events, lease_timeout=4.0, finished_retention=retention, rng=random.Random(seed + 1)
    )
    assert snapshot(replayed, ids) == snapshot(q, ids)
    # The two go on the same way: the next id, and every job run to its end.
    assert replayed.submit("next", None, 1e6)[0].id == q.submit("next", None, 1e6)[0].id
    for now in (1e6, 2e6, 3e6):
        assert [j.id for j in replayed.tick(now)] == [j.id for j in q.tick(now)]
        for queues in (["default"], ["q2"]):
            while (job := q.assign("x", now, queues=queues)) is not None:
                again = replayed.assign("x", now, queues=queues)
                assert again is not None
                assert (again.id, again.attempt) == (job.id, job.attempt)
            assert replayed.assign("x", now, queues=queues) is None
    assert snapshot(replayed, ids) == snapshot(q, ids)


def test_replay_covers_every_kind_of_event() -> None:
    kinds: set[type] = set()
    reasons: set[tuple[str, bool, bool]] = set()
    for seed in range(12):
        events: list[Event] = []
        q = new_state(lease_timeout=4.0, finished_retention=1, on_event=events.append)
        run_scenario(q, random.Random(seed), 150)
        kinds.update(type(e) for e in events)
        reasons.update(
            (e.reason, e.retry_at is not None, e.final)
            for e in events
            if isinstance(e, AttemptFailed)
        )
    assert kinds == {
        Submitted,
        Promoted,
        Assigned,
        LeaseExtended,
        Progressed,
        Completed,
        AttemptFailed,
        Cancelled,
        Revived,
        Forgotten,
    }
    assert reasons == {
        ("error", True, False),
        ("error", False, True),
        ("worker_lost", False, False),
        ("worker_lost", False, True),
        ("lease_expired", False, False),
        ("lease_expired", False, True),
    }


def test_replayed_submission_numbers_are_kept() -> None:
    # A journal may start after jobs were forgotten: the next id follows the
    # highest number seen, and line order follows the numbers.
    q = QueueState()
    q.apply(Submitted("7", "late", None, 7))
    q.apply(Submitted("3", "early", None, 3))
    assert q.submit("n", None, 0.0)[0].id == "8"
    assert pending_order(q) == ["3", "7", "8"]


def test_journal_with_zero_retention() -> None:
    events: list[Event] = []
    q = new_state(lease_timeout=5.0, finished_retention=0, on_event=events.append)
    job_id = q.submit("n", {"p": 1}, 0.0)[0].id
    q.assign("w", 1.0, "W")
    q.heartbeat(job_id, "w", 1, 2.0)
    q.report_progress(job_id, "w", 1, 0.25, {"stage": "a"}, 2.5)
    q.complete(job_id, "w", 1, "r", 3.0)
    assert events == [
        Submitted(job_id, "n", {"p": 1}, 1, at=0.0),
        Assigned(job_id, "w", "W", 6.0, at=1.0),
        LeaseExtended(job_id, 7.0),
        Progressed(job_id, 0.25, {"stage": "a"}, 7.5),
        Completed(job_id, "r", at=3.0),
        Forgotten(job_id),
    ]
    replayed = replay(events, lease_timeout=5.0, finished_retention=0)
    assert snapshot(replayed, [job_id]) == snapshot(q, [job_id])
    assert replayed.totals == totals(submitted=1, completed=1)


def test_journal_reports_events_in_the_order_applied() -> None:
    events: list[Event] = []
    q = new_state(finished_retention=1, on_event=events.append)
    a = q.submit("n", None, 0.0)[0].id
    b = q.submit("n", None, 0.0, max_attempts=1)[0].id
    q.assign("w", 0.0)
    q.assign("w", 0.0)
    q.complete(a, "w", 1, None, 1.0)
    del events[:]
    q.fail(b, "w", 1, "E", "m", 1.0)
    assert events == [AttemptFailed(b, "error", "E", "m", final=True, at=1.0), Forgotten(a)]


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("retention", [0, 3, 1000])
def test_replaying_a_lifecycle_rebuilds_the_same_state(seed: int, retention: int) -> None:
    events: list[Event] = []
    q = new_state(
        lease_timeout=3.0,
        finished_retention=retention,
        retry_delay=0.5,
        rng=random.Random(seed),
        on_event=events.append,
    )
    issued = random_lifecycle(q, random.Random(seed), 250)
    kinds = {type(e) for e in events}
    assert {Submitted, Promoted, Cancelled, AttemptFailed} <= kinds
    if retention:
        assert Revived in kinds
    replayed = new_state(lease_timeout=3.0, finished_retention=retention, retry_delay=0.5)
    for event in events:
        replayed.apply(event)
    queues = ["a", "b", DEFAULT_QUEUE]
    assert queue_snapshot(replayed, issued, queues) == queue_snapshot(q, issued, queues)
    # Both go on alike: stale heap entries (cancelled jobs, revived jobs) never
    # surface, keys are remembered, and every job runs out its budget the same way.
    for key in ("x", "y"):
        assert (
            replayed.submit("n", None, 1e6, key=key)[0].id
            == q.submit("n", None, 1e6, key=key)[0].id
        )
    for now in (1e6, 2e6, 3e6, 4e6, 5e6):
        assert ids(replayed.tick(now)) == ids(q.tick(now))
        while (job := q.assign("z", now, queues=queues)) is not None:
            again = replayed.assign("z", now, queues=queues)
            assert again is not None
            assert (again.id, again.attempt) == (job.id, job.attempt)
        assert replayed.assign("z", now, queues=queues) is None
    assert queue_snapshot(replayed, issued, queues) == queue_snapshot(q, issued, queues)


def test_replay_with_a_revived_job_and_a_cancelled_stale_entry() -> None:
    # A hand-made scenario: the cancelled job's entry heads its queue's heap
    # and the revived job re-enters the heap, in the original and the replay.
    events: list[Event] = []
    q = new_state(on_event=events.append)
    doomed = submit(q, queue="a")
    dead = submit(q, queue="a", max_attempts=1)
    later = submit(q, queue="a")
    run(q, doomed, "w", 0.0, queues=["a"])
    q.release("w", 0.0)  # doomed is back at the head of the heap
    q.cancel(doomed.id, 0.0)  # a stale entry at the head
    run(q, dead, "w", 0.0, queues=["a"])
    q.fail(dead.id, "w", 1, "E", "m", 0.0)
    q.revive(dead.id, 1.0)
    replayed = QueueState()
    for event in events:
        replayed.apply(event)
    all_ids = [doomed.id, dead.id, later.id]
    assert queue_snapshot(replayed, all_ids, ["a"]) == queue_snapshot(q, all_ids, ["a"])
    for state in (q, replayed):
        first = state.assign("w", 2.0, queues=["a"])
        second = state.assign("w", 2.0, queues=["a"])
        assert (first and first.id, second and second.id) == (dead.id, later.id)
        assert state.assign("w", 2.0, queues=["a"]) is None
