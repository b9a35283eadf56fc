"""``Worker``: fetch jobs, run their handlers, heartbeat, report.

A worker with ``concurrency=N`` opens N connections ("slots"). Each slot is
one sequential loop (the engine, ``_engine``): ask for jobs (blocking on
the server with ``wait``, so nothing polls), run their handlers while the
connection's lease keeper (``_lease``) heartbeats them, report the
outcomes, repeat. One connection per slot keeps every request/reply
strictly sequential, so no request ever waits behind another slot's
blocked ``request_job``; if the process dies, all its connections close and
the server requeues all its jobs at once. This module is the public face:
the options, the slots and reconnecting.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping

import attrs
import trio

from ._client_core import check_timeout
from ._config import DEFAULT_QUEUE
from ._engine import serve_connection
from ._errors import ConnectionLost, RequestError
from ._handler import BUILTIN_HANDLERS, DEFAULT_JOB_TIMEOUT, Handler, Job
from ._interrupts import interrupts_unwrapped
from ._limits import (
    MAX_FETCH,
    MAX_HANDLER_NAMES,
    MAX_NAME_CHARS,
    MAX_QUEUES,
    MAX_WAIT_SECONDS,
)
from ._link import Connector, Link
from ._prefetch import PrefetchSetting
from ._runners import HandlerRunner
from ._worker_statistics import WorkerStatistics

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_JOB_TIMEOUT",
    "DEFAULT_REPLY_GRACE",
    "Handler",
    "Job",
    "Worker",
    "WorkerStatistics",
]

log = logging.getLogger("jobqueue.worker")

#: Default for Worker.reply_grace: seconds a reply may take beyond what its
#: request asks the server to wait.
DEFAULT_REPLY_GRACE = 10.0
#: Default for Worker.drain: seconds running jobs get to finish (Kubernetes'
#: default grace period between SIGTERM and SIGKILL is the same).
DEFAULT_DRAIN_TIMEOUT = 30.0


def _default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _check_name(what: str, name: object) -> None:
    """Refuse a name the server would refuse (``bad_request``) in every ``hello`` or request."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        raise ValueError(f"{what} must be 1 to {MAX_NAME_CHARS} characters, not {name!r}")


def _queue_names(queues: Iterable[str]) -> tuple[str, ...]:
    # Checked here, not by the server: a worker the server refused on every
    # request_job would reconnect and be refused again, for ever.
    names = (queues,) if isinstance(queues, str) else tuple(queues)
    if not names:
        raise ValueError("a worker needs at least one queue")
    if len(names) > MAX_QUEUES:
        raise ValueError(f"a worker takes jobs from at most {MAX_QUEUES} queues, not {len(names)}")
    for name in names:
        _check_name("a queue name", name)
    return names


def _check_worker_name(_worker: object, _attribute: object, value: object) -> None:
    _check_name("a worker's name", value)


def _check_handler_names(_worker: object, _attribute: object, value: dict[str, Handler]) -> None:
    if len(value) > MAX_HANDLER_NAMES:
        raise ValueError(f"a worker has at most {MAX_HANDLER_NAMES} handlers, not {len(value)}")
    for name in value:
        _check_name("a handler's job name", name)


def _check_prefetch(_worker: object, _attribute: object, value: object) -> None:
    if value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_FETCH:
        raise ValueError(f"prefetch must be 1 to {MAX_FETCH} or 'auto', not {value!r}")


def _check_job_timeout(_worker: object, _attribute: object, value: float | None) -> None:
    # 0 is no "no limit" here (that is None): it would fail every job at once.
    if value is not None and not value > 0:
        raise ValueError(
            f"job_timeout must be more than 0 seconds, or None for no limit, not {value}"
        )


def _merge_handlers(handlers: Mapping[str, Handler]) -> dict[str, Handler]:
    return {**BUILTIN_HANDLERS, **handlers}


