"""The leases one worker connection holds, and every timer that guards them.

A slot's connection holds the leases of the jobs it has been assigned and
not yet reported: one, or a prefetched batch. Its :class:`LeaseKeeper` task
renews them all, in one write, every third of a lease; stops the running
handler at ``job_timeout``; and ends the connection when a reply is overdue.
Those are three timers but one wake-up: see :class:`LeaseKeeper`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import attrs
import trio

from ._errors import ConnectionLost, RequestError
from ._link import Link
from ._replies import JobAssigned, Reply
from ._requests import Heartbeat, Request

#: A lease: (job id, attempt).
Key = tuple[str, int]


async def ask_many(
    link: Link, messages: Sequence[Request], limit: float
) -> list[Reply | RequestError]:
    """``link.request_many`` with a deadline for the replies.

    Raises:
        ConnectionLost: no reply within ``limit`` seconds (the connection is
            then unusable, as after any interrupted request).
    """
    with trio.move_on_after(limit):
        return await link.request_many(messages)
    raise ConnectionLost(f"no reply to {_what(messages)} within {limit:g}s from {link.address}")


def _what(messages: Sequence[Request]) -> str:
    if len(messages) == 1:
        return messages[0].TYPE
    return f"{len(messages)} pipelined requests"


@attrs.define(eq=False)
class LeaseKeeper:
    """The leases a connection holds, the handler it runs, the reply it awaits.

    The slot tells the keeper what it is doing (:meth:`hold`, :meth:`start`,
    :meth:`expect_reply`, ...) and the keeper's task (:meth:`run`) sleeps
    until the earliest of its timers: the next heartbeat, the running
    handler's ``job_timeout``, the outstanding reply's deadline. The slot
    only ever moves that wake-up *earlier*, never later: a job or a request
    that ends before its timer leaves the wake-up where it is, and the task,
    woken with nothing due, sleeps again until what is due next. So
    back-to-back short jobs cost no timer change, no heartbeat and no cancel
    scope of their own, only one spare wake-up per heartbeat interval; and a
    batch of leases costs one heartbeat timer, not one per job.

    A lease the server refuses to renew (``not_leased``: it expired and went
    elsewhere, or ``unknown_job``), or one whose renewal goes unanswered
    until the lease would have run out, is *given up*: :attr:`lost` says
    why, its handler is stopped if it is running, and :meth:`start` refuses
    it if it has not started. A ``job_cancelled`` notice does the same
    through :attr:`cancelled`. The slot decides what to count and report.

    Args:
        link: The connection; heartbeats go out on it.
        connection: Cancelled to end the connection when a reply is overdue.
    """

    link: Link
    connection: trio.CancelScope
    #: Leases held and not yet reported, so renewed by heartbeats.
    held: dict[Key, JobAssigned] = attrs.field(factory=dict, init=False)
    #: Leases given up, and why.
    lost: dict[Key, ConnectionLost | RequestError] = attrs.field(factory=dict, init=False)
    #: Leases whose job was cancelled. Remembered even for a job not held yet:
    #: the reader can see the notice in the same read as the assignment it cancels.
    cancelled: set[Key] = attrs.field(factory=set, init=False)
    #: Set once a reply is overdue; the connection has then been cancelled.
    failure: ConnectionLost | None = attrs.field(default=None, init=False)
    #: Whether the keeper stopped the last handler for running past ``job_timeout``.
    timed_out: bool = attrs.field(default=False, init=False)
    #: Whether the keeper stopped the last handler started (for any reason): the
    #: slot's scope is then spent. The slot reads this after every job, where the
    #: scope's ``cancel_called`` would read the clock (four calls) to say the same.
    stopped: bool = attrs.field(default=False, init=False)
    _lease: float = attrs.field(default=30.0, init=False)
    _interval: float = attrs.field(default=math.inf, init=False)
    #: When the next heartbeat is due (``inf``: nothing held, or one in flight).
    _next_at: float = attrs.field(default=math.inf, init=False)
    _running: Key | None = attrs.field(default=None, init=False)
    _handler: trio.CancelScope | None = attrs.field(default=None, init=False)
    #: When the running handler has run for ``job_timeout`` (``inf``: no limit).
    _timeout_at: float = attrs.field(default=math.inf, init=False)
    #: When the outstanding request must have been answered (``inf``: none).
    _reply_at: float = attrs.field(default=math.inf, init=False)
    _reply_for: tuple[Sequence[Request], float] = attrs.field(default=((), 0.0), init=False)
    #: The task's current sleep; its deadline is at or before what is due.
    _sleep: trio.CancelScope | None = attrs.field(default=None, init=False)

    def hold(
        self, batch: Iterable[JobAssigned], lease_timeout: float, *, renew_now: bool = False
    ) -> None:
        """The connection was assigned ``batch``: renew those leases until released.

        The first heartbeat is due a third of a lease from now, unless one
        is already due sooner for leases held before. ``renew_now``: at once,
        for leases held again after a report that was refused (and so
        renewed nothing), whose last renewal may be most of a lease ago.
        """
        for assigned in batch:
            self.held[assigned.job_id, assigned.attempt] = assigned
        self._lease = lease_timeout
        self._interval = max(lease_timeout / 3, 0.001)
        now = trio.current_time()
        if renew_now and self._next_at > now:
            self._next_at = now
            self._wake_by(now)
        elif self._next_at == math.inf:
            self._next_at = now + self._interval
            self._wake_by(self._next_at)

    def release(self, key: Key) -> None:
        """The slot is done with ``key`` (reported or dropped): forget its lease."""
        self.held.pop(key, None)
        self.lost.pop(key, None)
        self.cancelled.discard(key)
        if not self.held:
            self._next_at = math.inf

    def start(
        self, key: Key, handler: trio.CancelScope, job_timeout: float | None, now: float
    ) -> bool:
        """``key``'s handler is about to run in ``handler`` (at ``now``); ``False``: do not run it.

        A job cancelled or given up before it starts never runs.
        """
        if key in self.cancelled or key in self.lost:
            return False
        self._running, self._handler = key, handler
        self.timed_out = self.stopped = False
        if job_timeout is not None:
            self._timeout_at = now + job_timeout
            if self._timeout_at < self._next_at:  # else the wake-up is soon enough
                self._wake_by(self._timeout_at)
        return True

    def stop(self) -> None:
        """The handler ended (its wake-up is left as is)."""
        self._running = self._handler = None
        self._timeout_at = math.inf

    def stop_running(self) -> Key | None:
        """Stop the running handler (a drain's deadline); return its lease, if any.

        Its job is neither cancelled nor lost: the slot gives it back.
        """
        key, handler = self._running, self._handler
        if key is not None and handler is not None:
            self._stop(handler)
        return key

    def notice(self, key: Key) -> None:
        """A ``job_cancelled`` notice for ``key``: stop its handler, or never start it."""
        self.cancelled.add(key)
        if key == self._running and self._handler is not None:
            self._stop(self._handler)

    def expect_reply(self, messages: Sequence[Request], limit: float) -> None:
        """``messages`` went out: their replies are due within ``limit`` seconds."""
        self._reply_at = trio.current_time() + limit
        self._reply_for = (messages, limit)
        self._wake_by(self._reply_at)

    def replied(self) -> None:
        """The replies came (or the request failed): none is outstanding."""
        self._reply_at = math.inf

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the timers until the connection ends (or a reply is overdue).

        A heartbeat may take until the lease would run out (``lease -
        interval``) to be answered; one that is not means the lease is
        surely gone (a silent partition, say), so it is given up rather
        than run a job the server has handed to someone else.
        """
        task_status.started()
        while True:
            with trio.CancelScope(
                deadline=min(self._next_at, self._timeout_at, self._reply_at)
            ) as sleep:
                self._sleep = sleep
                await trio.sleep_forever()
            now = trio.current_time()
            if now >= self._reply_at:
                messages, limit = self._reply_for
                self.failure = ConnectionLost(
                    f"no reply to {_what(messages)} within {limit:g}s from {self.link.address}"
                )
                self.connection.cancel()
                return
            if now >= self._timeout_at and self._handler is not None:
                self._timeout_at = math.inf
                self.timed_out = True
                self._stop(self._handler)
            if now >= self._next_at:
                await self._heartbeat()

    async def _heartbeat(self) -> None:
        """Renew every lease held and not given up, in one write."""
        self._next_at = math.inf  # the next one is timed from this one's reply
        keys = [key for key in self.held if key not in self.lost]
        if not keys:
            return
        beats: list[Request] = [Heartbeat(job_id, attempt) for job_id, attempt in keys]
        replies: Sequence[object]
        try:
            replies = await ask_many(self.link, beats, self._lease - self._interval)
        except ConnectionLost as exc:
            replies = [exc] * len(keys)
        for key, reply in zip(keys, replies, strict=True):
            # A lease released meanwhile no longer matters (a broken
            # connection fails the slot's next request anyway).
            if isinstance(reply, (ConnectionLost, RequestError)) and key in self.held:
                self.lost[key] = reply
                if key == self._running and self._handler is not None:
                    self._stop(self._handler)
        if self.held and self._next_at == math.inf:
            self._next_at = trio.current_time() + self._interval

    def _stop(self, handler: trio.CancelScope) -> None:
        """Stop the running handler: cancel its scope, and say so in :attr:`stopped`."""
        self.stopped = True
        handler.cancel()

    def _wake_by(self, when: float) -> None:
        sleep = self._sleep
        if sleep is not None and when < sleep.deadline:
            sleep.deadline = when
