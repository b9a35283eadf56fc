"""The three clients answer the same bad arguments with the same documented errors."""

from __future__ import annotations

import asyncio

import pytest
import trio

import jobqueue.asyncio
import jobqueue.sync
from jobqueue import Client, ConnectionLost

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
