"""The replies: what the server sends a client or worker, one class per wire type.

Built by the server and read by this package's own Client and Worker. Their
``from_wire`` methods are strict all the same, so a protocol mismatch
between versions shows up as a clear :class:`ProtocolError`, not as a wrong
value somewhere later. :class:`JobInfo`, :class:`JobList` and :class:`Stats`
are public: they are what Client methods return.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import attrs

from ._errors import Refusal
from ._fields import (
    field_error,
    integer,
    json_object,
    nonempty_str,
    number,
    optional_int,
    optional_str,
)
from ._limits import FINISHED_STATES, MAX_ATTEMPTS, MAX_PRIORITY
from ._quick import builder
from ._schedule_wire import ScheduleInfo, ScheduleList


@attrs.frozen
class Welcome:
    """Reply to ``hello``: who the server is and the lease it grants."""

    TYPE: ClassVar[str] = "hello"
    server: str
    version: str
    lease_timeout: float

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Welcome:
        """Validate a decoded ``hello`` reply."""
        return cls(
            server=nonempty_str(obj, "server"),
            version=nonempty_str(obj, "version"),
            lease_timeout=number(obj, "lease_timeout"),
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {
            "type": self.TYPE,
            "server": self.server,
            "version": self.version,
            "lease_timeout": self.lease_timeout,
        }


@attrs.frozen
class JobSubmitted:
    """Reply to ``submit_job``: the job's id.

    ``duplicate`` is true when the submit's ``key`` matched a job the server
    still remembers: no new job was added and this is that job's id.
    """

    TYPE: ClassVar[str] = "job_submitted"
    job_id: str
    duplicate: bool = False

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobSubmitted:
        """Validate a decoded ``job_submitted``."""
        return cls(job_id=nonempty_str(obj, "job_id"), duplicate=obj.get("duplicate") is True)

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        if self.duplicate:
            return {"type": self.TYPE, "job_id": self.job_id, "duplicate": True}
        return {"type": self.TYPE, "job_id": self.job_id}


@attrs.frozen
class JobsSubmitted:
    """Reply to ``submit_jobs``: the ids, in the order the jobs were given."""

    TYPE: ClassVar[str] = "jobs_submitted"
    job_ids: tuple[str, ...]

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobsSubmitted:
        """Validate a decoded ``jobs_submitted``."""
        ids = obj.get("job_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise field_error(obj, "job_ids", "an array of strings")
        return cls(tuple(ids))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE, "job_ids": list(self.job_ids)}


@attrs.frozen
class JobAssigned:
    """Reply to ``request_job``: a job is now leased to this connection."""

    TYPE: ClassVar[str] = "job_assigned"
    job_id: str
    name: str
    payload: Any
    attempt: int
    #: Seconds the lease lasts without a heartbeat.
    lease_timeout: float
    #: How much of ``max_attempts`` the job's runs have spent, this one
    #: included, when that is not ``attempt`` (as in ``job_status``); ``None``:
    #: ``attempt``. A run given back or a revive sets it apart.
    attempts_spent: int | None = None
    #: This run is the job's last allowed one: if it fails (or its holder is
    #: lost) the job fails for good, not retried. On the wire only when true.
    last_attempt: bool = False

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobAssigned:
        """Validate a decoded ``job_assigned``."""
        return cls(
            job_id=nonempty_str(obj, "job_id"),
            name=nonempty_str(obj, "name"),
            payload=obj.get("payload"),
            attempt=integer(obj, "attempt"),
            lease_timeout=number(obj, "lease_timeout"),
            attempts_spent=optional_int(obj, "attempts_spent", None, 1, MAX_ATTEMPTS),
            last_attempt=obj.get("last_attempt") is True,
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out = {
            "type": self.TYPE,
            "job_id": self.job_id,
            "name": self.name,
            "payload": self.payload,
            "attempt": self.attempt,
            "lease_timeout": self.lease_timeout,
        }
        if self.attempts_spent is not None:
            out["attempts_spent"] = self.attempts_spent
        if self.last_attempt:
            out["last_attempt"] = True
        return out


#: ``JobSubmitted(job_id, duplicate=duplicate)``, built without ``__init__``'s
#: per-field calls (:mod:`jobqueue._quick`): the reply to every ``submit_job``.
build_submitted = builder(JobSubmitted, "job_id", "duplicate")

#: ``JobAssigned(job_id, name, payload, attempt, lease_timeout)``, built without
#: ``__init__``'s per-field calls (:mod:`jobqueue._quick`): the server makes one
#: for every job it hands out, a worker with prefetch reads every job into one.
build_assigned = builder(JobAssigned, "job_id", "name", "payload", "attempt", "lease_timeout")


def _plain_assigned(job: dict[str, Any], lease_timeout: float) -> JobAssigned | None:
    """One job of a ``jobs_assigned`` whose fields read cleanly, built directly; else ``None``.

    A worker with prefetch reads every job this way, and the generic path
    copies each job's dict to read it field by field. A job this does not
    take goes through :meth:`JobAssigned.from_wire`, which words every
    error; a test holds the two to the same job.
    """
    job_id, name, attempt = job.get("job_id"), job.get("name"), job.get("attempt")
    if (
        type(job_id) is str
        and job_id
        and type(name) is str
        and name
        and type(attempt) is int
        and "attempts_spent" not in job
        and "last_attempt" not in job
    ):
        return build_assigned(job_id, name, job.get("payload"), attempt, lease_timeout)
    return None


@attrs.frozen
class JobsAssigned:
    """Reply to ``request_job`` with ``max``: one or more jobs, each now leased.

    Each job in ``jobs`` carries the same fields as ``job_assigned``; the
    lease timeout is shared and given once on the wire.
    """

    TYPE: ClassVar[str] = "jobs_assigned"
    jobs: tuple[JobAssigned, ...]
    lease_timeout: float

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobsAssigned:
        """Validate a decoded ``jobs_assigned``."""
        jobs = obj.get("jobs")
        if not isinstance(jobs, list) or not jobs or not all(isinstance(j, dict) for j in jobs):
            raise field_error(obj, "jobs", "a non-empty array of job objects")
        lease_timeout = number(obj, "lease_timeout")
        read = []  # (a loop, not a generator: one resumption less a job)
        for job in jobs:
            assigned = _plain_assigned(job, lease_timeout)
            if assigned is None:
                wire = {**job, "type": cls.TYPE, "lease_timeout": lease_timeout}
                assigned = JobAssigned.from_wire(wire)
            read.append(assigned)
        return cls(tuple(read), lease_timeout)

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {
            "type": self.TYPE,
            "jobs": [_batch_entry(job) for job in self.jobs],
            "lease_timeout": self.lease_timeout,
        }


def _batch_entry(job: JobAssigned) -> dict[str, Any]:
    """One job of a ``jobs_assigned`` on the wire: ``job_assigned``'s fields but the shared ones."""
    entry = {"job_id": job.job_id, "name": job.name, "payload": job.payload, "attempt": job.attempt}
    if job.attempts_spent is not None:
        entry["attempts_spent"] = job.attempts_spent
    if job.last_attempt:
        entry["last_attempt"] = True
    return entry


