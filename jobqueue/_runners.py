"""How a worker runs each kind of handler: on its trio loop, in a thread, in a process.

A handler is one of three kinds, told apart once per handler object:

- an ``async def`` runs on the worker's trio loop, as it always has
  (the engine awaits it directly, at no extra cost);
- a plain ``def`` runs in a worker thread (``trio.to_thread.run_sync``),
  so blocking code (``requests``, an ORM, ``time.sleep``) does not freeze
  the loop that heartbeats its lease;
- a handler marked with :func:`in_process` runs in a separate process
  (trio-parallel, the ``jobqueue[processes]`` extra), so CPU-bound code
  neither holds the GIL against the loop nor survives a cancel.

Cancellation is the engine's, whatever the kind: the job timeout, a cancel
notice, a lost lease or the worker stopping cancel the scope the handler is
awaited in, and the outcome is decided at once. A thread cannot be killed
in Python, so a cancelled thread is *abandoned*: its job's
:attr:`~jobqueue.Job.cancelled` turns true, and whatever it returns or
raises later is dropped. A process is killed (``kill_on_cancel=True``).
"""

from __future__ import annotations

import inspect
import logging
import pickle
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar, overload

import attrs
import trio

from ._handler import AsyncHandler, Handler, Job

__all__ = ["PROCESSES_EXTRA_HINT", "HandlerInterrupt", "HandlerRunner", "in_process"]

log = logging.getLogger("jobqueue.worker")

_F = TypeVar("_F", bound=Callable[..., Any])

#: What to install for process handlers.
PROCESSES_EXTRA_HINT = "pip install 'jobqueue[processes]'"

#: The attribute :func:`in_process` sets on a handler.
_MARK = "__jobqueue_in_process__"


@attrs.frozen
class ProcessOptions:
    """How a handler marked with :func:`in_process` runs.

    Attributes:
        max_jobs: Jobs one process runs before it is replaced by a fresh
            one (``None``: never replaced).
    """

    max_jobs: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )


@overload
def in_process(fn: _F, *, max_jobs: int | None = None) -> _F: ...


@overload
def in_process(fn: None = None, *, max_jobs: int | None = None) -> Callable[[_F], _F]: ...


def in_process(fn: _F | None = None, *, max_jobs: int | None = None) -> _F | Callable[[_F], _F]:
    """Mark a plain ``def`` handler to run in a separate process; returns it.

    For CPU-bound handlers: the worker's loop keeps heartbeating while the
    process works, a cancel or ``job_timeout`` kills the process, and with
    ``max_jobs`` a process is replaced by a fresh one after that many jobs
    (against handler code that leaks memory or state). Use it as
    ``@in_process``, ``@in_process(max_jobs=100)`` or
    ``in_process(resize_image)``.

    The handler and the job (its payload) are pickled to the process, so the
    handler must be importable by name from a module (not a lambda or a
    nested function), and its result pickled back. The process cannot report
    progress. How many run at once is ``Worker(processes=N)``. Running one
    needs the ``jobqueue[processes]`` extra (trio-parallel).

    The mark is set on the function itself, not a wrapper: a wrapper would
    stand in the module where pickle looks the function up by name.

    Raises:
        TypeError: ``fn`` is an ``async def`` (a coroutine cannot cross a
            process boundary; make it a ``def``), or cannot be marked.
        ValueError: ``max_jobs`` is below 1.
    """
    options = ProcessOptions(max_jobs)

    def mark(handler: _F) -> _F:
        if _is_async(handler):
            raise TypeError(f"{handler!r} is async; a process handler must be a plain def")
        try:
            setattr(handler, _MARK, options)
        except (AttributeError, TypeError) as exc:
            raise TypeError(f"cannot mark {handler!r} to run in a process: {exc}") from None
        return handler

    return mark if fn is None else mark(fn)


def process_options(handler: Handler) -> ProcessOptions | None:
    """The :func:`in_process` options of ``handler``, or ``None`` if it is not marked."""
    options = getattr(handler, _MARK, None)
    return options if isinstance(options, ProcessOptions) else None


