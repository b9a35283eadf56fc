"""How the state stores jobs: lines of lanes, generations of finished jobs.

Pending jobs wait in a FIFO lane per priority, or in a heap beside the lanes
when they come back out of order; finished jobs are kept in generations for
retention. These tests pin the order and the forgetting down.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from jobqueue._config import DEFAULT_QUEUE
from jobqueue._events import (
    Submitted,
)
from jobqueue._job import JobState
from jobqueue._state import QueueState
from tests.helpers import drain, ids, new_state, refused, submit

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
    line = q._queues[DEFAULT_QUEUE]["n"]  # the line of the jobs named "n"
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
