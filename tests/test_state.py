"""Tests for the pure queue state machine, with explicit ``now`` values."""

from __future__ import annotations

import copy
import math
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

from jobqueue._protocol import JobInfo, ProtocolError
from jobqueue._state import (
    DEFAULT_FINISHED_RETENTION,
    DEFAULT_LEASE_TIMEOUT,
    FINISHED,
    TRANSITIONS,
    Assigned,
    Completed,
    Event,
    Failed,
    Forgotten,
    InvalidTransition,
    JobState,
    LeaseExtended,
    QueueState,
    Requeued,
    Submitted,
)

INF = math.inf


def record(q: QueueState, job_id: str) -> dict[str, Any] | None:
    """Every field of a job's record, or None if the queue does not remember it."""
    try:
        job = q.get(job_id)
    except ProtocolError as exc:
        code = exc.code
    else:
        return attrs.asdict(job, recurse=False)
    assert code == "unknown_job"
    return None


def pending_order(q: QueueState) -> list[str]:
    """Ids of the pending jobs in the order ``assign`` would hand them out.

    Found by draining a copy, so ``q`` is left alone.
    """
    on_event, q.on_event = q.on_event, None
    try:
        clone = copy.deepcopy(q)
    finally:
        q.on_event = on_event
    order = []
    while (job := clone.assign(object(), INF)) is not None:
        order.append(job.id)
    return order


def snapshot(q: QueueState, ids: list[str]) -> dict[str, Any]:
    """Everything observable about ``q``, for the jobs in ``ids``."""
    return {
        "jobs": {job_id: record(q, job_id) for job_id in ids},
        "len": len(q),
        "pending": pending_order(q),
        "pending_count": q.pending_count,
        "running_count": q.running_count,
        "counts": q.counts(),
        "totals": dict(q.totals),
        "next_deadline": q.next_deadline(),
        "holders": sorted((str(w), jobs) for w, jobs in q.holders()),
    }


