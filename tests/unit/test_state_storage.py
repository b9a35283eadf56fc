"""The job lifecycle in the pure state machine, with explicit ``now`` values.

Retries and their backoff, the attempt budget, dead letters and reviving
them, delays, priorities and queues, cancellation, idempotency keys,
deleting, progress, listing, and replaying all of it from the journal.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import random
from collections.abc import Callable, Hashable
from typing import Any

import attrs
import pytest

from jobqueue._config import DEFAULT_QUEUE, QueueRules
from jobqueue._coordinator import job_info
from jobqueue._errors import RuleError
from jobqueue._events import (
    AttemptFailed,
    Cancelled,
    Event,
    Forgotten,
    Progressed,
    Promoted,
    Revived,
    Submitted,
)
from jobqueue._job import JobRecord, JobState
from jobqueue._state import QueueState

INF = math.inf
STATES = [state.value for state in JobState]


# -- helpers ------------------------------------------------------------------------

RULE_NAMES = {field.name for field in attrs.fields(QueueRules)}


def new_state(**kwargs: Any) -> QueueState:
    """A ``QueueState`` with the rules named in ``kwargs`` and its other arguments."""
    rules = {name: kwargs.pop(name) for name in RULE_NAMES & kwargs.keys()}
    return QueueState(rules=QueueRules(**rules), **kwargs)


def refused(code: str, call: Callable[..., object], *args: Any) -> RuleError:
    with pytest.raises(RuleError) as info:
        call(*args)
    assert info.value.code == code
    return info.value


def ids(jobs: list[JobRecord]) -> list[str]:
    return [job.id for job in jobs]


def submit(q: QueueState, now: float = 0.0, name: str = "n", **options: Any) -> JobRecord:
    """Submit a new job and return it (it must be new)."""
    job, new = q.submit(name, None, now, **options)
    assert new
    return job


def run(q: QueueState, job: JobRecord, worker: Hashable, now: float, **kw: Any) -> JobRecord:
    """Assign, expecting ``job`` to come out."""
    assigned = q.assign(worker, now, **kw)
    assert assigned is job
    return assigned


def clone(q: QueueState) -> QueueState:
    on_event, q.on_event = q.on_event, None
    try:
        copied = pickle.loads(pickle.dumps(q))
    finally:
        q.on_event = on_event
    assert isinstance(copied, QueueState)
    return copied


def drain(q: QueueState, queues: list[str]) -> list[str]:
    """The order a copy of ``q`` hands out its pending jobs in ``queues``."""
    copied = clone(q)
    order = []
    while (job := copied.assign(object(), INF, queues=queues)) is not None:
        order.append(job.id)
    return order


def snapshot(q: QueueState, job_ids: list[str], queues: list[str]) -> dict[str, Any]:
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
            AttemptFailed(job.id, "error", "ValueError", f"try {attempt}", now + delay)
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
    assert events == [AttemptFailed(job.id, "error", "ValueError", "last", None, final=True)]
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
    assert events == [Submitted(job.id, "n", None, 1, not_before=15.0)]
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
    assert events == [Cancelled(job.id)]
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
    assert events[-2:] == [Cancelled(job.id), Forgotten(job.id)]
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


def test_list_jobs_oldest_change_first_with_limit() -> None:
    q = QueueState()
    jobs = [submit(q, queue="a" if i % 2 else "b") for i in range(6)]
    # Pending in submission order.
    assert q.list_jobs(JobState.PENDING, None, 100) == (jobs, False)
    # A job that leaves and comes back goes to the end.
    run(q, jobs[0], "w", 0.0, queues=["b"])
    q.release("w", 1.0)
    assert ids(q.list_jobs(JobState.PENDING, None, 100)[0]) == ids([*jobs[1:], jobs[0]])
    # Limit and truncation.
    assert q.list_jobs(JobState.PENDING, None, 6) == ([*jobs[1:], jobs[0]], False)
    assert q.list_jobs(JobState.PENDING, None, 5) == (jobs[1:], True)
    assert q.list_jobs(JobState.PENDING, None, 1) == ([jobs[1]], True)
    # The queue filter counts only that queue's jobs toward the limit.
    assert q.list_jobs(JobState.PENDING, "a", 100) == ([jobs[1], jobs[3], jobs[5]], False)
    assert q.list_jobs(JobState.PENDING, "a", 3) == ([jobs[1], jobs[3], jobs[5]], False)
    assert q.list_jobs(JobState.PENDING, "a", 2) == ([jobs[1], jobs[3]], True)
    assert q.list_jobs(JobState.PENDING, "b", 2) == ([jobs[2], jobs[4]], True)
    assert q.list_jobs(JobState.PENDING, "nowhere", 5) == ([], False)
    assert q.list_jobs(JobState.RUNNING, None, 5) == ([], False)
    # Finished jobs in finishing order.
    for job in (jobs[3], jobs[1]):
        q.cancel(job.id, 2.0)
    assert q.list_jobs(JobState.CANCELLED, None, 5) == ([jobs[3], jobs[1]], False)
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


# -- replay --------------------------------------------------------------------------------


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
    assert snapshot(replayed, issued, queues) == snapshot(q, issued, queues)
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
    assert snapshot(replayed, issued, queues) == snapshot(q, issued, queues)


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
    assert snapshot(replayed, all_ids, ["a"]) == snapshot(q, all_ids, ["a"])
    for state in (q, replayed):
        first = state.assign("w", 2.0, queues=["a"])
        second = state.assign("w", 2.0, queues=["a"])
        assert (first and first.id, second and second.id) == (dead.id, later.id)
        assert state.assign("w", 2.0, queues=["a"]) is None


# -- storage: lines of lanes, generations of finished jobs ----------------------------


def test_jobs_back_in_line_out_of_order_keep_their_place_across_priorities() -> None:
    # In-order submits go to a FIFO lane per priority; requeued, promoted and
    # revived jobs come back behind later jobs and wait in a heap beside the
    # lanes. Either way the line is (-priority, seq).
    q = new_state(max_attempts=1)
    low1, high2, low3, high4 = (submit(q, priority=p) for p in (0, 5, 0, 5))
    delayed5 = submit(q, priority=5, delay=1.0)
    assert q.assign("w", 0.0) is high2
    assert q.assign("w", 0.0) is high4
    high6, low7 = submit(q, priority=5), submit(q)
    q.release("w", 0.0)  # out of attempts: both fail
    assert [high2.state, high4.state] == [JobState.FAILED, JobState.FAILED]
    q.revive(high4.id, 0.0)
    q.tick(1.0)  # delayed5 joins, behind high6 in time but ahead of it in line
    assert drain(q, [DEFAULT_QUEUE]) == ids([high4, delayed5, high6, low1, low3, low7])
    assert q.assign("v", 1.0) is high4
    q.release("v", 1.0)  # failed again, and out of the line
    q.revive(high2.id, 1.0)
    assert drain(q, [DEFAULT_QUEUE]) == ids([high2, delayed5, high6, low1, low3, low7])


def test_a_line_of_cancelled_jobs_is_compacted() -> None:
    q = QueueState()
    jobs = [submit(q, priority=i % 3) for i in range(3000)]
    for job in jobs[:2900]:
        q.cancel(job.id, 0.0)
    line = q._queues[DEFAULT_QUEUE]
    live = 100
    assert line.size <= 2 * live + 64
    assert sum(map(len, line.lanes.values())) + len(line.late) == line.size
    assert drain(q, [DEFAULT_QUEUE]) == ids(sorted(jobs[2900:], key=lambda j: (-j.priority, j.seq)))


def test_finished_jobs_are_kept_in_generations_and_keys_in_small_dicts() -> None:
    # One dict of all finished jobs (or of their keys) would be rebuilt at
    # full size as jobs are forgotten and added, which fragments the heap
    # over a long run. A generation fills up, then only empties, and goes.
    from jobqueue._store import KEYS_PER_SHARD

    retention = 20_000
    q = new_state(finished_retention=retention)
    assert q._generation == 5461
    done = []
    for index in range(3 * retention):
        job = submit(q, key=f"k{index}")
        assert q.assign("w", 0.0) is job
        q.complete(job.id, "w", None, index, 0.0)
        done.append(job)
        if index % 997 == 0:
            assert len(q._done) <= retention // q._generation + 2
            assert all(len(generation) <= q._generation for generation in q._done)
            assert all(q._done)  # an empty generation is dropped
    assert len(q._jobs) == 0
    assert len(q) == sum(map(len, q._done)) == retention
    assert q.counts()["completed"] == retention
    assert q.get(done[-retention].id).result == 2 * retention
    refused("unknown_job", q.get, done[-retention - 1].id)
    listed, more = q.list_jobs(JobState.COMPLETED, None, 3)
    assert (ids(listed), more) == (ids(done[-retention : -retention + 3]), True)
    assert sum(map(len, q._keys)) == retention
    assert max(map(len, q._keys)) <= 2 * KEYS_PER_SHARD
    assert q.submit("n", None, 0.0, key=f"k{2 * retention}") == (done[2 * retention], False)
    assert q.submit("n", None, 0.0, key=f"k{2 * retention - 1}")[1]  # forgotten: a new job


def test_deleting_and_reviving_finished_jobs_in_any_generation() -> None:
    q = new_state(finished_retention=30_000, max_attempts=1)
    jobs = []
    for index in range(12_000):  # three generations of 5,461 or fewer
        job = submit(q)
        q.assign("w", 0.0)
        if index % 2:
            q.fail(job.id, "w", None, "E", "m", 0.0)
        else:
            q.complete(job.id, "w", None, None, 0.0)
        jobs.append(job)
    assert [len(generation) for generation in q._done] == [5461, 5461, 1078]
    middle = jobs[5461 : 2 * 5461]
    for job in middle:
        if job.state is JobState.FAILED:
            q.revive(job.id, 1.0)
        else:
            q.delete(job.id, 1.0)
    assert [len(generation) for generation in q._done] == [5461, 1078]  # the emptied one went
    assert q.counts()["pending"] == len(middle) // 2 + 1
    assert q.get(jobs[0].id) is jobs[0]
    assert q.get(jobs[-1].id) is jobs[-1]
    assert q.get(middle[0].id).state is JobState.PENDING  # failed, revived
    refused("unknown_job", q.get, middle[1].id)  # completed, deleted


def test_a_pickled_state_finds_its_jobs_in_a_process_with_other_string_hashes(
    tmp_path: Any,
) -> None:
    # Finished jobs and keys sit in dicts picked by hash(), which is salted
    # per process; unpickling sorts them again.
    import subprocess
    import sys

    q = new_state(finished_retention=5000)
    for index in range(3000):
        job = submit(q, key=f"k{index}")
        q.assign("w", 0.0)
        q.complete(job.id, "w", None, index, 0.0)
    pending = submit(q, key="waiting")
    path = tmp_path / "state.pickle"
    path.write_bytes(pickle.dumps(q))
    check = f"""