@attrs.define(eq=False)
class Worker:
    """Runs jobs from the queue at ``host:port``.

    ``await worker.run()`` (or ``await nursery.start(worker.run)``, which
    returns once every slot has connected) runs until :meth:`drain` or
    until cancelled. :meth:`drain` stops gracefully: no new jobs, running
    ones finish (within a deadline), the rest are given back without
    spending an attempt, then ``run()`` returns. Cancelling it stops at
    once: running handlers are cancelled, nothing more is reported, and the
    server puts their jobs back in the queue as soon as the connections
    close, each spending an attempt.

    Args:
        host: The server's address.
        port: The server's port.
        handlers: Job name -> handler; added to (and able to replace) the
            built-in ``sleep``. An ``async def`` runs on the worker's trio
            loop, a plain ``def`` in a worker thread (at most
            twice ``concurrency`` threads, counting threads of cancelled
            jobs still winding down), one marked with
            :func:`jobqueue.in_process` in a separate process (README,
            "Handlers").
        concurrency: How many jobs to run at once (one connection each).
        name: How the server names this worker in status and stats.
        poll_wait: How long one ``request_job`` waits on the server for a
            job before asking again. Only bounds how long a slot goes
            without proof the connection is alive; jobs arrive immediately.
        reconnect_delay: First delay after a failed connection; doubles (with
            jitter) on each further failure.
        max_reconnect_delay: Cap on that delay.
        queues: The queues to take jobs from (1 to 64 names); the best job
            across all of them (highest priority, then oldest) comes first.
        job_timeout: Longest a handler may run, in seconds, more than 0
            (``None``: no limit). A handler still running then is cancelled and its job
            reported as failed with ``TimeoutError``, so a hung handler
            cannot keep its job for ever by heartbeating.
        token: The server's shared secret, if it was started with one.
        ssl_context: Speak TLS, checking the server's certificate with this
            context (e.g. ``ssl.create_default_context(cafile=...)``).
        connect: Advanced: an async function returning a connected
            ``trio.abc.Stream``, used instead of TCP to ``host:port``
            (``jobqueue.testing`` uses it for in-memory queues).
        prefetch: Jobs each slot takes per round trip. The default,
            ``"auto"``, picks the number batch by batch: more (up to 64)
            while the requests come back full and a batch runs within 20 ms,
            fewer when it runs longer (one at a time after a single long
            job); a batch that has run 20 ms gives back the jobs it has not
            started and reports those it has finished. A backlog of short
            jobs then drains in few round trips, and no job waits long
            unstarted, or its result unreported, behind a long one; on a
            shallow queue a slot takes one job at a time.
            A number (1 to 1000) fixes it: a slot takes up to this many at
            once, runs them one after another, then reports them all in one
            write that also takes the next batch. A job's result is then
            reported only when its batch is done, and a slot holds (and
            heartbeats) jobs it has not started, however long the batch
            runs. ``1`` takes one job at a time, always. Either way, a lost
            worker's jobs, started or not, go back to the queue.
        reply_grace: Seconds a reply may take beyond what its request asks
            the server to wait (``poll_wait`` for a ``request_job``) before
            the slot gives up on the connection and reconnects: how soon a
            silent partition, which closes nothing, is noticed. Must exceed
            the worst round trip to the server.
        processes: How many :func:`~jobqueue.in_process` handlers may run at
            once (``None``: ``concurrency``). Fewer than ``concurrency``
            keeps CPU-bound jobs from taking every core while the other
            slots run I/O handlers.

    Raises:
        ImportError: a handler is marked with :func:`~jobqueue.in_process`
            but the ``jobqueue[processes]`` extra is not installed.
        ValueError: an option out of range, or a name the server would
            refuse: ``name``, a queue's or a handler's job name must be 1 to
            200 characters.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    handlers: dict[str, Handler] = attrs.field(
        factory=dict, converter=_merge_handlers, validator=_check_handler_names
    )
    concurrency: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    name: str = attrs.field(factory=_default_name, validator=_check_worker_name)
    poll_wait: float = attrs.field(
        default=30.0, validator=[attrs.validators.gt(0), attrs.validators.le(MAX_WAIT_SECONDS)]
    )
    reconnect_delay: float = 0.1
    max_reconnect_delay: float = 5.0
    queues: tuple[str, ...] = attrs.field(default=(DEFAULT_QUEUE,), converter=_queue_names)
    job_timeout: float | None = attrs.field(
        default=DEFAULT_JOB_TIMEOUT, validator=_check_job_timeout
    )
    token: str | None = attrs.field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = None
    connect: Connector | None = None
    prefetch: PrefetchSetting = attrs.field(default="auto", validator=_check_prefetch)
    reply_grace: float = attrs.field(default=DEFAULT_REPLY_GRACE, validator=attrs.validators.gt(0))
    processes: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    # How handlers run (threads, processes); the engine asks it per handler.
    _runner: HandlerRunner = attrs.field(init=False)
    _stats: WorkerStatistics = attrs.field(factory=WorkerStatistics, init=False)
    # Whether "lost the queue" was logged and "reconnected" is still to come.
    _link_down: bool = attrs.field(default=False, init=False)
    # The cancel scopes of slots connecting: drain() cancels them.
    _connecting: set[trio.CancelScope] = attrs.field(factory=set, init=False)
    #: Set by :meth:`drain`; every slot watches it.
    draining: trio.Event = attrs.field(factory=trio.Event, init=False, repr=False)
    #: When a drain stops the handlers still running (trio time; ``inf``: no drain).
    drain_deadline: float = attrs.field(default=math.inf, init=False, repr=False)

    @_runner.default
    def _make_runner(self) -> HandlerRunner:
        HandlerRunner.check(self.handlers)
        return HandlerRunner.create(self.concurrency, self.processes or self.concurrency)

    def statistics(self) -> WorkerStatistics:
        """A snapshot of this worker's counters."""
        return attrs.evolve(self._stats)

    def drain(self, timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Stop gracefully: :meth:`run` returns once every slot is done.

        Each slot stops taking jobs at once (a slot waiting for one closes
        its connection, and one still connecting stops; neither holds
        anything), gives back at once the jobs it
        took and has not started, lets its running handler finish for up to
        ``timeout`` seconds, reports it, and then stops that handler and
        gives its job back. A job given back (``release_job``) is back in
        line at its original place and has spent no attempt. Call it from a
        task in the worker's trio run; calling it again changes nothing.

        Args:
            timeout: Seconds running handlers get to finish, 0 or more
                (``math.inf``: no limit).

        Raises:
            ValueError: ``timeout`` is NaN or negative (the worker goes on,
                not draining).
        """
        # NaN would make a deadline no wait ever reaches: refused as the
        # clients refuse it, in the same words.
        check_timeout(timeout, "timeout")
        if not self.draining.is_set():
            self.drain_deadline = trio.current_time() + timeout
            self.draining.set()
            for connecting in self._connecting:
                connecting.cancel()
            log.info("worker %s draining (up to %gs for running jobs)", self.name, timeout)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until drained or cancelled; with ``nursery.start``, start once all slots connect.

        Error handling:
            A lost or refused connection is logged and retried with
            exponential backoff until the worker drains. A handler's
            exception fails that job and is logged; it never stops the
            worker. Nor does a handler's ``SystemExit`` (``sys.exit()``),
            or any other ``BaseException`` of its own, such as a
            ``KeyboardInterrupt`` raised in a thread or process handler:
            each fails its job. A ``KeyboardInterrupt`` in an ``async def``
            handler may be Ctrl-C, so it stops the worker, after a log line
            naming the job; Ctrl-C leaves as a plain ``KeyboardInterrupt``,
            not wrapped in an exception group by the worker's tasks.
        """
        with interrupts_unwrapped():
            await self._run_slots(task_status)

    async def _run_slots(self, task_status: trio.TaskStatus[None]) -> None:
        all_connected = trio.Event()
        remaining = self.concurrency

        def slot_connected() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                all_connected.set()

        async with self._runner.open(self.handlers), trio.open_nursery() as nursery:
            for index in range(self.concurrency):
                nursery.start_soon(self._slot, index, slot_connected)
            await all_connected.wait()
            if not self.draining.is_set():
                log.info(
                    "worker %s connected to %s:%d with %d slot(s); handlers: %s",
                    self.name,
                    self.host,
                    self.port,
                    self.concurrency,
                    ", ".join(sorted(self.handlers)),
                )
            task_status.started()
            await self.draining.wait()
            done = self._stats.completed + self._stats.failed
        stats = self._stats
        log.info(
            "worker %s drained: %d job(s) finished during the drain, %d given back",
            self.name,
            stats.completed + stats.failed - done,
            stats.given_back,
        )

    async def _slot(self, index: int, connected: Callable[[], None]) -> None:
        told = False

        def connected_once() -> None:
            nonlocal told
            if not told:
                told = True
                connected()

        try:
            await self._serve_slot(index, connected_once)
        finally:
            # A slot drained before it ever connected: run() must not wait for it.
            connected_once()

    async def _serve_slot(self, index: int, connected: Callable[[], None]) -> None:
        """Connect and serve until the worker drains, reconnecting after failures."""
        delay = self.reconnect_delay
        while not self.draining.is_set():
            try:
                link = await self._open_link()
            except ConnectionLost as exc:
                if index == 0:
                    log.warning("%s; retrying in %.1fs", exc, delay)
            else:
                if link is None:
                    return  # drained while connecting
                healthy = False

                def served(address: str = link.address) -> None:
                    nonlocal healthy
                    healthy = True
                    if self._link_down:
                        self._link_down = False
                        log.warning("reconnected to the queue at %s", address)
                    connected()

                try:
                    await serve_connection(self, self._stats, link, served)
                    return  # drained
                except (ConnectionLost, RequestError) as exc:
                    if not self._link_down:
                        self._link_down = True
                        log.warning("lost the queue at %s (%s); reconnecting", link.address, exc)
                finally:
                    await link.aclose()
                # Only a connection that did real work resets the backoff: a
                # server that accepts and then drops connections must not
                # send every slot into a tight reconnect loop.
                if healthy:
                    delay = self.reconnect_delay
            with trio.move_on_after(delay * random.uniform(0.5, 1.0)):
                await self.draining.wait()
            delay = min(delay * 2, self.max_reconnect_delay)

    async def _open_link(self) -> Link | None:
        """A new connection, or ``None`` if the worker drains first.

        A slot with no connection holds nothing, so a drain stops a connect
        at once rather than wait for it (up to ``CONNECT_TIMEOUT`` for a
        server that neither accepts nor refuses).

        Raises:
            ConnectionLost: the connection cannot be made.
        """
        # A scope drain() cancels, not a task watching the drain beside the
        # connect: a nursery would wrap the ConnectionLost in a group.
        with trio.CancelScope() as connecting:
            self._connecting.add(connecting)
            try:
                return await Link.open(self.host, self.port, self.connect, self.ssl_context)
            finally:
                self._connecting.discard(connecting)
        return None
