"""The requests: what a client or worker sends the server, one class per wire type.

Each class keeps the Python model and the wire format apart: ``from_wire``
validates a decoded JSON object (never ``Request(**json)``), raising
:class:`ProtocolError` with a message that names the field, and ``to_wire``
builds one. The dispatch from a line to a class is :mod:`jobqueue._codec`'s.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import attrs

from ._errors import BAD_REQUEST, MESSAGE_TOO_LARGE, ProtocolError
from ._fields import (
    field_error,
    json_object,
    nonempty_str,
    number,
    optional_attempt,
    optional_int,
    optional_str,
    short_str,
    stored_value,
    wait_seconds,
)
from ._json import encode, stored_form
from ._limits import (
    JOB_STATES,
    MAX_ATTEMPTS,
    MAX_BATCH,
    MAX_DELAY_SECONDS,
    MAX_ERROR_CHARS,
    MAX_FETCH,
    MAX_HANDLER_NAMES,
    MAX_LIST_LIMIT,
    MAX_NAME_CHARS,
    MAX_NOTE_BYTES,
    MAX_PRIORITY,
    MAX_QUEUES,
    MAX_STORED_BYTES,
)
from ._quick import builder
from ._schedule_wire import AddSchedule, ListSchedules, RemoveSchedule


@attrs.frozen
class Hello:
    """First message: names the peer (shown in ``stats``) and carries its token.

    Optional unless the server requires a token; then it must come first. A
    worker also says which job names it has handlers for (``names``), so
    the server hands it only those; without them it takes any job.
    """

    TYPE: ClassVar[str] = "hello"
    name: str | None = None
    #: The shared secret, for a server started with one. Kept out of repr so
    #: it never reaches a log line.
    token: str | None = attrs.field(default=None, repr=False)
    #: The job names this connection runs (``None``: any).
    names: frozenset[str] | None = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Hello:
        """Validate a decoded ``hello``."""
        name = optional_str(obj, "name")
        if name is not None and len(name) > MAX_NAME_CHARS:
            raise ProtocolError(
                BAD_REQUEST, f'"hello" name is longer than {MAX_NAME_CHARS} characters'
            )
        names = obj.get("names")
        if names is not None and (
            not isinstance(names, list)
            or len(names) > MAX_HANDLER_NAMES
            or not all(isinstance(n, str) and 0 < len(n) <= MAX_NAME_CHARS for n in names)
        ):
            raise field_error(obj, "names", f"an array of at most {MAX_HANDLER_NAMES} job names")
        return cls(
            name=name,
            token=optional_str(obj, "token"),
            names=None if names is None else frozenset(names),
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE}
        if self.name is not None:
            out["name"] = self.name
        if self.token is not None:
            out["token"] = self.token
        if self.names is not None:
            out["names"] = sorted(self.names)
        return out


@attrs.frozen
class SubmitJob:
    """Add a job to the queue.

    Attributes:
        name: Which handler runs it.
        payload: Any JSON value, passed to the handler.
        queue: Which queue it waits in (workers choose the queues they serve).
        priority: Higher runs first within a queue (and across the queues a
            worker serves); equal priorities run in submission order.
        max_attempts: How many runs it may take (``None``: the server's default).
        delay: Seconds to wait before it may run.
        run_at: Wall-clock time (Unix seconds) before which it may not run.
        key: Idempotency key: while a job with this key is remembered, the
            same key returns that job instead of adding another.
    """

    TYPE: ClassVar[str] = "submit_job"
    name: str
    payload: Any = None
    queue: str = "default"
    priority: int = 0
    max_attempts: int | None = None
    delay: float = 0.0
    run_at: float | None = None
    key: str | None = None
    #: ``payload`` as the server stores it (:func:`stored_form`), set by
    #: :meth:`from_wire`; ``None`` for a ``None`` payload or when not decoded.
    stored_payload: Any = attrs.field(default=None, eq=False, repr=False, kw_only=True)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> SubmitJob:
        """Validate a decoded ``submit_job`` (or one job of ``submit_jobs``)."""
        name = short_str(obj, "name")
        queue = short_str(obj, "queue") if obj.get("queue") is not None else "default"
        key = short_str(obj, "key") if obj.get("key") is not None else None
        priority = optional_int(obj, "priority", 0, -MAX_PRIORITY, MAX_PRIORITY)
        max_attempts = optional_int(obj, "max_attempts", None, 1, MAX_ATTEMPTS)
        delay = obj.get("delay")
        run_at = obj.get("run_at")
        if delay is not None and run_at is not None:
            raise ProtocolError(BAD_REQUEST, f'"{obj["type"]}" takes "delay" or "run_at", not both')
        if delay is not None:
            delay = number(obj, "delay")
            if not 0 <= delay <= MAX_DELAY_SECONDS:
                raise ProtocolError(
                    BAD_REQUEST,
                    f'"{obj["type"]}" field "delay" must be 0 to {MAX_DELAY_SECONDS:g} seconds',
                )
        if run_at is not None:
            run_at = number(obj, "run_at")
            if run_at > time.time() + MAX_DELAY_SECONDS:
                raise ProtocolError(
                    BAD_REQUEST,
                    f'"{obj["type"]}" field "run_at" is more than a year ahead',
                )
        payload, stored = stored_value(obj, "payload")
        return cls(
            name=name,
            payload=payload,
            stored_payload=stored,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            delay=delay or 0.0,
            run_at=run_at,
            key=key,
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object (options only where they differ from the defaults)."""
        out: dict[str, Any] = {"type": self.TYPE, "name": self.name, "payload": self.payload}
        if self.queue != "default":
            out["queue"] = self.queue
        if self.priority:
            out["priority"] = self.priority
        if self.max_attempts is not None:
            out["max_attempts"] = self.max_attempts
        if self.delay:
            out["delay"] = self.delay
        if self.run_at is not None:
            out["run_at"] = self.run_at
        if self.key is not None:
            out["key"] = self.key
        return out


#: ``SubmitJob(name, payload, stored_payload=stored)``, built without ``__init__``'s
#: per-field calls (:mod:`jobqueue._quick`): every job a producer sends is one.
build_plain_submit = builder(SubmitJob, "name", "payload", "stored_payload")

#: The members of a batch's job that :func:`_plain_job` reads itself.
PLAIN_JOB_KEYS = frozenset({"name", "payload"})


def _plain_job(job: Any) -> SubmitJob | None:
    """A batch's job with only a valid ``name`` (and ``payload``), built directly, else ``None``.

    ``submit_many`` sends most jobs this way, and the generic path copies
    each job's dict and reads seven absent options one by one. Anything
    else, or anything it would refuse, is left to :meth:`SubmitJob.from_wire`,
    which words every error; a test holds the two to the same job.
    """
    if type(job) is not dict or not job.keys() <= PLAIN_JOB_KEYS:
        return None
    name = job.get("name")
    if type(name) is not str or not name or len(name) > MAX_NAME_CHARS:
        return None
    payload = job.get("payload")
    stored = stored_form(payload)
    if type(stored) is bytes and len(stored) > MAX_STORED_BYTES:
        return None
    return build_plain_submit(name, payload, stored)


@attrs.frozen
class SubmitJobs:
    """Add several jobs in one message: all of them, or (if any is invalid) none."""

    TYPE: ClassVar[str] = "submit_jobs"
    jobs: tuple[SubmitJob, ...]

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> SubmitJobs:
        """Validate a decoded ``submit_jobs``; any bad job rejects the whole batch."""
        jobs = obj.get("jobs")
        if not isinstance(jobs, list):
            raise field_error(obj, "jobs", "a non-empty array of job objects")
        if not jobs:
            # Not "must be a non-empty array ..., not an array".
            raise ProtocolError(BAD_REQUEST, '"submit_jobs" field "jobs" holds no job')
        if len(jobs) > MAX_BATCH:
            raise ProtocolError(
                BAD_REQUEST, f'"submit_jobs" takes at most {MAX_BATCH} jobs, not {len(jobs)}'
            )
        parsed = []
        for index, job in enumerate(jobs):
            plain = _plain_job(job)
            if plain is not None:
                parsed.append(plain)
                continue
            if not isinstance(job, dict):
                raise ProtocolError(BAD_REQUEST, f'"submit_jobs" job {index} is not an object')
            try:
                parsed.append(SubmitJob.from_wire({**job, "type": "submit_jobs"}))
            except ProtocolError as exc:
                raise ProtocolError(exc.code, f"job {index}: {exc.message}") from None
        return cls(tuple(parsed))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        jobs = []
        for job in self.jobs:
            wire = job.to_wire()
            del wire["type"]
            jobs.append(wire)
        return {"type": self.TYPE, "jobs": jobs}


@attrs.frozen
class RequestJob:
    """Ask for the next job; with ``wait`` > 0 the reply waits for one to arrive.

    With ``max`` set, ask for up to that many jobs at once: the reply is
    ``jobs_assigned`` (or ``no_job``) instead of ``job_assigned``.
    """

    TYPE: ClassVar[str] = "request_job"
    wait: float = 0.0
    #: The queues this worker serves (the best job across all of them wins).
    queues: tuple[str, ...] = ("default",)
    #: Most jobs to take at once (``None``: one, as ``job_assigned``).
    max: int | None = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> RequestJob:
        """Validate a decoded ``request_job`` (or a report's ``fetch`` object)."""
        wait = wait_seconds(obj, 0.0)
        assert wait is not None
        most = optional_int(obj, "max", None, 1, MAX_FETCH)
        queues = obj.get("queues")
        if queues is None:
            return cls(wait=wait, max=most)
        if (
            not isinstance(queues, list)
            or not 0 < len(queues) <= MAX_QUEUES
            or not all(isinstance(q, str) and 0 < len(q) <= MAX_NAME_CHARS for q in queues)
        ):
            raise field_error(obj, "queues", f"an array of 1 to {MAX_QUEUES} queue names")
        return cls(wait=wait, queues=tuple(queues), max=most)

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE}
        if self.wait:
            out["wait"] = self.wait
        if self.queues != ("default",):
            out["queues"] = list(self.queues)
        if self.max is not None:
            out["max"] = self.max
        return out


