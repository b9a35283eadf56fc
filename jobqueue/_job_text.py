"""One job's status as a person reads it (``jobqueue status``).

The wire gives times as Unix seconds, which a script wants and a person
does not: this shows them as local dates with their offset, and how long
the job waited and ran, so a dead letter can be understood before it is
retried. ``jobqueue status --json`` prints the wire's form instead.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from ._replies import JobInfo


def describe(info: JobInfo, now: float) -> str:
    """``info`` as aligned ``label  value`` lines; ``now`` (Unix seconds) dates "ago"."""
    rows: list[tuple[str, str]] = [
        ("job", info.job_id),
        ("name", info.name),
        ("state", _state(info)),
        ("queue", f"{info.queue}  priority {info.priority}"),
    ]
    if info.worker is not None:
        rows.append(("worker", info.worker))
    if info.submitted_at is not None:
        ago = _span(now - info.submitted_at)
        rows.append(("submitted", f"{_date(info.submitted_at)}  ({ago} ago)"))
    if info.run_at is not None:
        rows.append(("due", f"{_date(info.run_at)}  (in {_span(info.run_at - now)})"))
    if info.started_at is not None:
        waited = ""
        if info.submitted_at is not None and _first_run(info):
            waited = f"  (waited {_span(info.started_at - info.submitted_at)})"
        rows.append(("started", _date(info.started_at) + waited))
    if info.finished_at is not None:
        ran = ""
        if info.started_at is not None and info.started_at <= info.finished_at:
            ran = f"  (ran {_span(info.finished_at - info.started_at)})"
        rows.append(("finished", _date(info.finished_at) + ran))
    if info.progress is not None or info.note is not None:
        rows.append(("progress", " ".join(_progress(info))))
    if info.error is not None:
        rows.append(("error", f"{info.error.get('type')}: {info.error.get('message')}"))
    if info.state == "completed":
        if info.result_omitted:
            rows.append(("result", "(left out beside the payload: ask without --payload)"))
        else:
            rows.append(("result", _value(info.result)))
    if info.payload is not None:
        rows.append(("payload", _value(info.payload)))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _state(info: JobInfo) -> str:
    if info.attempt == 0:
        return f"{info.state} (not run yet)"
    # Counted against the budget: a run given back spends no attempt.
    budget = f" of {info.max_attempts}" if info.max_attempts is not None else ""
    return f"{info.state} (attempt {info.attempts_spent}{budget})"


def _first_run(info: JobInfo) -> bool:
    """Whether the run ``started_at`` dates is the job's first to get under way.

    Runs given back unstarted (an ``"auto"`` batch cut short, a draining
    worker) came before it but never ran, so the wait since submitting is
    this run's. A job revived by ``retry_job`` also starts its count again,
    but it ran and failed before: its error is still on it.
    """
    if info.attempt <= 1:
        return True
    return info.attempts_spent == 1 and info.error is None


def _progress(info: JobInfo) -> list[str]:
    parts = []
    if info.progress is not None:
        parts.append(f"{info.progress:g}")
    if info.note is not None:
        parts.append(_value(info.note))
    return parts


def _date(moment: float) -> str:
    """Local time to the millisecond, with its UTC offset."""
    local = datetime.datetime.fromtimestamp(moment).astimezone()
    return local.isoformat(sep=" ", timespec="milliseconds")


def _span(seconds: float) -> str:
    """A duration, to the millisecond under a minute, then in h/m/s."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.3f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes} min {secs} s" if hours else f"{minutes} min {secs} s"


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
