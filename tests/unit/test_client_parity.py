"""The three clients offer the same methods with the same parameters, so they cannot drift."""

from __future__ import annotations

import inspect

import jobqueue
import jobqueue.asyncio
import jobqueue.sync

#: The documented differences, and only these: the blocking and asyncio
#: clients add ``timeout=``; only the trio one takes a trio ``connect``er;
#: the blocking one closes with ``close`` where the others ``aclose``.
ADDED = ("timeout",)
TRIO_ONLY = ("connect",)
RENAMED = {"close": "aclose"}


def public(cls: type) -> dict[str, list[str]]:
    return {
        RENAMED.get(name, name): [p for p in inspect.signature(member).parameters if p != "self"]
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member)
    }


def test_the_three_clients_have_the_same_methods_and_parameters() -> None:
    trio_methods = public(jobqueue.Client)
    expected = {
        name: [p for p in params if p not in TRIO_ONLY] for name, params in trio_methods.items()
    }
    for cls in (jobqueue.sync.Client, jobqueue.asyncio.Client):
        methods = public(cls)
        assert sorted(methods) == sorted(expected), cls
        for name, params in methods.items():
            assert [p for p in params if p not in ADDED] == expected[name], (cls, name)
    assert "timeout" in inspect.signature(jobqueue.sync.Client.wait).parameters
    assert inspect.iscoroutinefunction(jobqueue.asyncio.Client.wait)
    assert not inspect.iscoroutinefunction(jobqueue.sync.Client.wait)
