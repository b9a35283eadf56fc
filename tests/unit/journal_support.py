"""Helpers for the journal tests: a random lifecycle, and a field-by-field view of a state."""

from __future__ import annotations

import pickle
import random
from typing import Any

import attrs

from jobqueue._config import QueueRules
from jobqueue._errors import RuleError
from jobqueue._job import FINISHED, JobState, finished_size, payload_size
from jobqueue._json import stored_form
from jobqueue._schedule import add_schedule, fire_schedules, remove_schedule
from jobqueue._schedule_spec import Schedule
from jobqueue._state import QueueState

QUEUES = ["default", "a", "b"]


def new_state(**rules: Any) -> QueueState:
    """A state with small, fast-moving rules (and ``rules`` over them)."""
    base = {"lease_timeout": 3.0, "retry_delay": 0.5, "max_attempts": 3, "finished_retention": 6}
    return QueueState(rules=QueueRules(**{**base, **rules}), id_prefix="p-")


def _schedules(q: QueueState, step: int, steps: int, now: float) -> None:
    """Schedule events at fixed steps (drawing nothing from the lifecycle's rng)."""
    wall = 1_700_000_000.0 + 60 * now  # a minute of wall clock per second of ``now``
    if step == 0:
        add_schedule(q, Schedule("tick", "n", stored_form({"s": 1}), every=120), wall)
        add_schedule(q, Schedule("cron", "m", cron="*/5 * * * *", queue="a"), wall)
    elif step == steps * 3 // 4:
        remove_schedule(q, "tick")
    elif step % 5 == 0:
        fire_schedules(q, now, wall)


def lifecycle(q: QueueState, rng: random.Random, steps: int, now: float = 100.0) -> float:
    """Drive ``q`` through ``steps`` random commands; returns the last ``now``.

    Every kind of event happens: submits (delayed, keyed, prioritised, in
    several queues, with raw JSON payloads), runs that complete, fail, lose
    their worker or their lease or are given back, progress, cancels, revives
    and deletes; schedules are added, fire and are removed.
    """
    workers = [1, 2, 3, "w"]
    for step in range(steps):
        now += rng.choice([0.0, 0.1, 0.7, 2.0])
        _schedules(q, step, steps, now)
        roll = rng.random()
        try:
            if roll < 0.3:
                q.submit(
                    rng.choice(["n", "m"]),
                    stored_form(rng.choice([None, 3, "s", {"k": [1, "é"]}, [1.5]])),
                    now,
                    queue=rng.choice(QUEUES),
                    priority=rng.choice([0, 0, 5]),
                    delay=rng.choice([0.0, 0.0, 1.5]),
                    key=rng.choice([None, None, "x", "y", "z"]),
                )
            elif roll < 0.5:
                q.assign(rng.choice(workers), now, "name", rng.sample(QUEUES, 2))
            elif roll < 0.8:
                running = q.list_jobs(JobState.RUNNING, None, 100)[0]
                if running:
                    job = rng.choice(running)
                    action = rng.random()
                    if action < 0.4:
                        q.complete(job.id, job.worker, job.attempt, stored_form({"r": 1}), now)
                    elif action < 0.55:
                        q.fail(job.id, job.worker, job.attempt, "E", "boom", now)
                    elif action < 0.7:
                        q.report_progress(job.id, job.worker, None, 0.5, stored_form("n"), now)
                    elif action < 0.8:
                        q.heartbeat(job.id, job.worker, job.attempt, now)
                    elif action < 0.9:
                        q.give_back(job.worker, [(job.id, job.attempt)], now)
                    else:
                        q.release(job.worker, now)
            elif roll < 0.88:
                q.tick(now)
            else:
                jobs = [job for state in JobState for job in q.list_jobs(state, None, 100)[0]]
                if jobs:
                    job = rng.choice(jobs)
                    choice = rng.random()
                    if choice < 0.4:
                        q.cancel(job.id, now)
                    elif choice < 0.7:
                        failed = q.list_jobs(JobState.FAILED, None, 100)[0]
                        q.revive((failed or [job])[0].id, now)
                    else:
                        q.delete(job.id, now)
        except RuleError:
            pass
    return now


def view(q: QueueState) -> dict[str, Any]:
    """Everything observable about ``q``, field by field, to compare two states."""
    jobs = {
        state.value: [
            attrs.asdict(job, recurse=False) for job in q.list_jobs(state, None, 1 << 30)[0]
        ]
        for state in JobState
    }
    # The byte count max_payload_bytes reads is kept as jobs change: it must
    # agree with the jobs themselves, after a replay or a restore as before.
    unfinished = (JobState.PENDING, JobState.SCHEDULED, JobState.RUNNING)
    recounted = sum(payload_size(job["payload"]) for s in unfinished for job in jobs[s.value])
    assert q.payload_bytes == recounted
    # So must the count finished_retention_bytes reads, of payloads and results.
    finished = [job for s in FINISHED for job in q.list_jobs(s, None, 1 << 30)[0]]
    assert q.finished_bytes == sum(finished_size(job) for job in finished)
    copied = _detached(q)
    order = []
    while (job := copied.assign("drain", float("inf"), queues=QUEUES)) is not None:
        order.append(job.id)
    return {
        "jobs": jobs,
        "ids": sorted(q._jobs),
        "len": len(q),
        "order": order,
        "counts": q.counts(),
        "queue_counts": q.queue_counts(),
        "totals": dict(q.totals),
        "next_deadline": q.next_deadline(),
        "holders": sorted((str(w), ids) for w, ids in q.holders()),
        "keys": {key: q.knows_key(key) for key in ("x", "y", "z")},
        "next_seq": q._next_seq,
        "payload_bytes": q.payload_bytes,
        "finished_bytes": q.finished_bytes,
        "schedules": [(e.schedule, e.last, e.fired, e.due) for e in q.schedules],
        "next_schedule": q.schedules.next_due,
    }


def listed(q: QueueState, state: JobState) -> list[Any]:
    """Every job of ``q`` in ``state``."""
    return q.list_jobs(state, None, 1 << 30)[0]


def _detached(q: QueueState) -> QueueState:
    on_event, q.on_event = q.on_event, None
    try:
        copied = pickle.loads(pickle.dumps(q))
    finally:
        q.on_event = on_event
    assert isinstance(copied, QueueState)
    return copied