def _is_async(handler: Callable[..., Any]) -> bool:
    """Whether calling ``handler`` gives a coroutine to await (``async def``, or ``__call__``)."""
    if inspect.iscoroutinefunction(handler):
        return True
    return not inspect.isfunction(handler) and inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004  (an object with async __call__)
    )


def _import_trio_parallel() -> Any:
    try:
        import trio_parallel  # an optional extra: jobqueue[processes]
    except ImportError:
        raise ImportError(
            f"process handlers (jobqueue.in_process) need trio-parallel: {PROCESSES_EXTRA_HINT}"
        ) from None
    return trio_parallel


@attrs.define
class _RetireAfter:
    """trio-parallel's ``retire`` hook: true after ``max_jobs`` jobs in this process.

    Pickled once into each new process, so each counts its own jobs.
    """

    max_jobs: int
    done: int = 0

    def __call__(self) -> bool:
        self.done += 1
        return self.done >= self.max_jobs


class HandlerInterrupt(Exception):
    """A ``BaseException`` a thread or process handler raised itself, carried as an error.

    Ctrl-C interrupts only the main thread, and a handler process ignores
    SIGINT (trio-parallel sees to that), so a ``KeyboardInterrupt`` out of a
    thread or process handler is the handler's own doing, as is any other
    ``BaseException`` there (``GeneratorExit``, a class of its own). Carried
    as an ``Exception``, it fails that job (the engine reports ``interrupt``)
    instead of stopping a worker that other jobs share.

    Attributes:
        interrupt: What the handler raised.
    """

    def __init__(self, interrupt: BaseException) -> None:
        super().__init__(interrupt)
        self.interrupt = interrupt


def _run_handler(handler: Handler, job: Job) -> Any:
    """In a handler's thread or process: ``handler(job)``, a ``BaseException`` carried out."""
    try:
        return handler(job)
    except (Exception, SystemExit):
        raise  # (SystemExit comes out as it is, and the engine fails the job)
    except BaseException as exc:
        raise HandlerInterrupt(exc) from None


def _run_pickled(data: bytes) -> Any:
    """In the child process: unpickle ``(handler, job)`` and run it."""
    try:
        handler, job = pickle.loads(data)
    except Exception as exc:
        raise TypeError(
            f"the process could not unpickle the handler or its job "
            f"(is the handler importable by name?): {type(exc).__name__}: {exc}"
        ) from None
    return _run_handler(handler, job)