def fetch_of(obj: dict[str, Any]) -> RequestJob | None:
    """The optional ``fetch`` of a report: a ``request_job`` served right after it."""
    fetch = obj.get("fetch")
    if fetch is None:
        return None
    if not isinstance(fetch, dict):
        raise field_error(obj, "fetch", "an object with the fields of request_job")
    try:
        return RequestJob.from_wire({**fetch, "type": obj["type"]})
    except ProtocolError as exc:
        raise ProtocolError(exc.code, f"in fetch: {exc.message}") from None


def _fetch_wire(out: dict[str, Any], fetch: RequestJob | None) -> dict[str, Any]:
    if fetch is not None:
        wire = fetch.to_wire()
        del wire["type"]
        out["fetch"] = wire
    return out


@attrs.frozen
class JobComplete:
    """Report that the lease holder finished a job, with an optional result.

    With ``fetch``, the same request then asks for the next job(s) (ack and
    fetch): the reply is what that ``request_job`` would get, not ``ok``.
    """

    TYPE: ClassVar[str] = "job_complete"
    job_id: str
    attempt: int | None = None
    result: Any = None
    fetch: RequestJob | None = None
    #: ``result`` as the server stores it (:func:`stored_form`), set by
    #: :meth:`from_wire`; ``None`` for a ``None`` result or when not decoded.
    stored_result: Any = attrs.field(default=None, eq=False, repr=False, kw_only=True)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobComplete:
        """Validate a decoded ``job_complete``."""
        result, stored = stored_value(obj, "result")
        return cls(
            job_id=nonempty_str(obj, "job_id"),
            attempt=optional_attempt(obj),
            result=result,
            stored_result=stored,
            fetch=fetch_of(obj),
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE, "job_id": self.job_id, "result": self.result}
        if self.attempt is not None:
            out["attempt"] = self.attempt
        return _fetch_wire(out, self.fetch)


