"""``Client``: submit jobs and ask about them."""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio

from ._client_core import check_timeout
from ._codec import encode_request, encode_submit, encode_submit_many
from ._errors import (
    IDLE_TIMEOUT,
    TOO_MANY_CONNECTIONS,
    ClientClosed,
    ConnectionLost,
    ProtocolError,
    RequestError,
    RequestNotSent,
)
from ._link import Connector, Link
from ._pipeline import Pipeline
from ._replies import JobInfo, JobList, JobsSubmitted, JobSubmitted, Reply, Stats
from ._requests import (
    CancelJob,
    DeleteJob,
    GetStats,
    GetStatus,
    Hello,
    ListJobs,
    Request,
    RetryJob,
    SubmitJob,
    SubmitJobs,
    WaitJob,
)
from ._schedule_spec import Schedule
from ._schedule_wire import AddSchedule, ListSchedules, RemoveSchedule, ScheduleInfo, ScheduleList

_R = TypeVar("_R")

log = logging.getLogger("jobqueue.client")

#: First and longest pause between reconnect attempts, in seconds.
_RECONNECT_DELAY = 0.1
_MAX_RECONNECT_DELAY = 5.0


#: Default for how long a Client keeps trying to reconnect, in seconds.
DEFAULT_RECONNECT_TIMEOUT = 30.0

#: Idle connections a Client keeps for its next ``wait`` (as the asyncio client).
MAX_SPARE_CONNECTIONS = 8


