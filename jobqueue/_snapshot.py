"""Snapshots of the live state, and the pure replay of a journal that starts with one.

Compaction (:mod:`jobqueue._journal_writer`) writes a new segment that starts
with a snapshot: a *header* record, then one *job* record per job the queue
remembers. These are records of their own kind (``{"$": "snapshot", ...}``
and ``["$", mask, id, name, ...]``), not events: they are no part of any job's
history, and :meth:`~jobqueue._model.QueueModel.apply` never sees them.
:func:`replay` restores them straight into the store's indexes, then applies
the events that follow.

Taking a snapshot is split in two so that the coordinator is stalled only
for the cheap half. :func:`capture`, called in trio's thread between two
commands, copies the orders the jobs are in, as lists of their records
(about 0.07 us a job); :func:`encode_snapshot` reads each record's fields
and writes them, in a worker thread, while the coordinator serves on.
Records change meanwhile, so the copy is made on write: while a capture is
being encoded (:func:`captured`), :meth:`QueueModel.apply
<jobqueue._model.QueueModel.apply>` hands every record an event is about to
change to :meth:`Capture.keep` first, which copies its fields as they were
(one C-level ``attrgetter`` call). The encoder reads a record's fields and
only then looks for a kept copy, which wins: a change under way as it read
began after the copy was made, so what it wrote is either the fields before
any change or the copy of them.
"""

from __future__ import annotations

import itertools
import json
import json.encoder
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from operator import attrgetter, itemgetter
from sys import intern
from typing import Any

import attrs

from ._events import Event, ScheduleAdded, ScheduleFired
from ._job import (
    FINISHED,
    FLAT_FIELDS,
    OPTION_FIELDS,
    PENDING,
    RUN_FIELDS,
    RUNNING,
    SCHEDULED,
    JobOptions,
    JobRecord,
    JobState,
    Run,
    payload_size,
)
from ._journal import (
    SNAPSHOT_HEADER,
    SNAPSHOT_MARK,
    JournalError,
    Layout,
    batches,
    decode_events,
    fields_of,
    id_prefix_of,
    pack,
    unpack,
)
from ._journal_fast import float_text
from ._json import encode_stored, stored_form, utf8
from ._schedule import Entry, added_event
from ._state import QueueState

_RECORD_FIELDS = tuple(field.name for field in attrs.fields(JobRecord) if field.name != "run")
#: The record's fields before its options, and after.
_HEAD_FIELDS = _RECORD_FIELDS[: _RECORD_FIELDS.index("options")]
_TAIL_FIELDS = _RECORD_FIELDS[_RECORD_FIELDS.index("options") + 1 :]
#: The record's own fields, its options' in their place.
_OWN_FIELDS = (*_HEAD_FIELDS, *OPTION_FIELDS, *_TAIL_FIELDS)
_GET_OWN = attrgetter(
    *(f"options.{name}" if name in OPTION_FIELDS else name for name in _OWN_FIELDS)
)
_GET_RUN = attrgetter(*RUN_FIELDS)
#: A run's fields for a job that has not run.
_NO_RUN = _GET_RUN(Run())
#: A captured job (the record's own fields, then its run's) in FLAT_FIELDS order.
_TO_FLAT = itemgetter(*((*_OWN_FIELDS, *RUN_FIELDS).index(name) for name in FLAT_FIELDS))
#: The record's own fields, and the run's, out of a job in FLAT_FIELDS order.
_HEAD_AT = itemgetter(*(FLAT_FIELDS.index(name) for name in _HEAD_FIELDS))
_OPTIONS_AT = itemgetter(*(FLAT_FIELDS.index(name) for name in OPTION_FIELDS))
_TAIL_AT = itemgetter(*(FLAT_FIELDS.index(name) for name in _TAIL_FIELDS))
_RUN_AT = itemgetter(*(FLAT_FIELDS.index(name) for name in RUN_FIELDS))
_STATE = FLAT_FIELDS.index("state")
_NAME = FLAT_FIELDS.index("name")
_NOTE = FLAT_FIELDS.index("note")
_RESULT = FLAT_FIELDS.index("result")
_STATES = {state.value: state for state in JobState}
_quote: Callable[[str], str] = json.encoder.encode_basestring
#: Every field a snapshot writes for a job, in FLAT_FIELDS order.
_FLAT_ATTRIBUTES = tuple(
    {
        field.name: field
        for field in (*attrs.fields(JobRecord), *attrs.fields(JobOptions), *attrs.fields(Run))
    }[name]
    for name in FLAT_FIELDS
)
#: How a snapshot lays out a job: its state by name, so its default is a name too.
JOB_LAYOUT = attrs.evolve(
    Layout.of("$", _FLAT_ATTRIBUTES),
    defaults=tuple(
        default.value if isinstance(default, JobState) else default
        for default in Layout.of("$", _FLAT_ATTRIBUTES).defaults
    ),
)
#: JobRecord, called with fields in its order (which mypy cannot count in a star).
_new_record: Callable[..., JobRecord] = JobRecord
#: The fields every job record has (those without a default come first).
_REQUIRED = sum(field.default is attrs.NOTHING for field in _FLAT_ATTRIBUTES)


