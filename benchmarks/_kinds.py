"""No-op handlers of each kind, for comparing how a worker runs them.

``noop`` runs on the worker's trio loop, ``noop_thread`` in a worker thread,
``noop_process`` in a trio-parallel process (needs ``jobqueue[processes]``).
A separate module from ``_noop`` so the default benchmark worker never
needs the extra.
"""

from __future__ import annotations

from benchmarks._noop import noop
from jobqueue import Handler, Job, in_process


def noop_thread(job: Job) -> None:
    """Do nothing, in a worker thread."""


@in_process
def noop_process(job: Job) -> None:
    """Do nothing, in a worker process."""


HANDLERS: dict[str, Handler] = {
    "noop": noop,
    "noop_thread": noop_thread,
    "noop_process": noop_process,
}

#: Handler kind (``quick_throughput --kinds``) -> job name.
KINDS = {"async": "noop", "def": "noop_thread", "process": "noop_process"}
