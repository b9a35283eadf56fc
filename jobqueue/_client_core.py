"""The sans-IO core that :mod:`jobqueue.sync` and :mod:`jobqueue.asyncio` share.

Nothing here touches a socket, a thread or an event loop. It holds what the
blocking and the asyncio client must agree on, once:

- :class:`Conversation`: one connection's state. Requests are encoded in,
  bytes from the server are fed in, and replies come out matched to their
  requests by position (protocol §3.1), already checked for the expected
  type and turned into the exception a caller sees (``error`` replies,
  farewells, bad replies, a lost connection).
- The calls (:func:`submit`, :func:`wait`, ...): what each public method
  sends and what it returns, as generators that yield requests and are sent
  replies, so an I/O layer only moves bytes.
- :class:`Reconnect`: the backoff and the rules for giving up, as in the
  trio :class:`~jobqueue.Client`.
- The wording of connection failures (and the TLS hint), so both clients
  say the same thing for the same fault.

This is the one module of the two clients that imports the codec.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import attrs

from ._codec import decode_reply, encode_request
from ._errors import (
    FAREWELL_CODES,
    IDLE_TIMEOUT,
    ConnectionLost,
    ProtocolError,
    RequestError,
    RequestNotSent,
    RequestTimeout,
    reason,
)
from ._framing import EOF, NEED_DATA, LineDecoder
from ._limits import MAX_LINE_BYTES
from ._replies import (
    ErrorReply,
    JobCancelledNotice,
    JobInfo,
    JobList,
    JobsSubmitted,
    JobSubmitted,
    Ok,
    Reply,
    Stats,
    Welcome,
)
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

__all__ = [
    "DEFAULT_RECONNECT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "Call",
    "Conversation",
    "JobInfo",
    "JobList",
    "Pending",
    "Reconnect",
    "Reply",
    "Request",
    "Stats",
    "cannot_connect",
    "check_timeout",
    "hello",
    "hello_failed",
    "is_blocking",
    "patience",
    "reason",
]

_T = TypeVar("_T")

log = logging.getLogger("jobqueue.client")

#: Default for how long a call waits for its reply, and to connect, in seconds.
DEFAULT_TIMEOUT = 30.0

#: Default for how long a call keeps trying to reconnect, in seconds (as the
#: trio Client's).
DEFAULT_RECONNECT_TIMEOUT = 30.0

#: Longest single ``wait_job`` a wait without a timeout sends: the server
#: answers at least this often, so even an unbounded wait reads with a
#: deadline and a dead server cannot hang it.
WAIT_CHUNK = 60.0

#: First and longest pause between reconnect attempts, in seconds.
_RECONNECT_DELAY = 0.1
_MAX_RECONNECT_DELAY = 5.0

#: Replies carry a payload or result plus an envelope (protocol §1).
_MAX_REPLY_BYTES = 2 * MAX_LINE_BYTES + 65536

#: The reply each request must get (an ``error`` aside), by wire type. Keyed
#: by type name, not class, so one class serving several types is no matter.
_EXPECTED: dict[str, type[Reply]] = {
    "hello": Welcome,
    "submit_job": JobSubmitted,
    "submit_jobs": JobsSubmitted,
    "job_status": JobInfo,
    "wait_job": JobInfo,
    "cancel_job": JobInfo,
    "retry_job": JobInfo,
    "delete_job": Ok,
    "list_jobs": JobList,
    "stats": Stats,
    "add_schedule": ScheduleInfo,
    "list_schedules": ScheduleList,
    "remove_schedule": Ok,
}

#: A public method as the I/O layers run it: it yields each request to send
#: and is sent that request's reply; its return value is the method's.
Call = Generator[Request, Reply, _T]


@attrs.define(eq=False, slots=True)
class Pending:
    """One request sent on a :class:`Conversation` and not yet answered.

    Attributes:
        request_type: The request's wire type.
        outcome: ``None`` until answered; then the reply, or the exception
            the caller gets instead.
        waiter: Free for the I/O layer (the asyncio client keeps a future
            here); the core never reads it.
    """

    request_type: str
    outcome: Reply | Exception | None = None
    waiter: Any = None

    def result(self) -> Reply:
        """The reply; raises what the caller gets instead of one."""
        outcome = self.outcome
        if isinstance(outcome, Exception):
            raise outcome
        assert outcome is not None, "result() before the reply came"
        return outcome


class Conversation:
    """One connection's protocol state: requests in order, replies matched by position.

    The server answers every request, in order, and sends nothing else to a
    client (a ``job_cancelled`` notice goes only to a lease holder, and is
    skipped if one comes). So the oldest :class:`Pending` owns the next
    reply line, whoever is waiting for it: a caller that gave up (timed
    out, cancelled) leaves its :class:`Pending` in place, its reply is read
    and dropped, and no later reply is ever handed to the wrong caller.

    Once :attr:`broken`, the conversation is over: every request still
    pending has failed and :meth:`send` refuses new ones.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self._decoder = LineDecoder(_MAX_REPLY_BYTES)
        self._pending: deque[Pending] = deque()
        self._broken: str | None = None

    @property
    def broken(self) -> str | None:
        """Why the connection is unusable, or ``None`` if it is fine."""
        return self._broken

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered (those given up on included)."""
        return len(self._pending)

    def waiting(self) -> Iterator[Pending]:
        """The requests not yet answered, oldest first (given-up ones included)."""
        return iter(self._pending)

    def send(self, request: Request) -> tuple[bytes, Pending]:
        """Encode ``request`` and expect its reply next after those pending.

        The caller must then send the bytes, whole and in this order.

        Raises:
            RequestNotSent: the conversation is broken; nothing was sent.
            TypeError, ValueError: the request holds something JSON cannot
                represent; nothing was sent and the conversation is intact.
        """
        if self._broken is not None:
            raise RequestNotSent(f"connection to {self.address} unusable: {self._broken}")
        data = encode_request(request)
        return data, self.expect(request.TYPE)

    def expect(self, request_type: str) -> Pending:
        """:meth:`send` for a request of ``request_type`` that the caller encoded itself.

        Raises:
            RequestNotSent: the conversation is broken; nothing may be sent.
        """
        if self._broken is not None:
            raise RequestNotSent(f"connection to {self.address} unusable: {self._broken}")
        pending = Pending(request_type)
        self._pending.append(pending)
        return pending

    def receive(self, data: bytes | bytearray) -> list[Pending]:
        """Feed bytes from the server (``b""``: it closed); return the requests answered.

        A reply of the wrong kind, a line that is not a reply, or the end of
        the stream breaks the conversation: every request pending then fails
        with :class:`ConnectionLost`, and is returned too.
        """
        done: list[Pending] = []
        decoder = self._decoder
        waiting = self._pending
        decoder.receive_data(data)
        try:
            while self._broken is None:
                line = decoder.next_line()
                if line is NEED_DATA:
                    break
                if line is EOF:
                    done += self.lose("the server closed the connection")
                    break
                reply = decode_reply(line)
                if waiting and type(reply) is _EXPECTED[waiting[0].request_type]:
                    # The usual reply: what the oldest request expects.
                    pending = waiting.popleft()
                    pending.outcome = reply
                    done.append(pending)
                elif not isinstance(reply, JobCancelledNotice):
                    done += self._answer(reply)
        except ProtocolError as exc:
            done += self._fail(f"the server at {self.address} sent a bad reply: {exc.message}")
        return done

    def lose(self, why: str) -> list[Pending]:
        """The connection is gone (``why``: "Connection reset by peer"); fail what is pending."""
        return self._fail(f"connection to {self.address} lost: {why}")

    def _answer(self, reply: Reply) -> list[Pending]:
        """Settle the oldest pending request with ``reply``; return every request settled."""
        if not self._pending:
            # An answer nobody asked for: the two ends are out of step.
            return self._fail(f"the server at {self.address} sent an unasked {reply!r}")
        if isinstance(reply, ErrorReply) and reply.code == IDLE_TIMEOUT:
            # The server decided to close with nothing outstanding, before it
            # read this request or any sent after it (protocol §1): sending
            # each again cannot apply it twice.
            failed = self._fail(f"closed by the server ({reply.code})")
            for pending in failed:
                pending.outcome = RequestNotSent(
                    f"the queue at {self.address} closed the connection as idle"
                )
            return failed
        pending = self._pending.popleft()
        if isinstance(reply, ErrorReply):
            pending.outcome = RequestError(reply.code, reply.message)
            if reply.code in FAREWELL_CODES:
                return [pending, *self._fail(f"closed by the server ({reply.code})")]
            return [pending]
        expected = _EXPECTED[pending.request_type]
        if isinstance(reply, expected):
            pending.outcome = reply
            return [pending]
        self._pending.appendleft(pending)
        return self._fail(
            f"protocol mismatch with the queue at {self.address}: "
            f"expected {expected.__name__}, got {reply!r}"
        )

    def _fail(self, why: str) -> list[Pending]:
        """Break the conversation; fail and return every pending request."""
        self._broken = self._broken or why
        failed = list(self._pending)
        self._pending.clear()
        for pending in failed:
            pending.outcome = ConnectionLost(why)
        return failed


def check_timeout(value: float, name: str) -> float:
    """``value``, a number of seconds for ``name`` (``"timeout"``, say): 0 or more.

    Infinity means no limit. NaN would never compare as reached, so a wait
    bounded by it would never end: like a negative time, it is refused, as
    trio's own ``move_on_after`` refuses both.

    Raises:
        ValueError: NaN or negative.
    """
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a number of seconds, 0 or more, not {value!r}")
    return value


def patience(request: Request, timeout: float) -> float:
    """How long to wait for ``request``'s reply: ``timeout`` plus any wait it asks for."""
    if isinstance(request, WaitJob) and request.wait is not None:
        return request.wait + timeout
    return timeout


