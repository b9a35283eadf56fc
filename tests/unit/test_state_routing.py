"""Routing by job name in the pure state: a worker gets only jobs it has handlers for.

``QueueState.assign(..., names=...)`` must keep priority and first-come,
first-served order among the jobs a worker can run, and leave every other
job in its place for workers that run it. (That the cost does not grow with
the number of pending jobs is measured by ``benchmarks.routing_micro``, not
tested here.)
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jobqueue._config import DEFAULT_QUEUE
from jobqueue._events import Event
from jobqueue._job import JobRecord, JobState
from jobqueue._state import QueueState
from tests.helpers import clone, ids, new_state, pending_order, submit


def take_all(q: QueueState, names: set[str] | None, queues: list[str] | None = None) -> list[str]:
    """Ids a copy of ``q`` hands, one by one, to a worker running ``names``."""
    copied = clone(q)
    order = []
    while (
        job := copied.assign(object(), math.inf, queues=queues or [DEFAULT_QUEUE], names=names)
    ) is not None:
        order.append(job.id)
    return order


def test_a_worker_gets_only_its_names_in_priority_then_submission_order() -> None:
    q = QueueState()
    a1 = submit(q, name="a")
    c1 = submit(q, name="c", priority=9)
    b1 = submit(q, name="b", priority=5)
    a2 = submit(q, name="a", priority=5)
    c2 = submit(q, name="c")
    b2 = submit(q, name="b")
    assert take_all(q, {"a", "b"}) == ids([b1, a2, a1, b2])
    assert take_all(q, {"c"}) == ids([c1, c2])
    assert take_all(q, {"nothing-pending"}) == []
    assert take_all(q, set()) == []
    # Without names: everything, in one order over all names.
    assert take_all(q, None) == ids([c1, b1, a2, a1, c2, b2])


def test_skipped_jobs_keep_their_place() -> None:
    q = QueueState()
    new = submit(q, name="new-handler")
    old = [submit(q, name="old") for _ in range(3)]
    # The old workers take the later jobs, one at a time; the new job is passed over.
    assert q.assign("old-worker", 1.0, names={"old"}) is old[0]
    assert q.assign("old-worker", 1.0, names={"old"}) is old[1]
    # A worker with the new handler (or one with every handler) finds it first in line.
    assert pending_order(q) == [new.id, old[2].id]
    assert q.assign("new-worker", 2.0, names={"new-handler", "old"}) is new
    assert new.attempt == 1
    assert new.state is JobState.RUNNING


def test_a_requeued_job_goes_back_to_its_place_among_its_name() -> None:
    q = new_state(lease_timeout=10.0)
    a1, b1, a2, b2 = (submit(q, name=name) for name in "abab")
    assert q.assign("w", 0.0, names={"a"}) is a1
    assert q.assign("v", 0.0, names={"b"}) is b1
    q.release("w", 1.0)  # a1's worker is lost: back in line, ahead of a2
    q.give_back("v", [(b1.id, None)], 1.0)  # b1 given back: ahead of b2
    assert take_all(q, {"a"}) == ids([a1, a2])
    assert take_all(q, {"b"}) == ids([b1, b2])
    assert pending_order(q) == ids([a1, b1, a2, b2])


def test_cancelled_jobs_of_one_name_are_dropped_without_touching_another() -> None:
    q = QueueState()
    jobs = [submit(q, name="a" if i % 10 else "b", priority=i % 3) for i in range(3000)]
    a_jobs = [job for job in jobs if job.name == "a"]
    b_jobs = [job for job in jobs if job.name == "b"]
    for job in a_jobs[:-50]:
        q.cancel(job.id, 0.0)
    line = q._queues[DEFAULT_QUEUE]["a"]
    assert line.live == 50
    assert line.size <= 2 * line.live + 64  # compacted
    assert q._queues[DEFAULT_QUEUE]["b"].live == len(b_jobs)
    best_first = sorted(a_jobs[-50:], key=lambda j: (-j.priority, j.seq))
    assert take_all(q, {"a"}) == ids(best_first)
    for job in a_jobs[-50:]:
        q.cancel(job.id, 0.0)
    assert "a" not in q._queues[DEFAULT_QUEUE]  # a name with nothing pending costs nothing
    assert q.pending_by_name() == {"b": len(b_jobs)}


def test_a_better_job_arriving_in_a_line_is_seen_across_names() -> None:
    # The queue keeps a heap of its lines' heads: a job that arrives ahead of
    # its line's head (higher priority, or back in line early) must outrank
    # the heads of other lines at once, for any kind of worker.
    many = {f"other{i}" for i in range(10)} | {"a", "b"}
    for names in (None, {"a", "b"}, many):
        q = new_state(lease_timeout=10.0)
        a_low = submit(q, name="a")
        b_mid = submit(q, name="b", priority=1)
        a_high = submit(q, name="a", priority=2)
        assert take_all(q, names) == ids([a_high, b_mid, a_low])
        # Back in line at its place (ahead of b's head) after a lost lease.
        assert q.assign("w", 0.0, names=names) is a_high
        q.release("w", 1.0)
        assert take_all(q, names) == ids([a_high, b_mid, a_low])


def test_pending_in_and_pending_by_name_see_names_and_queues() -> None:
    q = QueueState()
    submit(q, name="a")
    submit(q, name="a", queue="mail")
    submit(q, name="b", queue="mail")
    scheduled = submit(q, name="c", delay=5.0)
    assert q.pending_in([DEFAULT_QUEUE], {"a"})
    assert not q.pending_in([DEFAULT_QUEUE], {"b", "c"})
    assert q.pending_in([DEFAULT_QUEUE, "mail"], {"b"})
    assert not q.pending_in(["elsewhere"], {"a", "b"})
    assert not q.pending_in([DEFAULT_QUEUE], set())
    assert q.pending_in([DEFAULT_QUEUE])  # no names: any
    assert q.pending_by_name() == {"a": 2, "b": 1}  # scheduled jobs are not pending
    q.tick(5.0)
    assert q.pending_by_name() == {"a": 2, "b": 1, "c": 1}
    assert q.assign("w", 5.0, names={"c"}) is scheduled


def test_a_replayed_journal_routes_the_same() -> None:
    events: list[Event] = []
    q = new_state(lease_timeout=10.0, on_event=events.append)
    for index in range(40):
        submit(q, name="abc"[index % 3], priority=index % 4)
    for _ in range(5):
        assert q.assign("w", 0.0, names={"b"}) is not None
    q.release("w", 1.0)
    replayed = QueueState()
    for event in events:
        replayed.apply(event)
    for names in ({"a"}, {"b"}, {"c"}, {"a", "c"}, None):
        assert take_all(replayed, names) == take_all(q, names)


# -- a property: routed assign is the reference's pick ------------------------

#: More names than ``_lines.FEW_NAMES``: a worker running many of them walks
#: the heap of heads, one running a few looks at their lines one by one.
NAMES = [f"n{i}" for i in range(12)]
QUEUES = [DEFAULT_QUEUE, "q2"]

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("submit"),
            st.sampled_from(NAMES),
            st.sampled_from(QUEUES),
            st.integers(-2, 2),
            st.sampled_from([0.0, 0.0, 1.5]),
        ),
        st.tuples(
            st.just("assign"),
            st.sets(st.sampled_from(NAMES)) | st.none(),
            st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True),
        ),
        st.tuples(st.just("cancel"), st.integers(0, 60)),
        st.tuples(st.just("lose"), st.integers(0, 5)),
        st.tuples(st.just("tick"), st.floats(0.0, 2.0)),
    ),
    max_size=60,
)


def reference_pick(q: QueueState, names: set[str] | None, queues: list[str]) -> JobRecord | None:
    """The best pending job the worker may take, found by looking at every job."""
    pending, _ = q.list_jobs(JobState.PENDING, None, 1 << 30)
    eligible = [
        job for job in pending if job.queue in queues and (names is None or job.name in names)
    ]
    return min(eligible, key=lambda job: (-job.priority, job.seq), default=None)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_routed_assign_always_takes_the_best_eligible_job(ops: list[tuple[Any, ...]]) -> None:
    q = new_state(lease_timeout=100.0)
    submitted: list[JobRecord] = []
    now = 0.0
    workers = ["w0", "w1", "w2", "w3", "w4", "w5"]
    for index, op in enumerate(ops):
        kind = op[0]
        if kind == "submit":
            _, name, queue, priority, delay = op
            submitted.append(submit(q, now, name, queue=queue, priority=priority, delay=delay))
        elif kind == "assign":
            _, names, queues = op
            expected = reference_pick(q, names, queues)
            got = q.assign(workers[index % len(workers)], now, queues=queues, names=names)
            assert got is expected
        elif kind == "cancel" and submitted:
            job = submitted[op[1] % len(submitted)]
            if job.state not in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED):
                q.cancel(job.id, now)
        elif kind == "lose":
            q.release(workers[op[1]], now)
        elif kind == "tick":
            now += op[1]
            q.tick(now)
        # Per-name counts always agree with the jobs themselves.
        pending, _ = q.list_jobs(JobState.PENDING, None, 1 << 30)
        by_name: dict[str, int] = {}
        for job in pending:
            by_name[job.name] = by_name.get(job.name, 0) + 1
        assert q.pending_by_name() == by_name
