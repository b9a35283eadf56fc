"""Replies that show the state: a job's status, a listing, stats, the metrics figures.

Read-only views of a :class:`~jobqueue._state.QueueState`, built by the
coordinator between two commands (it alone may read the state). They are
plain functions so the rules and the wire stay apart: the state knows
nothing of ``JobInfo`` or ``Stats``, and the coordinator's class holds only
what it does with requests. Each costs O(queues + job names +
connections), or O(limit) for a listing, never O(jobs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._commands import Connection, Parked
from ._job import JobRecord, JobState
from ._json import encode_spliced, encode_stored
from ._limits import ENVELOPE_BYTES, MAX_LINE_BYTES, MAX_LISTED
from ._listing import busiest, busiest_items, most_unfinished
from ._metrics import BOUND_RULES, JobTimes, JournalFigures, MetricsSnapshot
from ._replies import JobInfo, JobList, Stats
from ._requests import ListJobs
from ._routing import Routes
from ._state import QueueState


def job_info(job: JobRecord, wall_offset: float = 0.0, *, payload: bool = False) -> JobInfo:
    """``job`` as ``job_status`` reports it.

    Args:
        job: The record.
        wall_offset: Wall-clock time minus the state's clock: the record's
            times are on the state's (monotonic) clock, the wire's are Unix
            seconds.
        payload: Whether to include the payload. A reply must fit one line,
            and a payload and a result may each take most of one: when the
            two together would not fit, the result is left out and
            ``result_omitted`` says so (a status without the payload has it).
    """
    info = JobInfo(
        job_id=job.id,
        name=job.name,
        state=job.state.value,
        attempt=job.attempt,
        worker=job.worker_name,
        result=job.result,
        error=job.error,
        queue=job.queue,
        priority=job.priority,
        max_attempts=job.max_attempts,
        progress=job.progress,
        note=job.note,
        submitted_at=_wall(job.submitted_at, wall_offset),
        started_at=_wall(job.started_at, wall_offset),
        finished_at=_wall(job.finished_at, wall_offset),
        run_at=_wall(job.not_before, wall_offset) if job.state is JobState.SCHEDULED else None,
        attempts_spent=job.attempt - job.attempt_base if job.attempt_base else None,
    )
    if not payload:
        return info
    room = MAX_LINE_BYTES - ENVELOPE_BYTES
    if len(encode_spliced(job.payload)) + len(encode_spliced(job.result)) > room:
        return attrs.evolve(info, payload=job.payload, result=None, result_omitted=True)
    return attrs.evolve(info, payload=job.payload)


def _wall(moment: float | None, wall_offset: float) -> float | None:
    # Microseconds are plenty for a person, and keep the reply short.
    return None if moment is None else round(moment + wall_offset, 6)


def job_list(state: QueueState, request: ListJobs, wall_offset: float = 0.0) -> JobList:
    """A listing that fits in one reply line.

    Results are left out (``job_status`` gives one), and the list is cut
    short, marked truncated, before its encoded size passes the limit.
    ``wall_offset`` is as for :func:`job_info`.
    """
    jobs, truncated = state.list_jobs(JobState(request.state), request.queue, request.limit)
    infos = []
    budget = MAX_LINE_BYTES - ENVELOPE_BYTES
    for job in jobs:
        info = attrs.evolve(job_info(job, wall_offset), result=None)
        budget -= len(encode_stored(JobList.entry(info)))
        if budget < 0:
            truncated = True
            break
        infos.append(info)
    return JobList(tuple(infos), truncated)


def queue_stats(
    state: QueueState,
    conns: Iterable[Connection],
    waiting_workers: int,
    journal: dict[str, Any] | None = None,
) -> Stats:
    """The ``stats`` reply: counts, totals, every worker connection with what it holds.

    ``journal`` is :func:`journal_view`'s, with a journal. Each listing
    (queues, job names, workers) keeps at most ``MAX_LISTED`` entries in a
    third of the line, the busiest first, and ``unlisted`` counts the rest.
    """
    conns = list(conns)
    workers: list[dict[str, Any]] = []
    held = dict(state.holders())
    for conn in conns:
        parked = conn.parked
        waiting = parked is not None and parked.job_id is None
        if waiting or conn.id in held:
            entry: dict[str, Any] = {
                "name": conn.label,
                "jobs": held.get(conn.id, []),
                "waiting": waiting,
            }
            if waiting:
                assert parked is not None
                entry["queues"] = list(parked.queues)
            workers.append(entry)
    routes = Routes.of(conns, held)
    # Each listing may take a third of the line; the rest of the reply is small.
    share = (MAX_LINE_BYTES - ENVELOPE_BYTES) // 3
    in_use, queues_left = state.busiest_queue_counts(MAX_LISTED)
    queues, too_long = busiest(in_use, most_unfinished, share, entry_bytes=80)
    queues_left += too_long
    report, names_left = routes.report(state.pending_by_name())
    names, too_long = busiest(report, _busiest_name, share)
    names_left += too_long
    workers, workers_left = busiest_items(workers, share)
    left = {"queues": queues_left, "names": names_left, "workers": workers_left}
    return Stats(
        jobs=state.counts(),
        totals=dict(state.totals),
        connections=len(conns),
        waiting_workers=waiting_workers,
        workers=workers,
        queues=queues,
        names=names,
        any_name_workers=routes.anyone,
        journal=journal,
        unlisted={listing: count for listing, count in left.items() if count},
        limits=state.limits(),
    )


def _busiest_name(name: str, entry: Mapping[str, int]) -> tuple[int, int, str]:
    # Pending jobs first: those are what stats' readers act on.
    return -entry["pending"], -entry["workers"], name


def journal_view(figures: JournalFigures) -> dict[str, Any]:
    """What ``stats`` shows of the journal (``Stats.journal``, protocol.md)."""
    return {
        "fsync": figures.fsync,
        "bytes": figures.size_bytes,
        "compactions": figures.compactions,
        "failing": figures.failing,
        "error": figures.error,
    }


def metrics_snapshot(
    state: QueueState, times: JobTimes | None, connections: int, idle: Mapping[int, Parked]
) -> MetricsSnapshot:
    """The figures of ``GET /metrics``; ``idle`` maps each waiting worker's connection id."""
    holders = state._held  # worker -> its leases; only the keys are read
    workers = len(holders) + sum(conn_id not in holders for conn_id in idle)
    # Queues that have histograms are listed with zeros, so that an emptied
    # queue reads 0 rather than no series; past MAX_LISTED queues in all the
    # busiest are listed, and jobqueue_queues counts those in use.
    in_use, unlisted = state.busiest_queue_counts(MAX_LISTED)
    queues: dict[str, dict[str, int]] = {queue: {} for queue in times.queues} if times else {}
    queues.update(in_use)
    listed, _ = busiest(queues, most_unfinished, None)
    counts = state.counts()
    return MetricsSnapshot(
        queues=listed,
        queues_in_use=len(in_use) + unlisted,
        payload_bytes=state.payload_bytes,
        finished_bytes=state.finished_bytes,
        bounds={
            name: bound for name in BOUND_RULES if (bound := getattr(state.rules, name)) is not None
        },
        finished={name: counts[name] for name in ("completed", "failed", "cancelled")},
        totals=dict(state.totals),
        connections=connections,
        workers=workers,
        waiting_workers=len(idle),
        wait={queue: wait.copy() for queue, (wait, _) in times.queues.items()} if times else {},
        run={queue: run.copy() for queue, (_, run) in times.queues.items()} if times else {},
    )
