"""Ctrl-C out of our nurseries as the plain ``KeyboardInterrupt`` callers catch.

trio raises Ctrl-C in the task it finds running (or the main task), and each
nursery on its way out wraps it in a ``BaseExceptionGroup``, beside the
``Cancelled`` of the tasks it stopped. So ``except KeyboardInterrupt`` around
``trio.run(worker.run)`` or ``trio.run(serve_queue)`` would miss it, and the
user would see an exception group's traceback for a Ctrl-C. The public entry
points that run nurseries of their own let it out unwrapped.
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
        if _only_cancelled(member):
            continue
        interrupt = lone_interrupt(member)
        if interrupt is None:
            return None
        found = found or interrupt
    return found


def _only_cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is trio's ``Cancelled``, or (nested) groups of nothing else."""
    if isinstance(exc, trio.Cancelled):
        return True
    inner: Sequence[BaseException] = getattr(exc, "exceptions", ())
    return bool(inner) and all(_only_cancelled(member) for member in inner)


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