def is_blocking(request: Request) -> bool:
    """Whether the server holds the reply (and every later one on that connection)."""
    return isinstance(request, WaitJob)


# -- the calls: one per public method --------------------------------------------


def hello(name: str | None, token: str | None) -> Request:
    """The first request on every connection: names the client, carries the token."""
    return Hello(name, token)


def submit(
    name: str,
    payload: Any,
    queue: str,
    priority: int,
    delay: float,
    run_at: float | None,
    key: str | None,
    max_attempts: int | None,
) -> Call[str]:
    """``submit``: one job; returns its id."""
    reply = yield SubmitJob(name, payload, queue, priority, max_attempts, delay, run_at, key)
    assert isinstance(reply, JobSubmitted)
    return reply.job_id


def submit_many(jobs: Iterable[Mapping[str, Any]]) -> Call[list[str]]:
    """``submit_many``: all of the jobs or none; returns their ids in order.

    Raises:
        ValueError: a job is invalid (before anything is sent).
    """
    try:
        request = SubmitJobs.from_wire({"type": "submit_jobs", "jobs": list(map(dict, jobs))})
    except ProtocolError as exc:
        raise ValueError(exc.message) from None
    reply = yield request
    assert isinstance(reply, JobsSubmitted)
    return list(reply.job_ids)


