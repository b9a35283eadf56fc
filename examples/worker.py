"""A worker process built with the Python API.

Run a server first (``jobqueue serve``), then, from the repository root:

    python -m examples.worker [HOST:PORT]

Same as ``jobqueue worker --handlers examples.handlers:HANDLERS --concurrency 4``:
Ctrl-C or SIGTERM drains it (running jobs finish, the rest go back to the
queue) and it exits 0; a second signal stops it at once.
"""

from __future__ import annotations

import logging
import signal
import sys

import trio

from examples.handlers import HANDLERS
from jobqueue import Worker


async def main(host: str, port: int) -> None:
    worker = Worker(host, port, handlers=HANDLERS, concurrency=4)
    # trio.run would raise Ctrl-C as a KeyboardInterrupt inside an exception
    # group; taking the signals here turns them into a drain instead.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def drain_on_signals() -> None:
                async for _ in signals:
                    if worker.draining.is_set():  # a second signal: stop now
                        nursery.cancel_scope.cancel()  # the server requeues our jobs
                    worker.drain(timeout=30)

            nursery.start_soon(drain_on_signals)
            await worker.run()  # returns once drained
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080").rsplit(":", 1)
    trio.run(main, host, int(port))
