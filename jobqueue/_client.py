"""``Client``: submit jobs and ask about them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs

from ._link import ConnectionLost, Connector, Link
from ._protocol import (
    GetStats,
    GetStatus,
    Hello,
    JobInfo,
    JobSubmitted,
    Reply,
    Stats,
    SubmitJob,
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

    async def submit(self, name: str, payload: Any = None) -> str:
        """Add a job to the back of the queue and return its id.

        The id is the server's confirmation: once this returns, the job is
        in the queue.

        Args:
            name: Which handler runs it (e.g. ``"sleep"``).
            payload: Any JSON value, passed to the handler.

        Raises:
            RequestError: the server refused the job (``bad_request``, ...).
            ConnectionLost: the connection broke.
            TypeError, ValueError: ``payload`` is not JSON.
        """
        return _expect(await self._link.request(SubmitJob(name, payload)), JobSubmitted).job_id

    async def status(self, job_id: str) -> JobInfo:
        """Return the job's current state.

        Raises:
            RequestError: ``unknown_job`` if the server does not know it.
            ConnectionLost: the connection broke.
        """
        return _expect(await self._link.request(GetStatus(job_id)), JobInfo)

    async def wait(self, job_id: str) -> JobInfo:
        """Block until the job is completed or failed, and return its final state.

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
