"""jobqueue: a distributed job queue for Python, built on trio.

One server (:func:`serve_queue`) keeps every job in memory and hands them to
:class:`Worker` processes first come, first served; :class:`Client` submits
jobs and asks about them. See README.md and docs/ for the whole story.
"""

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
from ._version import __version__ as __version__
from ._worker import Handler as Handler
from ._worker import Job as Job
from ._worker import Worker as Worker
from ._worker import WorkerStatistics as WorkerStatistics

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