@attrs.frozen
class NoJob:
    """Reply to ``request_job`` when nothing is pending (after ``wait``, if given)."""

    TYPE: ClassVar[str] = "no_job"

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> NoJob:
        """Validate a decoded ``no_job``."""
        return cls()

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE}


@attrs.frozen
class Ok:
    """Reply to ``job_complete``, ``job_failed`` and ``heartbeat``."""

    TYPE: ClassVar[str] = "ok"
    #: For ``heartbeat``: seconds until the extended lease runs out.
    lease_timeout: float | None = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Ok:
        """Validate a decoded ``ok``."""
        return cls(lease_timeout=number(obj, "lease_timeout") if "lease_timeout" in obj else None)

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        if self.lease_timeout is None:
            return {"type": self.TYPE}
        return {"type": self.TYPE, "lease_timeout": self.lease_timeout}


#: The plain ``ok``: frozen, so one serves every report that fetches nothing.
OK: Final = Ok()


@attrs.frozen
class JobInfo:
    """One job as ``job_status``, ``wait_job`` and ``list_jobs`` report it.

    Attributes:
        job_id: The id the server gave the job.
        name: The handler name it was submitted with.
        state: One of ``pending``, ``scheduled``, ``running``, ``completed``,
            ``failed``, ``cancelled``.
        attempt: How many times it has been handed to a worker (0 = never yet).
        attempts_spent: How much of ``max_attempts`` its runs have spent
            (a property, as :attr:`Job.attempts_spent <jobqueue.Job.attempts_spent>`):
            ``attempt``, unless a run was given back (a draining worker, an
            ``"auto"`` batch cut short), which spends none, or ``retry_job``
            started a fresh budget (0 until its first run).
        worker: Name of the worker holding it (running) or that last held it.
        result: The handler's return value, once completed.
        error: ``{"type": ..., "message": ...}`` of the last failed attempt.
        queue: The queue it waits in.
        priority: Higher runs first.
        max_attempts: How many runs it may take.
        progress: The last progress number its current run reported.
        note: The last progress note its current run reported.
        submitted_at: When it was submitted.
        started_at: When its current run started (running), or its last
            run (after); ``None`` if it never ran.
        finished_at: When it completed, failed for good or was cancelled.
        run_at: When a scheduled job (delayed, or backing off before a
            retry) will join its queue.
        payload: Its payload, only when asked for (``status(...,
            payload=True)``); ``None`` otherwise.
        result_omitted: With the payload asked for, the result was left
            out because the two would not fit one reply; a status without
            the payload has it.

    The four times are wall-clock Unix seconds; each is ``None`` when it
    does not apply.
    """

    TYPE: ClassVar[str] = "job_status"
    job_id: str
    name: str
    state: str
    attempt: int
    worker: str | None = None
    result: Any = None
    error: dict[str, str] | None = None
    queue: str = "default"
    priority: int = 0
    max_attempts: int | None = None
    progress: float | None = None
    note: Any = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    run_at: float | None = None
    payload: Any = None
    result_omitted: bool = False
    # What the server sent when it differs from attempt (see attempts_spent).
    _spent: int | None = attrs.field(default=None, repr=False, alias="attempts_spent")

    @property
    def attempts_spent(self) -> int:
        """How much of ``max_attempts`` the job's runs have spent (see the class's attributes)."""
        return self.attempt if self._spent is None else self._spent

    @property
    def finished(self) -> bool:
        """Whether the job has reached a state it never leaves by itself."""
        return self.state in FINISHED_STATES

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobInfo:
        """Validate a decoded ``job_status`` reply."""
        error = obj.get("error")
        progress = obj.get("progress")
        return cls(
            job_id=nonempty_str(obj, "job_id"),
            name=nonempty_str(obj, "name"),
            state=nonempty_str(obj, "state"),
            attempt=integer(obj, "attempt"),
            worker=optional_str(obj, "worker"),
            result=obj.get("result"),
            error=error if isinstance(error, dict) else None,
            queue=optional_str(obj, "queue") or "default",
            priority=optional_int(obj, "priority", 0, -MAX_PRIORITY, MAX_PRIORITY),
            max_attempts=optional_int(obj, "max_attempts", None, 1, MAX_ATTEMPTS),
            progress=number(obj, "progress") if progress is not None else None,
            note=obj.get("note"),
            submitted_at=_moment(obj, "submitted_at"),
            started_at=_moment(obj, "started_at"),
            finished_at=_moment(obj, "finished_at"),
            run_at=_moment(obj, "run_at"),
            payload=obj.get("payload"),
            result_omitted=obj.get("result_omitted") is True,
            attempts_spent=optional_int(obj, "attempts_spent", None, 0, MAX_ATTEMPTS),
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {
            "type": self.TYPE,
            "job_id": self.job_id,
            "name": self.name,
            "state": self.state,
            "attempt": self.attempt,
            "queue": self.queue,
            "priority": self.priority,
        }
        if self.max_attempts is not None:
            out["max_attempts"] = self.max_attempts
        if self._spent is not None:
            out["attempts_spent"] = self._spent
        if self.worker is not None:
            out["worker"] = self.worker
        if self.state == "completed":
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        if self.progress is not None:
            out["progress"] = self.progress
        if self.note is not None:
            out["note"] = self.note
        # Only the times that apply, and the payload only when asked for:
        # ordinary replies stay small.
        for name in _MOMENTS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.payload is not None:
            out["payload"] = self.payload
        if self.result_omitted:
            out["result_omitted"] = True
        return out


#: ``JobInfo``'s wall-clock times, as the wire names them.
_MOMENTS = ("submitted_at", "started_at", "finished_at", "run_at")


def _moment(obj: dict[str, Any], key: str) -> float | None:
    return number(obj, key) if obj.get(key) is not None else None


@attrs.frozen
class JobList:
    """Reply to ``list_jobs``: the jobs, and whether the limit cut the list short."""

    TYPE: ClassVar[str] = "job_list"
    jobs: tuple[JobInfo, ...]
    truncated: bool = False

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobList:
        """Validate a decoded ``job_list``."""
        jobs = obj.get("jobs")
        if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
            raise field_error(obj, "jobs", "an array of job objects")
        return cls(
            tuple(JobInfo.from_wire({**j, "type": "job_status"}) for j in jobs),
            obj.get("truncated") is True,
        )

    @staticmethod
    def entry(info: JobInfo) -> dict[str, Any]:
        """One job as a listing shows it: the status fields minus ``type`` and ``result``."""
        wire = info.to_wire()
        del wire["type"]
        wire.pop("result", None)
        return wire

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {
            "type": self.TYPE,
            "jobs": [self.entry(info) for info in self.jobs],
            "truncated": self.truncated,
        }


@attrs.frozen
class JobCancelledNotice:
    """Sent by the server, unasked, to the worker running a job that was cancelled.

    Not a reply: it may arrive at any moment, between replies. The worker
    should stop the job's handler and report nothing; the job is already
    ``cancelled`` and a late report gets ``not_leased``.
    """

    TYPE: ClassVar[str] = "job_cancelled"
    job_id: str
    attempt: int

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobCancelledNotice:
        """Validate a decoded ``job_cancelled``."""
        return cls(nonempty_str(obj, "job_id"), integer(obj, "attempt"))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE, "job_id": self.job_id, "attempt": self.attempt}


