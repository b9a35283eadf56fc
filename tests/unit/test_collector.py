"""The collector policy of ``jobqueue serve``: slow full passes freeze, a drained heap unfreezes."""

from __future__ import annotations

import gc
import weakref

import attrs

from jobqueue._collector import Freezer, freezing_long_lived

FULL = {"generation": 2, "collected": 0, "uncollectable": 0}
YOUNG = {"generation": 1, "collected": 0, "uncollectable": 0}


@attrs.define
class FakeCollector:
    """What a Freezer asks of :mod:`gc`, counted; ``frozen`` is the freeze count to report."""

    frozen: int = 0
    calls: list[str] = attrs.Factory(list)

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def get_freeze_count(self) -> int:
        self.calls.append("count")
        return self.frozen


@attrs.define
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def full_pass(freezer: Freezer, clock: Clock, seconds: float, info: dict[str, int] = FULL) -> None:
    freezer("start", info)
    clock.now += seconds
    freezer("stop", info)


def make() -> tuple[Freezer, FakeCollector, Clock]:
    collector, clock = FakeCollector(), Clock()
    return Freezer(slow=0.02, check_every=10.0, clock=clock, collector=collector), collector, clock


def test_only_a_slow_full_pass_freezes() -> None:
    freezer, collector, clock = make()
    full_pass(freezer, clock, 0.015)
    full_pass(freezer, clock, 0.5, YOUNG)  # a young pass, however slow
    assert (collector.calls, freezer.freezes) == ([], 0)
    collector.frozen = 1000
    full_pass(freezer, clock, 0.025)
    assert (collector.calls, freezer.freezes) == (["freeze", "count"], 1)


def test_a_heap_drained_to_a_quarter_is_unfrozen() -> None:
    freezer, collector, clock = make()
    collector.frozen = 1000
    full_pass(freezer, clock, 0.05)  # peak: 1,000 frozen
    collector.calls.clear()
    collector.frozen = 200
    clock.now += 5.0
    full_pass(freezer, clock, 0.001)
    assert collector.calls == []  # counted at most every 10 s
    clock.now += 5.0
    collector.frozen = 250
    full_pass(freezer, clock, 0.001)
    assert (collector.calls, freezer.unfreezes) == (["count"], 0)  # a quarter left: kept
    clock.now += 10.0
    collector.frozen = 249
    full_pass(freezer, clock, 0.001)
    assert (collector.calls, freezer.unfreezes) == (["count", "count", "unfreeze"], 1)
    # Nothing frozen now: no more counting until a slow pass freezes again.
    clock.now += 60.0
    full_pass(freezer, clock, 0.001)
    assert collector.calls == ["count", "count", "unfreeze"]


def test_a_later_larger_freeze_raises_the_peak() -> None:
    freezer, collector, clock = make()
    collector.frozen = 1000
    full_pass(freezer, clock, 0.05)
    collector.frozen = 4000
    full_pass(freezer, clock, 0.05)
    clock.now += 10.0
    collector.frozen = 999  # a quarter of 4,000 or less
    full_pass(freezer, clock, 0.001)
    assert (freezer.freezes, freezer.unfreezes) == (2, 1)


def test_with_python_s_collector_frozen_objects_are_still_freed() -> None:
    class Thing:
        pass

    gc.collect()
    with freezing_long_lived(Freezer(slow=0.0)) as freezer:
        thing = Thing()
        gone = weakref.ref(thing)
        gc.collect()
        assert freezer.freezes == 1
        assert gc.get_freeze_count() > 0
        assert not any(o is thing for o in gc.get_objects())  # out of the collector's sight
        del thing
        assert gone() is None  # reference counting still frees it
    assert gc.get_freeze_count() == 0
    assert freezer not in gc.callbacks
