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

    ``None`` when ``exc`` holds anything else too (a crash stays visible)
    or holds no ``KeyboardInterrupt``.
    """
    if isinstance(exc, KeyboardInterrupt):
        return exc
    inner: Sequence[BaseException] = getattr(exc, "exceptions", ())
    found: KeyboardInterrupt | None = None
    for member in inner:
        if isinstance(member, trio.Cancelled):
            continue
        interrupt = lone_interrupt(member)
        if interrupt is None:
            return None
        found = found or interrupt
    return found


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
