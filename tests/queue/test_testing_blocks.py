"""``jobqueue.testing``'s ``async with`` blocks, as a project's tests use them."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
import trio.testing

import jobqueue
from jobqueue.testing import RunningQueue, open_memory_queue, open_test_queue

Opener = Callable[..., AbstractAsyncContextManager[RunningQueue]]


@pytest.mark.parametrize("opener", [open_test_queue, open_memory_queue])
async def test_an_error_raised_in_the_block_comes_out_as_it_is(opener: Opener) -> None:
    # As from Client.connect and run_queue_in_thread: a test that expects an
    # error from its own code must not find it inside an ExceptionGroup from
    # the queue's nursery.
    cause = OSError("the real cause")
    with pytest.raises(KeyError, match="boom") as raised:
        async with opener():
            raise KeyError("boom") from cause
    assert raised.value.__cause__ is cause
    assert raised.value.__context__ is None  # nor does the group show in its traceback


@pytest.mark.parametrize("opener", [open_test_queue, open_memory_queue])
async def test_a_refusal_met_in_the_block_comes_out_as_it_is(opener: Opener) -> None:
    options: dict[str, Any] = {"token": "s3cret"}
    with pytest.raises(jobqueue.RequestError) as refused:
        async with opener(**options) as queue, queue.connect(token="wrong"):
            pass  # pragma: no cover
    assert refused.value.code == "unauthorized"


async def test_a_worker_the_server_refuses_fails_to_start_instead_of_hanging(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A worker retries a refused connection for ever (a server's token may
    # be rotated under it); start_worker, waiting for it to connect, hung.
    with trio.fail_after(600):  # virtual seconds: fails, rather than hangs, without the fix
        async with open_memory_queue(token="s3cret") as queue:
            with pytest.raises(RuntimeError, match="did not connect"):
                await queue.start_worker({}, token="wrong")