@attrs.define(eq=False)
class Capture:
    """The live state at one moment, ready to encode in another thread.

    Attributes:
        header: Counters and orders: ``next_seq``, ``id_prefix``,
            ``foreign_ids``, ``totals``, ``leases`` (running ids in lease
            order) and ``jobs`` (how many job records follow).
        jobs: The records, in order: finished jobs in the order they
            finished, pending jobs line by line (each in the order it will
            run), then scheduled and running jobs in the order they entered
            their state (the order listings show, and the order a worker's
            leases are held in).
        kept: The fields, as they were at the capture, of the records
            changed since (:meth:`keep`), by id.
    """

    header: dict[str, Any]
    jobs: list[JobRecord]
    kept: dict[str, tuple[Any, ...]] = attrs.field(factory=dict)

    def keep(self, job: JobRecord) -> None:
        """``job`` is about to change: keep its fields as they are, if not kept yet."""
        if job.id not in self.kept:
            self.kept[job.id] = _fields(job)

    def fields(self) -> Iterator[tuple[Any, ...]]:
        """Each job's fields as at the capture, the record's own then its run's.

        The order :data:`_CAPTURED` names (in :data:`~jobqueue._job.FLAT_FIELDS`
        order once encoded). Safe in another thread while the state changes,
        as long as :meth:`keep` sees every change first (:func:`captured`).
        """
        kept = self.kept
        for job in self.jobs:
            fields = _fields(job)  # read first: a kept copy, looked for after, wins
            if kept:
                fields = kept.get(job.id, fields)
            yield fields


def _fields(job: JobRecord) -> tuple[Any, ...]:
    # The run's fields copied too: a run is changed in place (a heartbeat
    # moves its deadline), the record's own fields are only reassigned.
    run = job.run
    return _GET_OWN(job) + (_NO_RUN if run is None else _GET_RUN(run))


def capture(state: QueueState) -> Capture:
    """Copy ``state``'s counters and the orders of its jobs (synchronous, cheap).

    The records themselves are not copied: encode the capture before the
    state changes, or within :func:`captured`, which keeps what changes.
    """
    jobs = list(state._finished)
    jobs.extend(state.pending_by_line())
    by_id = state._jobs
    for ids in state._by_state.values():  # each state's jobs in the order they entered it
        jobs.extend(map(by_id.__getitem__, ids))
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


@contextmanager
def captured(state: QueueState) -> Iterator[Capture]:
    """``state``'s capture, kept as it was while the block runs, however the state changes."""
    snapshot = capture(state)
    state.before_change = snapshot.keep
    try:
        yield snapshot
    finally:
        state.before_change = None


def _schedule_record(entry: Entry) -> dict[str, Any]:
    """One schedule as the header keeps it: its fields, its last firing, whether it fired."""
    fields = attrs.asdict(added_event(entry.schedule, entry.last), recurse=False)
    return {**fields, "fired": entry.fired}


def encode_snapshot(snapshot: Capture, wall_offset: float = 0.0) -> Iterator[bytes]:
    """The snapshot's record payloads: the header, then one per job.

    A job record is an array laid out as events are (:mod:`jobqueue._journal`),
    tagged ``"$"``, its fields in :data:`~jobqueue._job.FLAT_FIELDS` order
    (the record's own, then its run's) and its state by name; times are
    shifted to wall-clock time, as events' are.
    """
    yield encode_stored(snapshot.header)[:-1]
    layout, state = JOB_LAYOUT, _STATE
    fast = _job_record
    memory = RecordMemory()
    for fields in snapshot.fields():
        payload = fast(fields, wall_offset, memory)
        if payload is None:
            values = list(_TO_FLAT(fields))
            values[state] = values[state].value
            payload = pack(layout, values, wall_offset)
        yield payload


