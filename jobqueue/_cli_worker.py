"""``jobqueue worker``: run a :class:`~jobqueue.Worker` until a signal drains it.

SIGTERM (what a deploy or Kubernetes sends) or the first Ctrl-C drains the
worker: it stops taking jobs, lets running jobs finish within
``--drain-timeout``, gives back the jobs it has not started, logs what it did
and exits 0: the worker did what it was asked. A second signal stops it at
once, and the exit status then says which signal did it (130, 143).
"""

from __future__ import annotations

import logging
import signal

import trio

from ._worker import DEFAULT_DRAIN_TIMEOUT, Worker

__all__ = ["DEFAULT_DRAIN_TIMEOUT", "run_worker"]

log = logging.getLogger("jobqueue.worker")

#: Exit status after a second signal stopped the worker at once (as a shell
#: reports a process killed by that signal).
_STOP_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


def run_worker(worker: Worker, drain_timeout: float) -> int:
    """Run ``worker`` until a signal drains it; return the exit status."""
    return trio.run(_run, worker, drain_timeout)


async def _run(worker: Worker, drain_timeout: float) -> int:
    status = 0
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def on_signals() -> None:
                nonlocal status
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if not worker.draining.is_set():
                        log.info("%s: draining; a second signal stops at once", name)
                        worker.drain(drain_timeout)
                    else:
                        log.warning("%s again: stopping now", name)
                        status = _STOP_STATUS.get(signal.Signals(signum), 1)
                        nursery.cancel_scope.cancel()

            nursery.start_soon(on_signals)
            await worker.run()
            nursery.cancel_scope.cancel()
    return status