def _job(request: Request) -> Call[JobInfo]:
    reply = yield request
    assert isinstance(reply, JobInfo)
    return reply


def status(job_id: str, payload: bool = False) -> Call[JobInfo]:
    """``status``: the job's current state (with its payload if ``payload``)."""
    return _job(GetStatus(job_id, payload))


def cancel(job_id: str) -> Call[JobInfo]:
    """``cancel``: the job's state once cancelled."""
    return _job(CancelJob(job_id))


def retry(job_id: str) -> Call[JobInfo]:
    """``retry``: the job's state once requeued."""
    return _job(RetryJob(job_id))


def delete(job_id: str) -> Call[None]:
    """``delete``: forget a finished job."""
    yield DeleteJob(job_id)


def list_jobs(state: str, queue: str | None, limit: int) -> Call[JobList]:
    """``list_jobs``: jobs in one state, oldest first."""
    reply = yield ListJobs(state, queue, limit)
    assert isinstance(reply, JobList)
    return reply


def stats() -> Call[Stats]:
    """``stats``: queue-wide counters."""
    reply = yield GetStats()
    assert isinstance(reply, Stats)
    return reply


def add_schedule(schedule: Schedule) -> Call[ScheduleInfo]:
    """``add_schedule``: the schedule as the server now has it."""
    reply = yield AddSchedule(schedule)
    assert isinstance(reply, ScheduleInfo)
    return reply


