"""Job handlers for a worker process, loadable with ``--handlers``.

    jobqueue worker --handlers examples.handlers:HANDLERS

(run from the repository root so ``examples`` is importable).
"""

from __future__ import annotations

from typing import Any

import trio

from jobqueue import Handler, Job


async def add(job: Job) -> float:
    """Sum a list of numbers: payload ``{"numbers": [1, 2, 3]}``."""
    numbers: list[float] = job.payload["numbers"]
    return sum(numbers)


async def word_count(job: Job) -> dict[str, Any]:
    """Count words in ``{"text": "..."}``, slowly enough to watch."""
    await trio.sleep(0.2)
    words = str(job.payload["text"]).split()
    return {"words": len(words), "attempt": job.attempt}


HANDLERS: dict[str, Handler] = {"add": add, "word_count": word_count}
