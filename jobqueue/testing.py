"""Helpers for embedding a real queue in your own tests.

``open_test_queue()`` runs a server on a free loopback port inside the
caller's trio run and yields a :class:`RunningQueue` with its address and a
connected :class:`~jobqueue.Client`; ``RunningQueue.start_worker`` adds
in-process workers. With pytest-trio, the ``job_queue`` fixture does the
same per test; enable it with ``pytest_plugins = ["jobqueue.testing"]`` in
your ``conftest.py`` (this module imports pytest).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial

import attrs
import pytest
import trio

from ._client import Client
from ._server import serve_queue
from ._state import DEFAULT_FINISHED_RETENTION, DEFAULT_LEASE_TIMEOUT
from ._worker import Handler, Worker

__all__ = ["RunningQueue", "job_queue", "open_test_queue"]


@attrs.frozen
class RunningQueue:
    """A queue server running for the duration of a test.

    Attributes:
        address: ``(host, port)`` the server listens on.
        client: A client connected to it.
        nursery: The nursery the server (and any started workers) run in.
    """

    address: tuple[str, int]
    client: Client
    nursery: trio.Nursery

    async def start_worker(
        self,
        handlers: Mapping[str, Handler] | None = None,
        *,
        concurrency: int = 1,
        name: str | None = None,
    ) -> Worker:
        """Start a :class:`~jobqueue.Worker` against this queue; return once connected."""
        host, port = self.address
        worker = Worker(host, port, handlers=dict(handlers or {}), concurrency=concurrency)
        if name is not None:
            worker.name = name
        await self.nursery.start(worker.run)
        return worker

    async def connect(self) -> Client:
        """Open one more client, closed when the queue stops."""
        client_cm = Client.connect(*self.address)
        client = await client_cm.__aenter__()

        async def close_on_cancel() -> None:
            try:
                await trio.sleep_forever()
            finally:
                await client.aclose()

        self.nursery.start_soon(close_on_cancel)
        return client


@asynccontextmanager
async def open_test_queue(
    *,
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
    finished_retention: int = DEFAULT_FINISHED_RETENTION,
) -> AsyncIterator[RunningQueue]:
    """Run a queue server on ``127.0.0.1``, any free port, for the ``async with`` block.

    Everything started through the yielded :class:`RunningQueue` is
    cancelled when the block exits.
    """
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            partial(
                serve_queue,
                0,
                host="127.0.0.1",
                lease_timeout=lease_timeout,
                finished_retention=finished_retention,
            )
        )
        async with Client.connect(*address) as client:
            yield RunningQueue(address, client, nursery)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def job_queue() -> AsyncIterator[RunningQueue]:
    """A fresh queue server for one test (pytest-trio)."""
    async with open_test_queue() as queue:
        yield queue
