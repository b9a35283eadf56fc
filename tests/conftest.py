"""Shared fixtures: queues to test against and a raw protocol connection.

Test modules get helpers through fixtures, never by importing this file (with
``--import-mode=importlib`` it is not importable by a stable name); its types
are imported under ``TYPE_CHECKING`` only, for annotations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio

from jobqueue._framing import EOF, NEED_DATA, LineDecoder
from jobqueue._json import decode_object, encode
from jobqueue.testing import RunningQueue, open_test_queue


class RawConnection:
    """One connection speaking the wire protocol by hand: bytes and dicts, no Client."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        # Replies are ours to read, so no line limit worth enforcing here.
        self._decoder = LineDecoder(max_line=1 << 26)

    async def send_raw(self, data: bytes) -> None:
        """Send bytes exactly as given."""
        await self.stream.send_all(data)

    async def send_line(self, line: bytes) -> None:
        """Send one line, adding its newline."""
        await self.stream.send_all(line + b"\n")

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message without reading its reply (for pipelining or blocking)."""
        await self.stream.send_all(encode(message))

    async def read_reply(self) -> dict[str, Any]:
        """Read the next reply line, however it arrives.

        Raises:
            EOFError: the server closed the connection first.
        """
        while True:
            line = self._decoder.next_line()
            if line is NEED_DATA:
                self._decoder.receive_data(await self.stream.receive_some(65536))
            elif line is EOF:
                raise EOFError("the server closed the connection")
            else:
                return decode_object(line)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one message and return its reply."""
        await self.send(message)
        return await self.read_reply()

    async def aclose(self) -> None:
        """Close abruptly: whatever is in flight is abandoned."""
        await trio.aclose_forcefully(self.stream)


#: ``async with raw_connection(queue_or_address) as conn: ...``
RawOpener = Callable[[RunningQueue | tuple[str, int]], AbstractAsyncContextManager[RawConnection]]


@asynccontextmanager
async def open_raw_connection(
    target: RunningQueue | tuple[str, int],
) -> AsyncIterator[RawConnection]:
    """A raw connection to a queue: TCP to an address, or a RunningQueue's own transport."""
    if isinstance(target, RunningQueue) and target.connector is not None:
        stream = await target.connector()
    else:
        host, port = target.address if isinstance(target, RunningQueue) else target
        stream = await trio.open_tcp_stream(host, port)
    conn = RawConnection(stream)
    try:
        yield conn
    finally:
        await conn.aclose()


@pytest.fixture
def raw_connection() -> RawOpener:
    """The :func:`open_raw_connection` helper."""
    return open_raw_connection


@pytest.fixture
async def tcp_queue() -> AsyncIterator[RunningQueue]:
    """A queue server on 127.0.0.1, port 0, default lease, real sockets."""
    async with open_test_queue() as queue:
        yield queue
