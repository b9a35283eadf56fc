"""The numbers behind ``GET /metrics``: kept by the coordinator, written as Prometheus text.

Three parts, none of which does I/O:

- :class:`JobTimes`, the coordinator's bookkeeping for the two histograms
  (submit-to-start wait, run time, per queue). The coordinator calls it as
  it submits, assigns and records outcomes: O(1) per call, and only when the
  server was started with ``metrics``.
- :class:`MetricsSnapshot`, a copy of every figure taken by the coordinator
  in O(queues + connections) when the HTTP side asks for one over the
  command channel, so the HTTP task never reads queue state itself.
- :func:`render`, the snapshot in the Prometheus text exposition format
  (version 0.0.4), done outside the coordinator.

docs/metrics.md lists every metric.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping

import attrs

from ._job import JobRecord, JobState
from ._limits import MAX_LISTED

#: Upper bounds (seconds) of the histogram buckets, for both waits and run
#: times: from a few milliseconds (a busy queue's hand-off, a no-op job) to
#: an hour (a backlog, a long batch job), about 2.5x apart.
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip

#: Upper bounds (seconds) of the journal's flush-time buckets: a write
#: without fsync takes microseconds, an fdatasync from a fraction of a
#: millisecond (SSD) to tens (disk, or a busy one); a second is trouble.
FLUSH_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

#: The content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Unfinished states, reported per queue (the store counts them per queue).
_QUEUE_STATES = ("pending", "scheduled", "running")
#: Finished states, reported without a queue (the store counts them overall).
_FINISHED_STATES = ("completed", "failed", "cancelled")
#: The lifetime totals: (key in ``QueueModel.totals``, metric name, help).
_TOTALS = (
    ("submitted", "jobqueue_jobs_submitted_total", "Jobs accepted (keyed duplicates excluded)."),
    ("completed", "jobqueue_jobs_completed_total", "Jobs whose handler returned a result."),
    ("failed", "jobqueue_jobs_failed_total", "Jobs that ran out of attempts (dead letters)."),
    ("retried", "jobqueue_jobs_retried_total", "Runs that raised and were scheduled to retry."),
    ("reassigned", "jobqueue_jobs_reassigned_total", "Runs lost with their worker or lease."),
    ("expired", "jobqueue_leases_expired_total", "Runs lost because their lease ran out."),
    ("cancelled", "jobqueue_jobs_cancelled_total", "Jobs cancelled."),
)
#: The rules' bounds, each shown as a gauge of its own name while it is on.
_BOUNDS_HELP = {
    "max_pending": "Waiting jobs (pending and scheduled) past which submits get queue_full.",
    "max_payload_bytes": "Bytes of unfinished jobs' payloads past which submits get queue_full.",
    "finished_retention": "Finished jobs remembered; past it the oldest are forgotten.",
    "finished_retention_bytes": (
        "Bytes of finished jobs' payloads and results; past it the oldest are forgotten."
    ),
}
#: The :class:`~jobqueue.QueueRules` fields the page shows as gauges.
BOUND_RULES = tuple(_BOUNDS_HELP)


class Histogram:
    """Bucket counts and a sum; O(log buckets) per observation, no allocation.

    Args:
        bounds: The buckets' upper bounds, ascending (:data:`BUCKETS` for
            job times, :data:`FLUSH_BUCKETS` for the journal's flushes).
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        #: Observations per bucket (not cumulative); the last is above every bound.
        self.counts = [0] * (len(bounds) + 1)
        #: The sum of every observation, in seconds.
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation (``le`` bounds: a value equal to a bound is in it)."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def copy(self) -> Histogram:
        """A copy the coordinator can hand away."""
        other = Histogram(self.bounds)
        other.counts = list(self.counts)
        other.total = self.total
        return other


