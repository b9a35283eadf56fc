"""Snapshots of the live state, and the pure replay of a journal that starts with one.

Compaction (:mod:`jobqueue._journal_writer`) writes a new segment that starts
with a snapshot: a *header* record, then one *job* record per job the queue
remembers. These are records of their own kind (``{"$": "snapshot", ...}``
and ``{"$": "job", ...}``), not events: they are no part of any job's
history, and :meth:`~jobqueue._model.QueueModel.apply` never sees them.
:func:`replay` restores them straight into the store's indexes, then applies
the events that follow.

Taking a snapshot is split in two so that the coordinator is stalled only
for the cheap half. :func:`capture`, called in trio's thread between two
commands, copies each job's fields into a tuple (one C-level ``attrgetter``
call a job, about 0.2 us); :func:`encode_snapshot` turns the tuples into
records, in a worker thread, while the coordinator serves on. The tuples
hold the field values themselves, which the state never mutates in place
(a record's fields are reassigned, never changed), so the copy stays
consistent however the state moves on.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from operator import attrgetter
from typing import Any

import attrs

from ._events import ScheduleAdded, ScheduleFired
from ._job import FINISHED, FLAT_FIELDS, RUN_FIELDS, JobRecord, JobState, Run
from ._journal import SNAPSHOT_HEADER, SNAPSHOT_MARK, JournalError, decode_event, id_prefix_of
from ._json import RawJSON, encode, stored_form
from ._schedule import Entry, added_event
from ._state import QueueState

_JOB_FIELDS = FLAT_FIELDS
_OWN_FIELDS = FLAT_FIELDS[: len(FLAT_FIELDS) - len(RUN_FIELDS)]
_GET_OWN = attrgetter(*_OWN_FIELDS)
_GET_RUN = attrgetter(*RUN_FIELDS)
#: A run's fields for a job that has not run.
_NO_RUN = _GET_RUN(Run())
_STATE = _JOB_FIELDS.index("state")
#: The fields holding a moment on the state's clock: written as wall-clock time.
_TIME_NAMES = ("lease_deadline", "not_before", "submitted_at", "started_at", "finished_at")
_TIMES = tuple(_JOB_FIELDS.index(name) for name in _TIME_NAMES)
_STATES = {state.value: state for state in JobState}


@attrs.frozen
class Capture:
    """The live state copied at one moment, ready to encode in another thread.

    Attributes:
        header: Counters and orders: ``next_seq``, ``id_prefix``,
            ``foreign_ids``, ``totals``, ``leases`` (running ids in lease
            order) and ``jobs`` (how many job records follow).
        jobs: Each job's fields, in :data:`~jobqueue._job.FLAT_FIELDS`
            order: finished jobs in the order they finished, pending jobs line
            by line (each in the order it will run), then scheduled and running jobs in the
            order they entered their state (the order listings show, and the
            order a worker's leases are held in).
    """

    header: dict[str, Any]
    jobs: list[tuple[Any, ...]]


def _fields(job: JobRecord) -> tuple[Any, ...]:
    # The run's fields copied too: a run is changed in place (a heartbeat
    # moves its deadline), the record's own fields are only reassigned.
    run = job.run
    return _GET_OWN(job) + (_NO_RUN if run is None else _GET_RUN(run))


def capture(state: QueueState) -> Capture:
    """Copy ``state``'s jobs and counters (synchronous, cheap: tuples of references)."""
    get = _fields
    jobs = [get(job) for job in state._finished]
    jobs.extend(map(get, state.pending_by_line()))
    by_id = state._jobs
    for ids in state._by_state.values():  # each state's jobs in the order they entered it
        jobs.extend(get(by_id[job_id]) for job_id in ids)
    header = {
        "$": "snapshot",
        "next_seq": state._next_seq,
        "id_prefix": state.id_prefix,
        "foreign_ids": state._foreign_ids,
        "totals": dict(state.totals),
        "leases": list(state._leases),
        "schedules": [_schedule_record(entry) for entry in state.schedules],
        "jobs": len(jobs),
    }
    return Capture(header, jobs)


def _schedule_record(entry: Entry) -> dict[str, Any]:
    """One schedule as the header keeps it: its fields, its last firing, whether it fired."""
    fields = attrs.asdict(added_event(entry.schedule, entry.last), recurse=False)
    return {**fields, "fired": entry.fired}


def encode_snapshot(snapshot: Capture, wall_offset: float = 0.0) -> Iterator[bytes]:
    """The snapshot's record payloads: the header, then one per job.

    Times are shifted to wall-clock time, as events' are.
    """
    yield encode(snapshot.header)[:-1]
    names = _JOB_FIELDS
    for fields in snapshot.jobs:
        obj: dict[str, Any] = {"$": "job"}
        raw = []
        for name, value in zip(names, fields, strict=True):
            if isinstance(value, RawJSON):
                raw.append(name)
            obj[name] = value
        obj["state"] = fields[_STATE].value
        for index in _TIMES:
            if fields[index] is not None:
                obj[names[index]] = fields[index] + wall_offset
        if raw:
            obj["~"] = raw
        yield encode(obj)[:-1]


def is_snapshot(payload: bytes) -> bool:
    """Whether ``payload`` is a snapshot's header (a segment that starts with one stands alone)."""
    return payload.startswith(SNAPSHOT_HEADER)


def replay(state: QueueState, payloads: Iterable[bytes], wall_offset: float) -> int:
    """Rebuild ``state`` (fresh) from a journal's records; returns how many there were.

    A leading snapshot is restored job by job into the store's indexes;
    every event after it is applied as it was when the server ran.

    Raises:
        JournalError: a snapshot that is not whole (fewer job records than
            its header says), or a record this version does not know.
    """
    payloads = iter(payloads)
    count = 0
    first = next(payloads, None)
    events = []
    if first is not None:
        count = 1
        if is_snapshot(first):
            count += _restore(state, json.loads(first), payloads, wall_offset)
        else:
            events.append(_decode(first, wall_offset))
    for payload in payloads:
        events.append(_decode(payload, wall_offset))
        count += 1
    if first is not None and not is_snapshot(first):
        prefix = id_prefix_of(events)
        if prefix is not None:
            state.id_prefix = prefix
    apply = state.apply
    for event in events:
        apply(event)
    return count


def _decode(payload: bytes, wall_offset: float) -> Any:
    try:
        return decode_event(payload, wall_offset)
    except ValueError as exc:
        raise JournalError(f"the journal cannot be replayed: {exc}") from None


def _restore(
    state: QueueState, header: dict[str, Any], payloads: Iterator[bytes], wall_offset: float
) -> int:
    state.id_prefix = header["id_prefix"]
    state._next_seq = header["next_seq"]
    state._foreign_ids = header["foreign_ids"]
    state.totals.update(header["totals"])
    expected = int(header["jobs"])
    for index in range(expected):
        payload = next(payloads, None)
        if payload is None or not payload.startswith(SNAPSHOT_MARK):
            raise JournalError(
                f"the journal's snapshot is not whole: {index} of {expected} job records"
            )
        restore_job(state, _job_from(json.loads(payload), wall_offset))
    leases = state._leases
    for job_id in header["leases"]:
        leases[job_id] = None
    # Schedules are few: rebuilt through the events that made them, so the
    # book's derived fields (next firing, earliest due) are computed as usual.
    for record in header.get("schedules", ()):
        fired = record.pop("fired")
        record["payload"] = stored_form(record["payload"])
        added = ScheduleAdded(**record)
        state.apply(added)
        if fired:
            state.apply(ScheduleFired(added.name, added.since))
    return expected


def _job_from(obj: dict[str, Any], wall_offset: float) -> JobRecord:
    del obj["$"]
    for name in obj.pop("~", ()):
        obj[name] = stored_form(obj[name])
    obj["state"] = _STATES[obj["state"]]
    obj["name"] = sys.intern(obj["name"])
    obj["queue"] = sys.intern(obj["queue"])
    for name in _TIME_NAMES:
        if obj.get(name) is not None:  # absent: a snapshot from before it was kept
            obj[name] -= wall_offset
    return JobRecord.from_fields(obj)


def restore_job(state: QueueState, job: JobRecord) -> None:
    """Put ``job`` back into ``state``'s indexes as a snapshot recorded it.

    Pure and synchronous, like ``apply``, but not an event: a restored job
    changes no counter and has no history. Jobs come in the snapshot's
    order (see :class:`Capture`), which rebuilds every index in its order.
    """
    if job.state is not JobState.RUNNING and job.state not in FINISHED:
        state._add(job)  # in line, or in the heap of scheduled jobs
        return
    if job.key is not None:
        state._keys_for(job.key)[job.key] = job.id
    if job.state in FINISHED:
        state._finish(job)
        return
    state._jobs[job.id] = job
    state._by_state[job.state][job.id] = None  # (running: the only state left here)
    state._counts_of(job.queue)[job.state] += 1
    state._held.setdefault(job.worker, {})[job.id] = None
