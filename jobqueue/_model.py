"""The queue as the events so far have made it: the store, and ``apply``.

:class:`QueueModel` is the half of the state machine that *evolves*: given
an event, it changes the store accordingly, and it is the only code that
changes jobs. It makes no decisions: which events happen, and when, is up to
the rules in :class:`~jobqueue._state.QueueState`, which builds on it (and is
what gets built: it sizes the store from its rules). Replaying a journal of
events needs this layer's ``apply`` and nothing above it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import attrs

from ._events import (
    Assigned,
    AttemptFailed,
    Cancelled,
    Completed,
    Event,
    Forgotten,
    LeaseExtended,
    Progressed,
    Promoted,
    Released,
    Revived,
    ScheduleAdded,
    ScheduleFired,
    ScheduleRemoved,
    Submitted,
)
from ._job import FINISHED, PENDING, RUNNING, SCHEDULED, InvalidTransition, JobRecord, Run
from ._schedule import ScheduleBook
from ._store import GONE, JobStore


# getstate_setstate=False: attrs would give a slotted subclass its own
# pickling, in place of JobStore's, which sorts the key shards again.
@attrs.define(eq=False, getstate_setstate=False)
class QueueModel(JobStore):
    """The job store, changed only by applying events.

    Args:
        id_prefix: Prepended to job ids; the server uses a random one per
            run so ids from a previous run are never mistaken for new ones.
        on_event: Called with every event after it is applied (a journal).

    Attributes:
        before_change: Called with every record an event is about to
            change, before it changes (a snapshot being written keeps
            its fields: :func:`~jobqueue._snapshot.captured`).
    """

    id_prefix: str = ""
    on_event: Callable[[Event], None] | None = None
    before_change: Callable[[JobRecord], None] | None = attrs.field(default=None, init=False)
    _next_seq: int = attrs.field(default=1, init=False)
    #: Whether a Submitted event ever named a job other than ``id_prefix`` + ``seq``.
    _foreign_ids: bool = attrs.field(default=False, init=False)
    #: The periodic schedules (docs/design.md, "Periodic jobs").
    schedules: ScheduleBook = attrs.field(factory=ScheduleBook, init=False)
    totals: dict[str, int] = attrs.field(
        factory=lambda: dict.fromkeys(
            (
                "submitted", "completed", "failed", "cancelled", "retried", "reassigned",
                "expired",
            ),
            0,
        ),
        init=False,
    )  # fmt: skip

    def apply(self, event: Event) -> None:
        """Apply one event; the only method that mutates jobs.

        Raises:
            InvalidTransition: if the event asks for a change the transition
                table forbids; nothing is changed.
        """
        if self.before_change is not None:
            self._before_change(event)
        if isinstance(event, Submitted):
            self._on_submitted(event)
        elif isinstance(event, Assigned):
            job = self._assign_first(event.job_id)
            run = job.run
            if run is None:  # the first run: most jobs, one allocation
                job.run = Run(1, event.worker, event.worker_name, event.lease_deadline, event.at)
            else:  # the last failure's error stays, as status shows it
                run.attempt += 1
                run.worker = event.worker
                run.worker_name = event.worker_name
                run.lease_deadline = event.lease_deadline
                run.started_at = event.at
                run.progress = None
                run.note = None
            # The lease indexes written here, not by a store method: an
            # extra call per assignment is measurable.
            self._leases[job.id] = None
            held = self._held.get(event.worker)
            if held is None:  # (not setdefault: that builds a dict every time)
                held = self._held[event.worker] = {}
            held[job.id] = None
        elif isinstance(event, Completed):
            job = self._complete_running(event.job_id)
            run = job.run
            assert run is not None, "a completed job has run"
            # _end_lease written out: every job ends its lease here.
            del self._leases[job.id]
            held = self._held[run.worker]
            del held[job.id]
            if not held:
                del self._held[run.worker]
            result = run.result = event.result
            if result.__class__ is bytes:  # finished_size's other half (see _finish)
                self.finished_bytes += len(result)
            run.finished_at = event.at
            self.totals["completed"] += 1
        elif isinstance(event, (LeaseExtended, Progressed)):
            job = self._running(event.job_id)
            run = job.run
            assert run is not None, "a running job has run"
            run.lease_deadline = event.lease_deadline
            self._leases.move_to_end(job.id)
            if isinstance(event, Progressed):
                run.progress = event.progress
                run.note = event.note
        elif isinstance(event, AttemptFailed):
            self._on_attempt_failed(event)
        elif isinstance(event, Promoted):
            job = self._move(event.job_id, "promote")
            job.unschedule()
            self._enqueue(job)
        elif isinstance(event, Cancelled):
            source = (self._lookup(event.job_id) or GONE).state
            job = self._move(event.job_id, "cancel")
            if source is RUNNING:
                self._end_lease(job)
            else:
                # Its line or heap entry stays (lazy deletion) until it
                # reaches the front; compacting when dead entries outnumber
                # live ones keeps a line within twice its live jobs,
                # amortised O(1).
                self._compact(job.queue, job.name)
            job.unschedule()
            if event.at is not None:  # (a journal from before times were kept: no run made)
                job.outcome().finished_at = event.at
            self.totals["cancelled"] += 1
        elif isinstance(event, Released):
            # Like a lost lease's requeue, but the run is not counted: its
            # number stays (unique for the lease check), the budget starts
            # one run later.
            job = self._move(event.job_id, "release")
            self._end_lease(job)
            job.outcome().attempt_base += 1
            self._enqueue(job)
        elif isinstance(event, Revived):
            job = self._move(event.job_id, "revive")
            run = job.outcome()
            run.attempt_base = run.attempt
            run.finished_at = None
            self._enqueue(job)
        elif isinstance(event, (ScheduleAdded, ScheduleFired, ScheduleRemoved)):
            self.schedules.apply(event)
        else:
            self._on_forgotten(event)
        if self.on_event is not None:
            self.on_event(event)

    def _before_change(self, event: Event) -> None:
        # Every event of a job names it; a Submitted one names a job to come.
        job_id = getattr(event, "job_id", None)
        if job_id is not None and type(event) is not Submitted:
            job = self._lookup(job_id)
            if job is not None and self.before_change is not None:
                self.before_change(job)

    def _on_submitted(self, event: Submitted) -> None:
        regular = event.job_id == f"{self.id_prefix}{event.seq}"
        # While every id is id_prefix + seq, a seq never used before makes an
        # id never used before: no need to look through every generation.
        fresh = regular and not self._foreign_ids and event.seq >= self._next_seq
        if not fresh:
            # (Only a journal written elsewhere, or edited, holds other types.)
            if type(event.job_id) is not str or not event.job_id or type(event.seq) is not int:
                raise InvalidTransition(
                    f"a job's id must be text and its seq an integer, "
                    f"not {event.job_id!r} and {event.seq!r}"
                )
            if self._lookup(event.job_id) is not None:
                raise InvalidTransition(f"job {event.job_id!r} already exists")
        self._foreign_ids = self._foreign_ids or not regular
        at = event.at
        if at is not None and (at.__class__ is not float or not math.isfinite(at)):
            _check_time(at, "a submit's time")
        # Every job of a kind shares one name string, instead of one decoded
        # per submit, and jobs submitted with the same queue, priority and
        # attempts share one JobOptions (its queue name interned too).
        # Interned strings die with their last user, so this cannot leak.
        # The shared options looked up here first: a miss (new options) goes
        # to _options_for, which makes them and keeps the table small.
        options = self._options.get((event.queue, event.priority, event.max_attempts))
        if options is None:
            options = self._options_for(event.queue, event.priority, event.max_attempts)
        job = JobRecord(
            event.job_id,
            sys.intern(event.name),
            event.payload,
            event.seq,
            options,
            PENDING,
            event.at,
        )
        if event.key is not None or event.not_before is not None:
            if event.key is not None and type(event.key) is not str:
                raise InvalidTransition(f"a job's key must be text, not {event.key!r}")
            if event.not_before is not None:
                _check_time(event.not_before, "a job's start time")
            job.run = Run(key=event.key, not_before=event.not_before)
            if event.not_before is not None:
                job.state = SCHEDULED
        self._add(job)
        if event.seq >= self._next_seq:  # (not max(): one call less a job)
            self._next_seq = event.seq + 1
        self.totals["submitted"] += 1

    def _on_attempt_failed(self, event: AttemptFailed) -> None:
        job = self._jobs.get(event.job_id, GONE)
        if event.final:
            action = "fail"
        elif event.retry_at is not None:
            action = "retry"
            _check_time(event.retry_at, "a retry's time")
        else:
            action = "requeue"
        self._move(event.job_id, action)
        self._end_lease(job)
        job.outcome().error = {"type": event.error_type, "message": event.error_message}
        if event.reason != "error":
            self.totals["reassigned"] += 1
            if event.reason == "lease_expired":
                self.totals["expired"] += 1
        if action == "requeue":
            self._enqueue(job)
        elif action == "retry":
            assert event.retry_at is not None
            self.totals["retried"] += 1
            job.outcome().not_before = event.retry_at
            self._schedule(job)
        else:
            job.outcome().finished_at = event.at
            self.totals["failed"] += 1

    def _on_forgotten(self, event: Forgotten) -> None:
        finished = self._finished
        if finished and finished[0].id == event.job_id:
            job: JobRecord | None = finished[0]  # retention: the oldest, no search
        else:
            job = self._lookup(event.job_id)
        if job is None or job.state not in FINISHED:
            raise InvalidTransition(f"cannot forget job {event.job_id!r}: not finished")
        self._forget(job)


def _check_time(moment: object, what: str) -> None:
    """Refuse a time that is not a finite number.

    Only a journal written elsewhere (or edited) holds one, and the
    coordinator would fail on it later, serving the queue.
    """
    if type(moment) not in (int, float) or not math.isfinite(moment):  # type: ignore[arg-type]
        raise InvalidTransition(f"{what} must be a finite number, not {moment!r}")
