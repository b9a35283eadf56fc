"""jobqueue: a distributed job queue for Python, built on trio.

One server (:func:`serve_queue`) keeps every job in memory and hands them to
:class:`Worker` processes first come, first served; :class:`Client` submits
jobs and asks about them. See README.md and docs/ for the whole story.

The public names are imported on first use (PEP 562), so that a process
needing only part of the package, a ``jobqueue worker`` above all, does not
load the server, the dashboard and the client: a killed worker's sockets
close only after the kernel has freed its memory, so the less a worker
loads, the sooner the server hands its jobs to another (docs/performance.md,
"Failover").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__

if TYPE_CHECKING:
    from ._client import Client as Client
    from ._config import QueueRules as QueueRules
    from ._config import ServerConfig as ServerConfig
    from ._dashboard import serve_dashboard as serve_dashboard
    from ._errors import ClientClosed as ClientClosed
    from ._errors import ConnectionLost as ConnectionLost
    from ._errors import JobQueueError as JobQueueError
    from ._errors import RequestError as RequestError
    from ._errors import RequestTimeout as RequestTimeout
    from ._handler import JobCancelled as JobCancelled
    from ._replies import JobInfo as JobInfo
    from ._replies import JobList as JobList
    from ._replies import Stats as Stats
    from ._runners import in_process as in_process
    from ._schedule_spec import Schedule as Schedule
    from ._schedule_wire import ScheduleInfo as ScheduleInfo
    from ._server import serve_queue as serve_queue
    from ._worker import Handler as Handler
    from ._worker import Job as Job
    from ._worker import Worker as Worker
    from ._worker import WorkerStatistics as WorkerStatistics

#: Public name -> the module (in this package) that defines it.
_HOMES = {
    "Client": "_client",
    "QueueRules": "_config",
    "ServerConfig": "_config",
    "serve_dashboard": "_dashboard",
    "ClientClosed": "_errors",
    "ConnectionLost": "_errors",
    "JobQueueError": "_errors",
    "RequestError": "_errors",
    "RequestTimeout": "_errors",
    "JobCancelled": "_handler",
    "JobInfo": "_replies",
    "JobList": "_replies",
    "Stats": "_replies",
    "in_process": "_runners",
    "Schedule": "_schedule_spec",
    "ScheduleInfo": "_schedule_wire",
    "serve_queue": "_server",
    "Handler": "_worker",
    "Job": "_worker",
    "Worker": "_worker",
    "WorkerStatistics": "_worker",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "Client",
    "ClientClosed",
    "ConnectionLost",
    "Handler",
    "Job",
    "JobCancelled",
    "JobInfo",
    "JobList",
    "JobQueueError",
    "QueueRules",
    "RequestError",
    "RequestTimeout",
    "Schedule",
    "ScheduleInfo",
    "ServerConfig",
    "Stats",
    "Worker",
    "WorkerStatistics",
    "__version__",
    "in_process",
    "serve_dashboard",
    "serve_queue",
]
