"""Routing by job name on the wire: ``hello``'s and ``stats``' ``names``, and the warning."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobqueue._codec import decode_reply
from jobqueue._json import encode
from jobqueue._limits import MAX_HANDLER_NAMES, MAX_NAME_CHARS
from jobqueue._replies import Stats
from jobqueue._requests import Hello
from jobqueue._routing import Routes, unserved_warning, waiting_lines, workers_for
from tests.helpers import decode_line, request_error


def hello_line(**fields: Any) -> bytes:
    return json.dumps({"type": "hello", **fields}, separators=(",", ":")).encode()


def test_hello_names_round_trip_and_default_to_any() -> None:
    assert decode_line(hello_line()) == Hello()
    assert Hello().names is None
    assert decode_line(hello_line(names=None)) == Hello()
    decoded = decode_line(hello_line(name="w", names=["b", "a", "a"]))
    assert decoded == Hello(name="w", names=frozenset({"a", "b"}))
    # Sorted on the wire, so the same set always encodes the same.
    assert encode(Hello(names=frozenset({"b", "a"})).to_wire()) == (
        b'{"type":"hello","names":["a","b"]}\n'
    )
    # An empty list is a worker that runs nothing (it takes no job).
    assert decode_line(hello_line(names=[])) == Hello(names=frozenset())
    most = [f"n{i}" for i in range(MAX_HANDLER_NAMES)]
    assert decode_line(hello_line(names=most)) == Hello(names=frozenset(most))


@pytest.mark.parametrize(
    "names",
    [
        "sleep",
        {"a": 1},
        [""],
        [1],
        ["a", None],
        [["a"]],
        ["n" * (MAX_NAME_CHARS + 1)],
        [f"n{i}" for i in range(MAX_HANDLER_NAMES + 1)],
    ],
)
def test_bad_hello_names(names: Any) -> None:
    error = request_error(hello_line(names=names))
    assert error.code == "bad_request"
    assert '"hello" field "names"' in error.message


def test_stats_names_round_trip_and_are_optional() -> None:
    stats = Stats(
        jobs={},
        totals={},
        connections=1,
        waiting_workers=0,
        workers=[],
        names={"a": {"pending": 2, "workers": 0}},
        any_name_workers=3,
    )
    assert decode_reply(encode(stats.to_wire()).rstrip(b"\n")) == stats
    older = (
        b'{"type":"stats","jobs":{},"totals":{},"connections":1,"waiting_workers":0,"workers":[]}'
    )
    decoded = decode_reply(older)
    assert isinstance(decoded, Stats)
    assert (decoded.names, decoded.any_name_workers) == ({}, 0)


def test_routes_count_named_and_any_name_workers() -> None:
    routes = Routes(named={"a": 2, "b": 1}, anyone=1)
    assert routes.report({"a": 4, "c": 1}) == (
        {
            "a": {"pending": 4, "workers": 3},
            "b": {"pending": 0, "workers": 2},
            "c": {"pending": 1, "workers": 1},
        },
        0,
    )
    assert Routes(named={}, anyone=0).report({"c": 1}) == ({"c": {"pending": 1, "workers": 0}}, 0)


def test_routes_report_the_busiest_names_when_there_are_too_many() -> None:
    routes = Routes(named={"run-by-two": 2, "run-by-one": 1}, anyone=0)
    pending = {"b": 1, "a": 1, "c": 1, "deep": 9, "run-by-one": 1}
    assert routes.report(pending, most=4) == (
        {
            "a": {"pending": 1, "workers": 0},  # ties: the name that sorts first
            "b": {"pending": 1, "workers": 0},
            "deep": {"pending": 9, "workers": 0},  # the most pending first
            "run-by-one": {"pending": 1, "workers": 1},  # then the most workers
        },
        2,  # "c", and "run-by-two" with no job pending
    )


def stats_with(**fields: Any) -> Stats:
    base: dict[str, Any] = {
        "jobs": {},
        "totals": {},
        "connections": 1,
        "waiting_workers": 0,
        "workers": [],
    }
    return Stats(**{**base, **fields})


def test_workers_for_a_name() -> None:
    listed = stats_with(
        names={"a": {"pending": 0, "workers": 2}, "b": {"pending": 1, "workers": 0}}
    )
    assert workers_for("a", listed) == 2
    assert workers_for("b", listed) == 0
    assert workers_for("unlisted", listed) == 0
    anyone = stats_with(names={"a": {"pending": 0, "workers": 3}}, any_name_workers=1)
    assert workers_for("unlisted", anyone) == 1
    # An older server lists no names: its workers take any job.
    older = stats_with(workers=[{"name": "w", "jobs": [], "waiting": True}])
    assert workers_for("x", older) == 1
    assert workers_for("x", stats_with()) == 0


def test_the_warning_is_one_line_naming_the_job() -> None:
    warning = unserved_warning("thumbnail", stats_with())
    assert warning is not None
    assert "\n" not in warning
    assert "'thumbnail'" in warning
    assert unserved_warning("a", stats_with(names={"a": {"pending": 1, "workers": 1}})) is None


def test_stats_text_lists_names_no_worker_runs() -> None:
    names = {
        "a": {"pending": 2, "workers": 0},
        "b": {"pending": 1, "workers": 1},
        "c": {"pending": 0, "workers": 0},
    }
    assert waiting_lines(stats_with(names=names)) == [
        "name a: pending 2, no connected worker runs it"
    ]
    assert waiting_lines(stats_with()) == []


def test_unlisted_round_trips_and_is_absent_when_nothing_was_cut() -> None:
    stats = stats_with(unlisted={"queues": 7})
    wire = stats.to_wire()
    assert wire["unlisted"] == {"queues": 7}
    assert decode_reply(encode(wire).rstrip(b"\n")) == stats
    assert "unlisted" not in stats_with().to_wire()