class JobTimes:
    """When waiting and running jobs started waiting or running, and the histograms.

    Two dicts keyed by job id: jobs submitted this run that have not yet
    started, and jobs running now. An entry leaves on the job's first start,
    its outcome, its cancellation or its lost lease, so they never hold more
    than the unfinished jobs. Jobs replayed from a journal were submitted
    before this run's clock began: their wait is not observed.

    The histograms are kept for at most ``most`` queues. Queue names are the
    clients' (one that puts an id in its queue name makes a new queue per
    job), and each queue costs two histograms here and about 44 lines on
    every scrape, so past ``most`` the queue used least recently loses its
    histograms to the new one: Prometheus sees its series end, and a counter
    reset should it come back, which ``rate()`` handles.

    Args:
        most: Most queues with histograms (:data:`~jobqueue._limits.MAX_LISTED`).
    """

    def __init__(self, most: int = MAX_LISTED) -> None:
        self._ready: dict[str, float] = {}
        self._started: dict[str, float] = {}
        self._most = most
        #: Per queue, least recently used first: its (wait, run) histograms.
        #: Wait: seconds from submission (or the end of a delay) to the first
        #: start; run: seconds from a start to the outcome its worker reported.
        #: A submit to the queue and an observation make it the most recent.
        self.queues: dict[str, tuple[Histogram, Histogram]] = {}

    def submitted(self, job: JobRecord, now: float) -> None:
        """A new job: its wait starts now, or when its delay ends."""
        self._ready[job.id] = now if job.not_before is None else job.not_before
        self._use(job.options.queue)  # (not the property: this runs for every job)

    def assigned(self, job: JobRecord, now: float) -> None:
        """``job`` started a run: observe its wait if this is its first start."""
        ready = self._ready.pop(job.id, None)
        if ready is not None:
            self._use(job.options.queue)[0].observe(max(0.0, now - ready))
        self._started[job.id] = now

    def reported(self, job: JobRecord, now: float) -> None:
        """``job``'s worker reported an outcome (a result or an error): observe the run."""
        started = self._started.pop(job.id, None)
        if started is not None:
            self._use(job.options.queue)[1].observe(now - started)

    def ended(self, jobs: Iterable[JobRecord]) -> None:
        """Forget runs that ended without a report (lost, cancelled) and cancelled waits."""
        for job in jobs:
            if job.state is not JobState.RUNNING:
                self._started.pop(job.id, None)
                if job.state is JobState.CANCELLED:
                    self._ready.pop(job.id, None)

    def _use(self, queue: str) -> tuple[Histogram, Histogram]:
        """``queue``'s histograms, made the most recently used (made, if it had none)."""
        # A plain dict keeps its insertion order: taking the entry out and
        # putting it back moves it to the end. Measured, that is quicker than
        # an OrderedDict's get and move_to_end (about 60 ns against 65 with
        # one queue, 75 against 95 with fifty), and this runs for every job.
        queues = self.queues
        pair = queues.pop(queue, None)
        if pair is None:
            if len(queues) >= self._most:
                del queues[next(iter(queues))]  # the least recently used
            pair = (Histogram(), Histogram())
        queues[queue] = pair
        return pair


@attrs.frozen
class JournalFigures:
    """What the journal reports: its flushes, size, writes, trouble and compactions.

    Kept by the journal's flusher, not the coordinator, and read in trio's
    thread when a scrape asks: O(1), and no queue state.
    """

    #: Seconds each successful write (and fsync, when one was due) took.
    flush_seconds: Histogram
    #: Bytes in the journal's live segments now (compaction shrinks it).
    size_bytes: int
    #: Bytes appended since the server started (snapshots included).
    written_bytes: int
    #: ``always``, ``interval`` or ``never``.
    fsync: str = "always"
    #: Why the last write failed, while writes fail (changes are then
    #: refused until one succeeds); ``None`` while they succeed.
    error: str | None = None
    #: Compactions finished since the server started, and their seconds in all.
    compactions: int = 0
    compaction_seconds: float = 0.0

    @property
    def failing(self) -> bool:
        """Whether the last write failed."""
        return self.error is not None


@attrs.frozen
class MetricsSnapshot:
    """Every figure of one scrape, copied by the coordinator."""

    #: Per queue: unfinished jobs per state (queues with histograms and none
    #: are listed with zeros); at most ``MAX_LISTED`` queues, the busiest.
    queues: Mapping[str, Mapping[str, int]]
    #: Queues with unfinished jobs, listed in ``queues`` or not.
    queues_in_use: int
    #: Bytes the unfinished jobs' payloads hold (``max_payload_bytes`` bounds them).
    payload_bytes: int
    #: Bytes the remembered finished jobs' payloads and results hold
    #: (``finished_retention_bytes`` bounds them).
    finished_bytes: int
    #: The rules' bounds that are on, by their names (``max_pending``,
    #: ``max_payload_bytes``, ``finished_retention``,
    #: ``finished_retention_bytes``), so alerts can divide by them.
    bounds: Mapping[str, int]
    #: Remembered finished jobs per finished state.
    finished: Mapping[str, int]
    #: Lifetime totals (``QueueModel.totals``).
    totals: Mapping[str, int]
    connections: int
    #: Connections holding a lease or waiting for a job.
    workers: int
    #: Connections blocked in ``request_job``.
    waiting_workers: int
    wait: Mapping[str, Histogram]
    run: Mapping[str, Histogram]
    journal: JournalFigures | None = None


