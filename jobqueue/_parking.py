"""Blocking requests waiting for their answer: workers for a job, clients for a job's end.

The coordinator parks a ``request_job`` with ``wait`` until a job comes or
the wait runs out, and a ``wait_job`` until its job ends or the wait runs
out. This is where they wait: workers first come, first served; clients by
the job they watch; and one heap of deadlines for both, so the coordinator's
single wake-up covers every wait.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Sequence

import attrs

from ._commands import Connection, Parked


@attrs.define(eq=False)
class Parking:
    """Every parked request, and when each one times out."""

    #: Workers blocked in ``request_job``, by connection id, longest-waiting first.
    idle: OrderedDict[int, Parked] = attrs.field(factory=OrderedDict)
    #: Clients blocked in ``wait_job``, by job id then connection id.
    watchers: dict[str, dict[int, Parked]] = attrs.field(factory=dict)
    # (deadline, tiebreak, parked) for every wait with a deadline; an entry
    # whose request was already answered is skipped when it reaches the top.
    _timeouts: list[tuple[float, int, Parked]] = attrs.field(factory=list)
    _tiebreak: itertools.count[int] = attrs.field(factory=itertools.count)

    def park(
        self,
        conn: Connection,
        deadline: float,
        job_id: str | None,
        queues: Sequence[str] = (),
        most: int | None = None,
    ) -> None:
        """Park ``conn``'s request: for a job (``job_id`` None) or for ``job_id`` to end."""
        parked = Parked(conn, deadline, job_id, queues, most)
        conn.parked = parked
        if job_id is None:
            self.idle[conn.id] = parked
        else:
            self.watchers.setdefault(job_id, {})[conn.id] = parked
        if deadline != math.inf:
            heapq.heappush(self._timeouts, (deadline, next(self._tiebreak), parked))

    def unpark(self, parked: Parked) -> None:
        """Take ``parked`` out: it has been answered, or its connection closed."""
        parked.conn.parked = None
        if parked.job_id is None:
            del self.idle[parked.conn.id]
        else:
            watchers = self.watchers[parked.job_id]
            del watchers[parked.conn.id]
            if not watchers:
                del self.watchers[parked.job_id]

    def next_deadline(self) -> float:
        """When the first wait still parked runs out (``inf`` if none can)."""
        timeouts = self._timeouts
        while timeouts and timeouts[0][2].conn.parked is not timeouts[0][2]:
            heapq.heappop(timeouts)
        return timeouts[0][0] if timeouts else math.inf

    def expired(self, now: float) -> list[Parked]:
        """Unpark and return the waits that have run out by ``now``, earliest first."""
        timeouts, out = self._timeouts, []
        while timeouts and timeouts[0][0] <= now:
            parked = heapq.heappop(timeouts)[2]
            if parked.conn.parked is parked:
                self.unpark(parked)
                out.append(parked)
        return out
