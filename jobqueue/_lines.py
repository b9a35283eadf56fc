"""One queue's pending jobs: a line per job name, and a heap of the lines' heads.

A worker is handed only jobs it has a handler for (``hello``'s ``names``),
so each queue keeps one line per job name (:class:`Line`)
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
from collections import deque
from collections.abc import Callable, Mapping, Set

import attrs

from ._job import PENDING, JobRecord

#: A line's best pending job, dropping dead entries in front of it.
Head = Callable[["Line"], "JobRecord | None"]

#: Workers running at most this many names look at their lines' heads one
#: by one; above it they walk the heap of heads.
FEW_NAMES = 8


@attrs.define(eq=False, slots=True)
class Line:
    """One queue's pending jobs of one name, best first, at 8 bytes a job.

    Jobs nearly always become pending in submission order, so each priority
    has a FIFO lane of the records themselves, in ``seq`` order (a heap entry
    tuple cost 72 bytes a job). A job that comes back out of order (requeued,
    promoted after a delay or a backoff, revived) goes to a heap, ``late``,
    keyed like the lanes: ``(-priority, seq, id)``. The best job is the
    better of the top lane's head and the heap's top.

    Entries are deleted lazily: a job cancelled while waiting keeps its entry
    until it reaches the front or the line is compacted; ``size`` counts
    entries, live or not, so the queue knows when to compact, and ``live``
    the pending jobs among them: the line is dropped when it reaches 0, so
    every line kept has a head.
    """

    #: ``-priority`` -> jobs of that priority in ``seq`` order (never empty
    #: once :meth:`~jobqueue._store.JobStore._head` has looked at it).
    lanes: dict[int, deque[JobRecord]] = attrs.field(factory=dict)
    #: Heap of the keys of ``lanes``: the top lane is ``lanes[ranks[0]]``.
    ranks: list[int] = attrs.field(factory=list)
    late: list[tuple[int, int, str]] = attrs.field(factory=list)
    size: int = 0
    live: int = 0

    def place(self, job: JobRecord) -> None:
        """Put ``job``, just become pending, in its place: its lane, or ``late``."""
        rank = -job.options.priority
        lane = self.lanes.get(rank)
        if lane is None:
            self.lanes[rank] = deque((job,))
            heapq.heappush(self.ranks, rank)
        elif not lane or lane[-1].seq < job.seq:
            lane.append(job)
        else:  # back in line ahead of later jobs
            heapq.heappush(self.late, (rank, job.seq, job.id))
        self.size += 1
        self.live += 1

    def pop_head(self, job: JobRecord) -> None:
        """Remove ``job``, which the store's ``_head`` just returned, from the line."""
        late = self.late
        if late and late[0][2] == job.id:
            heapq.heappop(late)
        else:
            rank = self.ranks[0]
            lane = self.lanes[rank]
            lane.popleft()
            if not lane:
                del self.lanes[rank]
                heapq.heappop(self.ranks)
        self.size -= 1

    def compact(self, jobs: Mapping[str, JobRecord]) -> None:
        """Drop the entries of jobs no longer pending (``jobs``: the unfinished, by id)."""
        pending = PENDING
        lanes = {}
        for rank, lane in self.lanes.items():
            kept = deque(job for job in lane if job.state is pending)
            if kept:
                lanes[rank] = kept
        self.lanes = lanes
        self.ranks = sorted(lanes)
        self.late = [
            e for e in self.late if (j := jobs.get(e[2])) is not None and j.state is pending
        ]
        heapq.heapify(self.late)
        self.size = self.live


class QueueLines(dict[str, Line]):
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
            fresh = [(-job.options.priority, job.seq, job.id, job.name)]
            for name, line in self.items():
                top = head(line)
                if top is not None:
                    fresh.append((-top.options.priority, top.seq, top.id, name))
            heapq.heapify(fresh)
            self.heads = fresh
        else:
            heapq.heappush(heads, (-job.options.priority, job.seq, job.id, job.name))

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
                heapq.heapreplace(heads, (-job.options.priority, job.seq, job.id, top[3]))
        return None

    def best_of(self, names: Set[str], head: Head) -> JobRecord | None:
        """The best pending job of the queue whose name is in ``names``.

        Few names: one look at each of their lines' heads. Many: down the
        heap from the top, setting aside the lines of other names (as many
        as rank ahead of the first line it may take), then putting them
        back; a worker that runs every name stops at the top.
        """
        if len(self) == 1:  # one kind of job pending, the usual case
            for name, only in self.items():
                return head(only) if name in names else None
        if len(names) <= FEW_NAMES or 2 * len(names) <= len(self):
            best: JobRecord | None = None
            for each in [self[name] for name in names if name in self]:
                job = head(each)
                if job is not None and (
                    best is None
                    or (-job.options.priority, job.seq, job.id)
                    < (-best.options.priority, best.seq, best.id)
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
                heapq.heapreplace(heads, (-job.options.priority, job.seq, job.id, top[3]))
            elif top[3] in names:
                found = job
                break
            else:
                aside.append(heapq.heappop(heads))
        for entry in aside:
            heapq.heappush(heads, entry)
        return found