def render(snapshot: MetricsSnapshot) -> str:
    """``snapshot`` in the Prometheus text exposition format, version 0.0.4."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("jobqueue_jobs", "gauge", "Unfinished jobs by queue and state.")
    for queue in sorted(snapshot.queues):
        counts = snapshot.queues[queue]
        for state in _QUEUE_STATES:
            labels = f'queue="{_label(queue)}",state="{state}"'
            out.append(f"jobqueue_jobs{{{labels}}} {counts.get(state, 0)}")
    family(
        "jobqueue_queues",
        "gauge",
        f"Queues with unfinished jobs, listed or not (jobqueue_jobs lists {MAX_LISTED} at most).",
    )
    out.append(f"jobqueue_queues {snapshot.queues_in_use}")
    family(
        "jobqueue_payload_bytes",
        "gauge",
        "Bytes the unfinished jobs' payloads hold (submits past max_payload_bytes get queue_full).",
    )
    out.append(f"jobqueue_payload_bytes {snapshot.payload_bytes}")
    family("jobqueue_finished_jobs", "gauge", "Finished jobs still remembered, by state.")
    for state in _FINISHED_STATES:
        out.append(f'jobqueue_finished_jobs{{state="{state}"}} {snapshot.finished.get(state, 0)}')
    family(
        "jobqueue_finished_bytes",
        "gauge",
        "Bytes the remembered finished jobs' payloads and results hold"
        " (past finished_retention_bytes the oldest are forgotten).",
    )
    out.append(f"jobqueue_finished_bytes {snapshot.finished_bytes}")
    for name, bound in snapshot.bounds.items():
        family(f"jobqueue_{name}", "gauge", _BOUNDS_HELP[name])
        out.append(f"jobqueue_{name} {bound}")
    for key, name, help_text in _TOTALS:
        family(name, "counter", help_text)
        out.append(f"{name} {snapshot.totals.get(key, 0)}")
    family("jobqueue_connections", "gauge", "Open client and worker connections.")
    out.append(f"jobqueue_connections {snapshot.connections}")
    family("jobqueue_workers", "gauge", "Connections holding a job or waiting for one.")
    out.append(f"jobqueue_workers {snapshot.workers}")
    family("jobqueue_workers_waiting", "gauge", "Connections blocked waiting for a job.")
    out.append(f"jobqueue_workers_waiting {snapshot.waiting_workers}")
    _histograms(
        out,
        family,
        "jobqueue_job_wait_seconds",
        "Seconds from submission (or the end of a delay) to a job's first start.",
        snapshot.wait,
    )
    _histograms(
        out,
        family,
        "jobqueue_job_run_seconds",
        "Seconds from a run's start to the outcome its worker reported.",
        snapshot.run,
    )
    journal = snapshot.journal
    if journal is not None:
        family(
            "jobqueue_journal_flush_seconds",
            "histogram",
            "Seconds each journal write took, its fsync included when one was due.",
        )
        _buckets(out, "jobqueue_journal_flush_seconds", "", journal.flush_seconds)
        family("jobqueue_journal_bytes", "gauge", "Bytes of records in the journal's segments.")
        out.append(f"jobqueue_journal_bytes {journal.size_bytes}")
        family(
            "jobqueue_journal_written_bytes_total",
            "counter",
            "Bytes written to the journal since the server started (snapshots included).",
        )
        out.append(f"jobqueue_journal_written_bytes_total {journal.written_bytes}")
        family(
            "jobqueue_journal_failing",
            "gauge",
            "1 while journal writes fail and changes are refused (journal_unavailable), else 0.",
        )
        out.append(f"jobqueue_journal_failing {int(journal.failing)}")
        family(
            "jobqueue_journal_compaction_seconds",
            "summary",
            "Seconds each finished journal compaction took; its count is the compactions.",
        )
        out.append(f"jobqueue_journal_compaction_seconds_count {journal.compactions}")
        out.append(f"jobqueue_journal_compaction_seconds_sum {journal.compaction_seconds!r}")
    return "\n".join(out) + "\n"


def _histograms(
    out: list[str],
    family: Callable[[str, str, str], None],
    name: str,
    help_text: str,
    by_queue: Mapping[str, Histogram],
) -> None:
    family(name, "histogram", help_text)
    for queue in sorted(by_queue):
        _buckets(out, name, f'queue="{_label(queue)}",', by_queue[queue])


def _buckets(out: list[str], name: str, labels: str, histogram: Histogram) -> None:
    cumulative = 0
    for bound, count in zip((*histogram.bounds, math.inf), histogram.counts, strict=True):
        cumulative += count
        le = "+Inf" if bound == math.inf else repr(bound)
        out.append(f'{name}_bucket{{{labels}le="{le}"}} {cumulative}')
    plain = labels.rstrip(",")
    suffix = f"{{{plain}}}" if plain else ""
    out.append(f"{name}_sum{suffix} {histogram.total!r}")
    out.append(f"{name}_count{suffix} {cumulative}")


def _label(value: str) -> str:
    """A label value escaped as the format asks (backslash, quote, newline).

    A lone surrogate (half of a pair, which JSON's escapes can send in a
    name) has no UTF-8 form: it is written as its escape, so that the page
    can be encoded.
    """
    if not value.isascii():
        value = value.encode("utf-8", "backslashreplace").decode()
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
