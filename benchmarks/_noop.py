"""A no-op handler for benchmarks: measures the queue, not the work."""

from __future__ import annotations

from jobqueue import Handler, Job


async def noop(job: Job) -> None:
    """Do nothing."""


HANDLERS: dict[str, Handler] = {"noop": noop}