@attrs.define(eq=False)
class RecordMemory:
    """What the snapshot's fast path (:func:`_job_record`) keeps from one job record to the next.

    The jobs of one command sit side by side in a snapshot (a batch
    submitted, run and finished together) and differ only in their id,
    ``seq`` and payload: everything from ``queue`` on is the same. So the
    text of those fields is kept with the values it was written from, and a
    record whose values from ``queue`` on equal them takes it as it is.
    Its fields' types are checked first (:func:`_job_record`), and equal
    values of the same type write the same text, but for a float zero and
    its negative: a record with a time that is zero once shifted is never kept.

    Attributes:
        times: One :func:`~jobqueue._journal_fast.float_text` memory per
            time field.
        rest: The values from ``queue`` on (as captured) of the record
            ``text`` was written from (``None``: none kept).
        text: Their text, from the comma before ``queue`` to the closing
            bracket.
        mask: Their bits of the raw mask (``note``, ``result``).
        raws: Their raw values, each after a newline.
    """

    times: list[list[tuple[float, str]]] = attrs.Factory(
        lambda: [[(math.nan, "")] for _ in range(5)]
    )
    rest: tuple[Any, ...] | None = None
    text: str = ""
    mask: int = 0
    raws: bytes = b""


def _time(value: Any, wall_offset: float, memory: list[tuple[float, str]]) -> str | None:
    """A time field's text (shifted), as ``pack`` writes it; ``None``: not a plain float.

    ``memory`` is the field's :func:`~jobqueue._journal_fast.float_text` memory:
    jobs submitted, started or finished by one command share its time, and
    a float's repr is the dearest part of a record.
    """
    if value is None:
        return "null"
    if type(value) is not float:
        return None
    return float_text(value + wall_offset, memory)


#: A captured job's fields (see :func:`capture`), in the order :func:`_job_record` unpacks them.
_CAPTURED = (*_OWN_FIELDS, *RUN_FIELDS)
if _CAPTURED != (
    "id", "name", "payload", "seq", "queue", "priority", "max_attempts", "state", "submitted_at",
    "attempt", "worker", "worker_name", "lease_deadline", "started_at", "progress", "note",
    "result", "error", "finished_at", "attempt_base", "key", "not_before",
):  # fmt: skip
    raise ImportError("the snapshot's fast path does not know the job's fields")  # pragma: no cover
#: Where a captured job's fields after its id, name, payload and seq start.
_REST = _CAPTURED.index("queue")
#: The texts of a shifted time that is zero (see :class:`RecordMemory`).
_ZEROS = frozenset({"0.0", "-0.0"})


def _job_record(fields: tuple[Any, ...], wall_offset: float, memory: RecordMemory) -> bytes | None:
    """A captured job's snapshot record as :func:`pack` writes it, for the two usual kinds of job.

    A job that never ran (pending, or scheduled) and a finished job with a
    run and no error, their fields of the types the server gives them;
    ``None`` for anything else, which then takes :func:`pack`. That matters
    because compaction encodes every job the queue remembers, finished ones
    included, each time it runs. ``fields`` are as :func:`capture` copies
    them (the record's own, then its run's); the text follows
    :data:`~jobqueue._job.FLAT_FIELDS`' order, and
    ``tests/unit/test_journal_fast.py`` holds it to ``pack`` byte for byte.
    ``memory`` is kept for a snapshot: the text of the fields from ``queue``
    on is written once for a run of jobs that share them (a batch), see
    :class:`RecordMemory`. Every field's type is checked before that text is
    taken, so that equal values are of one type and write one text.
    """
    (
        job_id, name, payload, seq, queue, priority, attempts, state, submitted_at, attempt,
        worker, worker_name, lease_deadline, started_at, progress, note, result, error,
        finished_at, attempt_base, key, not_before,
    ) = fields  # fmt: skip
    if (
        type(job_id) is not str
        or type(name) is not str
        or (payload is not None and type(payload) is not bytes)
        or type(seq) is not int
        or type(queue) is not str
        or type(priority) is not int
        or type(attempts) is not int
        or type(state) is not JobState
        or type(submitted_at) is not float
        or type(attempt) is not int
        or (worker is not None and type(worker) is not int and type(worker) is not str)
        or (worker_name is not None and type(worker_name) is not str)
        or (lease_deadline is not None and type(lease_deadline) is not float)
        or (started_at is not None and type(started_at) is not float)
        or progress is not None
        or (note is not None and type(note) is not bytes)
        or (result is not None and type(result) is not bytes)
        or error is not None
        or (finished_at is not None and type(finished_at) is not float)
        or type(attempt_base) is not int
        or (key is not None and type(key) is not str)
        or (not_before is not None and type(not_before) is not float)
    ):
        return None
    rest = fields[_REST:]
    if rest == memory.rest:
        text, mask, tail = memory.text, memory.mask, memory.raws
    else:
        found = _rest_text(_TO_FLAT(fields), rest, wall_offset, memory)
        if found is None:
            return None
        text, mask, tail = found
    if payload is not None:
        mask |= 4
        tail = b"\n" + payload + tail
    head = f'["$",{mask},{_quote(job_id)},{_quote(name)},null,{seq}{text}'
    try:
        encoded = head.encode()
    except UnicodeEncodeError:
        encoded = utf8(head)
    return encoded + tail if tail else encoded


