"""Where the queue keeps its jobs, and how it finds them fast.

:class:`JobStore` is storage only: the records, the lines of pending jobs,
the scheduled heap, the lease order, the finished generations, the
idempotency-key shards and the counts, with the queries that read them and
the primitives that keep them consistent, the transition table included. It
knows no queue rules and no events: :class:`~jobqueue._model.QueueModel`
builds on it, and its ``apply`` is the only caller of the primitives (the
methods that change jobs).

QueueState *inherits* the store rather than holding one: every command and
every event touches these structures several times, and reaching them
through ``self._store`` would add an attribute load to each of those
touches, on the hot path of every job.
"""

from __future__ import annotations

import heapq
import sys
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import attrs

from ._fields import check_job_options
from ._job import (
    CANCELLED,
    FINISHED,
    PENDING,
    RUNNING,
    SCHEDULED,
    TRANSITIONS,
    InvalidTransition,
    JobOptions,
    JobRecord,
    JobState,
    finished_size,
    payload_size,
)
from ._lines import Line, QueueLines

#: Table size of one generation of finished jobs (see JobStore): it holds
#: two thirds as many jobs, 5,461, which fill the table exactly (CPython
#: dicts use two thirds of their slots), about 100 KiB. With a retention
#: over 32 generations' worth the size doubles until 32 are enough.
FINISHED_GENERATION_SLOTS = 8192
#: About how many idempotency keys share one of the dicts that find them.
KEYS_PER_SHARD = 1024
#: How many different options (queue, priority, attempts) are shared at once.
MAX_SHARED_OPTIONS = 4096

#: The states whose jobs ``_by_state`` lists (pending jobs are in their lines).
_INDEXED = (SCHEDULED, RUNNING)

#: The states counted per queue (stats' "queues").
_COUNTED = (PENDING, SCHEDULED, RUNNING)

#: Where the two moves every job makes lead (``_assign_first``, ``_complete_running``).
_ASSIGNED = TRANSITIONS[(PENDING, "assign")]
_COMPLETED = TRANSITIONS[(RUNNING, "complete")]


