"""The queue state against a tiny reference model, driven by Hypothesis.

Random submits, assignments, reports, cancels, deletes and clock ticks, in any
order, checked step by step against a model small enough to be obviously right.
"""

from __future__ import annotations

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

from jobqueue import _store
from jobqueue._errors import RuleError
from jobqueue._job import JobState
from tests.helpers import (
    STATES,
    ZERO_TOTALS,
    listed,
    new_state,
    pending_order,
    refused,
    unknown_job,
)

INF = math.inf


# -- stateful: the queue against a tiny reference model ------------------------------

WORKERS = ["w1", "w2", "w3"]
QUEUES = ["default", "hi"]
KEYS = ["k1", "k2"]
LEASE = 10.0
RETENTION = 3
#: Bytes of payloads and results the finished jobs may hold: a completed job
#: holds about 20 (its payload and result), a failed or cancelled one about 8
#: (its payload), so this limit binds before RETENTION with completed jobs
#: and not with the others.
FINISHED_BYTES = 40
MAX_ATTEMPTS = 3
RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 4.0
UNFINISHED = ("pending", "scheduled", "running")
FINISHED_STATES = ("completed", "failed", "cancelled")


def payload_of(seq: int) -> bytes:
    """Job ``seq``'s payload, held as the server holds a submitted object: its JSON text."""
    return b'{"i":%d}' % (seq - 1)


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
            finished_retention_bytes=FINISHED_BYTES,
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
        while len(self.finished_order) > RETENTION or self.finished_bytes() > FINISHED_BYTES:
            self.forget(self.finished_order.pop(0))

    def size(self, job_id: str) -> int:
        """What a finished job holds against ``finished_retention_bytes``."""
        job = self.jobs[job_id]
        result = job.result if isinstance(job.result, bytes) else b""
        return len(payload_of(job.seq)) + len(result)

    def finished_bytes(self) -> int:
        return sum(self.size(job_id) for job_id in self.finished_order)

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
                payload_of(len(self.issued) + 1),
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
            assert (job.state.value, job.attempt, job.payload) == (state, 0, payload_of(seq))
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
        # Held as the server holds a reported result: its JSON text.
        result = b'["%s",%r]' % (job_id.encode(), now)
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
    def payload_bytes_count_the_unfinished_jobs(self) -> None:
        unfinished = [m for m in self.jobs.values() if m.state in UNFINISHED]
        assert self.q.payload_bytes == sum(len(payload_of(m.seq)) for m in unfinished)

    @invariant()
    def finished_bytes_count_the_finished_jobs(self) -> None:
        assert self.q.finished_bytes == self.finished_bytes()

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
        # Pending jobs are listed in the order they will run; the others in
        # the order they entered their state.
        assert listed(q) == {
            s: sorted(
                self.in_state(s),
                key=(lambda j: (-jobs[j].priority, jobs[j].seq))
                if s == "pending"
                else (lambda j: jobs[j].moved),
            )
            for s in STATES
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