def list_schedules() -> Call[list[ScheduleInfo]]:
    """``list_schedules``: every schedule, by name."""
    reply = yield ListSchedules()
    assert isinstance(reply, ScheduleList)
    return list(reply.schedules)


def remove_schedule(name: str) -> Call[None]:
    """``remove_schedule``: it fires no more."""
    yield RemoveSchedule(name)


def wait(job_id: str, timeout: float | None) -> Call[JobInfo]:
    """``wait``: the job's final state, or :class:`RequestTimeout` after ``timeout`` seconds.

    The server holds each ``wait_job`` until the job ends or the ``wait`` it
    carries runs out, so nothing polls; a wait without a timeout is sent
    again every :data:`WAIT_CHUNK` seconds only so that every read on the
    connection has a deadline.

    Raises:
        ValueError: ``timeout`` is NaN or negative (before anything is sent).
    """
    if timeout is not None:
        check_timeout(timeout, "timeout")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = WAIT_CHUNK if deadline is None else max(0.0, deadline - time.monotonic())
        info = yield from _job(WaitJob(job_id, min(left, WAIT_CHUNK)))
        if info.finished:
            return info
        if deadline is not None and time.monotonic() >= deadline:
            raise RequestTimeout(
                f"job {job_id} did not finish within {timeout:g}s (it is {info.state})", info
            )


# -- connecting -------------------------------------------------------------------


def cannot_connect(
    address: str, exc: BaseException, timeout: float, *, handshake: bool
) -> ConnectionLost:
    """The error for a connection (or, once connected, a TLS ``handshake``) that failed."""
    why = f"no answer within {timeout:g}s" if isinstance(exc, TimeoutError) else reason(exc)
    if handshake:
        return ConnectionLost(f"TLS handshake with the queue at {address} failed: {why}")
    return ConnectionLost(f"cannot connect to the queue at {address}: {why}")


def hello_failed(exc: ConnectionLost, *, tls: bool) -> ConnectionLost:
    """``exc`` from a plain-text ``hello``, with the hint a TLS server deserves."""
    if tls:
        return exc
    # What a TLS server does with plain text: close without a word.
    return ConnectionLost(f"{exc} (if the server uses TLS, connect with TLS)")


class Reconnect:
    """The backoff between attempts to replace a lost connection.

    As the trio :class:`~jobqueue.Client`: attempts are spaced by a delay
    that doubles from 0.1 s up to 5 s (with jitter), for up to
    ``reconnect_timeout`` seconds, and a refusal that waiting cannot fix
    (a wrong token) ends them at once. A call's own deadline ends them too.
    """

    def __init__(self, address: str, reconnect_timeout: float, deadline: float) -> None:
        self._address = address
        self._reconnect_timeout = reconnect_timeout
        self._deadline = min(time.monotonic() + reconnect_timeout, deadline)
        self._delay = _RECONNECT_DELAY
        self.attempts = 0

    def after(self, exc: ConnectionLost | RequestError) -> float:
        """Attempt number ``attempts`` failed with ``exc``: how long to sleep before the next.

        Raises:
            ConnectionLost: no time is left for another attempt.
            RequestError: the server refused, and will refuse again.
        """
        self.attempts += 1
        # A full server may have room soon; a refused token will not.
        if isinstance(exc, RequestError) and exc.code != "too_many_connections":
            raise exc
        if self.attempts == 1:
            log.warning("cannot reach the queue at %s (%s); retrying", self._address, exc)
        if time.monotonic() + self._delay > self._deadline:
            raise ConnectionLost(
                f"could not reconnect to the queue at {self._address} within "
                f"{self._reconnect_timeout:g}s ({self.attempts} attempts): {exc}"
            ) from exc
        delay = self._delay * random.uniform(0.5, 1.0)
        self._delay = min(self._delay * 2, _MAX_RECONNECT_DELAY)
        return delay

    def succeeded(self) -> None:
        """Log a reconnect that needed more than one attempt."""
        if self.attempts:
            log.warning(
                "reconnected to the queue at %s (attempt %d)", self._address, self.attempts + 1
            )
