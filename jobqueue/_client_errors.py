"""The public exceptions only the blocking and asyncio clients raise.

Kept apart from ``_errors`` so that this step adds files only; they belong
beside :class:`~jobqueue.JobQueueError` and may move there unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import JobQueueError

if TYPE_CHECKING:
    from ._protocol import JobInfo


class RequestTimeout(JobQueueError, TimeoutError):
    """A call's ``timeout`` passed before its answer came.

    For :meth:`~jobqueue.sync.Client.wait` this means the job had not
    finished; ``info`` is its state when the wait gave up. For any other
    call it means the server did not answer in time, and (as with
    :class:`~jobqueue.ConnectionLost`) the request may or may not have been
    applied. It is a :class:`TimeoutError` too, so code that bounds calls
    with the standard library's timeouts catches it where it expects to.

    Attributes:
        info: The job's last known state (``wait`` only), else ``None``.
    """

    def __init__(self, message: str, info: JobInfo | None = None) -> None:
        super().__init__(message)
        self.info = info


class ClientClosed(JobQueueError, RuntimeError):
    """A call was made on a client that was closed: a bug in the caller.

    Not a :class:`~jobqueue.ConnectionLost`: retrying cannot help, so code
    that retries on a lost connection must not loop on this.
    """
