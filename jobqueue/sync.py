"""A blocking client, for programs that are not trio: scripts, WSGI apps, Django, Flask.

Standard-library sockets only; see docs/sync-client.md. The protocol work
(encoding, reply matching, errors, backoff) is the sans-IO core in
``_client_core``, shared with :mod:`jobqueue.asyncio`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from . import _client_core as core
from ._client_core import DEFAULT_RECONNECT_TIMEOUT, DEFAULT_TIMEOUT, JobInfo, JobList, Stats
from ._errors import ClientClosed, ConnectionLost, RequestError, RequestNotSent, RequestTimeout
from ._schedule_spec import Schedule
from ._schedule_wire import ScheduleInfo

__all__ = ["Client", "ClientClosed", "RequestTimeout"]

_T = TypeVar("_T")

#: Most idle connections a Client keeps for later calls; more are closed.
MAX_IDLE_CONNECTIONS = 16

_RECEIVE_SIZE = 65536

#: Longest timeout a socket is given at once, in seconds: a socket takes no
#: infinite one (OverflowError), so a longer wait re-arms it until its deadline.
_LONGEST_SOCKET_TIMEOUT = 86400.0


class _Connection:
    """One socket to the queue, used by one thread at a time (and aborted by any)."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self._sock = sock
        self._conv = core.Conversation(address)
        self._aborted = False
        self.address = address

    @classmethod
    def open(
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
        try:
            sock = socket.create_connection(
                (host, port), timeout=min(timeout, _LONGEST_SOCKET_TIMEOUT)
            )
        except (OSError, UnicodeError) as exc:  # UnicodeError: a host name IDNA refuses
            raise core.cannot_connect(address, exc, timeout, handshake=False) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
        except OSError as exc:
            sock.close()
            raise core.cannot_connect(address, exc, timeout, handshake=True) from exc
        conn = cls(sock, address)
        try:
            conn.ask(core.hello(name, token), deadline - time.monotonic())
        except ConnectionLost as exc:
            conn.close()
            raise core.hello_failed(exc, tls=ssl_context is not None) from exc
        except RequestTimeout as exc:
            # A connection that never answers is one that cannot be made,
            # not a request that may have been applied.
            conn.close()
            raise core.cannot_connect(address, exc, timeout, handshake=False) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def ask(self, request: core.Request, timeout: float) -> core.Reply:
        """Send ``request`` and return its reply, within ``timeout`` seconds.

        Raises:
            RequestNotSent: the connection broke before the request went out whole.
            ConnectionLost: the connection broke, or the reply was bad.
            RequestError: the server answered with an ``error``.
            RequestTimeout: no reply in time, or the request could not even
                be sent in time; either way the connection is done for.
        """
        deadline = time.monotonic() + timeout
        data, pending = self._conv.send(request)
        sock = self._sock
        try:
            sock.settimeout(min(max(timeout, 0.001), _LONGEST_SOCKET_TIMEOUT))
            sock.sendall(data)
        except TimeoutError:
            # Not RequestNotSent, which the caller answers by sending it again
            # on a new connection: the call's time is spent, and a resend
            # could go out whole there and be applied after all.
            self._conv.lose("a send timed out")
            raise RequestTimeout(
                f"could not send the request to the queue at {self.address} within "
                f"{timeout:.3g}s (it was not sent whole, so it was not applied)"
            ) from None
        except OSError as exc:
            self._conv.lose(core.reason(exc))
            raise RequestNotSent(f"connection to {self.address} lost: {core.reason(exc)}") from exc
        while pending.outcome is None:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(min(left, _LONGEST_SOCKET_TIMEOUT))
                data = sock.recv(_RECEIVE_SIZE)
            except TimeoutError:
                if left > _LONGEST_SOCKET_TIMEOUT:
                    continue  # only the socket's own limit ran out
                raise RequestTimeout(
                    f"no reply from the queue at {self.address} within {timeout:.3g}s "
                    "(the request may or may not have been applied)"
                ) from None
            except OSError as exc:
                self._conv.lose("the client was closed" if self._aborted else core.reason(exc))
            else:
                if data or not self._aborted:
                    self._conv.receive(data)
                else:  # the end of the stream that abort() made
                    self._conv.lose("the client was closed")
        return pending.result()

    def reusable(self) -> bool:
        """Whether an idle connection can take a request: not closed by the server meanwhile.

        The server sends nothing unasked to a client, so anything readable
        on an idle socket is the end of the stream or a farewell (a restart,
        ``idle_timeout``): the connection is dropped and the request goes on
        a new one, without ever having been sent.
        """
        if not self.usable:
            return False
        if not _readable(self._sock):
            return True
        try:
            self._sock.setblocking(False)
            self._sock.recv(_RECEIVE_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError):
            return True  # a record for TLS itself (a session ticket), no data
        except OSError:
            pass
        return False

    @property
    def usable(self) -> bool:
        """Neither broken nor owing a reply, as far as this end knows."""
        return self._conv.broken is None and not self._conv.outstanding

    def abort(self) -> None:
        """From another thread: end the call this connection is in, if any.

        Shutting the socket down (not closing it, which would free its
        descriptor under the thread still using it) wakes a ``recv`` or
        ``sendall`` blocked on it; :meth:`ask` then raises
        :class:`~jobqueue.ConnectionLost` ("the client was closed"), or
        ``RequestNotSent`` if the request was not out yet. The owning
        thread closes the connection afterwards.
        """
        self._aborted = True
        with contextlib.suppress(OSError):  # not connected any more: nothing to wake
            # socket.socket's own: SSLSocket.shutdown() would also drop its
            # TLS state under the thread reading through it.
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the socket (any reply still owed is abandoned)."""
        self._conv.lose("the connection was closed")
        self._sock.close()


def _readable(sock: socket.socket) -> bool:
    if hasattr(select, "poll"):  # no limit on descriptor numbers, unlike select()
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])  # pragma: no cover (Windows)


class Client:
    """A blocking connection to the queue, safe to share between threads.

    Open one with :meth:`connect`, once per process (a module-level client
    in a web app is fine), and call it from any thread. It has the trio
    :class:`~jobqueue.Client`'s methods, with the same arguments, results
    and errors, plus ``timeout=``.

    Sharing: the client keeps a small pool of connections, and each call
    has one to itself for its round trip, opening another when all are in
    use (at most :data:`MAX_IDLE_CONNECTIONS` are kept idle). A pool rather
    than one pipelined connection because the server answers a
    connection's requests in order and holds every later reply behind a
    ``wait`` (protocol §3.2): a thread blocked in :meth:`wait` must not hold
    up another thread's :meth:`submit`. It is also the fastest round trip
    from a thread (one send, one receive, no hand-over to a reader thread),
    and it never lets two threads use one TLS socket at once, which
    :mod:`ssl` does not support.

    Timeouts: every call waits at most ``timeout`` seconds (the client's,
    or the call's own ``timeout=``) to send its request and have its reply,
    and raises :class:`RequestTimeout` (a :class:`TimeoutError`) after that.
    :meth:`wait` is the exception: its ``timeout`` bounds the whole wait,
    and without one it waits for as long as the job takes.

    Reconnects: a connection the server closed while idle (it restarted,
    say) is noticed before it is used, and the call goes on a new one. A
    request the server cannot have read (it closed first, or the send
    failed, other than by running out of time) is sent again on a new
    connection. A call whose request may
    have been applied raises :class:`~jobqueue.ConnectionLost` (a
    ``submit`` with a ``key`` is safe to repeat). A new connection that
    cannot be made is retried with backoff for up to ``reconnect_timeout``
    seconds (and within the call's ``timeout``).
    """

    def __init__(
        self,
        first: _Connection,
        open_connection: Callable[[float], _Connection],
        timeout: float,
        reconnect_timeout: float,
    ) -> None:
        """Use :meth:`connect`."""
        self._address = first.address
        self._open = open_connection
        self._timeout = timeout
        self._reconnect_timeout = reconnect_timeout
        self._lock = threading.Lock()  # guards _idle, _busy and _closed only, never I/O
        self._idle = [first]
        self._busy: set[_Connection] = set()  # taken by a call, so close() can abort them
        self._closed = False
        self._closing = threading.Event()  # set with _closed: wakes a reconnect's backoff
        _clients.add(self)

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
    ) -> Client:
        """Connect to the queue at ``host:port``; use as ``with Client.connect(...) as client:``.

        The client can also be kept open without ``with``, and closed with
        :meth:`close`.

        Args:
            host: The server's address.
            port: The server's port.
            name: How this client's connections are named in the server's ``stats``.
            token: The server's shared secret, if it was started with one.
            ssl_context: Speak TLS, checking the server's certificate with
                this context (e.g. ``ssl.create_default_context(cafile=...)``).
            reconnect_timeout: How long a call keeps trying to make a new
                connection before it raises :class:`~jobqueue.ConnectionLost`.
            timeout: How long a call waits for its reply (and to connect),
                unless it says otherwise, in seconds.

        Every timeout, here and in the calls, is 0 or more seconds, and
        ``math.inf`` means no limit.

        Raises:
            ValueError: a timeout is NaN or negative.
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
        return cls(opener(timeout), opener, timeout, reconnect_timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def submit(
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
        return self._run(call, timeout)

    def submit_many(
        self, jobs: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> list[str]:
        """Add several jobs in one round trip; return their ids in order.

        Each job is a mapping with the wire fields of ``submit_job``
        (``{"name": "resize", "payload": {...}, "priority": 5}``); the server
        adds all of them or, if any is invalid, none.

        Raises:
            ValueError: a job is invalid (checked before anything is sent).
            RequestError, ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        return self._run(core.submit_many(jobs), timeout)

    def cancel(self, job_id: str, *, timeout: float | None = None) -> JobInfo:
        """Cancel a job that has not finished; return its state (``cancelled``).

        Raises:
            RequestError: ``unknown_job``, or ``already_finished``.
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        return self._run(core.cancel(job_id), timeout)

    def retry(self, job_id: str, *, timeout: float | None = None) -> JobInfo:
        """Requeue a failed job with a fresh budget of attempts.

        Raises:
            RequestError: ``unknown_job``, or ``not_failed``.
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        return self._run(core.retry(job_id), timeout)

    def delete(self, job_id: str, *, timeout: float | None = None) -> None:
        """Forget a finished job now.

        Raises:
            RequestError: ``unknown_job``, or ``not_finished``.
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        self._run(core.delete(job_id), timeout)

    def list_jobs(
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
        return self._run(core.list_jobs(state, queue, limit), timeout)

    def status(
        self, job_id: str, *, payload: bool = False, timeout: float | None = None
    ) -> JobInfo:
        """Return the job's current state, with when it was submitted, started and finished.

        ``payload=True`` adds the job's payload to the reply (left out by
        default so that status polls stay small).

        Raises:
            RequestError: ``unknown_job`` if the server does not know it.
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        return self._run(core.status(job_id, payload), timeout)

    def wait(self, job_id: str, *, timeout: float | None = None) -> JobInfo:
        """Block until the job is completed, failed or cancelled; return its final state.

        Nothing polls: the server answers when the job ends. Other threads'
        calls go on meanwhile, on other connections.

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
        return self._run(core.wait(job_id, timeout), None)

    def stats(self, *, timeout: float | None = None) -> Stats:
        """Return queue-wide counters and which worker holds which job.

        Raises:
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        return self._run(core.stats(), timeout)

    def add_schedule(
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
        return self._run(core.add_schedule(schedule), timeout)

    def list_schedules(self, *, timeout: float | None = None) -> list[ScheduleInfo]:
        """Every schedule on the server, by name, with its next and last firing.

        Raises:
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        return self._run(core.list_schedules(), timeout)

    def remove_schedule(self, name: str, *, timeout: float | None = None) -> None:
        """Remove a schedule; the jobs it already submitted stay.

        Raises:
            RequestError: ``unknown_schedule``.
            ConnectionLost, RequestTimeout: as for :meth:`submit`.
        """
        self._run(core.remove_schedule(name), timeout)

    def close(self) -> None:
        """Close every connection.

        Calls other threads are in the middle of raise
        :class:`~jobqueue.ConnectionLost` at once (a request that was
        sent may or may not have been applied); later calls raise
        :class:`ClientClosed`.
        """
        with self._lock:
            self._closed = True
            self._closing.set()
            idle, self._idle = self._idle, []
            # Under the lock: a call closes its connection only once it has
            # taken it out of _busy, so none is closed while aborted here.
            for conn in self._busy:
                conn.abort()
        for conn in idle:
            conn.close()

    def _after_fork(self) -> None:
        """In a forked child: leave the parent's connections to the parent.

        Replies are matched to requests by position, so one socket read by
        two processes hands each the other's replies. The child drops its
        copies of the parent's connections (closing a copied descriptor
        leaves the parent's connection open; only a shutdown would end it)
        and opens its own as it needs them. Its lock and event may have
        been held by a thread that does not exist in the child: new ones.
        """
        self._lock = threading.Lock()
        self._closing = threading.Event()
        if self._closed:
            self._closing.set()
        inherited = [*self._idle, *self._busy]
        self._idle, self._busy = [], set()
        for conn in inherited:
            conn.close()

    def _run(self, call: core.Call[_T], timeout: float | None) -> _T:
        """Drive one call: send each request it yields, give it the reply."""
        timeout = self._timeout if timeout is None else core.check_timeout(timeout, "timeout")
        request = next(call)
        while True:
            reply = self._exchange(request, core.patience(request, timeout))
            try:
                request = call.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def _exchange(self, request: core.Request, patience: float) -> core.Reply:
        deadline = time.monotonic() + patience
        resent = False
        while True:
            conn = self._take(deadline)
            try:
                return conn.ask(request, deadline - time.monotonic())
            except RequestNotSent:
                # The server never read it: once more, on a new connection.
                if resent:
                    raise
                resent = True
            finally:
                # Kept if it owes no reply and is not broken (a RequestError
                # other than a farewell, a payload refused before sending);
                # closed after a timeout, a lost connection, an interrupt.
                self._give(conn)

    def _take(self, deadline: float) -> _Connection:
        """An idle connection that still works, or a new one (with backoff).

        The connection is the caller's until it hands it to :meth:`_give`.
        """
        while True:
            with self._lock:
                if self._closed:
                    raise ClientClosed("the client is closed")
                if not self._idle:
                    break
                conn = self._idle.pop()
                self._busy.add(conn)
            if conn.reusable():
                return conn
            self._give(conn, keep=False)
        retry = core.Reconnect(self._address, self._reconnect_timeout, deadline)
        while True:
            try:
                conn = self._open(max(deadline - time.monotonic(), 0.01))
            except (ConnectionLost, RequestError) as exc:
                if self._closing.wait(retry.after(exc)):
                    raise ClientClosed("the client is closed") from None
            else:
                retry.succeeded()
                with self._lock:
                    if not self._closed:
                        self._busy.add(conn)
                        return conn
                conn.close()
                raise ClientClosed("the client is closed")

    def _give(self, conn: _Connection, *, keep: bool = True) -> None:
        """Take back a connection from :meth:`_take`: kept idle if ``keep`` and fit, else closed."""
        with self._lock:
            self._busy.discard(conn)
            if keep and conn.usable and not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()


#: Every Client not yet garbage, for :func:`_after_fork_in_child`.
_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
