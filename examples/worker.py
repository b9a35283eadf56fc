"""A worker process built with the Python API.

Run a server first (``jobqueue serve``), then, from the repository root:

    python -m examples.worker [HOST:PORT]

Same as ``jobqueue worker --handlers examples.handlers:HANDLERS --concurrency 4``.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import trio

from examples.handlers import HANDLERS
from jobqueue import Worker

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080").rsplit(":", 1)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop; the server requeues our jobs
        trio.run(Worker(host, int(port), handlers=HANDLERS, concurrency=4).run)