@attrs.define(eq=False)
class JobStore:
    """Every job the queue remembers, indexed for each question asked of it.

    ``_jobs`` maps id -> :class:`JobRecord` for every job that has not
    finished. Pending jobs also wait in one :class:`Line` per queue and
    job name (``_queues[queue][name]``): highest priority first, then first
    come, first served, and a requeued job goes back to its original place.
    The best job of a queue is the best of its lines' heads (found through
    a heap of them, :class:`~jobqueue._lines.QueueLines`), so a worker that
    runs only some names never walks past a job it cannot run
    (docs/design.md §2). Scheduled jobs sit in a heap keyed
    by the time they may run. Running jobs sit in ``_leases``, ordered by
    lease deadline. ``_by_state`` indexes scheduled and running ids by
    state for listing; pending jobs are only counted (``_pending``): their
    lines already hold them, in the order they will run, and a second index
    of a deep queue cost 31 bytes a job.

    Finished jobs leave ``_jobs`` for ``_done``, a deque of *generations*:
    dicts of up to ``_generation`` jobs each, in finishing order. They also
    sit in ``_finished`` in finishing order, so the oldest can be forgotten
    and a listing of a finished state filters it in order. Why not one dict
    of all finished jobs: a dict that keeps gaining and losing entries never
    reuses a deleted entry's slot, so every so often it is rebuilt into a new
    table, at twice the size it had while growing; one table of 100,000 jobs
    is 7 MiB, and rebuilding it fragments glibc's heap so that the server's
    RSS steps up over a long run. A generation only ever gains jobs until it
    is full and then only loses them, so it is never rebuilt, and it is freed
    whole once its last job is forgotten. Finding a finished job costs one
    probe per generation (at most about 32), newest first.

    Lines and heaps are cleaned lazily: cancelling a pending job only changes
    its state, and its entry is dropped when it reaches the front.

    Sized by :meth:`_plan` for the number of finished jobs it will keep.
    """

    _jobs: dict[str, JobRecord] = attrs.field(factory=dict, init=False)
    _done: deque[dict[str, JobRecord]] = attrs.field(factory=lambda: deque([{}]), init=False)
    _generation: int = attrs.field(default=0, init=False)
    #: Jobs added to ``_done[-1]`` (deleted ones included: their slots are spent).
    _generation_filled: int = attrs.field(default=0, init=False)
    #: queue -> job name -> that name's pending jobs in that queue (with a
    #: heap of the lines' heads); a line is kept while it has a live entry,
    #: a queue while it has a line.
    _queues: dict[str, QueueLines] = attrs.field(factory=dict, init=False)
    _scheduled: list[tuple[float, int, str]] = attrs.field(factory=list, init=False)
    # Every lease has the same length and `now` never goes backwards, so
    # deadlines grow in the order leases are granted or renewed: an OrderedDict
    # with move_to_end keeps them sorted in O(1), no heap needed.
    _leases: OrderedDict[str, None] = attrs.field(factory=OrderedDict, init=False)
    _held: dict[Hashable, dict[str, None]] = attrs.field(factory=dict, init=False)
    _by_state: dict[JobState, dict[str, None]] = attrs.field(
        factory=lambda: {state: {} for state in _INDEXED}, init=False
    )
    #: How many jobs are pending (they are found through their lines).
    _pending: int = attrs.field(default=0, init=False)
    #: Bytes of the unfinished jobs' payloads, as held (``payload_size``).
    payload_bytes: int = attrs.field(default=0, init=False)
    #: Bytes of the finished jobs' payloads and results (``finished_size``).
    finished_bytes: int = attrs.field(default=0, init=False)
    _finished_counts: dict[JobState, int] = attrs.field(
        factory=lambda: dict.fromkeys(FINISHED, 0), init=False
    )
    # Per queue in use: jobs pending, scheduled and running.
    _queue_counts: dict[str, dict[JobState, int]] = attrs.field(factory=dict, init=False)
    _finished: deque[JobRecord] = attrs.field(factory=deque, init=False)
    # Keyed jobs churn through their keys' dicts like finished jobs; a key can
    # belong to a job of any state, so the dicts are picked by the key's hash.
    _keys: list[dict[str, str]] = attrs.field(factory=list, init=False)
    _keys_mask: int = attrs.field(default=0, init=False)
    #: The jobs' options, one of each in use (see :meth:`_options_for`).
    _options: dict[tuple[str, int, int], JobOptions] = attrs.field(factory=dict, init=False)

    def _plan(self, finished_retention: int) -> None:
        """Size the generations and key shards for ``finished_retention`` finished jobs."""
        slots = FINISHED_GENERATION_SLOTS
        while slots * 2 // 3 * 32 < finished_retention:
            slots *= 2
        self._generation = slots * 2 // 3
        shards = 1 << (finished_retention // KEYS_PER_SHARD).bit_length()
        self._keys = [{} for _ in range(shards)]
        self._keys_mask = shards - 1

    def __getstate__(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in attrs.fields(type(self))}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # _keys picks a dict by hash(), and str hashes are salted per
        # process: a state pickled in one process is sorted again for this
        # one's hashes.
        for name, value in state.items():
            object.__setattr__(self, name, value)
        keys: list[dict[str, str]] = [{} for _ in self._keys]
        for shard in self._keys:
            for key, job_id in shard.items():
                keys[hash(key) & self._keys_mask][key] = job_id
        self._keys = keys

    # -- queries --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._jobs) + len(self._finished)

    @property
    def pending_count(self) -> int:
        """Jobs waiting for a worker, in all queues."""
        return self._pending

    @property
    def waiting_count(self) -> int:
        """Jobs waiting to run: pending, or scheduled for later (retries included)."""
        return self.pending_count + len(self._by_state[SCHEDULED])

    @property
    def running_count(self) -> int:
        """Jobs leased to a worker."""
        return len(self._leases)

    def knows_key(self, key: str) -> bool:
        """Whether a remembered job was submitted with idempotency ``key``."""
        return key in self._keys_for(key)

    def held_by(self, worker: Hashable) -> list[str]:
        """Ids of the jobs ``worker`` holds leases on, oldest first."""
        return list(self._held.get(worker, ()))

    def holders(self) -> Iterable[tuple[Hashable, list[str]]]:
        """Each worker holding leases, with its job ids."""
        return ((worker, list(jobs)) for worker, jobs in self._held.items())

    def counts(self) -> dict[str, int]:
        """How many remembered jobs are in each state."""
        by_state, finished = self._by_state, self._finished_counts
        return {
            state.value: (
                finished[state]
                if state in FINISHED
                else self._pending
                if state is PENDING
                else len(by_state[state])
            )
            for state in JobState
        }

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """Per queue: jobs pending, scheduled and running (queues in use only)."""
        counts = self._queue_counts
        return {
            queue: {state.value: count for state, count in by.items()}
            for queue, by in counts.items()
            if any(by.values())
        }

    def busiest_queue_counts(self, most: int) -> tuple[dict[str, dict[str, int]], int]:
        """:meth:`queue_counts` for the ``most`` queues with the most unfinished jobs.

        Ties go to the name that sorts first. The queues are chosen before
        any entry is built: a careless producer may use a queue per job.

        Returns:
            The counts, in :meth:`queue_counts`' order, and how many queues
            in use were left out.
        """
        counts = self._queue_counts
        if len(counts) <= most:
            return self.queue_counts(), 0
        in_use = [queue for queue, by in counts.items() if any(by.values())]
        chosen = set(
            heapq.nsmallest(most, in_use, key=lambda queue: (-sum(counts[queue].values()), queue))
        )
        listed = {
            queue: {state.value: count for state, count in counts[queue].items()}
            for queue in in_use
            if queue in chosen
        }
        return listed, len(in_use) - len(listed)

    def pending_in(self, queues: Sequence[str], names: AbstractSet[str] | None = None) -> bool:
        """Whether any of ``queues`` has a job waiting that a worker running ``names`` can take.

        ``names`` ``None`` means any name. The cost is one look per queue
        and per name (the fewer of ``names`` and the queue's names), never
        per job.
        """
        if names is None:
            counts = self._queue_counts
            return any(counts.get(queue, {}).get(PENDING, 0) for queue in queues)
        for queue in queues:
            lines = self._queues.get(queue)
            if lines is not None and not names.isdisjoint(lines):
                return True
        return False

    def pending_by_name(self) -> dict[str, int]:
        """Pending jobs per job name, over all queues (names with any only).

        One step per (queue, name) line, not per job: for ``stats``.
        """
        counts: dict[str, int] = {}
        for lines in self._queues.values():
            for name, line in lines.items():
                counts[name] = counts.get(name, 0) + line.live
        return counts

    def list_jobs(
        self, state: JobState, queue: str | None, limit: int
    ) -> tuple[list[JobRecord], bool]:
        """Up to ``limit`` jobs in ``state``; and whether more exist.

        Pending jobs come in the order they will run (highest priority
        first, then first submitted, queues merged); the others in the
        order they entered their state. A finished state is found by
        filtering all retained finished jobs in finishing order, so a
        listing of a rare one may scan up to ``finished_retention`` records.
        """
        found: list[JobRecord] = []
        jobs: Iterable[JobRecord]
        if state in FINISHED:
            jobs = (job for job in self._finished if job.state is state)
        elif state is PENDING:
            jobs = self.pending_in_order(queue)
        else:
            jobs = map(self._jobs.__getitem__, self._by_state[state])
        for job in jobs:
            if queue is not None and job.queue != queue:
                continue
            if len(found) == limit:
                return found, True
            found.append(job)
        return found, False

    def pending_in_order(self, queue: str | None = None) -> Iterator[JobRecord]:
        """Pending jobs (of ``queue``, or all) in the order they will run, lazily.

        Each line yields its jobs best first (its lanes, and its ``late``
        heap sorted); the lines are merged by the same order. The cost is
        that of the jobs taken from it, plus sorting the few jobs that came
        back out of order.
        """
        jobs, pending = self._jobs, PENDING
        lines = [
            line
            for name, by_name in self._queues.items()
            if queue is None or name == queue
            for line in by_name.values()
        ]

        def live(line: Line) -> Iterator[JobRecord]:
            lanes = [
                (job for job in line.lanes[rank] if job.state is pending)
                for rank in sorted(line.lanes)
            ]
            late = (jobs.get(entry[2], GONE) for entry in sorted(line.late))
            late = (job for job in late if job.state is pending)
            return heapq.merge(*lanes, late, key=line_order)

        return heapq.merge(*map(live, lines), key=line_order)

    def pending_by_line(self) -> Iterator[JobRecord]:
        """Every pending job, line by line, each line's lanes in order, then its late ones.

        The order a snapshot writes them in: restoring them one by one
        rebuilds the same lines, without the cost of merging the lines.
        """
        jobs, pending = self._jobs, PENDING
        for by_name in self._queues.values():
            for line in by_name.values():
                for rank in sorted(line.lanes):
                    yield from (job for job in line.lanes[rank] if job.state is pending)
                late = (jobs.get(entry[2], GONE) for entry in sorted(line.late))
                yield from (job for job in late if job.state is pending)

    def next_deadline(self) -> float:
        """When the earliest lease runs out or scheduled job comes due (or ``inf``)."""
        deadline = float("inf")
        if self._leases:
            run = self._jobs[next(iter(self._leases))].run
            assert run is not None, "a leased job has run"
            deadline = run.lease_deadline
        scheduled = self._scheduled
        while scheduled and not self._is_due_entry(scheduled[0]):
            heapq.heappop(scheduled)
        if scheduled:
            deadline = min(deadline, scheduled[0][0])
        return deadline

    def _lookup(self, job_id: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        if job is None:
            for generation in reversed(self._done):
                job = generation.get(job_id)
                if job is not None:
                    break
        return job

    def _options_for(self, queue: str, priority: int, max_attempts: int) -> JobOptions:
        """The options every job submitted with these three shares (the queue name interned).

        Records keep their options alive, not this table: when it holds
        more than ``MAX_SHARED_OPTIONS`` it starts again, so however many
        different ones come, it stays small (only sharing is lost).
        """
        key = (queue, priority, max_attempts)
        options = self._options.get(key)
        if options is None:
            check_job_options(queue, priority, max_attempts)
            if len(self._options) >= MAX_SHARED_OPTIONS:
                self._options.clear()
            options = self._options[key] = JobOptions(sys.intern(queue), priority, max_attempts)
        return options

    def _keys_for(self, key: str) -> dict[str, str]:
        return self._keys[hash(key) & self._keys_mask]

    def _keyed(self, key: str) -> JobRecord | None:
        """The remembered job submitted with idempotency ``key``, if any."""
        job_id = self._keys_for(key).get(key)
        return None if job_id is None else self._lookup(job_id)

    def _leased_to(self, worker: Hashable) -> list[JobRecord]:
        """The jobs ``worker`` holds leases on, oldest first."""
        return [self._jobs[job_id] for job_id in self._held.get(worker, ())]

    def _first_lease(self) -> JobRecord | None:
        """The running job whose lease runs out first."""
        return self._jobs[next(iter(self._leases))] if self._leases else None

    def _head(self, line: Line) -> JobRecord | None:
        """The best pending job in ``line``, dropping dead entries in front of it."""
        lanes, ranks = line.lanes, line.ranks
        first = None
        while ranks:
            lane = lanes[ranks[0]]
            while lane and lane[0].state is not PENDING:
                lane.popleft()  # cancelled while waiting: not part of the state
                line.size -= 1
            if lane:
                first = lane[0]
                break
            del lanes[heapq.heappop(ranks)]
        late, jobs = line.late, self._jobs
        while late and jobs.get(late[0][2], GONE).state is not PENDING:
            heapq.heappop(late)
            line.size -= 1
        if late and (first is None or late[0] < line_order(first)):
            return jobs[late[0][2]]
        return first

    def _pop_due(self, now: float) -> JobRecord | None:
        """Take the next scheduled job due by ``now`` off the heap (``None``: none is)."""
        scheduled = self._scheduled
        while scheduled and scheduled[0][0] <= now:
            entry = heapq.heappop(scheduled)
            if self._is_due_entry(entry):
                return self._jobs[entry[2]]
        return None

    def _is_due_entry(self, entry: tuple[float, int, str]) -> bool:
        job = self._jobs.get(entry[2])
        return job is not None and job.state is SCHEDULED and job.not_before == entry[0]

    # -- primitives: called only while applying an event -----------------------

    def _add(self, job: JobRecord) -> None:
        """Index a new job: in line if pending, in the heap by ``not_before`` if scheduled."""
        self._jobs[job.id] = job
        # Key and time are the run's; most new jobs have no run, so neither.
        run = job.run
        if run is not None and run.key is not None:
            self._keys_for(run.key)[run.key] = job.id
        if job.state is PENDING:
            self._pending += 1
        else:
            self._by_state[job.state][job.id] = None
        payload = job.payload
        if payload.__class__ is bytes:  # payload_size written out: runs for every job
            self.payload_bytes += len(payload)
        queue = job.options.queue
        counts = self._queue_counts.get(queue)  # (_counts_of only for a queue not in use)
        if counts is None:
            counts = self._counts_of(queue)
        counts[job.state] += 1
        if run is None or run.not_before is None:
            self._enqueue(job)
        else:
            self._schedule(job)

    def _move(self, job_id: str, action: str) -> JobRecord:
        """Change ``job_id``'s state by ``action``, as the transition table allows.

        The store enforces the table itself, so that no caller can leave a
        job's state and the indexes that sort it by state disagreeing.

        Raises:
            InvalidTransition: no such job, a change the table forbids, or an
                assignment of a job that is not first in its line; nothing is
                changed.
        """
        job = self._lookup(job_id)
        if job is None:
            raise InvalidTransition(f"no job {job_id!r} to {action}")
        source = job.state
        target = TRANSITIONS.get((source, action))
        if target is None:
            raise InvalidTransition(f"cannot {action} a {source.value} job ({job_id!r})")
        line = None
        queue = job.options.queue
        if action == "assign":
            lines = self._queues.get(queue, _NO_LINES)
            line = lines.get(job.name)
            if line is None or self._head(line) is not job:
                raise InvalidTransition(f"{job_id!r} is not first in its queue")
            line.pop_head(job)
        if source in FINISHED:  # revived
            self._unfinish(job)
            self._jobs[job_id] = job
            self.payload_bytes += payload_size(job.payload)
        elif source is PENDING:
            self._pending -= 1
        else:
            del self._by_state[source][job_id]
        job.state = target
        if target in FINISHED:
            del self._jobs[job_id]
            self._finish(job)
            self.payload_bytes -= payload_size(job.payload)
        elif target is PENDING:
            self._pending += 1
        else:
            self._by_state[target][job_id] = None
        counts = self._counts_of(queue)
        if source in counts:
            counts[source] -= 1
        if target in counts:
            counts[target] += 1
        if source is PENDING:  # out of its line: assigned or cancelled
            if line is None:
                lines = self._queues[queue]
                line = lines[job.name]
            line.live -= 1
            if not line.live:
                # No live entry left: whatever is in the lanes or heap is stale.
                del lines[job.name]
                if not lines:
                    del self._queues[queue]
        if not any(counts.values()):
            del self._queue_counts[queue]  # a queue name costs nothing once idle
        return job

    def _assign_first(self, job_id: str) -> JobRecord:
        """``_move(job_id, "assign")``, written out for a pending job at the head of its line.

        Every job is assigned, so the generic move's table lookup, its
        branches for the other actions and its calls are measurable here.
        Anything else (no such job, another state, not first in line) goes
        through :meth:`_move`, which refuses it in its words; a test holds
        the two to the same state.
        """
        job = self._jobs.get(job_id)
        if job is None or job.state is not PENDING:
            return self._move(job_id, "assign")
        queue, name = job.options.queue, job.name
        lines = self._queues.get(queue, _NO_LINES)
        line = lines.get(name)
        if line is None:
            return self._move(job_id, "assign")
        ranks = line.ranks
        lane = line.lanes[ranks[0]] if ranks else None
        if not line.late and lane and lane[0] is job:
            # First in its top lane, nothing out of order: the head without
            # _head's walk, popped without pop_head's.
            lane.popleft()
            if not lane:
                del line.lanes[ranks[0]]
                heapq.heappop(ranks)
            line.size -= 1
        elif self._head(line) is job:
            line.pop_head(job)
        else:
            return self._move(job_id, "assign")
        self._pending -= 1
        job.state = _ASSIGNED
        self._by_state[_ASSIGNED][job_id] = None
        counts = self._queue_counts[queue]  # a pending job's queue is counted
        counts[PENDING] -= 1
        counts[_ASSIGNED] += 1
        line.live -= 1
        if not line.live:
            # No live entry left: whatever is in the lanes or heap is stale.
            del lines[name]
            if not lines:
                del self._queues[queue]
        return job

    def _complete_running(self, job_id: str) -> JobRecord:
        """``_move(job_id, "complete")`` written out for a running job, as :meth:`_assign_first`."""
        job = self._jobs.get(job_id)
        if job is None or job.state is not RUNNING:
            return self._move(job_id, "complete")
        del self._by_state[RUNNING][job_id]
        job.state = _COMPLETED
        del self._jobs[job_id]
        self._finish(job)
        payload = job.payload
        if payload.__class__ is bytes:  # payload_size written out, as above
            self.payload_bytes -= len(payload)
        queue = job.options.queue
        counts = self._queue_counts[queue]  # a running job's queue is counted
        counts[RUNNING] -= 1
        if not counts[RUNNING] and not any(counts.values()):
            del self._queue_counts[queue]  # a queue name costs nothing once idle
        return job

    def _running(self, job_id: str) -> JobRecord:
        """The running job ``job_id``, whose lease an event extends."""
        job = self._jobs.get(job_id)
        if job is None or job.state is not RUNNING:
            raise InvalidTransition(f"cannot extend the lease of {job_id!r}: not running")
        return job

    def _forget(self, job: JobRecord) -> None:
        """Drop a finished job's record and its key."""
        self._unfinish(job)
        run = job.run
        key = None if run is None else run.key
        if key is not None:
            keys = self._keys_for(key)
            if keys.get(key) == job.id:
                del keys[key]

    def _finish(self, job: JobRecord) -> None:
        if self._generation_filled >= self._generation:
            if not self._done[-1]:
                self._done.pop()  # all forgotten while it was the newest
            self._done.append({})
            self._generation_filled = 0
        self._done[-1][job.id] = job
        self._generation_filled += 1
        self._finished.append(job)
        self._finished_counts[job.state] += 1
        # finished_size written out: this runs for every job. A job's result
        # is set after it finishes (``apply``, Completed), so most jobs count
        # their payload here and their result there; a snapshot restores a
        # completed job whole.
        payload = job.payload
        if payload.__class__ is bytes:
            self.finished_bytes += len(payload)
        run = job.run
        if run is not None and run.result.__class__ is bytes:
            self.finished_bytes += len(run.result)

    def _unfinish(self, job: JobRecord) -> None:
        """Take a finished job out of the finished records (forgotten or revived)."""
        done = self._done
        # The oldest generation when forgetting; any when a person deletes or revives.
        for index, generation in enumerate(done):
            if generation.pop(job.id, None) is not None:
                if not generation and index < len(done) - 1:
                    del done[index]  # freed whole
                break
        self._finished_counts[job.state] -= 1
        self.finished_bytes -= finished_size(job)
        if self._finished[0] is job:
            self._finished.popleft()
        else:  # deleted or revived by a person (O(retained)), or a hand-made log
            self._finished.remove(job)

    def _counts_of(self, queue: str) -> dict[JobState, int]:
        counts = self._queue_counts.get(queue)
        if counts is None:
            counts = self._queue_counts[queue] = dict.fromkeys(_COUNTED, 0)
        return counts

    def _compact(self, queue: str, name: str) -> None:
        """Drop dead entries from ``name``'s line in ``queue`` once they outnumber live ones."""
        jobs = self._jobs
        line = self._queues.get(queue, _NO_LINES).get(name)
        if line is not None and line.size > 2 * line.live + 64:
            line.compact(jobs)
        scheduled = self._scheduled
        if len(scheduled) > 2 * len(self._by_state[SCHEDULED]) + 64:
            scheduled[:] = [e for e in scheduled if self._is_due_entry(e)]
            heapq.heapify(scheduled)

    def _enqueue(self, job: JobRecord) -> None:
        # The store reads the options' fields directly: through the record's
        # properties each read costs a generic attribute lookup (~0.1 µs).
        options = job.options
        lines = self._queues.get(options.queue)
        if lines is None:
            lines = self._queues[options.queue] = QueueLines()
        line = lines.get(job.name)
        # The heap of heads is kept only while the queue has several lines
        # (one kind of job, the usual case, pays nothing for it).
        if line is None:
            line = lines[job.name] = Line()
            if len(lines) > 1:
                lines.arrived(job, self._head)
        elif len(lines) > 1:
            head = self._head(line)
            if head is None or line_order(job) < line_order(head):
                lines.arrived(job, self._head)  # ahead of the line's head
        line.place(job)

    def _schedule(self, job: JobRecord) -> None:
        """Put a scheduled job in the heap, to come due at its ``not_before``."""
        assert job.not_before is not None
        heapq.heappush(self._scheduled, (job.not_before, job.seq, job.id))

    def _end_lease(self, job: JobRecord) -> None:
        del self._leases[job.id]
        run = job.run
        assert run is not None, "a leased job has run"
        worker = run.worker
        held = self._held[worker]
        del held[job.id]
        if not held:
            del self._held[worker]


#: Stands in for a queue without pending jobs, so lookups need no None check.
_NO_LINES = QueueLines()

#: Stands in for a missing job so lookups can test ``.state`` without a None check.
GONE = JobRecord("", "", None, 0, JobOptions("", 0, 0), state=CANCELLED)


def line_order(job: JobRecord) -> tuple[int, int, str]:
    """A pending job's place in line: smaller runs first (as in ``Line.late``)."""
    return (-job.options.priority, job.seq, job.id)