#: ``JobComplete(job_id, attempt, result, fetch, stored_result=stored)``, built
#: without ``__init__``'s per-field calls: every job's report is one.
build_report = builder(JobComplete, "job_id", "attempt", "result", "fetch", "stored_result")


@attrs.frozen
class JobFailed:
    """Report that the lease holder's handler raised; the attempt is spent.

    ``fetch`` works as for :class:`JobComplete`.
    """

    TYPE: ClassVar[str] = "job_failed"
    job_id: str
    error_type: str
    error_message: str
    attempt: int | None = None
    fetch: RequestJob | None = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobFailed:
        """Validate a decoded ``job_failed``."""
        error = json_object(obj, "error")
        error_type = error.get("type")
        message = error.get("message", "")
        if not isinstance(error_type, str) or not isinstance(message, str):
            raise ProtocolError(
                BAD_REQUEST,
                '"job_failed" field "error" must be {"type": STRING, "message": STRING}',
            )
        return cls(
            job_id=nonempty_str(obj, "job_id"),
            error_type=error_type[:MAX_NAME_CHARS],
            error_message=message[:MAX_ERROR_CHARS],
            attempt=optional_attempt(obj),
            fetch=fetch_of(obj),
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {
            "type": self.TYPE,
            "job_id": self.job_id,
            "error": {"type": self.error_type, "message": self.error_message},
        }
        if self.attempt is not None:
            out["attempt"] = self.attempt
        return _fetch_wire(out, self.fetch)


@attrs.frozen
class Heartbeat:
    """Extend the lease on a running job."""

    TYPE: ClassVar[str] = "heartbeat"
    job_id: str
    attempt: int | None = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Heartbeat:
        """Validate a decoded ``heartbeat``."""
        return cls(job_id=nonempty_str(obj, "job_id"), attempt=optional_attempt(obj))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE, "job_id": self.job_id}
        if self.attempt is not None:
            out["attempt"] = self.attempt
        return out


