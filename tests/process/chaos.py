"""Chaos run: SIGKILL worker processes at random while thousands of jobs run.

    python -m tests.process.chaos [--jobs 3000] [--kills 8] [--seed N] [--prefetch 1]

Run it from the repository root (the worker processes import their handler
from this module). A queue server runs in this process; ``--workers`` real
``python -m jobqueue worker --concurrency 2`` processes run a handler that
sleeps a few milliseconds and appends ``start``/``end`` records (job id and
pid) to a log of its own; ``--prefetch`` is passed on to them (``auto``
batches give back what they have not started past their budget, so the
run also checks those releases). While the jobs run, a random worker that holds jobs
is killed with ``SIGKILL`` every ``--kill-every`` seconds and a fresh one takes
its place. Submissions are spread over the time the kills take, so jobs are
still running at the last one. Jobs get a budget of attempts no run of kills
can spend: this is about loss and duplication. At the end the run checks, and
exits non-zero if any check fails:

- every job is ``completed``, and the server recorded each completion once:
  ``totals`` say ``completed == submitted == N``, nothing failed, was retried,
  cancelled or expired (the lease is the default 30 s: only kills reassign);
- a job completed by process P was run to its end by P (P's log says so);
- a job ran (started) at least once and at most ``attempt`` times: it may run
  more than once when its worker was killed mid-job (at-least-once), and
  each run needed an assignment of its own;
- ``reassigned`` is accounted for by the kills, exactly: the server's own
  journal (its event stream) shows every job it took back, and from whom; each
  was taken from a killed worker, after its kill, and handed out again once
  (its final ``attempt`` is one more than its losses and its releases). What each victim held
  when it died per its ``stats`` snapshot just before the kill, plus what its
  log shows it had started, minus what it got completed in between, must be
  among what the server took back from it (the rest: jobs assigned in the
  instant between snapshot and kill, which never started).

The quick test suite runs a short version of this (``tests/process/test_chaos.py``).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import IO

import attrs
import trio

from jobqueue import Client, Handler, Job, JobInfo
from jobqueue._events import Assigned, AttemptFailed, Event, Released
from jobqueue._prefetch import AUTO_CAP
from jobqueue._server import QueueService

#: The repository root: worker processes run here so they can import this module.
ROOT = Path(__file__).resolve().parents[2]
#: Where the handler (in the worker processes) writes its run records.
LOG_DIR_ENV = "JOBQUEUE_CHAOS_LOG_DIR"
HANDLER_SPEC = "tests.process.chaos:HANDLERS"

# -- the handler, run inside the worker processes ----------------------------------------

_log_fds: dict[str, int] = {}


def record_run(event: str, job_id: str) -> None:
    """Append ``event job_id pid`` to this process's log.

    One ``write`` on an ``O_APPEND`` descriptor per record, so a record is
    either wholly in the file or not at all, even when the process is killed.
    """
    directory = os.environ[LOG_DIR_ENV]
    fd = _log_fds.get(directory)
    if fd is None:
        path = os.path.join(directory, f"runs-{os.getpid()}.log")
        fd = _log_fds[directory] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, f"{event} {job_id} {os.getpid()}\n".encode())


async def chaos_job(job: Job) -> int:
    """Sleep for ``payload`` seconds between two log records; return this pid."""
    record_run("start", job.id)
    await trio.sleep(float(job.payload))
    record_run("end", job.id)
    return os.getpid()


HANDLERS: dict[str, Handler] = {"chaos": chaos_job}

# -- the driver ---------------------------------------------------------------------------


@attrs.define(eq=False)
class WorkerProcess:
    """One ``jobqueue worker`` process, named ``chaos-<slot>.<generation>``."""

    name: str
    process: trio.Process


@attrs.frozen
class Kill:
    """One SIGKILL: whom, when (trio's clock) and what ``stats`` said it held just before."""

    name: str
    pid: int
    at: float
    held: tuple[str, ...]


@attrs.define
class ChaosReport:
    """What a chaos run did and found; ``violations`` empty means every check held."""

    jobs: int
    kills: list[Kill]
    reassigned: int
    #: Jobs the victims held per their stats snapshots just before each kill...
    held_per_snapshots: int
    #: ...corrected with the victims' run logs and the final statuses...
    held_derived: int
    #: ...and per the server's own journal: what it took back from each victim.
    held_at_kill: int
    #: Jobs assigned to a victim between its snapshot and its kill, never started.
    raced: int
    #: Jobs given back unstarted by their holders (``prefetch="auto"`` batches).
    released: int
    wall_seconds: float
    runs_per_job: Counter[int]
    attempts_per_job: Counter[int]
    violations: list[str]
    #: When the run started, on trio's clock (``Kill.at`` is on it too).
    started_at: float = 0.0

    def summary(self) -> str:
        """A few human-readable lines."""
        runs = ", ".join(f"{n} run(s): {count}" for n, count in sorted(self.runs_per_job.items()))
        attempts = ", ".join(
            f"attempt {n}: {count}" for n, count in sorted(self.attempts_per_job.items())
        )
        lines = [
            f"jobs {self.jobs}, kills {len(self.kills)}, reassigned {self.reassigned}, "
            f"given back {self.released}, wall time {self.wall_seconds:.1f}s",
            f"held by the victims when killed: {self.held_at_kill} per the server's journal; "
            f"{self.held_per_snapshots} per stats snapshots, {self.held_derived} after "
            f"correcting with run logs and statuses, + {self.raced} assigned in between",
            f"runs per job: {runs}",
            f"final attempt per job: {attempts}",
        ]
        lines += [
            f"  kill at {kill.at - self.started_at:5.2f}s: {kill.name} (pid {kill.pid}), "
            f"stats said it held {list(kill.held)}"
            for kill in self.kills
        ]
        if self.violations:
            lines.append(f"{len(self.violations)} VIOLATION(S):")
            lines += [f"  {violation}" for violation in self.violations[:50]]
        else:
            lines.append("all checks passed")
        return "\n".join(lines)


def _open_output(path: Path) -> IO[bytes]:
    # A small local file, opened once per worker process: not worth a thread.
    return path.open("wb")


@attrs.define(eq=False)
class Fleet:
    """The worker processes: spawn, kill, and reap them all at the end."""

    address: tuple[str, int]
    concurrency: int
    log_dir: Path
    prefetch: str = "auto"
    live: dict[int, WorkerProcess] = attrs.field(factory=dict)  # slot -> process
    pid_names: dict[int, str] = attrs.field(factory=dict)
    _everyone: list[trio.Process] = attrs.field(factory=list)
    _generations: Counter[int] = attrs.field(factory=Counter)

    async def spawn(self, slot: int) -> WorkerProcess:
        """Start (or restart) the worker for ``slot``."""
        generation = self._generations[slot]
        self._generations[slot] += 1
        name = f"chaos-{slot}.{generation}"
        host, port = self.address
        argv = [
            sys.executable, "-m", "jobqueue", "worker",
            "--connect", f"{host}:{port}",
            "--concurrency", str(self.concurrency),
            "--handlers", HANDLER_SPEC,
            "--name", name,
            "--prefetch", self.prefetch,
        ]  # fmt: skip
        env = {**os.environ, LOG_DIR_ENV: str(self.log_dir)}
        with _open_output(self.log_dir / f"{name}.out") as output:
            process = await trio.lowlevel.open_process(
                argv, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT, env=env
            )
        self._everyone.append(process)
        self.pid_names[process.pid] = name
        worker = self.live[slot] = WorkerProcess(name, process)
        return worker

    async def kill(self, slot: int) -> int:
        """SIGKILL the worker in ``slot`` and wait for it to die; return its exit status."""
        process = self.live.pop(slot).process
        process.send_signal(signal.SIGKILL)
        return await process.wait()

    async def aclose(self) -> None:
        """Kill and reap every process this fleet started."""
        with trio.CancelScope(shield=True):
            for process in self._everyone:
                if process.returncode is None:
                    process.kill()
                await process.wait()


@attrs.frozen
class Loss:
    """The server took a job back from its holder: when, which job, from whom, why."""

    at: float
    job_id: str
    holder: str | None
    reason: str


@attrs.define(eq=False)
class Journal:
    """The server's own account of assignments and losses, from its event stream."""

    holders: dict[str, str | None] = attrs.field(factory=dict)
    losses: list[Loss] = attrs.field(factory=list)
    #: Jobs their holders gave back unstarted (``release_job``), as losses are kept.
    releases: list[Loss] = attrs.field(factory=list)

    def record(self, event: Event) -> None:
        """``QueueState.on_event``: called by the coordinator, so it must be quick."""
        if isinstance(event, Assigned):
            self.holders[event.job_id] = event.worker_name
        elif isinstance(event, AttemptFailed):
            holder = self.holders.get(event.job_id)
            self.losses.append(Loss(trio.current_time(), event.job_id, holder, event.reason))
        elif isinstance(event, Released):
            holder = self.holders.get(event.job_id)
            self.releases.append(Loss(trio.current_time(), event.job_id, holder, "released"))


@asynccontextmanager
async def _server(journal: Journal) -> AsyncIterator[tuple[str, int]]:
    """What ``serve_queue`` runs, assembled here to hear the queue's events."""
    # The default 30 s lease: no lease can expire during a run, so every
    # reassignment must come from a connection the kernel closed (a kill).
    service = QueueService()
    service.state.on_event = journal.record
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    host, port = listeners[0].socket.getsockname()[:2]
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        await nursery.start(trio.serve_listeners, service.handle_stream, listeners)
        yield str(host), int(port)
        nursery.cancel_scope.cancel()


def read_run_logs(log_dir: Path) -> list[tuple[str, str, int]]:
    """Every ``(event, job_id, pid)`` record the handlers wrote."""
    records = []
    for path in sorted(log_dir.glob("runs-*.log")):
        for line in path.read_text().splitlines():
            event, job_id, pid = line.split()
            records.append((event, job_id, int(pid)))
    return records


async def run_chaos(
    *,
    jobs: int = 3000,
    kills: int = 8,
    workers: int = 4,
    concurrency: int = 2,
    kill_every: tuple[float, float] = (1.0, 2.0),
    job_seconds: tuple[float, float] = (0.005, 0.05),
    seed: int | None = None,
    log_dir: Path,
    time_limit: float = 600.0,
    prefetch: str = "auto",
) -> ChaosReport:
    """Run the chaos scenario described in the module docstring; return its report.

    Raises:
        trio.TooSlowError: if the run takes longer than ``time_limit`` seconds.
    """
    # Separate streams, so the kills and the job durations each follow the seed.
    kill_rng, job_rng = random.Random(f"{seed}-kills"), random.Random(f"{seed}-jobs")
    started = time.monotonic()
    trio_started = trio.current_time()
    kill_log: list[Kill] = []
    journal = Journal()
    with trio.fail_after(time_limit):
        async with _server(journal) as address:
            fleet = Fleet(address, concurrency, log_dir, prefetch)
            try:
                async with (
                    Client.connect(*address, name="chaos-submitter") as client,
                    Client.connect(*address, name="chaos-waiter") as waiter,
                    Client.connect(*address, name="chaos-killer") as observer,
                ):
                    # Spread the submissions over the longest the kills can take, so
                    # jobs are still running at the last kill; the rest go in at once.
                    spacing = (kills * kill_every[1] * 1.1 + 1.0) / jobs
                    flow = _Flow()
                    for slot in range(workers):
                        await fleet.spawn(slot)
                    with trio.fail_after(60):
                        # Another process cannot tell us when it has connected.
                        while True:
                            stats = await observer.stats()
                            if stats.waiting_workers >= workers * concurrency:
                                break
                            await trio.sleep(0.02)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            _kill_at_random, fleet, observer, kill_rng, kills, kill_every, kill_log,
                            flow,
                        )  # fmt: skip
                        nursery.start_soon(
                            _submit, client, job_rng, jobs, job_seconds, spacing, flow
                        )
                        finals = await _wait_for_all(waiter, jobs, flow)
                    final_stats = await client.stats()
            finally:
                await fleet.aclose()
    wall = time.monotonic() - started
    records = read_run_logs(log_dir)

    violations: list[str] = []
    totals = final_stats.totals
    if len(kill_log) < kills:
        violations.append(
            f"only {len(kill_log)} of {kills} kills happened before the jobs ran out "
            f"(use more --jobs or a shorter --kill-every)"
        )
    expected_totals = {
        "submitted": jobs,
        "completed": jobs,
        "failed": 0,
        "retried": 0,
        "cancelled": 0,
        "expired": 0,
    }
    for key, value in expected_totals.items():
        if totals.get(key) != value:
            violations.append(f"totals[{key!r}] is {totals.get(key)}, expected {value}")
    if final_stats.jobs.get("pending") or final_stats.jobs.get("running"):
        violations.append(f"jobs left over at the end: {final_stats.jobs}")

    by_id = {info.job_id: info for info in finals}
    starts: Counter[str] = Counter()
    started_by: dict[int, set[str]] = {}
    ended_by: dict[int, set[str]] = {}
    for event, job_id, pid in records:
        if event == "start":
            starts[job_id] += 1
            started_by.setdefault(pid, set()).add(job_id)
        else:
            ended_by.setdefault(pid, set()).add(job_id)

    job_ids = [info.job_id for info in finals]
    for job_id in job_ids:
        info = by_id[job_id]
        if info.state != "completed":
            violations.append(f"{job_id} ended {info.state}: {info}")
            continue
        pid = info.result
        if not isinstance(pid, int) or job_id not in ended_by.get(pid, set()):
            violations.append(f"{job_id} completed by pid {pid}, whose log has no end of it")
        elif info.worker != fleet.pid_names.get(pid):
            violations.append(f"{job_id} recorded worker {info.worker}, but pid {pid} ran it")
        if not 1 <= starts[job_id] <= info.attempt:
            violations.append(
                f"{job_id} started {starts[job_id]} time(s) but was assigned {info.attempt}"
            )

    # Which jobs each victim held when it died. The server's journal says
    # exactly which jobs it took back from which worker; the brief's way (its
    # stats snapshot just before the kill, plus what its log shows it had
    # started, minus what it got completed in between) must agree, up to jobs
    # assigned in the instant between snapshot and kill that never started.
    victims = {kill.name: kill for kill in kill_log}
    taken_back: dict[str, set[str]] = {}
    losses_per_job: Counter[str] = Counter()
    for loss in journal.losses:
        losses_per_job[loss.job_id] += 1
        victim = victims.get(loss.holder or "")
        if loss.reason != "worker_lost" or victim is None:
            violations.append(
                f"{loss.job_id} was taken back from {loss.holder} ({loss.reason}), "
                f"which was never killed"
            )
        elif loss.at < victim.at:
            violations.append(f"{loss.job_id} was taken back from {victim.name} before its kill")
        else:
            taken_back.setdefault(victim.name, set()).add(loss.job_id)
    # What a victim gave back before its kill, it no longer held.
    released_by: dict[str, set[str]] = {}
    for release in journal.releases:
        victim = victims.get(release.holder or "")
        if victim is not None and release.at < victim.at:
            released_by.setdefault(victim.name, set()).add(release.job_id)
    most_held = concurrency * (AUTO_CAP if prefetch == "auto" else int(prefetch))
    derived = raced = 0
    for kill in kill_log:
        lost = taken_back.get(kill.name, set())
        completed_by_victim = {job_id for job_id, info in by_id.items() if info.result == kill.pid}
        held = (set(kill.held) | started_by.get(kill.pid, set())) - completed_by_victim
        held -= released_by.get(kill.name, set())
        if not held <= lost:
            violations.append(
                f"{kill.name} held {sorted(held - lost)} when killed, but the server never "
                f"took them back"
            )
        if len(lost) > most_held:
            violations.append(f"{kill.name} lost {sorted(lost)}: more than its slots can hold")
        derived += len(held)
        raced += len(lost - held)
    if len(journal.losses) != totals.get("reassigned"):
        violations.append(
            f"totals say {totals.get('reassigned')} reassignments, the journal "
            f"{len(journal.losses)}"
        )
    releases_per_job = Counter(release.job_id for release in journal.releases)
    for job_id, info in by_id.items():
        if info.attempt - 1 != losses_per_job[job_id] + releases_per_job[job_id]:
            violations.append(
                f"{job_id} is on attempt {info.attempt} after {losses_per_job[job_id]} "
                f"lost run(s) and {releases_per_job[job_id]} given back: every lost or "
                f"given-back run must be handed out again, once"
            )

    return ChaosReport(
        jobs=jobs,
        kills=kill_log,
        reassigned=totals.get("reassigned", -1),
        held_per_snapshots=sum(len(kill.held) for kill in kill_log),
        held_derived=derived,
        held_at_kill=sum(len(lost) for lost in taken_back.values()),
        raced=raced,
        wall_seconds=wall,
        released=len(journal.releases),
        runs_per_job=Counter(starts[job_id] for job_id in job_ids),
        attempts_per_job=Counter(info.attempt for info in finals),
        violations=violations,
        started_at=trio_started,
    )


