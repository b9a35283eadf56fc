"""``Client``: submit jobs and ask about them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs

from ._link import ConnectionLost, Connector, Link
from ._protocol import (
    GetStats,
    GetStatus,
    Hello,
    JobAction,
    JobInfo,
    JobList,
    JobsSubmitted,
    JobSubmitted,
    ListJobs,
    ProtocolError,
    Reply,
    Stats,
    SubmitJob,
    SubmitJobs,
    WaitJob,
)

_R = TypeVar("_R")


@attrs.define(eq=False)
class Client:
    """A connection to the queue for submitting jobs and reading their state.

    Open one with :meth:`connect`. A ``Client`` may be shared by several
    tasks; their requests take turns on the one connection. There are no
    background tasks: every method is a plain request and reply.

    If a call is cancelled or the connection breaks mid-request, the client
    cannot know whether the server applied it; further calls raise
    :class:`ConnectionLost` and you open a new client.
    """

    _link: Link

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        name: str | None = None,
        connect: Connector | None = None,
    ) -> AsyncIterator[Client]:
        """Connect to the queue at ``host:port`` for the ``async with`` block.

        Args:
            host: The server's address.
            port: The server's port.
            name: How this client is named in the server's ``stats``.
            connect: Advanced: an async function returning a connected
                ``trio.abc.Stream``, used instead of TCP (``jobqueue.testing``
                uses it for in-memory queues).

        Raises:
            ConnectionLost: if the server cannot be reached.
        """
        link = await Link.open(host, port, connect)
        try:
            await link.request(Hello(name))
            yield cls(link)
        finally:
            await link.aclose()

    async def submit(
        self,
        name: str,
        payload: Any = None,
        *,
        queue: str = "default",
        priority: int = 0,
        delay: float = 0.0,
        run_at: float | None = None,
        key: str | None = None,
        max_attempts: int | None = None,
    ) -> str:
        """Add a job to the queue and return its id.

        The id is the server's confirmation: once this returns, the job is
        in the queue.

        Args:
            name: Which handler runs it (e.g. ``"sleep"``).
            payload: Any JSON value, passed to the handler.
            queue: The queue it waits in; workers choose which queues they serve.
            priority: Higher runs first; equal priorities run in submission order.
            delay: Seconds before it may run.
            run_at: Wall-clock time (``time.time()`` seconds) before which it may not run.
            key: Idempotency key: while a job submitted with this key is
                remembered, submitting the key again returns that job's id
                and adds nothing, so a submit can be retried safely.
            max_attempts: How many runs it may take before it fails for
                good (default: the server's).

        Raises:
            RequestError: the server refused the job (``bad_request``, ...).
            ConnectionLost: the connection broke.
            TypeError, ValueError: ``payload`` is not JSON.
        """
        request = SubmitJob(name, payload, queue, priority, max_attempts, delay, run_at, key)
        return _expect(await self._link.request(request), JobSubmitted).job_id

    async def submit_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[str]:
        """Add several jobs in one round trip; return their ids in order.

        Each job is a mapping with the wire fields of ``submit_job``:
        ``{"name": "resize", "payload": {...}, "priority": 5}``. The server
        adds all of them or, if any is invalid, none.

        Raises:
            ValueError: a job is invalid (checked before anything is sent).
            RequestError, ConnectionLost: as for :meth:`submit`.
        """
        try:
            request = SubmitJobs.from_wire({"type": "submit_jobs", "jobs": list(map(dict, jobs))})
        except ProtocolError as exc:
            raise ValueError(exc.message) from None
        return list(_expect(await self._link.request(request), JobsSubmitted).job_ids)

    async def cancel(self, job_id: str) -> JobInfo:
        """Cancel a job that has not finished; return its state (``cancelled``).

        A pending or scheduled job will never run. A running job's worker is
        told at once and stops the handler; a late report from it is refused.

        Raises:
            RequestError: ``unknown_job``, or ``already_finished``.
            ConnectionLost: the connection broke.
        """
        return _expect(await self._link.request(JobAction("cancel_job", job_id)), JobInfo)

    async def retry(self, job_id: str) -> JobInfo:
        """Requeue a failed job with a fresh budget of attempts.

        Raises:
            RequestError: ``unknown_job``, or ``not_failed``.
            ConnectionLost: the connection broke.
        """
        return _expect(await self._link.request(JobAction("retry_job", job_id)), JobInfo)

    async def delete(self, job_id: str) -> None:
        """Forget a finished job now (e.g. to clear the failed set).

        Raises:
            RequestError: ``unknown_job``, or ``not_finished``.
            ConnectionLost: the connection broke.
        """
        await self._link.request(JobAction("delete_job", job_id))

    async def list_jobs(self, state: str, *, queue: str | None = None, limit: int = 100) -> JobList:
        """Jobs in ``state`` (e.g. ``"failed"``), oldest first, at most ``limit``.

        ``JobList.truncated`` says whether there were more.

        Raises:
            RequestError: ``bad_request`` for an unknown state or a bad limit.
            ConnectionLost: the connection broke.
        """
        return _expect(await self._link.request(ListJobs(state, queue, limit)), JobList)

    async def status(self, job_id: str) -> JobInfo:
        """Return the job's current state.

        Raises:
            RequestError: ``unknown_job`` if the server does not know it.
            ConnectionLost: the connection broke.
        """
        return _expect(await self._link.request(GetStatus(job_id)), JobInfo)

    async def wait(self, job_id: str) -> JobInfo:
        """Block until the job is completed, failed or cancelled; return its final state.

        ``info.result`` holds a completed job's result, ``info.error`` a
        failed job's last error. Retries in between do not end the wait.

        The server answers when the job ends; nothing polls. Wrap in
        ``trio.move_on_after`` / ``trio.fail_after`` to bound the wait (a
        cancelled wait makes this client unusable, as any cancelled call).

        Raises:
            RequestError: ``unknown_job`` if the server does not know it.
            ConnectionLost: the connection broke.
        """
        return _expect(await self._link.request(WaitJob(job_id)), JobInfo)

    async def stats(self) -> Stats:
        """Return queue-wide counters and which worker holds which job.

        Raises:
            ConnectionLost: the connection broke.
        """
        return _expect(await self._link.request(GetStats()), Stats)

    async def aclose(self) -> None:
        """Close the connection (``connect``'s block does this for you)."""
        await self._link.aclose()


def _expect(reply: Reply, kind: type[_R]) -> _R:
    if not isinstance(reply, kind):
        raise ConnectionLost(f"protocol mismatch: expected {kind.__name__}, got {reply!r}")
    return reply