def _rest_text(
    flat: tuple[Any, ...], rest: tuple[Any, ...], wall_offset: float, memory: RecordMemory
) -> tuple[str, int, bytes] | None:
    """The text, mask bits and raw values of a job's fields from ``queue`` on, in ``flat``.

    Kept in ``memory`` with ``rest`` (the same fields as captured) unless a
    time in it is zero once shifted. ``None``: fields the fast path does not
    write; their types are checked already (see :func:`_job_record`).
    """
    (
        _, _, _, _, queue, priority, attempts, key, state, not_before, submitted_at, attempt,
        worker, worker_name, lease_deadline, started_at, _, note, result, _, finished_at,
        attempt_base,
    ) = flat  # fmt: skip
    times = memory.times
    keyed = "null" if key is None else _quote(key)
    after = _time(not_before, wall_offset, times[0])
    since = _time(submitted_at, wall_offset, times[1])
    if after is None or since is None:
        return None
    head = f",{_quote(queue)},{priority},{attempts},{keyed},{_quote(state.value)},{after},{since}"
    if finished_at is None:
        # Never ran: every field after submitted_at holds its default, left out.
        if (
            attempt
            or attempt_base
            or worker is not None
            or worker_name is not None
            or type(lease_deadline) is not float
            or lease_deadline
            or started_at is not None
            or note is not None
            or result is not None
        ):
            return None
        found = (head + "]", 0, b"")
        shown: tuple[str, ...] = (after, since)
    else:
        holder = (
            "null" if worker is None else repr(worker) if type(worker) is int else _quote(worker)
        )
        label = "null" if worker_name is None else _quote(worker_name)
        lease = _time(lease_deadline, wall_offset, times[2])
        began = _time(started_at, wall_offset, times[3])
        ended = _time(finished_at, wall_offset, times[4])
        if lease is None or began is None or ended is None:
            return None
        mask, raws = 0, b""
        if note is not None:
            mask, raws = 1 << _NOTE, b"\n" + note
        if result is not None:
            mask |= 1 << _RESULT
            raws += b"\n" + result
        # attempt_base, the last field, is left out when it holds its default (0).
        tail = f",{attempt_base}]" if attempt_base else "]"
        found = (
            f"{head},{attempt},{holder},{label},{lease},{began},null,null,null,null,{ended}{tail}",
            mask,
            raws,
        )
        shown = (after, since, lease, began, ended)
    if _ZEROS.isdisjoint(shown):
        memory.rest = rest
        memory.text, memory.mask, memory.raws = found
    else:
        memory.rest = None
    return found


def is_snapshot(payload: bytes) -> bool:
    """Whether ``payload`` is a snapshot's header (a segment that starts with one stands alone)."""
    return payload.startswith(SNAPSHOT_HEADER)