import pickle
q = pickle.loads(open({str(path)!r}, "rb").read())
assert len(q._keys) > 1
assert all(q.get(str(i)).result == i - 1 for i in range(1, 3001))
assert q.submit("n", None, 0.0, key="k17") == (q.get("18"), False)
assert q.submit("n", None, 0.0, key="waiting") == (q.get({pending.id!r}), False)
q.delete("1", 0.0)
print("ok")
"""
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", check],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.stdout == "ok\n", out.stderr


def test_an_id_already_remembered_is_refused_even_once_finished() -> None:
    # A new job's id is looked up in every generation of finished jobs only
    # when it might not be new: a seq used before, or an id not made from
    # id_prefix and seq (a hand-made log).
    from jobqueue._job import InvalidTransition

    q = QueueState()
    q.apply(Submitted("1", "n", None, 1))
    q.assign("w", 0.0)
    q.complete("1", "w", None, None, 0.0)
    with pytest.raises(InvalidTransition, match="already exists"):
        q.apply(Submitted("1", "n", None, 1))
    q.apply(Submitted("3", "n", None, 2))  # not "2": a foreign id
    q.assign("w", 0.0)
    q.complete("3", "w", None, None, 0.0)
    with pytest.raises(InvalidTransition, match="already exists"):
        q.submit("n", None, 0.0)  # seq 3 makes "3", finished but remembered
    assert q.counts()["completed"] == 2
    assert len(q) == 2


@pytest.mark.parametrize("retention", [0, 1, 5460, 5461, 5462])
def test_emptied_generations_never_pile_up(retention: int) -> None:
    # With a retention below a generation's size, the newest generation can
    # be emptied while it is still the one being filled.
    q = new_state(finished_retention=retention)
    for _ in range(4 * q._generation + 7):
        job = submit(q)
        q.assign("w", 0.0)
        q.complete(job.id, "w", None, None, 0.0)
    assert len(q) == retention
    assert len(q._done) <= 2
    assert sum(map(len, q._done)) == retention
