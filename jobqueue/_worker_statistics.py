"""What a :class:`~jobqueue.Worker` has done, counted as it goes (``Worker.statistics()``)."""

from __future__ import annotations

import attrs


@attrs.define
class WorkerStatistics:
    """Counters for one :class:`~jobqueue.Worker`.

    Attributes:
        completed: Jobs whose handler returned, reported as completed (counted
            when the report is sent; a report the server refuses, or whose
            connection breaks before the reply, is taken back out).
        failed: Jobs whose handler raised, reported as failed (counted likewise).
        lost: Jobs abandoned because the server said the lease was gone.
        cancelled: Jobs stopped because someone cancelled them.
        timed_out: Handlers stopped for running longer than ``job_timeout``
            (also counted in ``failed``).
        given_back: Jobs handed back unfinished (``release_job``): during a
            drain, taken and not started or stopped at the drain's deadline;
            with ``prefetch="auto"``, taken and not started when their batch
            ran past its budget.
        running: Handlers running right now.
        connected_slots: Slots connected (``hello`` answered) right now.
    """

    completed: int = 0
    failed: int = 0
    lost: int = 0
    cancelled: int = 0
    timed_out: int = 0
    given_back: int = 0
    running: int = 0
    connected_slots: int = 0
