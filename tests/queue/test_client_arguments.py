"""The three clients answer the same bad arguments with the same documented errors."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Iterator

import pytest
import trio

import jobqueue.asyncio
import jobqueue.sync
from jobqueue import Client, ConnectionLost
from tests import helpers as support

#: Host names that no resolver is even asked about: the IDNA encoding every
#: lookup applies refuses them (a label over 63 characters, an empty label).
BAD_HOST_NAMES = ["a" * 64, "a..b", f"queue.{'b' * 64}.example"]


@pytest.mark.parametrize("host", BAD_HOST_NAMES)
def test_a_bad_host_name_is_a_connection_lost_naming_it(host: str) -> None:
    # Was UnicodeError from every client, where the docs promise ConnectionLost.
    expected = f"cannot connect to the queue at {host}:80: not a valid host name (label"

    def sync() -> None:
        jobqueue.sync.Client.connect(host, 80, timeout=5)

    async def asyncio_() -> None:
        await jobqueue.asyncio.Client.connect(host, 80, timeout=5)

    async def trio_() -> None:
        async with Client.connect(host, 80):
            pass  # pragma: no cover

    for attempt in (sync, lambda: asyncio.run(asyncio_()), lambda: trio.run(trio_)):
        with pytest.raises(ConnectionLost) as lost:
            attempt()
        assert str(lost.value).startswith(expected), lost.value


@pytest.fixture
def queue() -> Iterator[support.QueueThread]:
    with support.QueueThread() as running:
        yield running


BAD_TIMEOUTS = [math.nan, -1.0]


def finishes(call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread; what it raised (``None`` if nothing), failing if it hangs.

    ``wait(timeout=nan)`` never ended: its deadline never compared as reached.
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert outcome, f"{call} still running after 30s"
    return outcome[0]


@pytest.mark.parametrize("bad", BAD_TIMEOUTS)
def test_the_blocking_client_refuses_a_nan_or_negative_timeout(
    queue: support.QueueThread, bad: float
) -> None:
    with pytest.raises(ValueError, match=r"^timeout must be a number of seconds, 0 or more"):
        jobqueue.sync.Client.connect(*queue.address, timeout=bad)
    with pytest.raises(ValueError, match=r"^reconnect_timeout must be a number of seconds"):
        jobqueue.sync.Client.connect(*queue.address, reconnect_timeout=bad)
    with jobqueue.sync.Client.connect(*queue.address, timeout=5) as client:
        job_id = client.submit("echo", delay=600)
        for call in (lambda: client.wait(job_id, timeout=bad), lambda: client.stats(timeout=bad)):
            error = finishes(call)
            assert isinstance(error, ValueError), error
            assert str(error) == f"timeout must be a number of seconds, 0 or more, not {bad!r}"
        assert client.status(job_id).state == "scheduled"  # the client goes on


@pytest.mark.parametrize("bad", BAD_TIMEOUTS)
def test_the_asyncio_client_refuses_a_nan_or_negative_timeout(
    queue: support.QueueThread, bad: float
) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match=r"^timeout must be a number of seconds, 0 or more"):
            await jobqueue.asyncio.Client.connect(*queue.address, timeout=bad)
        with pytest.raises(ValueError, match=r"^reconnect_timeout must be a number of seconds"):
            await jobqueue.asyncio.Client.connect(*queue.address, reconnect_timeout=bad)
        async with jobqueue.asyncio.Client.connect(*queue.address, timeout=5) as client:
            job_id = await client.submit("echo", delay=600)
            with pytest.raises(ValueError, match=r"^timeout must be a number of seconds"):
                await client.wait(job_id, timeout=bad)
            with pytest.raises(ValueError, match=r"^timeout must be a number of seconds"):
                await client.stats(timeout=bad)
            assert (await client.status(job_id)).state == "scheduled"

    asyncio.run(asyncio.wait_for(main(), 20))


@pytest.mark.parametrize("bad", BAD_TIMEOUTS)
def test_the_trio_client_refuses_a_nan_or_negative_reconnect_timeout(bad: float) -> None:
    # With NaN, a lost connection was retried for ever.
    async def main() -> None:
        async with Client.connect("127.0.0.1", 9, reconnect_timeout=bad):
            pass  # pragma: no cover

    with pytest.raises(ValueError, match=r"^reconnect_timeout must be a number of seconds"):
        trio.run(main)


def test_an_infinite_timeout_is_no_limit(queue: support.QueueThread) -> None:
    # The blocking client raised OverflowError: a socket takes no infinite timeout.
    with jobqueue.sync.Client.connect(*queue.address, timeout=math.inf) as client:
        job_id = client.submit("echo", "done", timeout=math.inf)
        assert client.wait(job_id, timeout=math.inf).result == "done"
        assert client.stats(timeout=1e300).connections >= 1

    async def main() -> None:
        async with jobqueue.asyncio.Client.connect(*queue.address, timeout=math.inf) as client:
            job_id = await client.submit("echo", "done", timeout=math.inf)
            assert (await client.wait(job_id, timeout=math.inf)).result == "done"

    asyncio.run(asyncio.wait_for(main(), 20))


def test_submit_many_of_no_jobs_says_so(queue: support.QueueThread) -> None:
    # Was "must be a non-empty array of job objects, not an array".
    message = r'^"submit_jobs" field "jobs" holds no job$'
    with (
        jobqueue.sync.Client.connect(*queue.address, timeout=5) as client,
        pytest.raises(ValueError, match=message),
    ):
        client.submit_many([])

    async def main() -> None:
        async with Client.connect(*queue.address) as client:
            with pytest.raises(ValueError, match=message):
                await client.submit_many([])

    trio.run(main)


def test_a_payload_that_holds_itself_is_a_value_error(queue: support.QueueThread) -> None:
    # Was RecursionError: the encoder does not look for cycles. The
    # connection stays usable: nothing was sent.
    looped: list[object] = []
    looped.append(looped)
    message = "^value holds itself, or is nested too deeply, to be JSON$"
    with jobqueue.sync.Client.connect(*queue.address, timeout=5) as client:
        for call in (
            lambda: client.submit("echo", looped),
            lambda: client.submit("echo", looped, priority=1),
            lambda: client.submit_many([{"name": "echo", "payload": looped}]),
        ):
            with pytest.raises(ValueError, match=message):
                call()
        assert client.wait(client.submit("echo", "fine")).result == "fine"

    async def main() -> None:
        async with Client.connect(*queue.address) as client:
            with pytest.raises(ValueError, match=message):
                await client.submit("echo", looped)
            assert (await client.wait(await client.submit("echo", "fine"))).result == "fine"

    trio.run(main)

    async def on_asyncio() -> None:
        async with jobqueue.asyncio.Client.connect(*queue.address) as client:
            with pytest.raises(ValueError, match=message):
                await client.submit("echo", looped)

    asyncio.run(asyncio.wait_for(on_asyncio(), 20))
