"""A real queue in a background thread, for tests of blocking and asyncio code.

:func:`run_queue_in_thread` runs :func:`~jobqueue.testing.open_test_queue`
under its own ``trio.run`` in a daemon thread, so the test's own thread (or
its asyncio loop) is free to be the client: a Django, Flask or FastAPI
project tests its job code against the real server, over TCP on a free
loopback port, with no trio in its tests. Workers started here run in the
queue's thread and take every kind of handler a :class:`~jobqueue.Worker`
takes: a plain function runs as a worker's blocking handler, in a thread of
its own, so a synchronous job function needs no wrapper.
"""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ._config import ServerConfig
from ._handler import Handler
from ._worker import Worker

if TYPE_CHECKING:
    from .testing import RunningQueue

_T = TypeVar("_T")

#: Seconds the queue's thread may take to start or stop before that is an error.
THREAD_LIMIT = 10.0


class QueueInThread:
    """A queue server running in a background thread; see :func:`run_queue_in_thread`.

    Attributes:
        host: The address it listens on (``127.0.0.1``).
        port: The port it listens on (a free one).
        token: The server's token (``None``: none), for clients to pass on.
        ssl_context: The client-side TLS context, for a TLS server.
    """

    def __init__(
        self,
        config: ServerConfig | None,
        client_ssl_context: ssl.SSLContext | None,
        options: dict[str, Any],
    ) -> None:
        """Use :func:`run_queue_in_thread`."""
        self._config = config
        self._options = options
        self.ssl_context = client_ssl_context
        self.host = "127.0.0.1"
        self.port = 0
        self.token: str | None = None
        self._running: RunningQueue | None = None
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._scope = trio.CancelScope()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="jobqueue-test-queue", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return self.host, self.port

    def start_worker(
        self,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = 1,
        name: str = "test-worker",
        **options: Any,
    ) -> Worker:
        """Start a worker on this queue; return once it is connected.

        It runs until the queue stops. ``handlers`` map job names to
        handlers as :class:`~jobqueue.Worker` takes them: async functions
        (run in the queue's trio thread), plain functions (run in a thread
        of their own, so they may block, with ``job.report_progress_sync``,
        ``job.cancelled`` and ``job_timeout`` as in any worker) and
        ``in_process`` ones; ``options`` go to :class:`~jobqueue.Worker`
        (``queues``, ``job_timeout``, ...).

        Raises:
            RuntimeError: the queue is not running, or the worker did not
                connect in 10 s (the server refuses it: a wrong ``token``?).
        """
        if self._running is None:
            raise RuntimeError("the test queue is not running")
        start = functools.partial(
            self._running.start_worker, handlers, concurrency=concurrency, name=name, **options
        )
        worker: Worker = self._call(start)
        return worker

    def stop(self) -> None:
        """Stop the server and its workers (the ``with`` block does this).

        Calling it again changes nothing.

        Raises:
            RuntimeError: the queue's thread did not stop in time.
            BaseException: what ended the queue's trio run before it was
                stopped (a server error, or a worker stopped by a
                ``KeyboardInterrupt`` in an ``async def`` handler), so the
                test sees it; raised by the first ``stop()`` only.
        """
        if self._thread.is_alive() and self._trio_token is not None:
            with suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._trio_token)
            self._thread.join(THREAD_LIMIT)
            if self._thread.is_alive():
                raise RuntimeError(f"the test queue's thread did not stop in {THREAD_LIMIT:g}s")
        # Taken, not kept: a second stop() (the block's own, after the test
        # called it) raised the same error again, its traceback grown.
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _start(self) -> None:
        self._thread.start()
        if not self._ready.wait(THREAD_LIMIT):
            raise RuntimeError(f"the test queue did not start in {THREAD_LIMIT:g}s")
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _call(self, async_fn: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``async_fn()`` in the queue's trio thread; return its result."""
        if self._trio_token is None or not self._thread.is_alive():
            raise RuntimeError("the test queue is not running")
        return trio.from_thread.run(async_fn, trio_token=self._trio_token)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to the test's thread
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        from .testing import open_test_queue  # testing imports this module

        with self._scope:
            async with open_test_queue(
                config=self._config, client_ssl_context=self.ssl_context, **self._options
            ) as running:
                self._running = running
                self.host, self.port = running.address
                self.token = running.token
                self._trio_token = trio.lowlevel.current_trio_token()
                self._ready.set()
                await trio.sleep_forever()


@contextmanager
def run_queue_in_thread(
    *,
    config: ServerConfig | None = None,
    client_ssl_context: ssl.SSLContext | None = None,
    **options: Any,
) -> Iterator[QueueInThread]:
    """Run a queue server on a free loopback port in a background thread, for the ``with`` block.

    For tests of blocking or asyncio code::

        with run_queue_in_thread(lease_timeout=5) as queue:
            queue.start_worker({"resize": resize})
            with jobqueue.sync.Client.connect(queue.host, queue.port) as client:
                ...

    ``config`` and ``options`` are the server's, as for
    :func:`~jobqueue.testing.open_test_queue`; clients should pass on
    ``queue.token`` and ``queue.ssl_context`` when the server has them.

    Raises:
        TypeError, ValueError: a bad server option (as ``open_test_queue``).
        RuntimeError: the queue's thread did not start or stop in time.
        BaseException: what ended the queue's trio run early, when the
            block ends (see :meth:`QueueInThread.stop`).
    """
    queue = QueueInThread(config, client_ssl_context, options)
    queue._start()
    try:
        yield queue
    finally:
        queue.stop()
