"""Shared fixtures: queues to test against and a raw protocol connection.

Helpers shared by test modules live in :mod:`tests.helpers`, imported as
``from tests.helpers import ...``; fixtures that wrap them live here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from jobqueue.testing import RunningQueue, open_test_queue
from tests.helpers import RawOpener, open_raw_connection


@pytest.fixture
def raw_connection() -> RawOpener:
    """The :func:`open_raw_connection` helper."""
    return open_raw_connection


@pytest.fixture
async def tcp_queue() -> AsyncIterator[RunningQueue]:
    """A queue server on 127.0.0.1, port 0, default lease, real sockets."""
    async with open_test_queue() as queue:
        yield queue