def not_leased(call: Callable[..., object], *args: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        call(*args)
    assert info.value.code == "not_leased"


def unknown_job(call: Callable[..., object], *args: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        call(*args)
    assert info.value.code == "unknown_job"


# -- construction -----------------------------------------------------------------


def test_defaults() -> None:
    q = QueueState()
    assert q.lease_timeout == DEFAULT_LEASE_TIMEOUT == 30.0
    assert q.finished_retention == DEFAULT_FINISHED_RETENTION == 100_000
    assert len(q) == 0
    assert q.counts() == {"pending": 0, "running": 0, "completed": 0, "failed": 0}
    assert q.totals == {"submitted": 0, "completed": 0, "failed": 0, "reassigned": 0, "expired": 0}
    assert q.next_deadline() == INF
    assert q.assign("w", 0.0) is None
    assert list(q.holders()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lease_timeout": 0.0}, "lease_timeout"),
        ({"lease_timeout": -1.0}, "lease_timeout"),
        ({"finished_retention": -1}, "finished_retention"),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        QueueState(**kwargs)


def test_ids_and_records() -> None:
    q = QueueState(id_prefix="r7-")
    a = q.submit("resize", {"w": 10}, 0.0)
    b = q.submit("crop", [1, 2], 0.0)
    assert (a.id, b.id) == ("r7-1", "r7-2")
    assert (a.seq, b.seq) == (1, 2)
    assert attrs.asdict(a, recurse=False) == {
        "id": "r7-1",
        "name": "resize",
        "payload": {"w": 10},
        "seq": 1,
        "state": JobState.PENDING,
        "attempt": 0,
        "worker": None,
        "worker_name": None,
        "lease_deadline": 0.0,
        "result": None,
        "error": None,
    }
    assert q.get("r7-1") is a
    unknown_job(lambda: q.get("1"))
    assert a.info() == JobInfo(job_id="r7-1", name="resize", state="pending", attempt=0)


# -- first come, first served ------------------------------------------------------


def test_assigned_in_submission_order_with_attempt_from_one() -> None:
    q = QueueState(lease_timeout=10.0)
    ids = [q.submit(f"job{i}", i, float(i)).id for i in range(5)]
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
    a, b, c, d = (q.submit(n, None, 0.0).id for n in "abcd")
    assert q.assign("wa", 0.0) is not None
    assert q.assign("wb", 0.0) is not None
    assert [j.id for j in q.release("wb", 1.0)] == [b]
    assert [j.id for j in q.release("wa", 2.0)] == [a]
    assert pending_order(q) == [a, b, c, d]
    out = [q.assign("w", 3.0) for _ in range(4)]
    assert [(j.id, j.attempt) for j in out if j] == [(a, 2), (b, 2), (c, 1), (d, 1)]


def test_requeued_job_goes_behind_earlier_pending_and_ahead_of_later() -> None:
    q = QueueState(lease_timeout=10.0)
    a, b, c, d, e = (q.submit(n, None, 0.0).id for n in "abcde")
    for worker in ("w1", "w2", "w3"):
        q.assign(worker, 0.0)
    # A (seq 1) back in line, then C (seq 3): pending A, C, D, E.
    q.release("w1", 1.0)
    q.release("w3", 1.0)
    assert pending_order(q) == [a, c, d, e]
    # B's lease expires: it goes behind A (earlier, still pending) and ahead
    # of C, D and E (all submitted after it).
    assert [j.id for j in q.expire(10.0)] == [b]
    assert pending_order(q) == [a, b, c, d, e]
    out = [q.assign("w", 11.0) for _ in range(5)]
    assert [(j.id, j.attempt) for j in out if j] == [(a, 2), (b, 2), (c, 2), (d, 1), (e, 1)]


def test_attempt_counts_every_assignment() -> None:
    q = QueueState(lease_timeout=5.0)
    job_id = q.submit("n", None, 0.0).id
    now = 0.0
    for attempt in range(1, 6):
        job = q.assign("w", now)
        assert job is not None
        assert (job.id, job.attempt) == (job_id, attempt)
        if attempt % 2:
            assert q.release("w", now) == [job]
        else:
            now += 5.0
            assert q.expire(now) == [job]
        assert job.state is JobState.PENDING
        assert job.attempt == attempt
    assert q.totals["reassigned"] == 5
    assert q.totals["expired"] == 2


# -- release and expire ------------------------------------------------------------


def test_release_requeues_exactly_that_workers_jobs() -> None:
    q = QueueState(lease_timeout=10.0)
    ids = [q.submit("n", i, 0.0).id for i in range(5)]
    for worker in ("w1", "w2", "w1", "w3"):
        q.assign(worker, 1.0)
    assert q.held_by("w1") == [ids[0], ids[2]]
    assert q.held_by("w2") == [ids[1]]
    assert q.held_by("nobody") == []
    before_w2 = record(q, ids[1])
    lost = q.release("w1", 2.0)
    assert [j.id for j in lost] == [ids[0], ids[2]]
    assert all(j.state is JobState.PENDING for j in lost)
    assert q.held_by("w1") == []
    assert sorted((str(w), jobs) for w, jobs in q.holders()) == [("w2", [ids[1]]), ("w3", [ids[3]])]
    assert record(q, ids[1]) == before_w2
    assert q.get(ids[3]).state is JobState.RUNNING
    assert pending_order(q) == [ids[0], ids[2], ids[4]]
    assert q.totals == {"submitted": 5, "completed": 0, "failed": 0, "reassigned": 2, "expired": 0}
    # Releasing again, or a worker that holds nothing, changes nothing.
    assert q.release("w1", 3.0) == []
    assert q.release("ghost", 3.0) == []
    assert q.totals["reassigned"] == 2


def test_release_leaves_finished_jobs_alone() -> None:
    q = QueueState()
    a = q.submit("n", None, 0.0).id
    b = q.submit("n", None, 0.0).id
    q.assign("w", 0.0)
    q.assign("w", 0.0)
    q.complete(a, "w", 1, "done", 1.0)
    assert [j.id for j in q.release("w", 2.0)] == [b]
    assert q.get(a).state is JobState.COMPLETED
    assert q.get(a).result == "done"
    assert q.assign("w2", 3.0) is q.get(b)
    assert q.assign("w2", 3.0) is None


def test_expire_uses_exact_deadlines() -> None:
    q = QueueState(lease_timeout=10.0)
    a, b, c, d = (q.submit(n, None, 0.0).id for n in "abcd")
    assert q.next_deadline() == INF  # pending jobs have no deadline
    assert q.assign("w1", 0.0) is q.get(a)
    assert q.next_deadline() == 10.0
    assert q.assign("w2", 3.0) is q.get(b)
    assert q.assign("w3", 5.0) is q.get(c)
    assert q.next_deadline() == 10.0
    assert q.heartbeat(a, "w1", 1, 6.0) is q.get(a)
    assert [q.get(i).lease_deadline for i in (a, b, c)] == [16.0, 13.0, 15.0]
    assert q.next_deadline() == 13.0
    assert q.expire(12.999) == []
    assert q.expire(12.999) == []
    assert [j.id for j in q.expire(13.0)] == [b]
    assert q.next_deadline() == 15.0
    assert q.assign("w4", 14.0) is q.get(b)  # b comes back before d
    assert q.get(b).lease_deadline == 24.0
    assert q.get(b).attempt == 2
    assert sorted(j.id for j in q.expire(16.0)) == [a, c]
    assert q.next_deadline() == 24.0
    assert q.get(d).state is JobState.PENDING
    assert pending_order(q) == [a, c, d]
    assert q.totals == {"submitted": 4, "completed": 0, "failed": 0, "reassigned": 3, "expired": 3}
    q.complete(b, "w4", 2, None, 20.0)
    assert q.next_deadline() == INF
    assert q.expire(1e9) == []


def test_heartbeat_extends_from_now_not_from_old_deadline() -> None:
    q = QueueState(lease_timeout=4.0)
    job_id = q.submit("n", None, 0.0).id
    q.assign("w", 1.0)
    for now in (2.0, 2.5, 4.75, 8.5):
        q.heartbeat(job_id, "w", None, now)
        assert q.get(job_id).lease_deadline == now + 4.0
        assert q.next_deadline() == now + 4.0
    assert q.expire(12.4) == []
    assert [j.id for j in q.expire(12.5)] == [job_id]


def test_heartbeat_reorders_lease_deadlines() -> None:
    q = QueueState(lease_timeout=10.0)
    a = q.submit("n", None, 0.0).id
    b = q.submit("n", None, 0.0).id
    q.assign("w", 0.0)
    q.assign("w", 1.0)
    q.heartbeat(a, "w", 1, 2.0)
    assert q.next_deadline() == 11.0
    assert [j.id for j in q.expire(11.0)] == [b]
    assert q.next_deadline() == 12.0
    assert [j.id for j in q.expire(12.0)] == [a]
    assert q.next_deadline() == INF


# -- who may report on a job -------------------------------------------------------


def reporters(
    job_id: str, worker: Hashable, attempt: int | None, now: float
) -> list[Callable[[QueueState], object]]:
    return [
        lambda q: q.heartbeat(job_id, worker, attempt, now),
        lambda q: q.complete(job_id, worker, attempt, "r", now),
        lambda q: q.fail(job_id, worker, attempt, "E", "m", now),
    ]


def test_only_the_lease_holder_may_report() -> None:
    q = QueueState(lease_timeout=10.0)
    a = q.submit("n", None, 0.0).id
    b = q.submit("n", None, 0.0).id
    q.assign("w1", 0.0)
    ids = [a, b]
    before = snapshot(q, ids)
    for call in (
        *reporters(a, "w2", None, 1.0),  # not the holder
        *reporters(a, "w2", 1, 1.0),  # not the holder, right attempt
        *reporters(a, "w1", 2, 1.0),  # the holder, an attempt that never was
        *reporters(b, "w1", None, 1.0),  # pending, never assigned
    ):
        not_leased(call, q)
        assert snapshot(q, ids) == before


def test_stale_attempt_is_refused() -> None:
    q = QueueState(lease_timeout=10.0)
    a = q.submit("n", None, 0.0).id
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
    assert snapshot(q, ["1"]) == before


@pytest.mark.parametrize("finish", ["complete", "fail"])
def test_finished_job_is_final(finish: str) -> None:
    q = QueueState(lease_timeout=10.0)
    a = q.submit("n", {"x": 1}, 0.0).id
    b = q.submit("n", None, 0.0).id
    q.assign("w1", 0.0)
    if finish == "complete":
        job = q.complete(a, "w1", 1, [1, 2], 1.0)
        assert (job.state, job.result, job.error) == (JobState.COMPLETED, [1, 2], None)
    else:
        job = q.fail(a, "w1", 1, "KeyError", "'x'", 1.0)
        assert (job.state, job.result) == (JobState.FAILED, None)
        assert job.error == {"type": "KeyError", "message": "'x'"}
    assert q.held_by("w1") == []
    before = snapshot(q, [a, b])
    for worker in ("w1", "w2"):
        for attempt in (None, 1, 2):
            for call in reporters(a, worker, attempt, 2.0):
                not_leased(call, q)
                assert snapshot(q, [a, b]) == before
    # Never handed out again, whatever happens to the workers.
    assert q.release("w1", 3.0) == []
    assert q.expire(100.0) == []
    assert q.assign("w3", 100.0) is q.get(b)
    assert q.assign("w3", 100.0) is None
    assert q.get(a).state is (JobState.COMPLETED if finish == "complete" else JobState.FAILED)
    assert q.get(a).attempt == 1
    assert q.totals["completed" if finish == "complete" else "failed"] == 1


def test_completing_after_lease_expiry_is_refused() -> None:
    q = QueueState(lease_timeout=10.0)
    a = q.submit("n", None, 0.0).id
    q.assign("w1", 0.0)
    q.heartbeat(a, "w1", 1, 5.0)
    assert q.expire(14.0) == []
    assert [j.id for j in q.expire(15.0)] == [a]
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
    assert q.totals == {"submitted": 1, "completed": 1, "failed": 0, "reassigned": 2, "expired": 1}


# -- retention ---------------------------------------------------------------------


def test_only_the_last_n_finished_jobs_are_remembered() -> None:
    q = QueueState(finished_retention=3)
    ids = [q.submit("n", i, 0.0).id for i in range(8)]
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
    assert q.counts() == {"pending": 1, "running": 1, "completed": 1, "failed": 2}
    assert q.totals == {"submitted": 8, "completed": 3, "failed": 3, "reassigned": 0, "expired": 0}


def test_retention_never_drops_unfinished_jobs() -> None:
    q = QueueState(finished_retention=0)
    a = q.submit("n", None, 0.0).id
    b = q.submit("n", None, 0.0).id
    c = q.submit("n", None, 0.0).id
    q.assign("w", 0.0)
    q.assign("w", 0.0)
    q.complete(a, "w", 1, "x", 1.0)
    unknown_job(lambda: q.get(a))
    assert q.get(b).state is JobState.RUNNING
    assert q.get(c).state is JobState.PENDING
    assert len(q) == 2
    assert q.counts() == {"pending": 1, "running": 1, "completed": 0, "failed": 0}
    assert q.totals["completed"] == 1


# -- time --------------------------------------------------------------------------


def test_time_going_backwards_is_refused() -> None:
    q = QueueState()
    a = q.submit("n", None, 5.0).id
    q.submit("n", None, 5.0)
    q.assign("w", 5.0)
    before = snapshot(q, [a, "2"])
    for call in (
        lambda: q.submit("n", None, 4.0),
        lambda: q.assign("w", 4.999),
        lambda: q.heartbeat(a, "w", 1, 4.0),
        lambda: q.complete(a, "w", 1, None, 4.0),
        lambda: q.fail(a, "w", 1, "E", "m", 4.0),
        lambda: q.release("w", 4.0),
        lambda: q.expire(-INF),
    ):
        with pytest.raises(ValueError, match="backwards"):
            call()
        assert snapshot(q, [a, "2"]) == before
    # The same instant is fine.
    assert q.heartbeat(a, "w", 1, 5.0).lease_deadline == 35.0


# -- the transition table -----------------------------------------------------------

ACTIONS: dict[str, Callable[[str], Event]] = {
    "assign": lambda job_id: Assigned(job_id, "w9", "nine", 99.0),
    "complete": lambda job_id: Completed(job_id, "r"),
    "fail": lambda job_id: Failed(job_id, "E", "m"),
    "requeue": lambda job_id: Requeued(job_id, "worker_lost"),
}


def queue_with_job_in(state: JobState) -> tuple[QueueState, list[Event], str, list[str]]:
    """A queue with a running job, a job X in ``state`` first in line, and a later job."""
    events: list[Event] = []
    q = QueueState(lease_timeout=10.0, on_event=events.append)
    z = q.submit("z", None, 0.0).id
    q.assign("w1", 0.0)
    x = q.submit("x", None, 0.0).id
    y = q.submit("y", None, 0.0).id
    if state is not JobState.PENDING:
        assert q.assign("w2", 1.0) is q.get(x)
    if state is JobState.COMPLETED:
        q.complete(x, "w2", 1, "done", 2.0)
    elif state is JobState.FAILED:
        q.fail(x, "w2", 1, "E", "boom", 2.0)
    assert q.get(x).state is state
    return q, events, x, [x, y, z]


def test_table_is_what_the_design_says() -> None:
    assert TRANSITIONS == {
        (JobState.PENDING, "assign"): JobState.RUNNING,
        (JobState.RUNNING, "complete"): JobState.COMPLETED,
        (JobState.RUNNING, "fail"): JobState.FAILED,
        (JobState.RUNNING, "requeue"): JobState.PENDING,
    }
    assert {JobState.COMPLETED, JobState.FAILED} == FINISHED
    assert not any(state in FINISHED for state, _ in TRANSITIONS)


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


@pytest.mark.parametrize(
    "state", [JobState.PENDING, JobState.COMPLETED, JobState.FAILED], ids=lambda s: s.value
)
def test_lease_extension_of_a_job_not_running_is_refused(state: JobState) -> None:
    q, _, x, ids = queue_with_job_in(state)
    before = snapshot(q, ids)
    with pytest.raises(InvalidTransition):
        q.apply(LeaseExtended(x, 50.0))
    assert snapshot(q, ids) == before


def test_lease_extension_of_unknown_job_is_refused() -> None:
    q, events, _, ids = queue_with_job_in(JobState.RUNNING)
    before = snapshot(q, ids)
    events_before = list(events)
    with pytest.raises(InvalidTransition):
        q.apply(LeaseExtended("no-such-job", 50.0))
    assert snapshot(q, ids) == before
    assert events == events_before


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.RUNNING], ids=lambda s: s.value)
def test_forgetting_an_unfinished_job_is_refused(state: JobState) -> None:
    q, _, x, ids = queue_with_job_in(state)
    before = snapshot(q, ids)
    for job_id in (x, "no-such-job"):
        with pytest.raises(InvalidTransition):
            q.apply(Forgotten(job_id))
        assert snapshot(q, ids) == before


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
    ids: list[str] = []
    now = 0.0
    for _ in range(steps):
        now += rng.choice([0.0, 0.0, 0.5, 1.0, 3.0])
        action = rng.choices(
            ["submit", "assign", "report", "release", "expire"], weights=[2, 3, 4, 1, 1]
        )[0]
        try:
            if action == "submit":
                ids.append(q.submit(f"n{len(ids)}", {"i": len(ids)}, now).id)
            elif action == "assign":
                q.assign(rng.choice(workers), now, rng.choice([None, "name"]))
            elif action == "release":
                q.release(rng.choice(workers), now)
            elif action == "expire":
                q.expire(now)
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
                verb = rng.choice(["heartbeat", "complete", "fail"])
                if verb == "heartbeat":
                    q.heartbeat(job_id, worker, attempt, now)
                elif verb == "complete":
                    q.complete(job_id, worker, attempt, [job_id, now], now)
                else:
                    q.fail(job_id, worker, attempt, "E", job_id, now)
        except ProtocolError:
            pass
    return ids


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("retention", [0, 1, 4, 1000])
def test_replaying_events_rebuilds_the_same_state(seed: int, retention: int) -> None:
    events: list[Event] = []
    q = QueueState(lease_timeout=4.0, finished_retention=retention, on_event=events.append)
    ids = run_scenario(q, random.Random(seed), 150)
    assert q.totals["submitted"] > 10
    replayed = QueueState(lease_timeout=4.0, finished_retention=retention)
    for event in events:
        replayed.apply(event)
    assert snapshot(replayed, ids) == snapshot(q, ids)
    # The next id issued is the same too.
    assert replayed.submit("next", None, 1e6).id == q.submit("next", None, 1e6).id


def test_replay_covers_every_kind_of_event() -> None:
    kinds: set[type] = set()
    for seed in range(12):
        events: list[Event] = []
        q = QueueState(lease_timeout=4.0, finished_retention=1, on_event=events.append)
        run_scenario(q, random.Random(seed), 150)
        kinds.update(type(e) for e in events)
    assert kinds == {Submitted, Assigned, LeaseExtended, Completed, Failed, Requeued, Forgotten}


def test_replayed_submission_numbers_are_kept() -> None:
    # A journal may start after jobs were forgotten: the next id follows the
    # highest number seen, and line order follows the numbers.
    q = QueueState()
    q.apply(Submitted("7", "late", None, 7))
    q.apply(Submitted("3", "early", None, 3))
    assert q.submit("n", None, 0.0).id == "8"
    assert pending_order(q) == ["3", "7", "8"]


def test_journal_with_zero_retention() -> None:
    events: list[Event] = []
    q = QueueState(lease_timeout=5.0, finished_retention=0, on_event=events.append)
    job_id = q.submit("n", {"p": 1}, 0.0).id
    q.assign("w", 1.0, "W")
    q.heartbeat(job_id, "w", 1, 2.0)
    q.complete(job_id, "w", 1, "r", 3.0)
    assert events == [
        Submitted(job_id, "n", {"p": 1}, 1),
        Assigned(job_id, "w", "W", 6.0),
        LeaseExtended(job_id, 7.0),
        Completed(job_id, "r"),
        Forgotten(job_id),
    ]
    replayed = QueueState(lease_timeout=5.0, finished_retention=0)
    for event in events:
        replayed.apply(event)
    assert snapshot(replayed, [job_id]) == snapshot(q, [job_id])
    assert replayed.totals == {
        "submitted": 1,
        "completed": 1,
        "failed": 0,
        "reassigned": 0,
        "expired": 0,
    }


def test_journal_reports_events_in_the_order_applied() -> None:
    events: list[Event] = []
    q = QueueState(finished_retention=1, on_event=events.append)
    a = q.submit("n", None, 0.0).id
    b = q.submit("n", None, 0.0).id
    q.assign("w", 0.0)
    q.assign("w", 0.0)
    q.complete(a, "w", 1, None, 1.0)
    del events[:]
    q.fail(b, "w", 1, "E", "m", 1.0)
    assert events == [Failed(b, "E", "m"), Forgotten(a)]


# -- stateful: the queue against a tiny reference model ------------------------------

WORKERS = ["w1", "w2", "w3"]
LEASE = 10.0
RETENTION = 2


@attrs.define
class ModelJob:
    seq: int
    state: str = "pending"
    worker: str | None = None
    attempt: int = 0
    deadline: float = 0.0
    result: Any = None


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.q = QueueState(lease_timeout=LEASE, finished_retention=RETENTION)
        self.now = 0.0
        self.jobs: dict[str, ModelJob] = {}  # remembered jobs
        self.forgotten: set[str] = set()
        self.finished_order: list[str] = []
        self.issued: list[str] = []
        self.totals = dict.fromkeys(
            ("submitted", "completed", "failed", "reassigned", "expired"), 0
        )

    def pending(self) -> list[str]:
        return sorted(
            (j for j, m in self.jobs.items() if m.state == "pending"),
            key=lambda j: self.jobs[j].seq,
        )

    def finish(self, job_id: str, state: str, result: Any) -> None:
        job = self.jobs[job_id]
        job.state = state
        job.result = result
        self.totals[state] += 1
        self.finished_order.append(job_id)
        while len(self.finished_order) > RETENTION:
            old = self.finished_order.pop(0)
            del self.jobs[old]
            self.forgotten.add(old)

    def requeue(self, job_id: str, reason: str) -> None:
        self.jobs[job_id].state = "pending"
        self.totals["reassigned"] += 1
        if reason == "lease_expired":
            self.totals["expired"] += 1

    @initialize(count=st.integers(0, 4))
    def submit_first(self, count: int) -> None:
        self.submit(count)

    @rule(count=st.integers(1, 3))
    def submit(self, count: int) -> None:
        for _ in range(count):
            seq = len(self.issued) + 1
            job = self.q.submit(f"n{seq}", {"seq": seq}, self.now)
            assert job.id == str(seq)
            assert (job.state, job.attempt, job.payload) == (JobState.PENDING, 0, {"seq": seq})
            self.issued.append(job.id)
            self.jobs[job.id] = ModelJob(seq)
            self.totals["submitted"] += 1

    @rule(worker=st.sampled_from(WORKERS))
    def assign(self, worker: str) -> None:
        pending = self.pending()
        job = self.q.assign(worker, self.now, worker.upper())
        if not pending:
            assert job is None
            return
        assert job is not None
        assert job.id == pending[0]  # first come, first served
        model = self.jobs[job.id]
        assert model.state == "pending"  # never a finished job
        model.state = "running"
        model.worker = worker
        model.attempt += 1
        model.deadline = self.now + LEASE
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
        """Run a heartbeat/complete/fail; True if the model says it must succeed."""
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
        with pytest.raises(ProtocolError) as info:
            call()
        assert info.value.code == ("unknown_job" if model is None else "not_leased")
        return False

    def report(self, verb: str, job_id: str, worker: str, attempt: int | None) -> None:
        """Heartbeat, complete or fail ``job_id`` as ``worker``, checked against the model."""
        q, now = self.q, self.now
        result = [job_id, now]
        calls: dict[str, Callable[[], object]] = {
            "heartbeat": lambda: q.heartbeat(job_id, worker, attempt, now),
            "complete": lambda: q.complete(job_id, worker, attempt, result, now),
            "fail": lambda: q.fail(job_id, worker, attempt, "E", job_id, now),
        }
        if not self.check_report(job_id, worker, attempt, calls[verb]):
            return
        if verb == "heartbeat":
            self.jobs[job_id].deadline = now + LEASE
        elif verb == "complete":
            self.finish(job_id, "completed", result)
        else:
            self.finish(job_id, "failed", None)
            if job_id not in self.forgotten:
                assert q.get(job_id).error == {"type": "E", "message": job_id}

    @rule(
        verb=st.sampled_from(["heartbeat", "complete", "fail"]),
        n=st.integers(1, 12),
        worker=st.sampled_from(WORKERS),
        attempt=st.none() | st.integers(1, 3),
    )
    def report_as_anyone(self, verb: str, n: int, worker: str, attempt: int | None) -> None:
        # Mostly refused: not the holder, a stale attempt, a finished,
        # forgotten or never-issued job.
        self.report(verb, str(n), worker, attempt)

    def running(self) -> list[str]:
        return sorted(j for j, m in self.jobs.items() if m.state == "running")

    @precondition(lambda self: self.running())
    @rule(data=st.data(), verb=st.sampled_from(["heartbeat", "complete", "fail"]))
    def report_as_holder(self, data: st.DataObject, verb: str) -> None:
        # The rule above rarely hits the real holder; this one does, so jobs
        # finish often enough for retention to forget some.
        job_id = data.draw(st.sampled_from(self.running()))
        model = self.jobs[job_id]
        assert model.worker is not None
        attempt = data.draw(st.sampled_from([None, model.attempt]))
        self.report(verb, job_id, model.worker, attempt)
        after = {"heartbeat": "running", "complete": "completed", "fail": "failed"}[verb]
        assert job_id in self.forgotten or self.jobs[job_id].state == after

    @rule(worker=st.sampled_from(WORKERS))
    def release(self, worker: str) -> None:
        expected = {j for j, m in self.jobs.items() if m.state == "running" and m.worker == worker}
        lost = self.q.release(worker, self.now)
        assert {j.id for j in lost} == expected
        assert len(lost) == len(expected)
        for job_id in expected:
            self.requeue(job_id, "worker_lost")

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.5, 5.0, 10.0]))
    def advance_and_expire(self, dt: float) -> None:
        self.now += dt
        expected = {
            j for j, m in self.jobs.items() if m.state == "running" and m.deadline <= self.now
        }
        expired = self.q.expire(self.now)
        assert {j.id for j in expired} == expected
        assert len(expired) == len(expected)
        for job_id in expected:
            self.requeue(job_id, "lease_expired")

    @precondition(lambda self: self.jobs)
    @rule()
    def time_cannot_go_backwards(self) -> None:
        with pytest.raises(ValueError, match="backwards"):
            self.q.expire(self.now - 0.5)

    @invariant()
    def matches_model(self) -> None:
        q = self.q
        for job_id in self.issued:
            if job_id in self.forgotten:
                unknown_job(q.get, job_id)
                continue
            model = self.jobs[job_id]  # no job lost
            job = q.get(job_id)
            assert job.state.value == model.state
            assert job.attempt == model.attempt
            assert job.worker == model.worker
            if model.state == "running":
                assert job.lease_deadline == model.deadline
            if model.state == "completed":
                assert job.result == model.result
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
        running = {j: m.worker for j, m in self.jobs.items() if m.state == "running"}
        assert seen == running

    @invariant()
    def counts_and_totals(self) -> None:
        states = [m.state for m in self.jobs.values()]
        assert self.q.counts() == {
            s: states.count(s) for s in ("pending", "running", "completed", "failed")
        }
        assert self.q.pending_count == states.count("pending")
        assert self.q.running_count == states.count("running")
        assert self.q.totals == self.totals
        deadlines = [m.deadline for m in self.jobs.values() if m.state == "running"]
        assert self.q.next_deadline() == min(deadlines, default=INF)
        assert pending_order(self.q) == self.pending()


QueueMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
TestQueueMachine = QueueMachine.TestCase
