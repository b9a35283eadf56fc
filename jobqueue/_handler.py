"""What a worker runs and what it reports: ``Job``, ``Handler``, outcomes.

A handler's run comes to an :class:`Outcome`, its result or the exception
that failed it, and :func:`report_for` is the one place an outcome becomes
the ``job_complete`` or ``job_failed`` that reports it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from ._limits import MAX_ERROR_CHARS
from ._requests import JobComplete, JobFailed, RequestJob

#: Default for Worker.job_timeout: a handler may run for an hour.
DEFAULT_JOB_TIMEOUT = 3600.0


@attrs.frozen
class Job:
    """A job as its handler sees it.

    Attributes:
        id: The server's id for the job.
        name: The handler name it was submitted under.
        payload: The JSON value it was submitted with.
        attempt: 1 on the first run; higher when a previous holder was lost.
    """

    id: str
    name: str
    payload: Any
    attempt: int
    _progress: Callable[[float | None, Any], Awaitable[None]] | None = attrs.field(
        default=None, repr=False, eq=False, alias="progress_reporter"
    )

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


#: A job handler: an async function taking the :class:`Job` and returning a
#: JSON-serialisable result. An exception it raises fails the job.
Handler = Callable[[Job], Awaitable[Any]]


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
BUILTIN_HANDLERS: Mapping[str, Handler] = {"sleep": sleep_handler}


@attrs.frozen
class Outcome:
    """How one run of a handler ended: it returned ``result``, or ``error`` failed it.

    ``error`` is also how the worker fails a job for reasons of its own: no
    handler by that name, ``job_timeout``, a result the wire cannot carry.
    """

    result: Any = None
    error: BaseException | None = None


def report_for(
    job: Job, outcome: Outcome, fetch: RequestJob | None = None
) -> JobComplete | JobFailed:
    """The report of ``job``'s ``outcome``; with ``fetch``, it also asks for more work.

    A failure is reported as the exception's class name and text, the text
    cut to what the server keeps (``MAX_ERROR_CHARS``).
    """
    error = outcome.error
    if error is None:
        return JobComplete(job.id, job.attempt, outcome.result, fetch)
    return JobFailed(job.id, type(error).__name__, str(error)[:MAX_ERROR_CHARS], job.attempt, fetch)