@attrs.frozen
class Stats:
    """Reply to ``stats``: queue-wide counters and who holds what.

    Attributes:
        jobs: Jobs currently known, by state (finished ones within retention).
        totals: Counters since the server started: ``submitted``,
            ``completed``, ``failed``, ``reassigned`` (a lease lost to a closed
            connection or to expiry) and ``expired`` (the expiry share of it).
        connections: Open connections.
        waiting_workers: Connections blocked in ``request_job`` right now.
        workers: One entry per worker connection (holding jobs or waiting
            in ``request_job``): ``{"name", "jobs": [ids], "waiting": bool,
            "queues": [names]}``.
        queues: Per queue in use: ``{"pending", "scheduled", "running"}``.
        names: Per job name pending or run by a worker that said so in
            ``hello``: ``{"pending", "workers"}`` (``workers``: connections
            that run it, ``any_name_workers`` included); pending jobs of a
            name with no workers wait for one that runs it.
        any_name_workers: Worker connections (waiting in ``request_job``
            or holding jobs) that did not say which names they run: they
            take any job.
        journal: With a journal only (``None`` without): ``{"fsync",
            "bytes", "compactions", "failing", "error"}``; ``failing`` is
            true while writes fail and changes are refused, ``error`` then
            says why.
        unlisted: Per listing cut short (``"queues"``, ``"names"``,
            ``"workers"``), how many entries it left out; empty when every
            listing is whole. Each listing keeps at most ``MAX_LISTED``
            entries, the busiest, so that the reply fits one line.
        limits: Per bound on what the server holds (``"waiting"``,
            ``"payload_bytes"``, ``"finished"``, ``"finished_bytes"``):
            ``{"used": n, "max": bound}``, ``max`` ``None`` when unbounded.
            Empty from a server that does not send it.
    """

    TYPE: ClassVar[str] = "stats"
    jobs: dict[str, int]
    totals: dict[str, int]
    connections: int
    waiting_workers: int
    workers: list[dict[str, Any]]
    queues: dict[str, dict[str, int]] = attrs.field(factory=dict)
    names: dict[str, dict[str, int]] = attrs.field(factory=dict)
    any_name_workers: int = 0
    journal: dict[str, Any] | None = None
    unlisted: dict[str, int] = attrs.field(factory=dict)
    limits: dict[str, dict[str, int | None]] = attrs.field(factory=dict)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Stats:
        """Validate a decoded ``stats`` reply."""
        workers = obj.get("workers")
        if not isinstance(workers, list):
            raise field_error(obj, "workers", "an array")
        return cls(
            jobs=json_object(obj, "jobs"),
            totals=json_object(obj, "totals"),
            connections=integer(obj, "connections"),
            waiting_workers=integer(obj, "waiting_workers"),
            workers=workers,
            queues=json_object(obj, "queues") if "queues" in obj else {},
            names=json_object(obj, "names") if "names" in obj else {},
            any_name_workers=integer(obj, "any_name_workers") if "any_name_workers" in obj else 0,
            journal=json_object(obj, "journal") if obj.get("journal") is not None else None,
            unlisted=json_object(obj, "unlisted") if "unlisted" in obj else {},
            limits=json_object(obj, "limits") if "limits" in obj else {},
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {
            "type": self.TYPE,
            "jobs": self.jobs,
            "totals": self.totals,
            "connections": self.connections,
            "waiting_workers": self.waiting_workers,
            "workers": self.workers,
            "queues": self.queues,
            "names": self.names,
            "any_name_workers": self.any_name_workers,
            **({} if self.journal is None else {"journal": self.journal}),
            **({"unlisted": self.unlisted} if self.unlisted else {}),
            **({"limits": self.limits} if self.limits else {}),
        }


@attrs.frozen
class ErrorReply:
    """Sent instead of a request's usual reply when the request cannot be served."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ErrorReply:
        """Validate a decoded ``error``."""
        return cls(code=nonempty_str(obj, "code"), message=optional_str(obj, "message") or "")

    @classmethod
    def from_exception(cls, exc: Refusal) -> ErrorReply:
        """The reply that reports ``exc`` to the peer."""
        return cls(code=exc.code, message=exc.message)

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE, "code": self.code, "message": self.message}


Reply = (
    Welcome | JobSubmitted | JobsSubmitted | JobAssigned | JobsAssigned | NoJob | Ok | JobInfo
    | JobList | Stats | ErrorReply | JobCancelledNotice | ScheduleInfo | ScheduleList
)  # fmt: skip
