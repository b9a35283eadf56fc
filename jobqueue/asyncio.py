"""An asyncio client, for programs on asyncio: FastAPI, aiohttp, Starlette, plain scripts.

Standard-library ``asyncio`` streams only; see docs/asyncio-client.md. The
protocol work (encoding, reply matching, errors, backoff) is the sans-IO
core in ``_client_core``, shared with :mod:`jobqueue.sync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import select
import ssl
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from typing import Any, TypeVar

from . import _client_core as core
from ._client_core import DEFAULT_RECONNECT_TIMEOUT, DEFAULT_TIMEOUT, JobInfo, JobList, Stats
from ._errors import ClientClosed, ConnectionLost, RequestError, RequestNotSent, RequestTimeout
from ._schedule_spec import Schedule
from ._schedule_wire import ScheduleInfo

__all__ = ["Client", "ClientClosed", "RequestTimeout"]

_T = TypeVar("_T")

#: Most idle connections a Client keeps for later waits; more are closed.
MAX_SPARE_CONNECTIONS = 8

#: Bytes read from the socket at a time, into one buffer per connection.
_RECEIVE_SIZE = 65536

#: Above this many unsent bytes, a call waits for the socket to take them.
_WRITE_BUFFER_LIMIT = 65536


class _Connection(asyncio.BufferedProtocol):
    """One connection to the queue: requests pipelined, replies settled as bytes arrive.

    Callers write their request and wait on a future; every byte the server
    sends is fed, in the transport's own callback, to the
    :class:`~jobqueue._client_core.Conversation`, which settles requests in
    the order they were sent. A caller that is cancelled or times out just
    stops waiting: its reply is still read, matched to it, and dropped, so
    the connection stays usable.

    A protocol rather than asyncio streams and a reader task: a reply then
    wakes its caller directly, one pass of the event loop per round trip
    fewer. A buffered one, reading into one reused buffer: asyncio's
    streams receive with a 256 KiB ``recv`` per read, a fresh allocation
    that large (an ``mmap`` and page faults) for every reply line.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self._conv = core.Conversation(address)
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._buffer = bytearray(_RECEIVE_SIZE)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        timeout: float,
        *,
        name: str | None,
        token: str | None,
        ssl_context: ssl.SSLContext | None,
    ) -> _Connection:
        """Connect, shake hands (TLS, then ``hello``) and return the connection.

        Raises:
            ConnectionLost: nothing answered, or the handshake failed.
            RequestError: the server refused (``unauthorized``, ...).
        """
        address = f"{host}:{port}"
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    functools.partial(cls, address),
                    host,
                    port,
                    ssl=ssl_context,
                    server_hostname=host if ssl_context else None,
                ),
                timeout,
            )
        except (OSError, UnicodeError, asyncio.TimeoutError) as exc:
            # (asyncio's TimeoutError is not the builtin one before 3.11.
            # UnicodeError: a host name that IDNA refuses.)
            why = exc if isinstance(exc, (OSError, UnicodeError)) else TimeoutError()
            handshake = isinstance(exc, ssl.SSLError)
            raise core.cannot_connect(address, why, timeout, handshake=handshake) from exc
        try:
            await conn.ask(core.hello(name, token), deadline - time.monotonic())
        except BaseException as exc:
            conn.close()
            await conn.closed()
            if isinstance(exc, ConnectionLost):
                raise core.hello_failed(exc, tls=ssl_context is not None) from exc
            if isinstance(exc, RequestTimeout):
                # A connection that never answers is one that cannot be
                # made, not a request that may have been applied.
                raise core.cannot_connect(address, exc, timeout, handshake=False) from exc
            raise
        return conn

    # -- asyncio.Protocol: called by the transport ---------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=_WRITE_BUFFER_LIMIT)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._settle(self._conv.receive(self._buffer[:nbytes]))
        if self._conv.broken is not None:
            self._close_transport()

    def eof_received(self) -> bool:
        self._settle(self._conv.receive(b""))
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        why = core.reason(exc) if exc is not None else "the connection was closed"
        self._settle(self._conv.lose(why))
        self._wake_drainers()
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drainers()

    # -- for the Client ------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Whether a new request may be sent (nothing known to be wrong)."""
        return self._conv.broken is None and not self._closing()

    @property
    def idle(self) -> bool:
        """Usable and owing no reply: fit to be a spare for the next wait."""
        return self.usable and not self._conv.outstanding

    def closed_unseen(self) -> bool:
        """Whether the server closed this idle connection and the loop has not read it yet.

        The loop reads what the server sent (its close, a farewell) only
        when it runs, and after a stretch of blocking code in a task it has
        not: a request sent now would be lost, and the caller told it may
        have been applied. The server sends a client nothing unasked, so
        anything readable on a connection that owes no reply means it is
        gone (with TLS, at worst a record for TLS itself): it is closed
        here, and the request goes on a new one. As the blocking client's
        check; one ``poll`` per call, and only while nothing is outstanding.
        """
        if self._conv.outstanding or self._transport is None:
            return False
        sock = self._transport.get_extra_info("socket")
        if sock is None or not _readable(sock):
            return False
        self.close()
        return True

    async def ask(self, request: core.Request, timeout: float) -> core.Reply:
        """Send ``request`` and return its reply, within ``timeout`` seconds.

        Raises:
            RequestNotSent: the connection was already unusable.
            ConnectionLost: the connection broke, or the reply was bad.
            RequestError: the server answered with an ``error``.
            RequestTimeout: no reply in time (it will be dropped when it comes).
        """
        transport = self._transport
        assert transport is not None
        if self._closing():
            self._settle(self._conv.lose("the connection was closed"))
        data, pending = self._conv.send(request)
        waiter = pending.waiter = self._loop.create_future()
        transport.write(data)
        timer = self._loop.call_later(max(timeout, 0.0), _expire, waiter, self.address, timeout)
        try:
            if self._paused:
                # The socket is behind: wait for it to take the bytes, for
                # the connection to end (which settles the call) or for the
                # timeout, whichever comes first: a server that stopped
                # reading never drains it.
                drained = self._loop.create_future()
                self._drain_waiters.append(drained)
                await asyncio.wait((drained, waiter), return_when=asyncio.FIRST_COMPLETED)
            await waiter
        finally:
            timer.cancel()
        return pending.result()

    def _closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def _close_transport(self) -> None:
        # abort(), not close(): close() waits to flush what is still
        # buffered, which a server that stopped reading never takes, and
        # closed() (aclose) would wait with it forever. Every call still
        # waiting has failed by now; its unsent bytes are better dropped.
        if self._transport is not None:
            self._transport.abort()

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for drained in waiters:
            if not drained.done():
                drained.set_result(None)

    @staticmethod
    def _settle(done: list[core.Pending]) -> None:
        for pending in done:
            if not pending.waiter.done():  # else its caller gave up: dropped
                pending.waiter.set_result(None)

    def close(self) -> None:
        """Close at once; calls still waiting get :class:`~jobqueue.ConnectionLost`."""
        self._settle(self._conv.lose("the connection was closed"))
        self._close_transport()

    async def closed(self) -> None:
        """Wait until the socket is closed."""
        await asyncio.shield(self._lost)


