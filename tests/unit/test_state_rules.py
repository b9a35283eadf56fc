"""Tests for the pure queue state machine, with explicit ``now`` values."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable, Hashable
from typing import Any

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from jobqueue import _store
from jobqueue._config import DEFAULT_QUEUE, QueueRules
from jobqueue._coordinator import job_info
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
    Revived,
    Submitted,
)
from jobqueue._job import FINISHED, TRANSITIONS, InvalidTransition, JobState
from jobqueue._replies import JobInfo
from jobqueue._state import QueueState

INF = math.inf
STATES = [state.value for state in JobState]
ZERO_TOTALS = {
    "submitted": 0,
    "completed": 0,
    "failed": 0,
    "cancelled": 0,
    "retried": 0,
    "reassigned": 0,
    "expired": 0,
}


RULE_NAMES = {field.name for field in attrs.fields(QueueRules)}


def new_state(**kwargs: Any) -> QueueState:
    """A ``QueueState`` with the rules named in ``kwargs`` and its other arguments."""
    rules = {name: kwargs.pop(name) for name in RULE_NAMES & kwargs.keys()}
    return QueueState(rules=QueueRules(**rules), **kwargs)


def totals(**nonzero: int) -> dict[str, int]:
    """The totals dict with the given counters set and the rest zero."""
    assert set(nonzero) <= set(ZERO_TOTALS)
    return {**ZERO_TOTALS, **nonzero}


def counts(**nonzero: int) -> dict[str, int]:
    """The counts dict with the given states set and the rest zero."""
    assert set(nonzero) <= set(STATES)
    return {state: nonzero.get(state, 0) for state in STATES}


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


def clone(q: QueueState) -> QueueState:
    """A deep copy of ``q`` that reports no events (pickled: much faster than deepcopy)."""
    on_event, q.on_event = q.on_event, None
    try:
        copied = pickle.loads(pickle.dumps(q))
    finally:
        q.on_event = on_event
    assert isinstance(copied, QueueState)
    return copied


def pending_order(q: QueueState) -> list[str]:
    """Ids of the pending jobs, in every queue, in the order ``assign`` hands them out.

    Found by draining a copy, serving every queue in use, so ``q`` is left alone.
    """
    copied = clone(q)
    queues = [*copied.queue_counts(), DEFAULT_QUEUE]
    order = []
    while (job := copied.assign(object(), INF, queues=queues)) is not None:
        order.append(job.id)
    return order


def listed(q: QueueState) -> dict[str, list[str]]:
    """``list_jobs`` for every state, unlimited."""
    return {
        state.value: [job.id for job in q.list_jobs(state, None, 1 << 30)[0]] for state in JobState
    }


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


def refused(code: str, call: Callable[..., object], *args: Any) -> None:
    with pytest.raises(RuleError) as info:
        call(*args)
    assert info.value.code == code


def not_leased(call: Callable[..., object], *args: Any) -> None:
    refused("not_leased", call, *args)


def unknown_job(call: Callable[..., object], *args: Any) -> None:
    refused("unknown_job", call, *args)


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
        "max_pending": 1_000_000,
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
        "queue": "default",
        "priority": 0,
        "max_attempts": 5,
        "key": None,
        "state": JobState.PENDING,
        "attempt": 0,
        "attempt_base": 0,
        "worker": None,
        "worker_name": None,
        "lease_deadline": 0.0,
        "not_before": None,
        "result": None,
        "error": None,
        "progress": None,
        "note": None,
    }
    assert a.attempts_left == 5
    assert q.get("r7-1") is a
    unknown_job(lambda: q.get("1"))
    assert job_info(a) == JobInfo(
        job_id="r7-1", name="resize", state="pending", attempt=0, max_attempts=5
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
        Submitted(job.id, "n", 1, 1, "mail", -4, 9, 3.5, "k-1"),
        Submitted(other.id, "n", 2, 2, "default", 0, 3, None, None),
    ]
    info = job_info(job)
    assert (info.state, info.queue, info.priority, info.max_attempts) == (
        "scheduled",
        "mail",
        -4,
        9,
    )


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
    q, _, x, ids = queue_with_job_in(JobState.PENDING)
    y = ids[1]
    before = snapshot(q, ids)
    with pytest.raises(InvalidTransition):
        q.apply(Assigned(y, "w3", None, 50.0))
    assert snapshot(q, ids) == before
    assert pending_order(q) == [x, y]


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
        Submitted(job_id, "n", {"p": 1}, 1),
        Assigned(job_id, "w", "W", 6.0),
        LeaseExtended(job_id, 7.0),
        Progressed(job_id, 0.25, {"stage": "a"}, 7.5),
        Completed(job_id, "r"),
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
    assert events == [AttemptFailed(b, "error", "E", "m", final=True), Forgotten(a)]


# -- stateful: the queue against a tiny reference model ------------------------------

WORKERS = ["w1", "w2", "w3"]
QUEUES = ["default", "hi"]
KEYS = ["k1", "k2"]
LEASE = 10.0
RETENTION = 3
MAX_ATTEMPTS = 3
RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 4.0
UNFINISHED = ("pending", "scheduled", "running")
FINISHED_STATES = ("completed", "failed", "cancelled")


@attrs.define
class ModelJob:
    seq: int
    queue: str
    priority: int
    max_attempts: int
    key: str | None
    state: str = "pending"
    worker: str | None = None
    attempt: int = 0
    base: int = 0
    deadline: float = 0.0
    #: When the lease was granted or last renewed (leases expire in this order).
    lease_order: int = 0
    #: When the lease was granted (``release`` returns jobs in this order).
    held_order: int = 0
    not_before: float | None = None
    result: Any = None
    error: dict[str, str] | None = None
    progress: float | None = None
    note: Any = None
    #: When the job last changed state (``list_jobs`` order).
    moved: int = 0

    @property
    def attempts_left(self) -> int:
        return self.max_attempts - (self.attempt - self.base)


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.q = new_state(
            lease_timeout=LEASE,
            finished_retention=RETENTION,
            max_attempts=MAX_ATTEMPTS,
            retry_delay=RETRY_DELAY,
            max_retry_delay=MAX_RETRY_DELAY,
        )
        # The model draws the same jitter from a twin of the queue's rng.
        self.rng = random.Random()
        self.now = 0.0
        self.jobs: dict[str, ModelJob] = {}  # remembered jobs
        self.forgotten: set[str] = set()
        self.finished_order: list[str] = []
        self.issued: list[str] = []
        self.keys: dict[str, str] = {}
        self.totals = dict(ZERO_TOTALS)
        self.clock = 0
        self.drained_at = -1

    def tock(self) -> int:
        self.clock += 1
        return self.clock

    def in_state(self, *states: str) -> list[str]:
        return sorted(j for j, m in self.jobs.items() if m.state in states)

    def move(self, job_id: str, state: str) -> None:
        job = self.jobs[job_id]
        job.state = state
        job.moved = self.tock()
        if state != "scheduled":
            job.not_before = None

    def finish(self, job_id: str, state: str) -> None:
        self.move(job_id, state)
        self.totals[state] += 1
        self.finished_order.append(job_id)
        while len(self.finished_order) > RETENTION:
            self.forget(self.finished_order.pop(0))

    def forget(self, job_id: str) -> None:
        job = self.jobs.pop(job_id)
        self.forgotten.add(job_id)
        if job.key is not None:
            assert self.keys.pop(job.key) == job_id

    def lose(self, job_id: str, reason: str, error_type: str) -> None:
        job = self.jobs[job_id]
        job.error = {"type": error_type, "message": "?"}
        self.totals["reassigned"] += 1
        if reason == "lease_expired":
            self.totals["expired"] += 1
        if job.attempts_left > 0:
            self.move(job_id, "pending")  # back in line at once
        else:
            self.finish(job_id, "failed")

    @initialize(seed=st.integers(0, 2**32), count=st.integers(0, 4))
    def start(self, seed: int, count: int) -> None:
        self.q.rng.seed(seed)
        self.rng.seed(seed)
        self.submit(count, "default", 0, None, 0.0, None)

    @rule(
        count=st.integers(1, 3),
        queue=st.sampled_from(QUEUES),
        priority=st.sampled_from([0, 0, 1, -1]),
        max_attempts=st.none() | st.integers(1, 3),
        delay=st.sampled_from([0.0, 0.0, 3.0, 12.0]),
        key=st.none() | st.sampled_from(KEYS),
    )
    def submit(
        self,
        count: int,
        queue: str,
        priority: int,
        max_attempts: int | None,
        delay: float,
        key: str | None,
    ) -> None:
        for _ in range(count):
            job, new = self.q.submit(
                "n",
                {"i": len(self.issued)},
                self.now,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                delay=delay,
                key=key,
            )
            if key is not None and key in self.keys:
                # The key's job is remembered: nothing added, that job returned.
                assert (job.id, new) == (self.keys[key], False)
                continue
            assert new
            seq = len(self.issued) + 1
            assert job.id == str(seq)
            state = "scheduled" if delay else "pending"
            assert (job.state.value, job.attempt, job.payload) == (state, 0, {"i": seq - 1})
            self.issued.append(job.id)
            self.totals["submitted"] += 1
            model = ModelJob(
                seq, queue, priority, MAX_ATTEMPTS if max_attempts is None else max_attempts, key
            )
            self.jobs[job.id] = model
            self.move(job.id, state)
            if delay:
                model.not_before = self.now + delay
            if key is not None:
                self.keys[key] = job.id

    @rule(worker=st.sampled_from(WORKERS), queues=st.sampled_from([*QUEUES, QUEUES, QUEUES[::-1]]))
    def assign(self, worker: str, queues: str | list[str]) -> None:
        served = [queues] if isinstance(queues, str) else queues
        pending = [j for j in self.in_state("pending") if self.jobs[j].queue in served]
        job = self.q.assign(worker, self.now, worker.upper(), queues=served)
        if not pending:
            assert job is None
            return
        assert job is not None
        # Highest priority first, then first come, first served.
        assert job.id == min(pending, key=lambda j: (-self.jobs[j].priority, self.jobs[j].seq))
        model = self.jobs[job.id]
        self.move(job.id, "running")
        model.worker = worker
        model.attempt += 1
        model.deadline = self.now + LEASE
        model.lease_order = model.held_order = self.tock()
        model.progress = model.note = None
        assert (job.state, job.attempt, job.worker, job.worker_name) == (
            JobState.RUNNING,
            model.attempt,
            worker,
            worker.upper(),
        )
        assert job.lease_deadline == model.deadline

    def check_report(
        self, job_id: str, worker: str, attempt: int | None, call: Callable[[], object]
    ) -> bool:
        """Run a heartbeat/progress/complete/fail; True if the model says it must succeed."""
        model = self.jobs.get(job_id)
        allowed = (
            model is not None
            and model.state == "running"
            and model.worker == worker
            and attempt in (None, model.attempt)
        )
        if allowed:
            call()
            return True
        with pytest.raises(RuleError) as info:
            call()
        assert info.value.code == ("unknown_job" if model is None else "not_leased")
        return False

    def report(self, verb: str, job_id: str, worker: str, attempt: int | None) -> None:
        """Report on ``job_id`` as ``worker``, checked against the model."""
        q, now = self.q, self.now
        result = [job_id, now]
        calls: dict[str, Callable[[], object]] = {
            "heartbeat": lambda: q.heartbeat(job_id, worker, attempt, now),
            "progress": lambda: q.report_progress(job_id, worker, attempt, now, [job_id], now),
            "complete": lambda: q.complete(job_id, worker, attempt, result, now),
            "fail": lambda: q.fail(job_id, worker, attempt, "E", job_id, now),
        }
        if not self.check_report(job_id, worker, attempt, calls[verb]):
            return
        model = self.jobs[job_id]
        if verb in ("heartbeat", "progress"):
            model.deadline = now + LEASE
            model.lease_order = self.tock()
            if verb == "progress":
                model.progress, model.note = now, [job_id]
        elif verb == "complete":
            model.result = result
            self.finish(job_id, "completed")
        else:
            model.error = {"type": "E", "message": job_id}
            if model.attempts_left > 0:
                retries = model.attempt - model.base
                ceiling = min(RETRY_DELAY * 2 ** (retries - 1), MAX_RETRY_DELAY)
                delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
                assert ceiling / 2 <= delay <= ceiling
                self.move(job_id, "scheduled")
                model.not_before = now + delay
                self.totals["retried"] += 1
            else:
                self.finish(job_id, "failed")

    @rule(
        verb=st.sampled_from(["heartbeat", "progress", "complete", "fail"]),
        n=st.integers(1, 12),
        worker=st.sampled_from(WORKERS),
        attempt=st.none() | st.integers(1, 3),
    )
    def report_as_anyone(self, verb: str, n: int, worker: str, attempt: int | None) -> None:
        # Mostly refused: not the holder, a stale attempt, a finished,
        # forgotten or never-issued job.
        self.report(verb, str(n), worker, attempt)

    @precondition(lambda self: self.in_state("running"))
    @rule(
        data=st.data(),
        verb=st.sampled_from(["heartbeat", "progress", "complete", "fail", "fail"]),
    )
    def report_as_holder(self, data: st.DataObject, verb: str) -> None:
        # The rule above rarely hits the real holder; this one does, so jobs
        # finish, retry and run out of attempts often enough.
        job_id = data.draw(st.sampled_from(self.in_state("running")))
        model = self.jobs[job_id]
        assert model.worker is not None
        attempt = data.draw(st.sampled_from([None, model.attempt]))
        self.report(verb, job_id, model.worker, attempt)
        if verb == "fail":
            after: tuple[str, ...] = ("scheduled", "failed")
        else:
            after = (
                {"heartbeat": "running", "progress": "running", "complete": "completed"}[verb],
            )
        assert job_id in self.forgotten or self.jobs[job_id].state in after

    @rule(worker=st.sampled_from(WORKERS))
    def release(self, worker: str) -> None:
        expected = sorted(
            (j for j in self.in_state("running") if self.jobs[j].worker == worker),
            key=lambda j: self.jobs[j].held_order,
        )
        lost = self.q.release(worker, self.now)
        assert [j.id for j in lost] == expected
        for job_id in expected:
            self.lose(job_id, "worker_lost", "WorkerLost")

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.5, 5.0, 10.0]))
    def advance_and_tick(self, dt: float) -> None:
        self.now += dt
        jobs = self.jobs
        expired = sorted(
            (j for j in self.in_state("running") if jobs[j].deadline <= self.now),
            key=lambda j: jobs[j].lease_order,
        )
        due = sorted(
            (j for j in self.in_state("scheduled") if (jobs[j].not_before or 0.0) <= self.now),
            key=lambda j: (jobs[j].not_before, jobs[j].seq),
        )
        changed = self.q.tick(self.now)
        # Expired leases first (in lease order), then promotions (by due time).
        assert [j.id for j in changed] == expired + due
        for job_id in expired:
            self.lose(job_id, "lease_expired", "LeaseExpired")
        for job_id in due:
            self.move(job_id, "pending")

    def act(self, action: str, job_id: str) -> None:
        """Cancel, revive or delete ``job_id``, checked against the model."""
        q, now = self.q, self.now
        model = self.jobs.get(job_id)
        if model is None:
            unknown_job(getattr(q, action), job_id, now)
        elif action == "cancel":
            if model.state in ("completed", "failed"):
                refused("already_finished", q.cancel, job_id, now)
                return
            job, holder = q.cancel(job_id, now)
            assert job.id == job_id
            if model.state == "cancelled":
                assert holder is None  # again: nothing changes
                return
            assert holder == (model.worker if model.state == "running" else None)
            self.finish(job_id, "cancelled")
        elif action == "revive":
            if model.state != "failed":
                refused("not_failed", q.revive, job_id, now)
                return
            assert q.revive(job_id, now).id == job_id
            self.finished_order.remove(job_id)
            model.base = model.attempt  # a fresh budget
            self.move(job_id, "pending")
        else:
            if model.state in UNFINISHED:
                refused("not_finished", q.delete, job_id, now)
                return
            q.delete(job_id, now)
            self.finished_order.remove(job_id)
            self.forget(job_id)

    @rule(action=st.sampled_from(["cancel", "revive", "delete"]), n=st.integers(1, 12))
    def act_on_anyone(self, action: str, n: int) -> None:
        self.act(action, str(n))

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), action=st.sampled_from(["cancel", "revive", "revive", "delete"]))
    def act_on_remembered(self, data: st.DataObject, action: str) -> None:
        self.act(action, data.draw(st.sampled_from(sorted(self.jobs))))

    @precondition(lambda self: self.in_state(*FINISHED_STATES))
    @rule(data=st.data(), action=st.sampled_from(["revive", "revive", "delete", "cancel"]))
    def act_on_finished(self, data: st.DataObject, action: str) -> None:
        # Dead letters are rare and soon forgotten: reach for them directly.
        failed = self.in_state("failed")
        pool = failed if failed and action == "revive" else self.in_state(*FINISHED_STATES)
        self.act(action, data.draw(st.sampled_from(pool)))

    @precondition(lambda self: self.jobs)
    @rule()
    def time_cannot_go_backwards(self) -> None:
        with pytest.raises(ValueError, match="backwards"):
            self.q.tick(self.now - 0.5)

    @invariant()
    def matches_model(self) -> None:
        q = self.q
        for job_id in self.issued:
            if job_id in self.forgotten:
                unknown_job(q.get, job_id)
                continue
            model = self.jobs[job_id]  # no job lost
            job = q.get(job_id)
            assert (job.state.value, job.attempt, job.attempt_base, job.worker) == (
                model.state,
                model.attempt,
                model.base,
                model.worker,
            )
            assert (job.queue, job.priority, job.max_attempts, job.key) == (
                model.queue,
                model.priority,
                model.max_attempts,
                model.key,
            )
            assert job.not_before == model.not_before
            assert (job.progress, job.note) == (model.progress, model.note)
            if model.state == "running":
                assert job.lease_deadline == model.deadline
            if model.state == "completed":
                assert job.result == model.result
            if model.error is None or model.error["type"] != "E":
                assert (job.error or {}).get("type") == (model.error or {}).get("type")
            else:
                assert job.error == model.error
        assert len(q) == len(self.jobs)

    @invariant()
    def one_holder_per_job(self) -> None:
        seen: dict[str, Hashable] = {}
        for worker, job_ids in self.q.holders():
            assert job_ids  # no empty entries left behind
            assert job_ids == self.q.held_by(worker)
            for job_id in job_ids:
                assert job_id not in seen  # never held by two workers
                seen[job_id] = worker
                assert self.q.get(job_id).state is JobState.RUNNING
        running = {j: self.jobs[j].worker for j in self.in_state("running")}
        assert seen == running

    @invariant()
    def counts_and_totals(self) -> None:
        q, jobs = self.q, self.jobs
        states = [m.state for m in jobs.values()]
        assert q.counts() == {s: states.count(s) for s in STATES}
        assert q.pending_count == states.count("pending")
        assert q.running_count == states.count("running")
        by_queue = {
            queue: {
                s: sum(m.queue == queue and m.state == s for m in jobs.values()) for s in UNFINISHED
            }
            for queue in QUEUES
        }
        assert q.queue_counts() == {k: v for k, v in by_queue.items() if any(v.values())}
        for queue in QUEUES:
            assert q.pending_in([queue]) == (by_queue[queue]["pending"] > 0)
        assert q.totals == self.totals
        times = [m.deadline for m in jobs.values() if m.state == "running"]
        times += [m.not_before or 0.0 for m in jobs.values() if m.state == "scheduled"]
        assert q.next_deadline() == min(times, default=INF)
        # Draining a copy is the costly check: only when the model saw a change.
        if self.clock != self.drained_at:
            self.drained_at = self.clock
            pending = self.in_state("pending")
            expected = sorted(pending, key=lambda j: (-jobs[j].priority, jobs[j].seq))
            assert pending_order(q) == expected
        assert listed(q) == {
            s: sorted(self.in_state(s), key=lambda j: jobs[j].moved) for s in STATES
        }


QueueMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
TestQueueMachine = QueueMachine.TestCase


class GenerationsQueueMachine(QueueMachine):
    """The same rules, with each finished job in a generation dict of its own."""

    def __init__(self) -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_store, "FINISHED_GENERATION_SLOTS", 2)
            patch.setattr(_store, "KEYS_PER_SHARD", 1)
            super().__init__()
        assert (self.q._generation, len(self.q._keys)) == (1, 4)


GenerationsQueueMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=50, deadline=None
)
TestGenerationsQueueMachine = GenerationsQueueMachine.TestCase
