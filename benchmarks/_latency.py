"""Handlers for latency and failover benchmarks: record when each job starts.

Each start is appended to the file named by ``JOBQUEUE_LATENCY_LOG``, so
collecting the samples never goes through the queue being measured.
"""

from __future__ import annotations

import os
import time

import trio

from jobqueue import Handler, Job

_LOG = os.environ.get("JOBQUEUE_LATENCY_LOG", os.devnull)


def _append(line: str) -> None:
    with open(_LOG, "a") as f:
        f.write(line + "\n")


async def stamp(job: Job) -> None:
    """Record seconds from submission (payload ``{"t": time.time()}``) to start."""
    _append(str(time.time() - float(job.payload["t"])))


async def hold(job: Job) -> None:
    """Record ``<job id> <start time>``, then hold the job for ``payload["seconds"]``."""
    _append(f"{job.id} {time.time()}")
    await trio.sleep(float(job.payload["seconds"]))


HANDLERS: dict[str, Handler] = {"stamp": stamp, "hold": hold}