def _readable(sock: Any) -> bool:
    if hasattr(select, "poll"):  # no limit on descriptor numbers, unlike select()
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])  # pragma: no cover (Windows)


def _expire(waiter: asyncio.Future[None], address: str, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(
            RequestTimeout(
                f"no reply from the queue at {address} within {timeout:.3g}s "
                "(the request may or may not have been applied)"
            )
        )


class _Connecting:
    """What :meth:`Client.connect` returns: ``await`` it, or ``async with`` it."""

    def __init__(self, start: Callable[[], Awaitable[Client]]) -> None:
        self._start = start
        self._client: Client | None = None

    def __await__(self) -> Generator[Any, None, Client]:
        return self._start().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._start()
        return self._client

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._client is not None
        await self._client.aclose()


class Client:
    """An asyncio connection to the queue, safe to share between tasks of one event loop.

    Open one with :meth:`connect`. It has the trio :class:`~jobqueue.Client`'s
    methods, with the same arguments, results and errors, plus ``timeout=``.

    Sharing: concurrent calls are pipelined on one connection (protocol
    §3.1): each writes its request at once and is handed its own reply, in
    the order sent, by the connection's protocol. :meth:`wait` is the
    exception: the server holds every later reply on a connection behind a
    ``wait`` (§3.2), so each wait has a connection of its own, kept for the
    next wait afterwards (up to :data:`MAX_SPARE_CONNECTIONS`).

    Cancellation: a call cancelled while it waits for its reply leaves the
    connection usable for the others; its reply is read and dropped, never
    handed to another call. (A cancelled wait closes its own connection,
    which the server would otherwise keep holding.) As with any cancelled
    request, it may or may not have been applied.

    Timeouts: every call waits at most ``timeout`` seconds (the client's, or
    its own ``timeout=``) for its reply and then raises
    :class:`RequestTimeout` (a :class:`TimeoutError`); :meth:`wait`'s
    ``timeout`` bounds the whole wait, and without one it waits as long as
    the job takes.

    Reconnects: as :class:`jobqueue.sync.Client`: a request the server
    cannot have read is sent again on a new connection; one that may have
    been applied raises :class:`~jobqueue.ConnectionLost`; the next call
    reconnects, with backoff, for up to ``reconnect_timeout`` seconds.
    """

    def __init__(
        self,
        first: _Connection,
        open_connection: Callable[[float], Awaitable[_Connection]],
        timeout: float,
        reconnect_timeout: float,
    ) -> None:
        """Use :meth:`connect`."""
        self._address = first.address
        self._open = open_connection
        self._timeout = timeout
        self._reconnect_timeout = reconnect_timeout
        self._shared = first
        self._spares: list[_Connection] = []
        self._all = {first}
        self._reconnecting = asyncio.Lock()
        self._closed = False
        self._closing = asyncio.Event()  # set with _closed: ends a reconnect's backoff

    @classmethod
    def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        name: str | None = None,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> _Connecting:
        """Connect to the queue at ``host:port``: ``async with Client.connect(...) as client:``.

        ``client = await Client.connect(...)`` works too, for a client that
        lives longer than one block (close it with :meth:`aclose`).

        Args:
            host: The server's address.
            port: The server's port.
            name: How this client's connections are named in the server's ``stats``.
            token: The server's shared secret, if it was started with one.
            ssl_context: Speak TLS, checking the server's certificate with
                this context (e.g. ``ssl.create_default_context(cafile=...)``).
            reconnect_timeout: How long a call keeps trying to reconnect
                before it raises :class:`~jobqueue.ConnectionLost`.
            timeout: How long a call waits for its reply (and to connect),
                unless it says otherwise, in seconds.

        Every timeout, here and in the calls, is 0 or more seconds, and
        ``math.inf`` means no limit.

        Raises:
            ValueError: a timeout is NaN or negative (at once, before
                anything is awaited).
            ConnectionLost: the server cannot be reached (the first
                connection is tried once: a wrong address fails fast).
            RequestError: the server refused the connection
                (``unauthorized``, ``too_many_connections``).
        """
        core.check_timeout(timeout, "timeout")
        core.check_timeout(reconnect_timeout, "reconnect_timeout")
        opener = functools.partial(
            _Connection.open, host, port, name=name, token=token, ssl_context=ssl_context
        )

        async def start() -> Client:
            return cls(await opener(timeout), opener, timeout, reconnect_timeout)

        return _Connecting(start)

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
        timeout: float | None = None,
    ) -> str:
        """Add a job to the queue and return its id (see :meth:`jobqueue.Client.submit`).

        Raises:
            RequestError: the server refused the job (``bad_request``, ...).
            ConnectionLost: the connection broke; the job may have been added.
            RequestTimeout: no reply within ``timeout`` (default: the client's).
            TypeError, ValueError: ``payload`` is not JSON.
        """
        call = core.submit(name, payload, queue, priority, delay, run_at, key, max_attempts)
        return await self._run(call, timeout)

    async def submit_many(
        self, jobs: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> list[str]:
        """Add several jobs in one round trip; return their ids in order (all or none).

        Raises:
            ValueError: a job is invalid (checked before anything is sent).
            RequestError, ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        return await self._run(core.submit_many(jobs), timeout)

    async def cancel(self, job_id: str, *, timeout: float | None = None) -> JobInfo:
        """Cancel a job that has not finished; return its state (``cancelled``).

        Raises:
            RequestError: ``unknown_job``, or ``already_finished``.
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        return await self._run(core.cancel(job_id), timeout)

    async def retry(self, job_id: str, *, timeout: float | None = None) -> JobInfo:
        """Requeue a failed job with a fresh budget of attempts.

        Raises:
            RequestError: ``unknown_job``, or ``not_failed``.
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        return await self._run(core.retry(job_id), timeout)

    async def delete(self, job_id: str, *, timeout: float | None = None) -> None:
        """Forget a finished job now.

        Raises:
            RequestError: ``unknown_job``, or ``not_finished``.
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        await self._run(core.delete(job_id), timeout)

    async def list_jobs(
        self,
        state: str,
        *,
        queue: str | None = None,
        limit: int = 100,
        timeout: float | None = None,
    ) -> JobList:
        """Jobs in ``state`` (e.g. ``"failed"``), at most ``limit``.

        Pending jobs come in the order they will run, the others oldest first.

        Raises:
            RequestError: ``bad_request`` for an unknown state or a bad limit.
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        return await self._run(core.list_jobs(state, queue, limit), timeout)

    async def status(
        self, job_id: str, *, payload: bool = False, timeout: float | None = None
    ) -> JobInfo:
        """Return the job's current state, with when it was submitted, started and finished.

        ``payload=True`` adds the job's payload to the reply (left out by
        default so that status polls stay small).

        Raises:
            RequestError: ``unknown_job`` if the server does not know it.
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        return await self._run(core.status(job_id, payload), timeout)

    async def wait(self, job_id: str, *, timeout: float | None = None) -> JobInfo:
        """Wait until the job is completed, failed or cancelled; return its final state.

        Nothing polls: the server answers when the job ends. Other tasks'
        calls go on meanwhile (the wait has a connection of its own).

        Args:
            job_id: The job.
            timeout: Give up after this many seconds (``None``: wait as long
                as the job takes).

        Raises:
            RequestTimeout: the job had not finished within ``timeout``;
                its ``info`` is the job's state then.
            RequestError: ``unknown_job`` if the server does not know it.
            ConnectionLost: the connection broke.
            ValueError: ``timeout`` is NaN or negative.
        """
        return await self._run(core.wait(job_id, timeout), None)

    async def stats(self, *, timeout: float | None = None) -> Stats:
        """Return queue-wide counters and which worker holds which job.

        Raises:
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        return await self._run(core.stats(), timeout)

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
        timeout: float | None = None,
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
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        schedule = Schedule(name, job, payload, every, cron, tz, queue, priority, max_attempts)
        return await self._run(core.add_schedule(schedule), timeout)

    async def list_schedules(self, *, timeout: float | None = None) -> list[ScheduleInfo]:
        """Every schedule on the server, by name, with its next and last firing.

        Raises:
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        return await self._run(core.list_schedules(), timeout)

    async def remove_schedule(self, name: str, *, timeout: float | None = None) -> None:
        """Remove a schedule; the jobs it already submitted stay.

        Raises:
            RequestError: ``unknown_schedule``.
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        await self._run(core.remove_schedule(name), timeout)

    async def aclose(self) -> None:
        """Close every connection.

        Calls in flight get ``ConnectionLost`` (those still trying to
        reconnect, :class:`ClientClosed`); later ones get
        :class:`ClientClosed`.
        """
        self._closed = True
        self._closing.set()
        conns, self._all, self._spares = self._all, set(), []
        for conn in conns:
            conn.close()
        await asyncio.gather(*(conn.closed() for conn in conns))

    async def _run(self, call: core.Call[_T], timeout: float | None) -> _T:
        """Drive one call: send each request it yields, give it the reply."""
        timeout = self._timeout if timeout is None else core.check_timeout(timeout, "timeout")
        request = next(call)
        while True:
            reply = await self._exchange(request, core.patience(request, timeout))
            try:
                request = call.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def _exchange(self, request: core.Request, patience: float) -> core.Reply:
        deadline = time.monotonic() + patience
        blocking = core.is_blocking(request)
        resent = False
        while True:
            conn = await (self._spare(deadline) if blocking else self._connection(deadline))
            try:
                return await conn.ask(request, deadline - time.monotonic())
            except RequestNotSent:
                # The server never read it: once more, on a new connection.
                if resent:
                    raise
                resent = True
            finally:
                if blocking:
                    self._release(conn)

    async def _connection(self, deadline: float) -> _Connection:
        """The shared connection, replaced first if it broke."""
        if self._closed:
            raise ClientClosed("the client is closed")
        if self._shared.usable and not self._shared.closed_unseen():
            return self._shared
        if self._reconnecting.locked():
            # Tasks wait for one reconnect, not one each; but each only until
            # its own deadline, not for as long as another's reconnect takes.
            left = max(deadline - time.monotonic(), 0.0)
            try:
                await asyncio.wait_for(self._reconnecting.acquire(), left)
            except asyncio.TimeoutError:
                raise ConnectionLost(
                    f"could not reconnect to the queue at {self._address} in time "
                    "(another call is still trying)"
                ) from None
        else:
            await self._reconnecting.acquire()  # at once: nobody holds it
        try:
            if not self._shared.usable:
                self._shared.close()
                self._all.discard(self._shared)
                self._shared = await self._open_retrying(deadline)
            return self._shared
        finally:
            self._reconnecting.release()

    async def _spare(self, deadline: float) -> _Connection:
        """A connection for one blocking request: an idle spare, or a new one."""
        if self._closed:
            raise ClientClosed("the client is closed")
        while self._spares:
            conn = self._spares.pop()
            if conn.idle and not conn.closed_unseen():
                return conn
            self._forget(conn)
        return await self._open_retrying(deadline)

    def _release(self, conn: _Connection) -> None:
        if conn.idle and not self._closed and len(self._spares) < MAX_SPARE_CONNECTIONS:
            self._spares.append(conn)
        else:
            self._forget(conn)

    def _forget(self, conn: _Connection) -> None:
        conn.close()
        self._all.discard(conn)

    async def _open_retrying(self, deadline: float) -> _Connection:
        retry = core.Reconnect(self._address, self._reconnect_timeout, deadline)
        while True:
            try:
                conn = await self._open(max(deadline - time.monotonic(), 0.01))
            except (ConnectionLost, RequestError) as exc:
                delay = retry.after(exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                if self._closed:
                    raise ClientClosed("the client is closed") from None
            else:
                retry.succeeded()
                if self._closed:
                    conn.close()
                    raise ClientClosed("the client is closed")
                self._all.add(conn)
                return conn
