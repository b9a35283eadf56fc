"""Helpers for embedding a real queue in your own tests.

Two ways to run a queue inside the caller's trio run:

- :func:`open_test_queue` listens on a free loopback TCP port: the real
  network path, for tests that are about sockets.
- :func:`open_memory_queue` connects everything through in-memory streams:
  the same server, worker and client code, but safe under trio's
  ``MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock``), so
  leases, heartbeats and waits can be tested in virtual time.

Both yield a :class:`RunningQueue` with a connected :class:`~jobqueue.Client`;
``RunningQueue.start_worker`` adds in-process workers. With pytest-trio, the
``job_queue`` fixture gives each test a fresh TCP queue; enable it with
``pytest_plugins = ["jobqueue.testing"]`` in your ``conftest.py``.

An in-memory queue also lets a test look inside the server: ``queue.state``
(the running queue state, to read), ``queue.record_events()`` (every event
the state applies, in order) and ``queue.statistics()`` (how often the
coordinator woke for a deadline).

For tests of blocking or asyncio code (Django, Flask, FastAPI, scripts),
:func:`run_queue_in_thread` runs the same queue in a background thread on a
free loopback port, as a context manager, and the ``queue_in_thread``
fixture is a plain synchronous fixture around it: no trio in those tests.
This module imports pytest.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from ._client import Client
from ._commands import CoordinatorStatistics
from ._config import ServerConfig, server_config
from ._events import Event
from ._link import Connector
from ._queue_thread import QueueInThread, run_queue_in_thread
from ._server import QueueService, serve_queue
from ._state import QueueState
from ._worker import Handler, Worker

__all__ = [
    "CoordinatorStatistics",
    "QueueInThread",
    "RunningQueue",
    "job_queue",
    "open_memory_queue",
    "open_test_queue",
    "queue_in_thread",
    "run_queue_in_thread",
]

#: Seconds ``start_worker`` waits for its worker to connect before that is an error.
WORKER_START_LIMIT = 10.0


@attrs.frozen
class RunningQueue:
    """A queue server running for the duration of a test.

    Attributes:
        address: ``(host, port)`` the server listens on (``("memory", 0)``
            for an in-memory queue).
        client: A client connected to it.
        nursery: The nursery the server and everything started here run in;
            it is cancelled when the ``async with`` block ends.
        connector: How to open one more connection (``None`` for TCP).
        token: The server's token, which workers and clients opened here use.
        ssl_context: The client-side TLS context they use (``None``: plain).
        config: The server's options (its rules: ``config.rules``).

    An in-memory queue (:func:`open_memory_queue`) can also be seen from the
    inside: :attr:`state`, :meth:`record_events` and :meth:`statistics`.
    """

    address: tuple[str, int]
    client: Client
    nursery: trio.Nursery
    connector: Connector | None = None
    token: str | None = attrs.field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = None
    config: ServerConfig = attrs.field(factory=ServerConfig, repr=False)
    _service: QueueService | None = attrs.field(default=None, repr=False, alias="service")

    @property
    def state(self) -> QueueState:
        """The server's running queue state (an in-memory queue's only).

        It is the coordinator's own object, live: read it (``counts()``,
        ``get(job_id)``, ...) and change nothing but its documented test seam
        ``rng``, the retry-jitter source (assign one that returns fixed
        fractions for exact retry times).

        Raises:
            RuntimeError: a TCP queue (:func:`open_test_queue`), whose state
                lives inside :func:`~jobqueue.serve_queue`.
        """
        return self._inside().state

    @contextmanager
    def record_events(self) -> Iterator[list[Event]]:
        """Record every event the server's state applies, in order, during the block.

        ``with queue.record_events() as events: ...``; the list grows as the
        state applies events (``Submitted``, ``Assigned``, ``AttemptFailed``
        with its ``retry_at``, ...) and stops growing when the block ends.
        Blocks may nest. An in-memory queue's only, like :attr:`state`.
        """
        state = self._inside().state
        outer = state.on_event
        events: list[Event] = []

        def record(event: Event) -> None:
            events.append(event)
            if outer is not None:
                outer(event)

        state.on_event = record
        try:
            yield events
        finally:
            state.on_event = outer

    def statistics(self) -> CoordinatorStatistics:
        """The coordinator's statistics, as trio's ``statistics()`` methods report theirs.

        ``timer_wakeups`` counts the times the coordinator woke because a
        deadline arrived (a lease or a blocking request timing out), and
        ``last_timer_wakeup`` says when the latest was: with the autojump
        clock a test can check the server sleeps until exactly the next
        deadline and no sooner. An in-memory queue's only, like :attr:`state`.
        """
        return self._inside().coordinator.statistics()

    def _inside(self) -> QueueService:
        if self._service is None:
            raise RuntimeError(
                "only an in-memory queue (open_memory_queue) can be seen from the inside"
            )
        return self._service

    async def start_worker(
        self,
        handlers: Mapping[str, Handler] | None = None,
        *,
        concurrency: int = 1,
        name: str = "test-worker",
        **options: Any,
    ) -> Worker:
        """Start a :class:`~jobqueue.Worker` on this queue; return once it is connected.

        It runs until the queue's block ends. To stop one early (a worker
        "crash"), start :meth:`worker` in a nursery of your own and cancel it.

        Raises:
            RuntimeError: the worker did not connect within
                :data:`WORKER_START_LIMIT` seconds (of the test's clock): the
                server refuses it (a wrong ``token`` or ``ssl_context``),
                which a worker would retry for ever.
        """
        worker = self.worker(handlers, concurrency=concurrency, name=name, **options)
        try:
            with trio.fail_after(WORKER_START_LIMIT):
                await self.nursery.start(worker.run)
        except trio.TooSlowError:
            raise RuntimeError(
                f"worker {name!r} did not connect in {WORKER_START_LIMIT:g}s; "
                "its log says why (a wrong token?)"
            ) from None
        return worker

    def worker(
        self,
        handlers: Mapping[str, Handler] | None = None,
        *,
        concurrency: int = 1,
        name: str = "test-worker",
        **options: Any,
    ) -> Worker:
        """A :class:`~jobqueue.Worker` for this queue, not yet started.

        ``options`` are passed on to :class:`~jobqueue.Worker` (``queues``,
        ``job_timeout``, ...).
        """
        host, port = self.address
        return Worker(
            host,
            port,
            handlers=dict(handlers or {}),
            concurrency=concurrency,
            name=name,
            connect=self.connector,
            **{"token": self.token, "ssl_context": self.ssl_context, **options},
        )

    def connect(
        self, name: str | None = None, **options: Any
    ) -> AbstractAsyncContextManager[Client]:
        """Open one more client: ``async with queue.connect() as client: ...``.

        ``options`` are passed on to :meth:`~jobqueue.Client.connect`
        (``token``, ``reconnect_timeout``, ...).
        """
        host, port = self.address
        return Client.connect(
            host,
            port,
            name=name,
            connect=self.connector,
            **{"token": self.token, "ssl_context": self.ssl_context, **options},
        )


@attrs.define
class _Body:
    """What the body of an ``async with`` around a nursery raised.

    trio wraps whatever leaves a nursery in an ``ExceptionGroup``, the
    body's own exception too; these blocks hand the body's back unwrapped
    when it is all the group holds, as a context manager without a
    nursery (``Client.connect``) would.
    """

    raised: BaseException | None = None

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Note the exception the block raises, and let it go on."""
        try:
            yield
        except BaseException as exc:
            self.raised = exc
            raise

    def reraise_alone(self, exc: BaseException) -> None:
        """Raise the body's exception if ``exc`` is a group of that one alone."""
        inner: Sequence[BaseException] = getattr(exc, "exceptions", ())
        if self.raised is not None and len(inner) == 1 and inner[0] is self.raised:
            raised, self.raised = self.raised, None
            # Raised here, it would take the group as its __context__, and
            # its traceback would print the whole group before it.
            context = raised.__context__
            try:
                raise raised
            finally:
                raised.__context__ = context


@asynccontextmanager
async def open_test_queue(
    *,
    config: ServerConfig | None = None,
    client_ssl_context: ssl.SSLContext | None = None,
    **options: Any,
) -> AsyncIterator[RunningQueue]:
    """Run a queue server on ``127.0.0.1``, any free port, for the ``async with`` block.

    The server's options are taken as by :func:`~jobqueue.serve_queue`: a
    ``config`` record, and keyword arguments named after its fields or its
    rules' (``lease_timeout``, ``max_attempts``, ``token``, ``ssl_context``,
    ...), which win. The queue's own client, and the workers and clients it
    opens, use the server's ``token`` and ``client_ssl_context`` (for a TLS
    server).

    An exception raised in the block comes out of it as it was raised, not
    inside an ``ExceptionGroup`` of the queue's nursery (as from
    :meth:`~jobqueue.Client.connect`), so ``pytest.raises`` around the
    block sees it; an error of the queue's own tasks comes in a group.

    Raises:
        TypeError: an option that is no field of either record.
        ValueError: an option's value its field refuses.
    """
    config = server_config(config, options, caller="open_test_queue")
    body = _Body()
    try:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(partial(serve_queue, 0, host="127.0.0.1", config=config))
            token = config.token
            async with Client.connect(
                *address, name="test-client", token=token, ssl_context=client_ssl_context
            ) as client:
                with body.watch():
                    yield RunningQueue(
                        address,
                        client,
                        nursery,
                        token=token,
                        ssl_context=client_ssl_context,
                        config=config,
                    )
            nursery.cancel_scope.cancel()
    except BaseException as exc:
        body.reraise_alone(exc)
        raise


@asynccontextmanager
async def open_memory_queue(
    *,
    config: ServerConfig | None = None,
    client_ssl_context: ssl.SSLContext | None = None,
    **options: Any,
) -> AsyncIterator[RunningQueue]:
    """Run a queue reached through in-memory streams, for the ``async with`` block.

    Safe with trio's autojump clock: no kernel is moving bytes behind trio's
    back, so virtual time only jumps when every task is truly waiting. Not
    so for a ``def`` or ``in_process`` handler, which runs outside trio:
    while it blocks, the clock jumps from deadline to deadline, and the job
    soon ends past its ``job_timeout``. Under that clock, use ``async def``
    handlers.
    ``config`` and ``options`` are the server's, as for
    :func:`open_test_queue`, and ``token`` and ``client_ssl_context`` are
    used as there, and an exception raised in the block comes out of it
    as it was raised, as there.

    Raises:
        TypeError: an option that is no field of either record.
        ValueError: an option's value its field refuses.
    """
    config = server_config(config, options, caller="open_memory_queue")
    service = QueueService(config=config)
    body = _Body()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)

            async def connect() -> trio.abc.Stream:
                client_end, server_end = trio.testing.memory_stream_pair()
                nursery.start_soon(service.handle_stream, server_end)
                return client_end

            token = config.token
            async with Client.connect(
                "memory",
                0,
                name="test-client",
                connect=connect,
                token=token,
                ssl_context=client_ssl_context,
            ) as client:
                with body.watch():
                    yield RunningQueue(
                        ("memory", 0),
                        client,
                        nursery,
                        connect,
                        token,
                        client_ssl_context,
                        config,
                        service=service,
                    )
            nursery.cancel_scope.cancel()
    except BaseException as exc:
        body.reraise_alone(exc)
        raise


@pytest.fixture
async def job_queue() -> AsyncIterator[RunningQueue]:
    """A fresh TCP queue server on loopback for one test (pytest-trio)."""
    async with open_test_queue() as queue:
        yield queue


@pytest.fixture
def queue_in_thread() -> Iterator[QueueInThread]:
    """A fresh queue server on loopback, in a background thread, for one test.

    A plain fixture for blocking and asyncio tests: connect to
    ``queue_in_thread.host`` and ``.port``, and start workers with
    ``queue_in_thread.start_worker({...})``.
    """
    with run_queue_in_thread() as queue:
        yield queue
