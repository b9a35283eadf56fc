"""``_engine.round_seconds`` is ``round(seconds, 6)``: the same float, bit for bit."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobqueue._engine import round_seconds


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


def _same(seconds: float) -> None:
    assert _bits(round_seconds(seconds)) == _bits(round(seconds, 6)), seconds


@settings(max_examples=500)
@given(
    st.floats(min_value=0.0, max_value=2e6)
    | st.floats(min_value=0.0, max_value=0.01)
    | st.floats(allow_nan=False)
)
def test_any_duration_rounds_as_round_does(seconds: float) -> None:
    _same(seconds)


@settings(max_examples=300)
@given(
    st.integers(min_value=0, max_value=10**12 - 1),
    st.sampled_from([0.5, 0.499, 0.501, 0.4989, 0.5011]),
    st.integers(min_value=-3, max_value=3),
)
def test_durations_next_to_a_half_millionth_round_as_round_does(
    whole: int, part: float, step: int
) -> None:
    # The floats around a half millionth, and around the quick path's margins.
    seconds = (whole + part) / 1e6
    for _ in range(abs(step)):
        seconds = math.nextafter(seconds, math.inf if step > 0 else -math.inf)
    _same(seconds)


@pytest.mark.parametrize(
    "seconds",
    [0.0, -0.0, 5e-324, 1e-7, 4.999e-7, 5e-7, 5.001e-7, 0.0004995, 0.0005, 0.1234565,
     999999.9999995, 1e6, 1e6 - 1e-9, 2.5e-6, 1.0, -1.5, math.inf, -math.inf],
)  # fmt: skip
def test_edge_durations_round_as_round_does(seconds: float) -> None:
    _same(seconds)


def test_nan_stays_nan() -> None:
    assert math.isnan(round_seconds(math.nan))
