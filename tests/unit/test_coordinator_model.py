"""The bare Coordinator under random interleavings, against a reference model.

Hypothesis drives connections, requests, disconnects and the clock through a
``Coordinator`` with no I/O, and checks every reply and notice against a
small model of the queue's promises.
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import TYPE_CHECKING

import attrs
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from jobqueue._commands import Batch, Command, Connected, Connection, Disconnected, Outgoing
from jobqueue._config import QueueRules
from jobqueue._coordinator import Coordinator
from jobqueue._errors import RuleError
from jobqueue._replies import JobAssigned, JobCancelledNotice, JobInfo, JobSubmitted, NoJob, Ok
from jobqueue._requests import (
    CancelJob,
    DeleteJob,
    GetStatus,
    Heartbeat,
    JobComplete,
    JobFailed,
    Request,
    RequestJob,
    RetryJob,
    SubmitJob,
    WaitJob,
)
from jobqueue._state import QueueState

if TYPE_CHECKING:
    pass

#: Every job state (protocol.md §5).
STATES = ("pending", "scheduled", "running", "completed", "failed", "cancelled")


MODEL_LEASE = 10.0
MODEL_MAX_ATTEMPTS = 3
MODEL_RETRY_DELAY = 1.0
MODEL_MAX_RETRY_DELAY = 4.0
MAX_CONNECTIONS = 5
FINISHED_STATES = ("completed", "failed", "cancelled")
#: What may queue behind a parked request: nothing that changes a job another
#: connection could touch in the same step (see ``CoordinatorModel``).
QUEUEABLE = (SubmitJob, RequestJob, GetStatus, WaitJob)


@attrs.define(eq=False)
class SentRequest:
    """A request the model is owed exactly one reply to."""

    request: Request
    #: When it reached the head of its connection's line and was served...
    served_at: float | None = None
    #: ...and in which step (steps can share a time; they are still ordered).
    served_step: int = -1
    #: Served first thing in its step, against the state as the step began.
    first_in_step: bool = False

    def parked_deadline(self) -> float:
        """When the coordinator must answer it if it is parked."""
        assert self.served_at is not None
        wait = getattr(self.request, "wait", None)
        return math.inf if wait is None else self.served_at + wait


@attrs.define(eq=False)
class ModelConn:
    conn: Connection
    replies: trio.MemoryReceiveChannel[list[Outgoing] | None]
    outstanding: deque[SentRequest] = attrs.field(factory=deque)
    closed: bool = False
    #: The coordinator has sent the end-of-connection marker (``None``).
    told_closed: bool = False


@attrs.define(eq=False)
class ModelJob:
    seq: int
    priority: int
    max_attempts: int
    state: str = "pending"
    holder: int | None = None
    attempt: int = 0
    attempt_base: int = 0
    deadline: float = math.inf  # of the lease, while running
    not_before: float = math.inf  # while scheduled

    @property
    def rank(self) -> tuple[int, int]:
        """Place in line: highest priority first, then first submitted."""
        return (-self.priority, self.seq)

    @property
    def attempts_left(self) -> int:
        return self.max_attempts - (self.attempt - self.attempt_base)


class CoordinatorModel(RuleBasedStateMachine):
    """Random commands and clock jumps against a bare ``Coordinator``.

    The model is deliberately not a second implementation: it does not decide
    which connection gets which job, nor draw retry jitter. It tracks what the
    replies say happened and checks the rules every interleaving must keep: one
    reply per request, a ``job_cancelled`` notice only to the holder of a job
    just cancelled and never ahead of a reply; only the lease holder on the
    current attempt reports; a running job has one holder and a finished job is
    never handed out (unless revived); a job never waits in line behind a worse
    one (priority, then submission order) while that one is handed out, and
    the longest-parked workers are served first; no worker stays parked while a
    job is pending; a lost run spends an attempt and the last one fails the
    job; leases expire exactly ``lease_timeout`` after the last assignment or
    heartbeat, blocking requests exactly ``wait`` after they were served, and
    retries back off within ``[ceiling / 2, ceiling]``; ``next_deadline()`` is
    the earliest of those; totals and counts agree with what was seen.

    Within one step the coordinator serves the commanding connection's requests
    first, then the connections it woke, in an order the replies do not show.
    So only requests that cannot conflict across connections (``QUEUEABLE``)
    are ever queued behind a parked one, and the commander's replies are
    checked first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.state = QueueState(
            rules=QueueRules(
                lease_timeout=MODEL_LEASE,
                max_attempts=MODEL_MAX_ATTEMPTS,
                retry_delay=MODEL_RETRY_DELAY,
                max_retry_delay=MODEL_MAX_RETRY_DELAY,
            ),
            id_prefix="j",
            rng=random.Random(0),
        )
        self.coordinator = Coordinator(self.state)
        self.now = 0.0
        self.steps = 0
        self.conns: dict[int, ModelConn] = {}
        self.next_id = 1
        self.jobs: dict[str, ModelJob] = {}
        self.highest_seq = 0
        self.totals = dict.fromkeys(
            ("submitted", "completed", "failed", "cancelled", "retried", "reassigned", "expired"),
            0,
        )
        # Per step: what replies are checked against.
        self.states_before: dict[str, str] = {}
        self.line_before: list[str] = []
        self.status_replies: list[JobInfo] = []
        self.expected_notices: set[tuple[int, str, int]] = set()

    # -- helpers -------------------------------------------------------------------

    def open_conns(self) -> list[ModelConn]:
        return [c for c in self.conns.values() if not c.closed]

    def pick_conn(self, index: int, request: Request | None = None) -> ModelConn | None:
        """An open connection; one that is not parked unless ``request`` may queue."""
        conns = self.open_conns()
        if not isinstance(request, QUEUEABLE):
            conns = [c for c in conns if not c.outstanding]
        return conns[index % len(conns)] if conns else None

    def pick_job(self, index: int) -> str:
        ids = [*self.jobs, "no-such-job"]
        return ids[index % len(ids)]

    def attempt_for(self, job_id: str, choice: str) -> int | None:
        current = self.jobs[job_id].attempt if job_id in self.jobs else 1
        return {
            "none": None,
            "current": max(current, 1),
            "stale": max(current - 1, 1),
            "next": current + 1,
        }[choice]

    def in_state(self, state: str) -> list[str]:
        return [job_id for job_id, job in self.jobs.items() if job.state == state]

    def parked_idle(self) -> list[ModelConn]:
        """Open connections whose oldest unanswered request is a parked request_job."""
        return [
            c
            for c in self.open_conns()
            if c.outstanding and isinstance(c.outstanding[0].request, RequestJob)
        ]

    def serve_head(self, model: ModelConn) -> None:
        model.outstanding[0].served_at = self.now
        model.outstanding[0].served_step = self.steps

    def served_first(self, sent: SentRequest) -> bool:
        """Whether ``sent`` was served first thing in this step, as the step began."""
        return sent.first_in_step and sent.served_step == self.steps

    def send(self, model: ModelConn | None, *requests: Request) -> None:
        if model is None:
            return
        was_idle = not model.outstanding
        model.outstanding.extend(SentRequest(r) for r in requests)
        self.steps += 1
        if was_idle:
            self.serve_head(model)
            model.outstanding[0].first_in_step = len(requests) == 1
        self.step(Batch(model.conn, list(requests)), model)

    def lose(self, job_ids: list[str], *, expired: bool) -> None:
        """Runs lost to a closed connection or an expired lease: each spends an attempt."""
        for job_id in job_ids:
            job = self.jobs[job_id]
            job.holder, job.deadline = None, math.inf
            if job.attempts_left > 0:
                job.state = "pending"
            else:
                job.state = "failed"
                self.totals["failed"] += 1
        self.totals["reassigned"] += len(job_ids)
        if expired:
            self.totals["expired"] += len(job_ids)

    # -- one step: a command (or a timer firing), then every check ------------------

    def step(self, command: Command | None, commander: ModelConn | None = None) -> None:
        if command is None:
            self.steps += 1
        self.states_before = {job_id: job.state for job_id, job in self.jobs.items()}
        self.line_before = sorted(self.in_state("pending"), key=lambda j: self.jobs[j].rank)
        self.status_replies = []
        self.expected_notices = set()
        if command is not None:
            self.coordinator.handle(command, self.now)
        # As the real run loop does after every wake-up.
        self.coordinator.fire_timers(self.now)

        assigned: dict[str, SentRequest] = {}
        drained = {id(model): (model, self.drain(model)) for model in self.conns.values()}
        submitted = self.register_submissions(list(drained.values()))
        order = sorted(drained.values(), key=lambda pair: pair[0] is not commander)
        notices: set[tuple[int, str, int]] = set()
        for model, items in order:
            noticed = False
            for item in items:
                if isinstance(item, JobCancelledNotice):
                    notices.add((model.conn.id, item.job_id, item.attempt))
                    noticed = True
                    continue
                assert not noticed, f"a reply after a notice on {model.conn.id}: {items}"
                self.check_reply(model, item, assigned)
        assert notices == self.expected_notices, (notices, self.expected_notices)

        # What a status said, the job was at some moment of this step.
        for info in self.status_replies:
            if info.job_id in self.jobs:
                job = self.jobs[info.job_id]
                assert info.attempt <= job.attempt, info
                if info.state in FINISHED_STATES:
                    assert job.state == info.state, info
        # Order: a job handed out in this step never overtook one that was
        # waiting in line all along, ahead of it (priority, then submission).
        waited_throughout = [j for j in self.line_before if self.jobs[j].state == "pending"]
        for job_id in assigned:
            assert job_id in submitted or self.states_before.get(job_id) in (
                "pending",
                "scheduled",
                "running",
                "failed",
            ), job_id
            for ahead in waited_throughout:
                assert not self.jobs[ahead].rank < self.jobs[job_id].rank, (
                    f"{job_id} was handed out while {ahead} waited ahead of it"
                )
        # Longest-waiting parked workers first (among those parked in earlier
        # steps; within one step the order is not visible from outside).
        served = [r.served_step for r in assigned.values() if r.served_step < self.steps]
        still = [
            c.outstanding[0].served_step
            for c in self.parked_idle()
            if c.outstanding[0].served_step < self.steps
        ]
        if served and still:
            assert max(served) <= min(still), f"a later waiter was served first: {served} {still}"
        self.check_rules()

    def drain(self, model: ModelConn) -> list[Outgoing | JobCancelledNotice]:
        items: list[Outgoing | JobCancelledNotice] = []
        for _ in range(10_000):
            try:
                batch = model.replies.receive_nowait()
            except trio.WouldBlock:
                return items
            assert not model.told_closed, f"{batch} after connection {model.conn.id} ended"
            if batch is None:
                assert model.closed, f"connection {model.conn.id} ended while open"
                model.told_closed = True
            else:
                assert not model.closed, f"{batch} after connection {model.conn.id} closed"
                items.extend(batch)
        raise AssertionError("unbounded replies")

    def register_submissions(
        self, drained: list[tuple[ModelConn, list[Outgoing | JobCancelledNotice]]]
    ) -> set[str]:
        """Jobs submitted in this step, first: another connection may already hold one."""
        new: list[tuple[int, str, ModelJob]] = []
        for model, items in drained:
            replies = [item for item in items if not isinstance(item, JobCancelledNotice)]
            for sent, reply in zip(model.outstanding, replies, strict=False):
                if isinstance(sent.request, SubmitJob) and isinstance(reply, JobSubmitted):
                    assert not reply.duplicate, reply
                    assert reply.job_id not in self.jobs, reply
                    request = sent.request
                    record = self.state.get(reply.job_id)
                    max_attempts = request.max_attempts or MODEL_MAX_ATTEMPTS
                    assert (record.priority, record.queue, record.max_attempts) == (
                        request.priority,
                        "default",
                        max_attempts,
                    ), record
                    job = ModelJob(record.seq, request.priority, max_attempts)
                    new.append((record.seq, reply.job_id, job))
        for seq, job_id, job in sorted(new, key=lambda entry: entry[0]):
            assert seq > self.highest_seq, f"{job_id} numbered {seq} after {self.highest_seq}"
            self.highest_seq = seq
            self.jobs[job_id] = job
        self.totals["submitted"] += len(new)
        return {job_id for _, job_id, _ in new}

    def check_reply(
        self, model: ModelConn, reply: Outgoing, assigned: dict[str, SentRequest]
    ) -> None:
        assert model.outstanding, f"connection {model.conn.id} got {reply!r}, asked nothing"
        sent = model.outstanding.popleft()
        request, cid = sent.request, model.conn.id
        if model.outstanding:
            self.serve_head(model)
        where = f"{request!r} from connection {cid} at {self.now}: {reply!r}"

        if isinstance(request, SubmitJob):
            assert isinstance(reply, JobSubmitted), where
        elif isinstance(request, RequestJob):
            if isinstance(reply, JobAssigned):
                job = self.jobs[reply.job_id]
                # Never a running job (two holders) nor a finished one (run again).
                assert job.state == "pending", where
                assert reply.job_id not in assigned, where
                if self.served_first(sent):  # the best job as the step began
                    assert reply.job_id == self.line_before[0], where
                job.state, job.holder, job.attempt = "running", cid, job.attempt + 1
                job.deadline = self.now + MODEL_LEASE
                assert reply.attempt == job.attempt, where
                assert reply.lease_timeout == MODEL_LEASE, where
                assigned[reply.job_id] = sent
            else:
                assert isinstance(reply, NoJob), where
                # Only once its wait is over, or at once with nothing pending.
                assert sent.served_at is not None, where
                assert self.now >= sent.served_at + request.wait, where
                if self.served_first(sent):
                    assert not self.line_before, where
        elif isinstance(request, (JobComplete, JobFailed, Heartbeat)):
            job_or_none = self.jobs.get(request.job_id)
            holds = (
                job_or_none is not None
                and job_or_none.state == "running"
                and job_or_none.holder == cid
                and request.attempt in (None, job_or_none.attempt)
            )
            if not holds:
                assert isinstance(reply, RuleError), where
                expected = "unknown_job" if job_or_none is None else "not_leased"
                assert reply.code == expected, where
                return
            assert job_or_none is not None
            job = job_or_none
            assert isinstance(reply, Ok), where
            if isinstance(request, Heartbeat):
                assert reply.lease_timeout == MODEL_LEASE, where
                job.deadline = self.now + MODEL_LEASE
                return
            job.deadline = math.inf
            if isinstance(request, JobComplete):
                job.state = "completed"
                self.totals["completed"] += 1
            elif job.attempts_left > 0:
                job.state = "scheduled"
                self.totals["retried"] += 1
                # Backoff: ceiling doubles per failure, capped; at least half of it.
                retries = job.attempt - job.attempt_base
                ceiling = min(MODEL_RETRY_DELAY * 2 ** (retries - 1), MODEL_MAX_RETRY_DELAY)
                not_before = self.state.get(request.job_id).not_before
                assert not_before is not None, where
                assert self.now + ceiling / 2 <= not_before <= self.now + ceiling, where
                job.not_before = not_before
            else:
                job.state = "failed"
                self.totals["failed"] += 1
        elif isinstance(request, (CancelJob, RetryJob, DeleteJob)):
            self.check_action(request, reply, cid, where)
        else:
            assert isinstance(request, (GetStatus, WaitJob)), where
            if request.job_id not in self.jobs:
                assert isinstance(reply, RuleError), where
                assert reply.code == "unknown_job", where
                return
            assert isinstance(reply, JobInfo), where
            assert reply.job_id == request.job_id, where
            if isinstance(request, WaitJob) and reply.state not in FINISHED_STATES:
                # An unfinished answer only when the wait ran out.
                assert request.wait is not None, where
                assert sent.served_at is not None, where
                assert self.now >= sent.served_at + request.wait, where
            # A job finished as the step began says so, unless the step's
            # command revived it (retry_job) and this request, queued behind
            # a parked one that the revived job answered, was served after.
            job = self.jobs[request.job_id]
            if self.states_before.get(request.job_id) in FINISHED_STATES and (
                job.state in FINISHED_STATES
            ):
                assert reply.state == self.states_before[request.job_id], where
            self.status_replies.append(reply)

    def check_action(
        self, request: CancelJob | RetryJob | DeleteJob, reply: Outgoing, cid: int, where: str
    ) -> None:
        """cancel_job, retry_job, delete_job: only ever sent as a step's command."""
        job = self.jobs.get(request.job_id)
        if job is None:
            assert isinstance(reply, RuleError), where
            assert reply.code == "unknown_job", where
            return
        if request.TYPE == "cancel_job":
            if job.state in ("completed", "failed"):
                assert isinstance(reply, RuleError), where
                assert reply.code == "already_finished", where
                return
            assert isinstance(reply, JobInfo), where
            assert reply.state == "cancelled", where
            if job.state == "running":
                assert job.holder is not None
                if not self.conns[job.holder].closed:
                    self.expected_notices.add((job.holder, request.job_id, job.attempt))
            if job.state != "cancelled":
                self.totals["cancelled"] += 1
            job.state, job.holder = "cancelled", None
            job.deadline = job.not_before = math.inf
        elif request.TYPE == "retry_job":
            if job.state != "failed":
                assert isinstance(reply, RuleError), where
                assert reply.code == "not_failed", where
                return
            assert isinstance(reply, JobInfo), where
            # Revived: back in line with a fresh budget (another worker may
            # already have it, later in this step).
            job.state, job.attempt_base = "pending", job.attempt
        else:
            if job.state not in FINISHED_STATES:
                assert isinstance(reply, RuleError), where
                assert reply.code == "not_finished", where
                return
            assert isinstance(reply, Ok), where
            del self.jobs[request.job_id]

    def check_rules(self) -> None:
        state = self.state
        held: dict[int, set[str]] = {}
        for job_id, job in self.jobs.items():
            record = state.get(job_id)  # never lost: every job is still known
            assert (record.state.value, record.attempt) == (job.state, job.attempt), job_id
            if job.state == "running":
                assert record.worker == job.holder, job_id
                assert record.lease_deadline == job.deadline, job_id
                assert job.deadline > self.now, f"lease on {job_id} outlived its deadline"
                assert job.holder is not None
                held.setdefault(job.holder, set()).add(job_id)
            if job.state == "scheduled":
                assert record.not_before == job.not_before > self.now, job_id
        assert {worker: set(jobs) for worker, jobs in state.holders()} == held
        counts = dict.fromkeys(STATES, 0)
        for job in self.jobs.values():
            counts[job.state] += 1
        assert state.counts() == counts
        assert state.totals == self.totals

        # Every unanswered request is legitimately parked (the rest queue behind it).
        deadlines = [job.deadline for job in self.jobs.values() if job.state == "running"]
        deadlines += [job.not_before for job in self.jobs.values() if job.state == "scheduled"]
        for model in self.open_conns():
            if not model.outstanding:
                continue
            head = model.outstanding[0]
            where = f"connection {model.conn.id} at {self.now}: {head.request!r}"
            if isinstance(head.request, RequestJob):
                assert head.request.wait > 0, f"unanswered non-blocking request: {where}"
                assert not self.in_state("pending"), f"parked while jobs are pending: {where}"
            else:
                assert isinstance(head.request, WaitJob), f"unanswered request: {where}"
                assert head.request.wait != 0, where
                waited_for = self.jobs.get(head.request.job_id)
                assert waited_for is not None, where
                assert waited_for.state not in FINISHED_STATES, f"waiter not told: {where}"
            assert head.parked_deadline() > self.now, f"missed its deadline: {where}"
            deadlines.append(head.parked_deadline())
        assert self.coordinator.next_deadline() == min(deadlines, default=math.inf)

    # -- rules -----------------------------------------------------------------------

    @precondition(lambda self: len(self.open_conns()) < MAX_CONNECTIONS)
    @rule()
    def connect(self) -> None:
        outbox, replies = trio.open_memory_channel[list[Outgoing] | None](math.inf)
        conn = Connection(self.next_id, f"peer-{self.next_id}", outbox)
        self.conns[self.next_id] = ModelConn(conn, replies)
        self.next_id += 1
        self.step(Connected(conn))

    @precondition(lambda self: self.open_conns())
    @rule(
        c=st.integers(0, 99),
        priority=st.sampled_from([0, 0, 0, 1, -1]),
        max_attempts=st.sampled_from([None, None, 1, 2]),
        then_request=st.booleans(),
    )
    def submit(self, c: int, priority: int, max_attempts: int | None, then_request: bool) -> None:
        requests: list[Request] = [
            SubmitJob("job", None, priority=priority, max_attempts=max_attempts)
        ]
        if then_request:  # pipelined in one batch
            requests.append(RequestJob(wait=5.0))
        self.send(self.pick_conn(c, requests[0]), *requests)

    @precondition(lambda self: self.open_conns())
    @rule(c=st.integers(0, 99), wait=st.sampled_from([0.0, 0.0, 1.0, 5.0, 30.0]))
    def request_job(self, c: int, wait: float) -> None:
        request = RequestJob(wait=wait)
        self.send(self.pick_conn(c, request), request)

    @precondition(lambda self: self.open_conns())
    @rule(
        c=st.integers(0, 99),
        j=st.integers(0, 99),
        wait=st.sampled_from([None, 0.0, 2.0, 20.0]),
        poll=st.booleans(),
    )
    def ask_about_job(self, c: int, j: int, wait: float | None, poll: bool) -> None:
        job_id = self.pick_job(j)
        request: Request = GetStatus(job_id) if poll else WaitJob(job_id, wait)
        self.send(self.pick_conn(c, request), request)

    @precondition(lambda self: self.open_conns())
    @rule(
        c=st.integers(0, 99),
        from_holder=st.booleans(),
        j=st.integers(0, 99),
        running=st.booleans(),
        attempt=st.sampled_from(["none", "current", "current", "stale", "next"]),
        kind=st.sampled_from(["complete", "fail", "heartbeat", "heartbeat"]),
    )
    def report(
        self, c: int, from_holder: bool, j: int, running: bool, attempt: str, kind: str
    ) -> None:
        """A report or heartbeat, often from the holder of a running job."""
        held = self.in_state("running")
        job_id = held[j % len(held)] if running and held else self.pick_job(j)
        tries = self.attempt_for(job_id, attempt)
        request: Request
        if kind == "complete":
            request = JobComplete(job_id, tries, {"c": c})
        elif kind == "fail":
            request = JobFailed(job_id, "Boom", "it broke", tries)
        else:
            request = Heartbeat(job_id, tries)
        model = self.pick_conn(c, request)
        holder = self.jobs[job_id].holder if job_id in self.jobs else None
        if from_holder and holder is not None:
            model = self.conns[holder]
            if model.outstanding:
                return  # parked: would have to queue behind its blocking request
        self.send(model, request)

    @precondition(lambda self: self.open_conns())
    @rule(
        c=st.integers(0, 99),
        j=st.integers(0, 99),
        kind=st.sampled_from([CancelJob, CancelJob, RetryJob, DeleteJob]),
    )
    def act(self, c: int, j: int, kind: type[CancelJob | RetryJob | DeleteJob]) -> None:
        request = kind(self.pick_job(j))
        self.send(self.pick_conn(c, request), request)

    @precondition(lambda self: self.open_conns())
    @rule(c=st.integers(0, 99))
    def disconnect(self, c: int) -> None:
        conns = self.open_conns()
        model = conns[c % len(conns)]
        model.closed = True
        model.outstanding.clear()  # dropped: a closed connection is owed nothing
        cid = model.conn.id
        held = [j for j, job in self.jobs.items() if job.state == "running" and job.holder == cid]
        self.lose(held, expired=False)
        # A step of its own (as `send` counts one): without it, a request
        # parked in the previous step looked "served first thing in this
        # step" and had to get the head of the line, though the disconnect
        # may requeue several jobs for several parked workers at once.
        self.steps += 1
        self.step(Disconnected(model.conn))
        assert model.told_closed

    @rule(dt=st.sampled_from([0.5, 2.0, 5.0, MODEL_LEASE, MODEL_LEASE + 0.5]) | st.floats(0, 40))
    def advance(self, dt: float) -> None:
        self.advance_to(self.now + dt)

    def advance_to(self, target: float) -> None:
        """Move the clock to ``target``, firing every deadline on the way, in order."""
        for _ in range(10_000):
            deadline = self.coordinator.next_deadline()
            if deadline > target:
                break
            self.now = max(self.now, deadline)
            # As QueueState.tick: expire leases (oldest deadline first), then
            # promote scheduled jobs that came due.
            expired = sorted(
                (
                    j
                    for j, job in self.jobs.items()
                    if job.state == "running" and job.deadline <= self.now
                ),
                key=lambda j: self.jobs[j].deadline,
            )
            self.lose(expired, expired=True)
            for job in self.jobs.values():
                if job.state == "scheduled" and job.not_before <= self.now:
                    job.state, job.not_before = "pending", math.inf
            self.step(None)
        else:  # pragma: no cover
            raise AssertionError("deadlines kept coming")
        self.now = target
        self.step(None)

    def teardown(self) -> None:
        # Eventually: past every finite wait, lease and backoff, each
        # connection's unanswered requests are only an endless wait_job on an
        # unfinished job and what is queued behind it.
        self.advance_to(self.now + 3600 + 10 * MODEL_LEASE * MAX_CONNECTIONS * MODEL_MAX_ATTEMPTS)
        for model in self.open_conns():
            if model.outstanding:
                head = model.outstanding[0].request
                assert isinstance(head, WaitJob), head
                assert head.wait is None, head
        for model in self.open_conns():
            self.disconnect(self.open_conns().index(model))
        assert not self.in_state("running")
        assert not self.in_state("scheduled")
        assert self.coordinator.next_deadline() == math.inf


