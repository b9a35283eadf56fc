"""Ctrl-C out of our nurseries as the plain ``KeyboardInterrupt`` callers catch.

trio raises Ctrl-C in the task it finds running (or the main task), and each
nursery on its way out wraps it in a ``BaseExceptionGroup``, beside the
``Cancelled`` of the tasks it stopped. So ``except KeyboardInterrupt`` around
``trio.run(worker.run)`` or ``trio.run(serve_queue)`` would miss it, and the
user would see an exception group's traceback for a Ctrl-C. The public entry
points that run nurseries of their own let it out unwrapped. The worker also
tells Ctrl-C and cancellation, grouped or not, from a handler's own
``BaseException`` here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import trio


def lone_interrupt(exc: BaseException) -> KeyboardInterrupt | None:
    """The ``KeyboardInterrupt`` that ``exc`` is, or that its groups hold beside cancellations.

    The cancellations may be grouped too: when the scope around a worker is
    cancelled as Ctrl-C comes, each other slot's ``Cancelled`` leaves in
    nested groups of its own. ``None`` when ``exc`` holds anything else too
    (a crash stays visible) or holds no ``KeyboardInterrupt``.
    """
    if isinstance(exc, KeyboardInterrupt):
        return exc
    inner: Sequence[BaseException] = getattr(exc, "exceptions", ())
    found: KeyboardInterrupt | None = None
    for member in inner:
        if only_cancelled(member):
            continue
        interrupt = lone_interrupt(member)
        if interrupt is None:
            return None
        found = found or interrupt
    return found


def only_cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is trio's ``Cancelled``, or (nested) groups of nothing else."""
    if isinstance(exc, trio.Cancelled):
        return True
    inner: Sequence[BaseException] = getattr(exc, "exceptions", ())
    return bool(inner) and all(only_cancelled(member) for member in inner)


def may_be_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` is or holds a ``KeyboardInterrupt`` or trio's cancellation.

    Those are not a handler's own failure: Ctrl-C, or the worker stopping.
    Any other ``BaseException`` a handler raises is its own, and fails its job.
    """
    if isinstance(exc, (KeyboardInterrupt, trio.Cancelled)):
        return True
    inner: Sequence[BaseException] = getattr(exc, "exceptions", ())
    return any(may_be_ctrl_c(member) for member in inner)


@contextmanager
def interrupts_unwrapped() -> Iterator[None]:
    """Re-raise a Ctrl-C that leaves the block in a group as the ``KeyboardInterrupt`` alone."""
    try:
        yield
    except BaseException as exc:
        interrupt = lone_interrupt(exc)
        if interrupt is None or interrupt is exc:
            raise
        raise interrupt from None