def replay(state: QueueState, payloads: Iterable[bytes], wall_offset: float) -> int:
    """Rebuild ``state`` (fresh) from a journal's records; returns how many there were.

    A leading snapshot is restored job by job into the store's indexes;
    every event after it is applied as it was when the server ran. Records
    are decoded a batch at a time as ``payloads`` yields them, so a journal
    streamed from disk is never held in memory whole.

    Raises:
        JournalError: a snapshot that is not whole (fewer job records than
            its header says), or a record this version does not know.
    """
    records = iter(payloads)
    first = next(records, None)
    if first is None:
        return 0
    count = 0
    if is_snapshot(first):
        count = 1 + _restore(state, json.loads(first), records, wall_offset)
        prefixed = True
    else:
        records = itertools.chain((first,), records)
        prefixed = False
    apply = state.apply
    waiting: list[Event] = []
    for batch in batches(records):
        count += len(batch)
        events = _decode(batch, wall_offset)
        if not prefixed:
            # Ids go on from the journal's prefix, which the first Submitted
            # shows; events wait until it is known, as applying depends on it.
            waiting.extend(events)
            prefix = id_prefix_of(events)
            if prefix is None:
                continue
            state.id_prefix, prefixed, events, waiting = prefix, True, waiting, []
        for event in events:
            apply(event)
    for event in waiting:
        apply(event)
    return count


def _decode(payloads: list[bytes], wall_offset: float) -> list[Event]:
    try:
        return decode_events(payloads, wall_offset)
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
    restored = 0
    shared, options_for = state._options, state._options_for
    for batch in batches(itertools.islice(payloads, expected)):
        if not all(payload.startswith(SNAPSHOT_MARK) for payload in batch):
            break
        try:
            jobs = [_job_from(row, wall_offset, shared, options_for) for row in unpack(batch)]
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise JournalError(f"the journal's snapshot cannot be restored: {exc}") from None
        for job in jobs:
            restore_job(state, job)
        restored += len(batch)
    if restored < expected:
        raise JournalError(
            f"the journal's snapshot is not whole: {restored} of {expected} job records"
        )
    leases = state._leases
    for job_id in header["leases"]:
        leases[job_id] = None
    # Each running job holds a lease and each lease a running job: replay's
    # end gives every run back through them (see Journal.start).
    if leases.keys() != state._by_state[RUNNING].keys():
        raise JournalError("the journal's snapshot's leases do not match its running jobs")
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


def _job_from(
    row: list[Any],
    wall_offset: float,
    shared: dict[tuple[str, int, int], JobOptions],
    options_for: Callable[[str, int, int], JobOptions],
) -> JobRecord:
    if row[0] != "$":
        raise ValueError("a snapshot's job record is not tagged as one")
    values = fields_of(row, JOB_LAYOUT, wall_offset)
    if len(values) < _REQUIRED:
        raise ValueError("a snapshot's job record lacks fields")
    values += JOB_LAYOUT.defaults[len(values) :]  # the trailing ones left out, as defaults
    values[_NAME] = intern(values[_NAME])
    values[_STATE] = _STATES[values[_STATE]]
    chosen = _OPTIONS_AT(values)
    options = shared.get(chosen)  # shared, as live (the queue interned)
    if options is None:
        options = options_for(*chosen)
    job = _new_record(*_HEAD_AT(values), options, *_TAIL_AT(values))
    ran = _RUN_AT(values)
    # A run only where the job had one (a field not at its default), as live.
    if ran != _NO_RUN:
        job.run = Run(*ran)
    return job


def restore_job(state: QueueState, job: JobRecord) -> None:
    """Put ``job`` back into ``state``'s indexes as a snapshot recorded it.

    Pure and synchronous, like ``apply``, but not an event: a restored job
    changes no counter and has no history. Jobs come in the snapshot's
    order (see :class:`Capture`), which rebuilds every index in its order.

    Raises:
        JournalError: a running job without its run (no worker to hold it).
    """
    kind = job.state
    if kind is PENDING or kind is SCHEDULED:  # (module names: an enum read costs a call)
        state._add(job)  # in line, or in the heap of scheduled jobs
        return
    if job.key is not None:
        state._keys_for(job.key)[job.key] = job.id
    if job.state in FINISHED:
        state._finish(job)
        return
    if job.run is None or job.run.worker is None:
        raise JournalError(f"the journal's snapshot has running job {job.id!r} without its run")
    state._jobs[job.id] = job
    state.payload_bytes += payload_size(job.payload)
    state._by_state[job.state][job.id] = None  # (running: the only state left here)
    state._counts_of(job.queue)[job.state] += 1
    state._held.setdefault(job.worker, {})[job.id] = None