@attrs.define(eq=False)
class Client:
    """A connection to the queue for submitting jobs and reading their state.

    Open one with :meth:`connect`. A ``Client`` may be shared by several
    tasks; their requests are pipelined on the one connection: each goes
    out without waiting for the replies owed to the others, requests ready
    at the same moment leave in one write, and the server's in-order
    replies are matched to their callers. :meth:`wait` is the exception:
    the server holds every later reply on a connection behind a
    ``wait_job`` (protocol §3.2), so each wait has a connection of its own,
    kept for the next wait afterwards (up to :data:`MAX_SPARE_CONNECTIONS`),
    and a waiting task holds up no other task's requests. There are no
    background tasks: a caller waiting for its reply reads for everyone.

    Cancellation (``trio.move_on_after`` around a call) is safe: the
    connection stays usable, the reply still owed is read and dropped when
    it comes, and no reply is handed to the wrong caller; nothing
    reconnects. (The one exception: a write the socket would not take,
    cancelled half-way, spends the connection for every call on it.) A
    cancelled :meth:`wait` closes its own connection, which the server
    would otherwise keep holding. As with any cancelled request, it may or
    may not have been applied.

    If the connection breaks (the server restarted, say), every call in
    flight raises :class:`ConnectionLost`: the client cannot know whether
    the server applied it (a ``submit`` with a ``key`` is safe to repeat). The
    next call reconnects first, retrying with backoff for up to
    ``reconnect_timeout`` seconds, and logs what happened.
    """

    _link: Pipeline
    _open: Callable[[], Awaitable[Link]]
    _reconnect_timeout: float
    _reconnecting: trio.Lock = attrs.field(factory=trio.Lock, init=False)
    # Connections for wait: idle ones kept for the next wait, and those a
    # wait is using now (closed by aclose).
    _spares: list[Link] = attrs.field(factory=list, init=False)
    _waiting: set[Link] = attrs.field(factory=set, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        name: str | None = None,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
        connect: Connector | None = None,
    ) -> AsyncIterator[Client]:
        """Connect to the queue at ``host:port`` for the ``async with`` block.

        Args:
            host: The server's address.
            port: The server's port.
            name: How this client is named in the server's ``stats``.
            token: The server's shared secret, if it was started with one.
            ssl_context: Speak TLS, checking the server's certificate with
                this context (e.g. ``ssl.create_default_context(cafile=...)``).
            reconnect_timeout: After the connection breaks, how long the
                next call keeps trying to reconnect before it raises
                :class:`ConnectionLost`; 0 means one try, ``math.inf`` no limit.
            connect: Advanced: an async function returning a connected
                ``trio.abc.Stream``, used instead of TCP (``jobqueue.testing``
                uses it for in-memory queues).

        Raises:
            ConnectionLost: if the server cannot be reached (the first
                connection is tried once: a wrong address fails fast).
            RequestError: the server refused the connection
                (``unauthorized``, ``too_many_connections``).
            ValueError: ``reconnect_timeout`` is NaN or negative.
        """
        check_timeout(reconnect_timeout, "reconnect_timeout")

        async def open_link() -> Link:
            link = await Link.open(host, port, connect, ssl_context, keep_on_cancel=True)
            try:
                await link.request(Hello(name, token))
            except ConnectionLost as exc:
                await link.aclose()
                if ssl_context is None:
                    # What a TLS server does with plain text: say so.
                    hint = "if the server uses TLS, connect with TLS"
                    raise ConnectionLost(f"{exc} ({hint})") from exc
                raise
            except BaseException:
                await link.aclose()
                raise
            return link

        client = cls(Pipeline.of(await open_link()), open_link, reconnect_timeout)
        try:
            yield client
        finally:
            await client.aclose()

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
        data = encode_submit(name, payload, queue, priority, max_attempts, delay, run_at, key)
        return _expect(await self._send(data, SubmitJob.TYPE), JobSubmitted).job_id

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
            # Written directly (no SubmitJob a job), byte for byte as encode_request would.
            data = encode_submit_many(list(map(dict, jobs)))
        except ProtocolError as exc:
            raise ValueError(exc.message) from None
        return list(_expect(await self._send(data, SubmitJobs.TYPE), JobsSubmitted).job_ids)

    async def cancel(self, job_id: str) -> JobInfo:
        """Cancel a job that has not finished; return its state (``cancelled``).

        A pending or scheduled job will never run. A running job's worker is
        told at once and stops the handler; a late report from it is refused.

        Raises:
            RequestError: ``unknown_job``, or ``already_finished``.
            ConnectionLost: the connection broke.
        """
        return _expect(await self._request(CancelJob(job_id)), JobInfo)

    async def retry(self, job_id: str) -> JobInfo:
        """Requeue a failed job with a fresh budget of attempts.

        Raises:
            RequestError: ``unknown_job``, or ``not_failed``.
            ConnectionLost: the connection broke.
        """
        return _expect(await self._request(RetryJob(job_id)), JobInfo)

    async def delete(self, job_id: str) -> None:
        """Forget a finished job now (e.g. to clear the failed set).

        Raises:
            RequestError: ``unknown_job``, or ``not_finished``.
            ConnectionLost: the connection broke.
        """
        await self._request(DeleteJob(job_id))

    async def list_jobs(self, state: str, *, queue: str | None = None, limit: int = 100) -> JobList:
        """Jobs in ``state`` (e.g. ``"failed"``), at most ``limit``.

        Pending jobs come in the order they will run, the others oldest
        first; ``JobList.truncated`` says whether there were more.

        Raises:
            RequestError: ``bad_request`` for an unknown state or a bad limit.
            ConnectionLost: the connection broke.
        """
        return _expect(await self._request(ListJobs(state, queue, limit)), JobList)

    async def status(self, job_id: str, *, payload: bool = False) -> JobInfo:
        """Return the job's current state, with when it was submitted, started and finished.

        ``payload=True`` adds the job's payload to the reply (left out by
        default so that status polls stay small).

        Raises:
            RequestError: ``unknown_job`` if the server does not know it.
            ConnectionLost: the connection broke.
        """
        return _expect(await self._request(GetStatus(job_id, payload)), JobInfo)

    async def wait(self, job_id: str) -> JobInfo:
        """Block until the job is completed, failed or cancelled; return its final state.

        ``info.result`` holds a completed job's result, ``info.error`` a
        failed job's last error. Retries in between do not end the wait.

        The server answers when the job ends; nothing polls. Wrap in
        ``trio.move_on_after`` / ``trio.fail_after`` to bound the wait: the
        wait has a connection of its own, which a cancelled wait closes, so
        other tasks' calls neither wait behind it nor notice.

        Raises:
            RequestError: ``unknown_job`` if the server does not know it.
            ConnectionLost: the connection broke.
        """
        return _expect(await self._request_alone(WaitJob(job_id)), JobInfo)

    async def stats(self) -> Stats:
        """Return queue-wide counters and which worker holds which job.

        Raises:
            ConnectionLost: the connection broke.
        """
        return _expect(await self._request(GetStats()), Stats)

    async def add_schedule(
        self,
        name: str,
        job: str,
        payload: Any = None,
        *,
        every: float | None = None,
        cron: str | None = None,
        tz: str = "UTC",
        queue: str = "default",
        priority: int = 0,
        max_attempts: int | None = None,
    ) -> ScheduleInfo:
        """Add a periodic schedule (or replace the one named ``name``); return it.

        Each firing submits a job ``job`` with ``payload`` (and ``queue``,
        ``priority``, ``max_attempts``), keyed ``schedule:<name>:<time>``.
        Give ``every`` (seconds; fires at its multiples since the Unix epoch)
        or ``cron`` (five fields, read in time zone ``tz``). Adding the very
        same schedule again changes nothing. README, "Periodic jobs".

        Raises:
            ValueError: not exactly one of ``every`` and ``cron``, or a bad
                expression, time zone or period (before anything is sent).
            RequestError: ``bad_request``.
            ConnectionLost: the connection broke.
        """
        schedule = Schedule(name, job, payload, every, cron, tz, queue, priority, max_attempts)
        return _expect(await self._request(AddSchedule(schedule)), ScheduleInfo)

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule on the server, by name, with its next and last firing.

        Raises:
            ConnectionLost: the connection broke.
        """
        return list(_expect(await self._request(ListSchedules()), ScheduleList).schedules)

    async def remove_schedule(self, name: str) -> None:
        """Remove a schedule; the jobs it already submitted stay.

        Raises:
            RequestError: ``unknown_schedule``.
            ConnectionLost: the connection broke.
        """
        await self._request(RemoveSchedule(name))

    async def aclose(self) -> None:
        """Close every connection (``connect``'s block does this for you).

        Calls in flight get :class:`ConnectionLost`; later ones
        :class:`ClientClosed`.
        """
        self._closed = True
        links = [*self._spares, *self._waiting]
        self._spares.clear()
        self._waiting.clear()
        await self._link.aclose()
        for link in links:
            await link.aclose()

    async def _request(self, message: Request) -> Reply:
        return await self._send(encode_request(message), message.TYPE)

    async def _send(self, data: bytes, request_type: str) -> Reply:
        """Send a request encoded as ``data`` on the shared connection; return its reply."""
        if self._link.broken is not None:
            if self._closed:
                raise ClientClosed("the client is closed")
            await self._reconnect()
        try:
            return await self._link.request(data, request_type)
        except RequestNotSent:
            pass
        except RequestError as exc:
            if exc.code != IDLE_TIMEOUT:
                raise
        # The server never read this request: it closed the connection
        # before (as idle, say), so sending it again cannot apply it twice.
        await self._reconnect()
        return await self._link.request(data, request_type)

    async def _request_alone(self, message: Request) -> Reply:
        """Send ``message`` on a connection of its own: a spare, or a new one.

        For requests the server holds (``wait_job``). The connection goes
        back to the spares once answered; if the call is cancelled or the
        connection fails, it is closed instead (quietly: nothing the
        shared connection or the user need hear about).
        """
        for resent in (False, True):
            if self._closed:
                raise ClientClosed("the client is closed")
            link = self._spares.pop() if self._spares else await self._open_spare()
            self._waiting.add(link)
            keep = False
            try:
                reply = await link.request(message)
                keep = True
                return reply
            except RequestNotSent:
                # A spare the server closed meanwhile: it never read this.
                if resent:
                    raise
            except ConnectionLost as exc:
                # The server went away, most likely: from the shared
                # connection too, which would only learn so on its next call.
                self._link.suspect(f"lost as another connection was ({exc})")
                raise
            except RequestError as exc:
                keep = exc.code != IDLE_TIMEOUT
                if keep or resent:
                    raise
            finally:
                self._waiting.discard(link)
                if (
                    keep
                    and link.broken is None
                    and not self._closed
                    and len(self._spares) < MAX_SPARE_CONNECTIONS
                ):
                    self._spares.append(link)
                else:
                    await link.aclose()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _open_spare(self) -> Link:
        """A new connection for :meth:`_request_alone`, retrying as a reconnect does.

        Raises:
            ConnectionLost: no connection within ``reconnect_timeout``.
            RequestError: the server refused it (``unauthorized``, ...).
        """
        address = self._link.address
        link, attempts = await self._open_retrying(address)
        if attempts > 1:
            log.warning("connected to the queue at %s for a wait (attempt %d)", address, attempts)
        return link

    async def _open_retrying(self, address: str) -> tuple[Link, int]:
        """Open a connection, retrying with backoff; return it and the attempts made.

        Raises:
            ConnectionLost: no connection within ``reconnect_timeout``.
            RequestError: the server refused it (``unauthorized``, ...).
        """
        deadline = trio.current_time() + self._reconnect_timeout
        delay = _RECONNECT_DELAY
        attempts = 0
        while True:
            attempts += 1
            try:
                return await self._open(), attempts
            except (ConnectionLost, RequestError) as exc:
                # A full server may have room soon; a refused token will not.
                if isinstance(exc, RequestError) and exc.code != TOO_MANY_CONNECTIONS:
                    raise
                if trio.current_time() + delay > deadline:
                    raise ConnectionLost(
                        f"could not reconnect to the queue at {address} within "
                        f"{self._reconnect_timeout:g}s ({attempts} attempts): {exc}"
                    ) from exc
                await trio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, _MAX_RECONNECT_DELAY)

    async def _reconnect(self) -> None:
        """Replace a broken connection, retrying with backoff.

        Raises:
            ConnectionLost: no connection within ``reconnect_timeout``.
            RequestError: the server refused it (``unauthorized``, ...).
        """
        # Tasks sharing the client wait for one reconnect, not one each.
        async with self._reconnecting:
            old = self._link
            if old.broken is None:
                return  # another task reconnected while this one waited
            log.warning("connection to the queue at %s %s; reconnecting", old.address, old.broken)
            await old.aclose()
            link, attempts = await self._open_retrying(old.address)
            self._link = Pipeline.of(link)
            log.warning("reconnected to the queue at %s (attempt %d)", old.address, attempts)


def _expect(reply: Reply, kind: type[_R]) -> _R:
    if not isinstance(reply, kind):
        raise ConnectionLost(f"protocol mismatch: expected {kind.__name__}, got {reply!r}")
    return reply