@attrs.define(eq=False)
class _Flow:
    """Submitted and finished jobs, shared by the submitter, the waiter and the killer."""

    job_ids: list[str] = attrs.field(factory=list)
    kills_done: trio.Event = attrs.field(factory=trio.Event)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()


async def _submit(
    client: Client,
    rng: random.Random,
    jobs: int,
    job_seconds: tuple[float, float],
    spacing: float,
    flow: _Flow,
) -> None:
    """Submit job ``i`` at ``i * spacing`` seconds, or at once after the last kill."""
    start = trio.current_time()
    for index in range(jobs):
        with trio.move_on_at(start + index * spacing):
            await flow.kills_done.wait()
        # A budget no run of kills can spend: this run is about loss and
        # duplication, not about running out of attempts.
        job_id = await client.submit("chaos", rng.uniform(*job_seconds), max_attempts=1000)
        flow.job_ids.append(job_id)
        flow.changed()


async def _wait_for_all(client: Client, jobs: int, flow: _Flow) -> list[JobInfo]:
    finals = []
    for index in range(jobs):
        while index >= len(flow.job_ids):
            await flow.wait_changed()
        finals.append(await client.wait(flow.job_ids[index]))
    return finals


async def _kill_at_random(
    fleet: Fleet,
    observer: Client,
    rng: random.Random,
    kills: int,
    kill_every: tuple[float, float],
    kill_log: list[Kill],
    flow: _Flow,
) -> None:
    """Every ``kill_every`` seconds, SIGKILL a worker (one holding jobs if any) and replace it.

    Chaos is the point here, so the moments are random sleeps, not conditions.
    """
    for _ in range(kills):
        await trio.sleep(rng.uniform(*kill_every))
        stats = await observer.stats()
        holding: dict[str, list[str]] = {}
        for entry in stats.workers:
            holding.setdefault(entry["name"], []).extend(entry["jobs"])
        slots = sorted(fleet.live)
        busy = [slot for slot in slots if holding.get(fleet.live[slot].name)]
        slot = rng.choice(busy or slots)
        victim = fleet.live[slot]
        # No checkpoint between the snapshot above and the signal.
        kill = Kill(
            victim.name,
            victim.process.pid,
            trio.current_time(),
            tuple(holding.get(victim.name, ())),
        )
        status = await fleet.kill(slot)
        if status != -signal.SIGKILL:
            raise RuntimeError(f"{victim.name} exited {status}, not by SIGKILL")
        kill_log.append(kill)
        await fleet.spawn(slot)
    flow.kills_done.set()


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line; exit status 1 on any violation."""
    parser = argparse.ArgumentParser(prog="python -m tests.process.chaos", description=__doc__)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--kill-every",
        type=float,
        nargs=2,
        default=(1.0, 2.0),
        metavar=("MIN", "MAX"),
        help="seconds between kills, drawn uniformly (default: 1 2)",
    )
    parser.add_argument(
        "--job-seconds",
        type=float,
        nargs=2,
        default=(0.005, 0.05),
        metavar=("MIN", "MAX"),
        help="how long each job sleeps, drawn uniformly (default: 0.005 0.05)",
    )
    parser.add_argument(
        "--prefetch",
        default="auto",
        help="the workers' --prefetch: a number, or auto (default: auto, the workers' own)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-logs", action="store_true", help="keep the run logs")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    log_dir = Path(tempfile.mkdtemp(prefix="jobqueue-chaos-"))
    print(f"chaos: seed {seed}, logs in {log_dir}", flush=True)
    report = trio.run(
        partial(
            run_chaos,
            jobs=args.jobs,
            kills=args.kills,
            workers=args.workers,
            concurrency=args.concurrency,
            kill_every=tuple(args.kill_every),
            job_seconds=tuple(args.job_seconds),
            seed=seed,
            log_dir=log_dir,
            prefetch=args.prefetch,
        )
    )
    print(report.summary())
    if not args.keep_logs and not report.violations:
        for path in log_dir.iterdir():
            path.unlink()
        log_dir.rmdir()
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