@attrs.frozen
class Progress:
    """The lease holder reports how far along a job is (also extends the lease)."""

    TYPE: ClassVar[str] = "progress"
    job_id: str
    attempt: int | None = None
    #: A number, e.g. a fraction done or items processed.
    progress: float | None = None
    #: A short JSON note, e.g. ``{"stage": "upload"}``.
    note: Any = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Progress:
        """Validate a decoded ``progress``."""
        progress = number(obj, "progress") if obj.get("progress") is not None else None
        note = obj.get("note")
        # The note's own encoded size: minus the 10 bytes of '{"note":' + '}\n'.
        if note is not None and len(encode({"note": note})) - 10 > MAX_NOTE_BYTES:
            raise ProtocolError(
                MESSAGE_TOO_LARGE, f'"progress" note is longer than {MAX_NOTE_BYTES} bytes'
            )
        return cls(nonempty_str(obj, "job_id"), optional_attempt(obj), progress, note)

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE, "job_id": self.job_id}
        if self.attempt is not None:
            out["attempt"] = self.attempt
        if self.progress is not None:
            out["progress"] = self.progress
        if self.note is not None:
            out["note"] = self.note
        return out


@attrs.frozen
class ReleaseJob:
    """The lease holder gives jobs back unfinished, without spending an attempt.

    One job (``job_id``, ``attempt``) or a batch (``jobs``, up to
    ``MAX_FETCH``, as many as one ``request_job`` can take): all are given
    back, or none. A draining worker sends it for the jobs it took and has
    not started, and for those it stopped at its drain deadline.
    """

    TYPE: ClassVar[str] = "release_job"
    #: ``(job_id, attempt)`` per job; ``attempt`` ``None`` skips that check.
    leases: tuple[tuple[str, int | None], ...]

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ReleaseJob:
        """Validate a decoded ``release_job``: ``job_id`` (and ``attempt``), or ``jobs``."""
        jobs = obj.get("jobs")
        if jobs is None:
            return cls(((nonempty_str(obj, "job_id"), optional_attempt(obj)),))
        if obj.get("job_id") is not None:
            raise ProtocolError(BAD_REQUEST, '"release_job" takes "job_id" or "jobs", not both')
        if not isinstance(jobs, list) or not 0 < len(jobs) <= MAX_FETCH:
            raise field_error(obj, "jobs", f"an array of 1 to {MAX_FETCH} objects")
        leases = []
        for index, job in enumerate(jobs):
            if not isinstance(job, dict):
                raise ProtocolError(BAD_REQUEST, f'"release_job" job {index} is not an object')
            job = {**job, "type": obj["type"]}  # field errors name the request
            try:
                leases.append((nonempty_str(job, "job_id"), optional_attempt(job)))
            except ProtocolError as exc:
                raise ProtocolError(exc.code, f"job {index}: {exc.message}") from None
        if len({job_id for job_id, _ in leases}) < len(leases):
            raise ProtocolError(BAD_REQUEST, '"release_job" names a job twice')
        return cls(tuple(leases))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object (the one-job form for one job)."""
        if len(self.leases) == 1:
            ((job_id, attempt),) = self.leases
            out: dict[str, Any] = {"type": self.TYPE, "job_id": job_id}
            if attempt is not None:
                out["attempt"] = attempt
            return out
        jobs = [
            {"job_id": job_id} if attempt is None else {"job_id": job_id, "attempt": attempt}
            for job_id, attempt in self.leases
        ]
        return {"type": self.TYPE, "jobs": jobs}


@attrs.frozen
class CancelJob:
    """Cancel a job that has not finished; a running one's worker is told to stop."""

    TYPE: ClassVar[str] = "cancel_job"
    job_id: str

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> CancelJob:
        """Validate a decoded ``cancel_job``."""
        return cls(nonempty_str(obj, "job_id"))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE, "job_id": self.job_id}