def test_coordinator_keeps_its_rules_under_random_interleavings() -> None:
    run_state_machine_as_test(
        CoordinatorModel,
        settings=settings(
            max_examples=300,
            stateful_step_count=50,
            deadline=None,
            database=None,
            report_multiple_bugs=False,
        ),
    )


def test_coordinator_model_disconnect_requeuing_two_jobs_for_two_parked_workers() -> None:
    # Found by the test above: one connection holds two jobs and two others
    # are parked; its disconnect requeues both, and each parked worker gets
    # one. The server was right; the model wrongly demanded the head of the
    # line for the second waiter (it counted the disconnect as no new step).
    model = CoordinatorModel()
    for _ in range(5):
        model.connect()
    model.advance(1.0)
    model.submit(c=0, priority=0, max_attempts=None, then_request=False)
    model.advance(2.0)
    model.request_job(c=2, wait=0.0)  # connection 3 takes j1
    model.disconnect(c=0)
    model.connect()
    model.submit(c=1, priority=0, max_attempts=None, then_request=True)  # 3 takes j2 too
    model.advance(0.5)
    model.request_job(c=0, wait=1.0)  # connection 2 parks
    model.request_job(c=2, wait=1.0)  # connection 4 parks
    model.disconnect(c=1)  # connection 3 goes: j1 to connection 2, j2 to 4
    assert {job_id: (job.state, job.holder) for job_id, job in model.jobs.items()} == {
        "j1": ("running", 2),
        "j2": ("running", 4),
    }
    model.teardown()


def test_coordinator_model_status_queued_behind_a_park_a_retry_answers() -> None:
    # Found by the random test: connection 1 is parked in request_job with a
    # get_status of a failed job queued behind it; connection 2 retries that
    # job, which goes to connection 1's park, and then the queued status is
    # served, showing it running. The server was right; the model wrongly
    # held the status to the state the job had as the step began.
    model = CoordinatorModel()
    for _ in range(5):
        model.connect()
    model.request_job(c=0, wait=1.0)
    model.request_job(c=0, wait=30.0)  # queued behind the first
    model.advance(0.5)
    model.submit(c=1, priority=0, max_attempts=1, then_request=False)  # to connection 1
    model.advance(10.0)  # its lease expires: j1 fails, its only attempt spent
    assert model.jobs["j1"].state == "failed"
    model.ask_about_job(c=0, j=0, poll=True, wait=None)  # queued behind the second park
    model.act(c=0, j=0, kind=RetryJob)  # from connection 2: j1 goes to connection 1
    assert (model.jobs["j1"].state, model.jobs["j1"].holder) == ("running", 1)
    model.teardown()