@attrs.define(eq=False)
class HandlerRunner:
    """One worker's way of running handlers: its thread and process limits.

    Attributes:
        threads: Handler threads alive at once, abandoned ones included: a
            thread abandoned on cancel keeps its place until it returns.
            The worker sizes it at twice its concurrency: a thread for
            each slot's running job, and as many again for abandoned
            threads still winding down. Past that, a slot waits (under the
            job's timeout and cancellation) for one to return, rather than
            pile up threads that ignore cancellation.
        processes: Handler processes at once.
    """

    threads: trio.CapacityLimiter
    processes: trio.CapacityLimiter
    # max_jobs -> trio-parallel WorkerContext, while the worker runs.
    _contexts: dict[int | None, Any] = attrs.field(factory=dict, init=False)
    # handler -> how the engine awaits it; handlers are few and live as
    # long as the worker, so this never grows past them.
    _resolved: dict[Handler, AsyncHandler] = attrs.field(factory=dict, init=False)

    @classmethod
    def create(cls, concurrency: int, processes: int) -> HandlerRunner:
        """A runner for ``concurrency`` slots and ``processes`` handler processes."""
        return cls(trio.CapacityLimiter(2 * concurrency), trio.CapacityLimiter(processes))

    @staticmethod
    def check(handlers: Mapping[str, Handler]) -> None:
        """Fail early if ``handlers`` has process handlers and trio-parallel is missing.

        Raises:
            ImportError: naming the ``jobqueue[processes]`` extra.
        """
        if any(process_options(handler) for handler in handlers.values()):
            _import_trio_parallel()

    @asynccontextmanager
    async def open(self, handlers: Mapping[str, Handler]) -> AsyncIterator[None]:
        """Keep the process pools of ``handlers`` for the ``async with`` block.

        One trio-parallel context per distinct ``max_jobs``; none at all
        (and no import) for a worker without process handlers. On the way
        out, idle processes are asked to exit (running ones were killed by
        the cancel that ended the block).
        """
        wanted = {opts.max_jobs for h in handlers.values() if (opts := process_options(h))}
        if not wanted:
            yield
            return
        trio_parallel = _import_trio_parallel()
        async with AsyncExitStack() as stack:
            for max_jobs in wanted:
                retire = bool if max_jobs is None else _RetireAfter(max_jobs)
                self._contexts[max_jobs] = await stack.enter_async_context(
                    trio_parallel.open_worker_context(retire=retire, grace_period=5.0)
                )
            try:
                yield
            finally:
                self._contexts.clear()

    def resolve(self, handler: Handler) -> AsyncHandler:
        """How the engine awaits ``handler``: itself if async, else a thread or process runner."""
        try:
            return self._resolved[handler]
        except KeyError:
            pass
        except TypeError:  # an unhashable callable object: classified on each call
            return self._classify(handler)
        runner = self._resolved[handler] = self._classify(handler)
        return runner

    def _classify(self, handler: Handler) -> AsyncHandler:
        options = process_options(handler)
        if options is not None:
            return self._in_process(handler, options)
        if _is_async(handler):
            return handler
        return self._in_thread(handler)

    def _in_thread(self, handler: Handler) -> AsyncHandler:
        limiter = self.threads

        async def run_in_thread(job: Job) -> Any:
            stopped = threading.Event()
            threaded = Job(
                job.id,
                job.name,
                job.payload,
                job.attempt,
                progress_reporter=job._progress,
                stopped=stopped,
                attempts_spent=job._spent,
                last_attempt=job.last_attempt,
            )
            if not limiter.available_tokens:
                log.warning(
                    "job %s (%s) waits for a handler thread: %d abandoned thread(s) of "
                    "cancelled jobs still running",
                    job.id,
                    job.name,
                    limiter.borrowed_tokens - 1,
                )
            try:
                result = await trio.to_thread.run_sync(
                    _run_handler, handler, threaded, abandon_on_cancel=True, limiter=limiter
                )
            except trio.Cancelled:
                # The outcome is decided now; the thread runs on, abandoned,
                # and can see this to stop early.
                stopped.set()
                log.info("job %s (%s): its handler thread was abandoned", job.id, job.name)
                raise
            if inspect.isawaitable(result):
                # A def returning an awaitable (a lambda around an async
                # function): await it here, on the loop, as before.
                result = await result
            return result

        return run_in_thread

    def _in_process(self, handler: Handler, options: ProcessOptions) -> AsyncHandler:
        limiter = self.processes
        contexts = self._contexts

        async def run_in_process(job: Job) -> Any:
            context = contexts.get(options.max_jobs)
            if context is None:
                _import_trio_parallel()
                raise RuntimeError(
                    f"process handler {job.name!r} was added after the worker started"
                )
            try:
                # The job without its worker-side parts (they stay here).
                data = pickle.dumps(
                    (
                        handler,
                        Job(
                            job.id,
                            job.name,
                            job.payload,
                            job.attempt,
                            attempts_spent=job._spent,
                            last_attempt=job.last_attempt,
                        ),
                    )
                )
            except Exception as exc:
                raise TypeError(
                    f"process handler {job.name!r} and its job must be picklable "
                    f"(a module-level def, a JSON payload): {type(exc).__name__}: {exc}"
                ) from None
            return await context.run_sync(_run_pickled, data, kill_on_cancel=True, limiter=limiter)

        return run_in_process