@attrs.frozen
class RetryJob:
    """Put a failed job (a dead letter) back in line with a fresh budget of attempts."""

    TYPE: ClassVar[str] = "retry_job"
    job_id: str

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> RetryJob:
        """Validate a decoded ``retry_job``."""
        return cls(nonempty_str(obj, "job_id"))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE, "job_id": self.job_id}


@attrs.frozen
class DeleteJob:
    """Forget a finished job now instead of when retention pushes it out."""

    TYPE: ClassVar[str] = "delete_job"
    job_id: str

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> DeleteJob:
        """Validate a decoded ``delete_job``."""
        return cls(nonempty_str(obj, "job_id"))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE, "job_id": self.job_id}


@attrs.frozen
class ListJobs:
    """Ask for the jobs in one state, oldest first, up to ``limit``."""

    TYPE: ClassVar[str] = "list_jobs"
    state: str
    queue: str | None = None
    limit: int = 100

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ListJobs:
        """Validate a decoded ``list_jobs``."""
        state = nonempty_str(obj, "state")
        if state not in JOB_STATES:
            raise ProtocolError(
                BAD_REQUEST, f'"list_jobs" state must be one of: {", ".join(JOB_STATES)}'
            )
        queue = short_str(obj, "queue") if obj.get("queue") is not None else None
        return cls(state, queue, optional_int(obj, "limit", 100, 1, MAX_LIST_LIMIT))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE, "state": self.state, "limit": self.limit}
        if self.queue is not None:
            out["queue"] = self.queue
        return out


@attrs.frozen
class GetStatus:
    """Ask for one job's state (wire type ``job_status``).

    ``payload`` asks for the job's payload too; left out by default so that
    a status poll stays small whatever the job carries.
    """

    TYPE: ClassVar[str] = "job_status"
    job_id: str
    payload: bool = False

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> GetStatus:
        """Validate a decoded ``job_status`` request."""
        payload = obj.get("payload", False)
        if not isinstance(payload, bool):
            raise field_error(obj, "payload", "true or false")
        return cls(job_id=nonempty_str(obj, "job_id"), payload=payload)

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE, "job_id": self.job_id}
        if self.payload:
            out["payload"] = True
        return out


@attrs.frozen
class WaitJob:
    """Reply with the job's status once it has finished (or after ``wait`` seconds)."""

    TYPE: ClassVar[str] = "wait_job"
    job_id: str
    wait: float | None = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> WaitJob:
        """Validate a decoded ``wait_job``."""
        return cls(job_id=nonempty_str(obj, "job_id"), wait=wait_seconds(obj, None))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE, "job_id": self.job_id}
        if self.wait is not None:
            out["wait"] = self.wait
        return out


@attrs.frozen
class GetStats:
    """Ask for queue-wide counters (wire type ``stats``)."""

    TYPE: ClassVar[str] = "stats"

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> GetStats:
        """Validate a decoded ``stats`` request."""
        return cls()

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE}


Request = (
    Hello | SubmitJob | SubmitJobs | RequestJob | JobComplete | JobFailed | Heartbeat | Progress
    | GetStatus | WaitJob | GetStats | CancelJob | RetryJob | DeleteJob | ListJobs | ReleaseJob
    | AddSchedule | ListSchedules | RemoveSchedule
)  # fmt: skip
