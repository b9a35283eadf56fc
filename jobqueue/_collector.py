"""The cyclic garbage collector's policy for a server process that holds many jobs.

Every job a server holds is one object the collector tracks, and a full pass
of the collector walks them all while everything else waits: at 10**6 jobs
a pass took 0.15-0.5 s here. CPython starts one each time the objects that
survived earlier passes have grown by a quarter, so a queue growing to 10**6
jobs stalls its clients about ten times, each stall longer than the last
(docs/performance.md has the measurements).

Jobs never form reference cycles: reference counting frees them, and walking
them finds nothing. So after a full pass that took long, :class:`Freezer`
moves its survivors out of the collector's sight (:func:`gc.freeze`); later
passes walk only what came after. Frozen objects are still freed by reference
counting the moment nothing refers to them. What freezing costs is that a
reference cycle among frozen objects is not collected while they stay frozen
(a server makes few: a few dozen objects a minute with connections coming and
going); so once the frozen objects have dwindled to a quarter of their peak
(the queue drained), they are unfrozen, and the next full pass collects any
such cycles with a heap that is small again.

:func:`gc.freeze` is process-wide: it would freeze the objects of a program
that embeds :func:`~jobqueue.serve_queue` too. Only ``jobqueue serve``, whose
process is the server's alone, uses this.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import attrs

#: A full pass that took this long (seconds) freezes its survivors: about
#: 100,000 tracked objects here. A smaller heap is left to Python as it is.
SLOW_PASS = 0.02

#: Counting the frozen objects walks them (a list, not their references);
#: done at most this often (seconds), after a full pass.
CHECK_EVERY = 10.0


class Collector(Protocol):
    """The parts of :mod:`gc` a :class:`Freezer` uses (a test gives a fake)."""

    def freeze(self) -> None: ...
    def unfreeze(self) -> None: ...
    def get_freeze_count(self) -> int: ...


@attrs.define(eq=False)
class Freezer:
    """A :data:`gc.callbacks` entry that freezes the survivors of slow full passes.

    Attributes:
        freezes: times it froze the heap.
        unfreezes: times it gave frozen objects back to the collector.
    """

    slow: float = SLOW_PASS
    check_every: float = CHECK_EVERY
    clock: Callable[[], float] = time.perf_counter
    collector: Collector = attrs.field(factory=lambda: gc)
    freezes: int = attrs.field(default=0, init=False)
    unfreezes: int = attrs.field(default=0, init=False)
    _started: float = attrs.field(default=0.0, init=False)
    _checked: float = attrs.field(default=float("-inf"), init=False)
    _peak: int = attrs.field(default=0, init=False)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """Called by the collector at the start and stop of every pass."""
        if info["generation"] != 2:
            return
        now = self.clock()
        if phase == "start":
            self._started = now
        elif now - self._started >= self.slow:
            self.collector.freeze()
            self.freezes += 1
            self._peak = max(self._peak, self.collector.get_freeze_count())
            self._checked = now
        elif self._peak and now - self._checked >= self.check_every:
            self._checked = now
            if self.collector.get_freeze_count() * 4 < self._peak:
                # The next full pass walks what is left, and collects any
                # cycles that formed among the frozen objects.
                self.collector.unfreeze()
                self.unfreezes += 1
                self._peak = 0


@contextmanager
def freezing_long_lived(freezer: Freezer | None = None) -> Iterator[Freezer]:
    """Run the block with ``freezer`` (a default :class:`Freezer`) installed; unfreeze after."""
    freezer = Freezer() if freezer is None else freezer
    gc.callbacks.append(freezer)
    try:
        yield freezer
    finally:
        gc.callbacks.remove(freezer)
        gc.unfreeze()
