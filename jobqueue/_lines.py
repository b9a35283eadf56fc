"""One queue's pending jobs: a line per job name, and a heap of the lines' heads.

A worker is handed only jobs it has a handler for (``hello``'s ``names``),
so each queue keeps one line per job name (:class:`~jobqueue._store._Line`)
and the best job for a worker is the best of the heads of the lines it may
take from. Looking at every line's head would cost O(names in the queue) per
assignment, so :class:`QueueLines` also keeps a heap of those heads: the
best job of the whole queue is its top, and a worker that runs most names
walks down from the top past the few lines it cannot take. Neither depends
on the number of pending jobs.

The heap is kept lazily, like the lines themselves: an entry is pushed when
a job becomes the head of its line by arriving (a better job than the head,
or a new line); when a head leaves (assigned, cancelled) its entry stays and
is corrected when it reaches the top. So every line always has an entry
ranked no worse than its current head, which is all the top needs to be
right.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Set
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._job import JobRecord
    from ._store import _Line

#: A line's best pending job, dropping dead entries in front of it.
Head = Callable[["_Line"], "JobRecord | None"]

#: Workers running at most this many names look at their lines' heads one
#: by one; above it they walk the heap of heads.
FEW_NAMES = 8


class QueueLines(dict[str, "_Line"]):
    """Job name -> that name's line in one queue, with ``heads``, a heap of the lines' heads.

    Entries of ``heads`` are ``(-priority, seq, job_id, name)``; some may be
    stale (see the module's docstring). The heap is kept only while there
    are several lines: a queue of one kind of job pays nothing for it, and
    the heap is rebuilt when a second line appears.
    """

    def __init__(self) -> None:
        super().__init__()
        self.heads: list[tuple[int, int, str, str]] = []

    def arrived(self, job: JobRecord, head: Head) -> None:
        """``job`` is about to head its line, one of several: give it a heap entry.

        Called before ``job`` joins its line, so the heads that ``head``
        finds are the others; a rebuild adds ``job`` itself.
        """
        heads = self.heads
        if len(self) == 2 or len(heads) > 2 * len(self) + 16:
            # A second line (the heap was not kept for one), or too many
            # entries: entries corrected at the top never grow the heap,
            # but arrivals without assignments would.
            fresh = [(-job.priority, job.seq, job.id, job.name)]
            for name, line in self.items():
                top = head(line)
                if top is not None:
                    fresh.append((-top.priority, top.seq, top.id, name))
            heapq.heapify(fresh)
            self.heads = fresh
        else:
            heapq.heappush(heads, (-job.priority, job.seq, job.id, job.name))

    def best(self, head: Head) -> JobRecord | None:
        """The best pending job of the queue, whatever its name."""
        if len(self) == 1:
            for only in self.values():
                return head(only)
        heads = self.heads
        while heads:
            top = heads[0]
            line = self.get(top[3])
            job = None if line is None else head(line)
            if job is None:
                heapq.heappop(heads)  # the line is gone
            elif job.id == top[2]:
                return job
            else:  # its head left: rank the line by its new head
                heapq.heapreplace(heads, (-job.priority, job.seq, job.id, top[3]))
        return None

    def best_of(self, names: Set[str], head: Head) -> JobRecord | None:
        """The best pending job of the queue whose name is in ``names``.

        Few names: one look at each of their lines' heads. Many: down the
        heap from the top, setting aside the lines of other names (as many
        as rank ahead of the first line it may take), then putting them
        back; a worker that runs every name stops at the top.
        """
        if len(names) <= FEW_NAMES or 2 * len(names) <= len(self) or len(self) == 1:
            best: JobRecord | None = None
            for each in [self[name] for name in names if name in self]:
                job = head(each)
                if job is not None and (
                    best is None
                    or (-job.priority, job.seq, job.id) < (-best.priority, best.seq, best.id)
                ):
                    best = job
            return best
        heads = self.heads
        aside = []
        found = None
        while heads:
            top = heads[0]
            line = self.get(top[3])
            job = None if line is None else head(line)
            if job is None:
                heapq.heappop(heads)
            elif job.id != top[2]:
                heapq.heapreplace(heads, (-job.priority, job.seq, job.id, top[3]))
            elif top[3] in names:
                found = job
                break
            else:
                aside.append(heapq.heappop(heads))
        for entry in aside:
            heapq.heappush(heads, entry)
        return found
