"""What the dashboard shows: the queue's replies turned into the page's JSON.

Pure: no trio, no I/O. :func:`overview` joins one round of replies (stats,
running, pending and failed jobs) into one JSON object; :class:`History`
keeps the queues' counts over the last minutes for the chart. Job records
are passed through as the server sends them (``JobInfo.to_wire``), so
fields a newer server adds (timestamps, payload) reach the page without a
change here.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

from ._listing import busiest, most_unfinished
from ._replies import JobInfo, JobList, Stats

#: Points kept for the chart (one per poll: ten minutes at one a second).
HISTORY_POINTS = 600

#: Queues the page shows, each with its chart: the busiest, as ``stats``
#: chooses its own (a page of a thousand charts helps nobody, and every
#: point of the history keeps each shown queue's counts).
SHOWN_QUEUES = 50


def job_json(info: JobInfo) -> dict[str, Any]:
    """One job as the page gets it: every field the server sent, but ``type``."""
    wire = info.to_wire()
    wire.pop("type", None)
    return wire


def overview(
    now: float,
    stats: Stats,
    running: JobList,
    pending: JobList,
    failed: JobList,
) -> dict[str, Any]:
    """The page's view of the queue at wall-clock time ``now``.

    Running jobs are grouped by the worker (name) that holds them; a job a
    worker holds that ``running`` did not include (the list was cut short)
    is shown by its id alone.
    """
    queues, hidden = busiest(stats.queues, most_unfinished, None, most=SHOWN_QUEUES)
    by_id = {info.job_id: info for info in running.jobs}
    # A worker with several slots has a connection per slot, each its own
    # entry in the stats: the page shows one worker per name.
    workers: dict[str, dict[str, Any]] = {}
    for entry in stats.workers:
        name = str(entry.get("name", "?"))
        worker = workers.setdefault(
            name, {"name": name, "queues": [], "waiting": False, "jobs": []}
        )
        for queue in entry.get("queues", []):
            if queue not in worker["queues"]:
                worker["queues"].append(queue)
        worker["waiting"] = worker["waiting"] or bool(entry.get("waiting", False))
        for job_id in entry.get("jobs", []):
            info = by_id.get(job_id)
            worker["jobs"].append(job_json(info) if info is not None else {"job_id": job_id})
    return {
        "connected": True,
        "error": None,
        "at": now,
        "jobs": dict(stats.jobs),
        "totals": dict(stats.totals),
        "connections": stats.connections,
        "waiting_workers": stats.waiting_workers,
        "queues": {name: dict(counts) for name, counts in sorted(queues.items())},
        # Queues not shown, when there are more than the page shows.
        "queues_unlisted": stats.unlisted.get("queues", 0) + hidden,
        "workers_unlisted": stats.unlisted.get("workers", 0),
        "workers": list(workers.values()),
        "pending": [job_json(info) for info in pending.jobs],
        "pending_truncated": pending.truncated,
        "failed": [job_json(info) for info in failed.jobs],
        "failed_truncated": failed.truncated,
        # With a journal: its mode, size and whether it fails (protocol.md, stats).
        "journal": stats.journal,
        # How near each bound is; the page warns before submits get queue_full.
        "limits": stats.limits,
    }


def unreachable(now: float, error: str, last: dict[str, Any] | None) -> dict[str, Any]:
    """The view while the queue cannot be reached: the last one seen, marked so."""
    view = dict(last) if last is not None else {"jobs": {}, "queues": {}, "workers": []}
    view.update(connected=False, error=error, at=now)
    return view


@attrs.define(eq=False)
class History:
    """The queues' counts at each poll, newest last, at most ``size`` of them."""

    size: int = HISTORY_POINTS
    _points: deque[dict[str, Any]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._points = deque(maxlen=self.size)

    def add(self, view: dict[str, Any]) -> dict[str, Any]:
        """Record a connected view's counts; return the point added."""
        jobs = view["jobs"]
        point = {
            "t": view["at"],
            "queues": view["queues"],
            # Every queue's sum, for the chart of all queues, shown or not.
            "all": {state: jobs.get(state, 0) for state in ("pending", "scheduled", "running")},
        }
        self._points.append(point)
        return point

    def points(self) -> list[dict[str, Any]]:
        """Every point kept, oldest first."""
        return list(self._points)
