"""The metrics' bookkeeping: the histograms JobTimes keeps, and what a snapshot lists."""

from __future__ import annotations

from jobqueue._job import JobRecord
from jobqueue._limits import MAX_LISTED
from jobqueue._metrics import JobTimes
from jobqueue._state import QueueState
from jobqueue._views import metrics_snapshot
from tests.unit import journal_support as support


def _submit(state: QueueState, times: JobTimes, queue: str, now: float) -> JobRecord:
    job, new = state.submit("n", None, now, queue=queue)
    assert new
    times.submitted(job, now)
    return job


def _start(state: QueueState, times: JobTimes, queue: str, now: float) -> JobRecord:
    job = state.assign("w", now, queues=(queue,))
    assert job is not None
    times.assigned(job, now)
    return job


def test_histograms_are_kept_for_the_queues_used_most_recently() -> None:
    state, times = support.new_state(), JobTimes(most=3)
    for i, queue in enumerate(("a", "b", "c")):
        _submit(state, times, queue, float(i))
    assert list(times.queues) == ["a", "b", "c"]  # least recently used first
    # An observation makes its queue the most recent: a's wait, then b's run.
    _start(state, times, "a", 10.0)
    job = _start(state, times, "b", 11.0)
    state.complete(job.id, "w", 1, None, 12.0)
    times.reported(job, 12.5)
    assert list(times.queues) == ["c", "a", "b"]
    # A new queue takes the place of the least recently used one, c.
    _submit(state, times, "d", 13.0)
    assert list(times.queues) == ["a", "b", "d"]
    assert (times.queues["a"][0].total, sum(times.queues["a"][0].counts)) == (10.0, 1)
    assert (times.queues["b"][1].total, sum(times.queues["b"][1].counts)) == (1.5, 1)
    # A submit makes its queue the most recent too.
    _submit(state, times, "a", 14.0)
    assert list(times.queues) == ["b", "d", "a"]
    # c comes back (its job starts): its histograms start again from zero,
    # and b, now the least recent, goes.
    _start(state, times, "c", 15.0)
    assert list(times.queues) == ["d", "a", "c"]
    wait, run = times.queues["c"]
    assert (sum(wait.counts), wait.total, sum(run.counts)) == (1, 13.0, 0)


def test_a_queue_per_job_never_keeps_more_than_max_listed() -> None:
    state, times = support.new_state(), JobTimes()
    for i in range(MAX_LISTED + 5):
        _submit(state, times, f"job-{i}", 0.0)
    kept = {f"job-{i}" for i in range(5, MAX_LISTED + 5)}
    snapshot = metrics_snapshot(state, times, 0, {})
    assert snapshot.wait.keys() == snapshot.run.keys() == kept
    # The waits of jobs whose queues were forgotten are still observed.
    _start(state, times, "job-0", 2.0)
    snapshot = metrics_snapshot(state, times, 0, {})
    assert snapshot.wait.keys() == kept - {"job-5"} | {"job-0"}
    assert snapshot.wait["job-0"].total == 2.0
