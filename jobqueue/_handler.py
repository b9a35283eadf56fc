"""What a worker runs and what it reports: ``Job``, ``Handler``, outcomes.

A handler's run comes to an :class:`Outcome`, its result or the exception
that failed it, and :func:`report_for` is the one place an outcome becomes
the ``job_complete`` or ``job_failed`` that reports it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from ._errors import JobQueueError
from ._limits import MAX_ERROR_CHARS
from ._quick import builder
from ._requests import JobComplete, JobFailed, RequestJob, build_report

#: Default for Worker.job_timeout: a handler may run for an hour.
DEFAULT_JOB_TIMEOUT = 3600.0


class JobCancelled(JobQueueError):
    """Raised in a blocking handler by :meth:`Job.check_cancelled` once its job is stopped.

    The worker has already decided the job's outcome (cancelled, timed out,
    lease lost, or the worker stopping) and reports nothing the thread does
    afterwards; raising this just ends the thread early.
    """


@attrs.frozen
class Job:
    """A job as its handler sees it.

    Attributes:
        id: The server's id for the job.
        name: The handler name it was submitted under.
        payload: The JSON value it was submitted with.
        attempt: The assignment's number: 1 the first time the job is
            handed out, one more each time after. So it is higher on a retry,
            after a holder was lost, and also after a holder gave the job
            back unstarted (a draining worker, or an ``"auto"`` batch cut
            short), which takes a number but spends no attempt. It names
            the run: the worker echoes it in the run's reports. For "is
            this a retry?", see :attr:`attempts_spent`.
        last_attempt: Whether this run is the last the job's ``max_attempts``
            allow: if it raises (or the worker is lost), the job fails for
            good instead of being retried. A handler can then alert, clean
            up or hand the work elsewhere. Always true with
            ``max_attempts=1``.
    """

    id: str
    name: str
    payload: Any
    attempt: int
    _progress: Callable[[float | None, Any], Awaitable[None]] | None = attrs.field(
        default=None, repr=False, eq=False, alias="progress_reporter"
    )
    # Set by the worker when it stops a blocking handler's job; only blocking
    # (thread) handlers get one: an async handler sees trio.Cancelled instead.
    _stopped: threading.Event | None = attrs.field(
        default=None, repr=False, eq=False, alias="stopped"
    )
    # What the server sent when it differs from attempt (see attempts_spent).
    _spent: int | None = attrs.field(default=None, repr=False, alias="attempts_spent")
    last_attempt: bool = False

    @property
    def attempts_spent(self) -> int:
        """How many of the job's ``max_attempts`` its runs have spent, this one included.

        1 on the job's first run, one more after each run that failed or
        lost its holder: test ``> 1`` for "this is a retry". Unlike
        :attr:`attempt`, a run given back unstarted spends none, and a
        failed job put back in line (``retry_job``) starts again at 1 with
        its fresh budget.
        """
        return self.attempt if self._spent is None else self._spent

    @property
    def cancelled(self) -> bool:
        """Whether the worker has stopped this job (blocking handlers only).

        True once the job was cancelled, ran past ``job_timeout``, lost its
        lease, or the worker is stopping. The worker has then already
        decided the job's outcome and ignores whatever the handler's thread
        does next, so a long blocking handler should check this now and then
        and return early. Always false for async and process handlers: trio
        cancels the first, and the second's process is killed.
        """
        return self._stopped is not None and self._stopped.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if :attr:`cancelled`; a cheap stopping point.

        Raises:
            JobCancelled: the worker has stopped this job.
        """
        if self._stopped is not None and self._stopped.is_set():
            raise JobCancelled(f"job {self.id} was stopped by the worker")

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds until the job is stopped; whether it was.

        For a blocking handler that waits between steps: ``job.wait_cancelled(5)``
        instead of ``time.sleep(5)`` returns at once when the job is stopped.

        Raises:
            RuntimeError: called outside a blocking handler (nothing would
                ever set it).
        """
        if self._stopped is None:
            raise RuntimeError("wait_cancelled is only for blocking (def) handlers")
        return self._stopped.wait(timeout)

    async def report_progress(self, progress: float | None = None, note: Any = None) -> None:
        """Tell the server how far along this job is; shows in ``job_status``.

        Also extends the lease, like a heartbeat. If the lease is already
        gone, this returns quietly and the worker stops the handler soon after.

        Args:
            progress: A number, e.g. the fraction done.
            note: A short JSON value (up to 4 KiB encoded), e.g. ``{"stage": "upload"}``.
        """
        if self._progress is not None:
            await self._progress(progress, note)

    def report_progress_sync(self, progress: float | None = None, note: Any = None) -> None:
        """:meth:`report_progress` for a blocking (``def``) handler, from its thread.

        Blocks until the server has the report (the worker's trio side sends
        it). Not available in a process handler: its process has no
        connection to the worker.

        Raises:
            JobCancelled: the job was stopped; the report was not sent.
            RuntimeError: called outside a blocking handler's thread.
        """
        self.check_cancelled()
        if self._stopped is None or self._progress is None:
            raise RuntimeError(
                "report_progress_sync is only available in a blocking (def) handler's "
                "thread; async handlers await report_progress, process handlers cannot report"
            )
        try:
            trio.from_thread.run(self._progress, progress, note)
        except (trio.Cancelled, trio.RunFinishedError):
            raise JobCancelled(f"job {self.id} was stopped by the worker") from None
        self.check_cancelled()


#: A job handler: a function taking the :class:`Job` and returning a
#: JSON-serialisable result; an exception it raises fails the job. An
#: ``async def`` runs on the worker's trio loop, a plain ``def`` in a worker
#: thread, and one marked with :func:`jobqueue.in_process` in a process.
Handler = Callable[[Job], Any]

#: A handler as the worker's engine calls it: always awaitable.
AsyncHandler = Callable[[Job], Awaitable[Any]]


async def sleep_handler(job: Job) -> dict[str, float]:
    """The built-in ``sleep`` handler: simulates work.

    Payload: ``{"seconds": <float>}`` (0 to 86400). Returns ``{"slept": seconds}``.

    Raises:
        ValueError: if the payload is not of that shape.
    """
    payload = job.payload
    seconds = payload.get("seconds") if isinstance(payload, dict) else None
    if (
        not isinstance(seconds, (int, float))
        or isinstance(seconds, bool)
        or not 0 <= seconds <= 86400
    ):
        raise ValueError('sleep needs a payload like {"seconds": 1.5} (0 to 86400 seconds)')
    await trio.sleep(seconds)
    return {"slept": seconds}


#: Handlers every worker has unless its own handlers replace them.
BUILTIN_HANDLERS: Mapping[str, AsyncHandler] = {"sleep": sleep_handler}


@attrs.frozen
class Outcome:
    """How one run of a handler ended: it returned ``result``, or ``error`` failed it.

    ``error`` is also how the worker fails a job for reasons of its own: no
    handler by that name, ``job_timeout``, a result the wire cannot carry.
    """

    result: Any = None
    error: BaseException | None = None


#: ``Outcome(result)``: a handler's returned value (see :mod:`jobqueue._quick`).
build_returned = builder(Outcome, "result")

#: ``Job(id, name, payload, attempt, progress_reporter=..., attempts_spent=...,
#: last_attempt=...)``, built for every job the worker runs (see :mod:`jobqueue._quick`).
build_job = builder(
    Job, "id", "name", "payload", "attempt", "progress_reporter", "attempts_spent", "last_attempt"
)


def error_text(error: BaseException) -> str:
    """``str(error)``, or a stand-in saying why it could not be built.

    A handler's exception class is the handler's code: its ``__str__`` may
    raise. That must fail the job, not the worker reporting it, so such an
    error reads as the traceback module words it, with what went wrong.
    """
    try:
        return str(error)
    except Exception as exc:
        why = type(exc).__name__
        with contextlib.suppress(Exception):
            why = f"{why}: {exc}"
        return f"<exception str() failed: {why}>"


def report_for(
    job: Job, outcome: Outcome, fetch: RequestJob | None = None
) -> JobComplete | JobFailed:
    """The report of ``job``'s ``outcome``; with ``fetch``, it also asks for more work.

    A failure is reported as the exception's class name and text, the text
    cut to what the server keeps (``MAX_ERROR_CHARS``).
    """
    error = outcome.error
    if error is None:  # (the worker's one report a job: built without attrs' __init__)
        return build_report(job.id, job.attempt, outcome.result, fetch, None)
    text = error_text(error)[:MAX_ERROR_CHARS]
    return JobFailed(job.id, type(error).__name__, text, job.attempt, fetch)
