"""Crash run: SIGKILL a journaled server at random moments while real workers run jobs.

    python -m tests.process.journal_crash [--restarts 50] [--seed N] [--producers 3]

Run it from the repository root (the worker processes import their handler
from this module). The server is a real ``jobqueue serve --journal DIR``
process on a port chosen free once and reused for every restart; ``--workers``
real ``jobqueue worker`` processes run a handler that appends one line per
*completed run* (job id, attempt, pid) to a file of its own, just before it
returns. Producers in this process submit jobs, each with an idempotency key
of its own, and record every id the server acknowledged; a submit cut off by
a crash is sent again with the same key until it is acknowledged (the key
finds the job if the journal kept it; if not, it was never acknowledged and
is submitted anew). The server is SIGKILLed and restarted ``--restarts``
times at random moments; every ``--aim-every``-th kill (3rd by default) is
aimed at a compaction instead: the journal compacts often here
(``--compact-ratio 1.05``), and the kill comes within 20 ms of a compaction's
temporary file appearing, so some land while the snapshot is written, and
some just after its rename. Then the run waits for every job and checks,
exiting non-zero if any check fails:

- every acknowledged id exists and ended ``completed`` (none lost, none
  failed); one job per key: no acknowledged submit was applied twice;
- no job ran again after its completion was acknowledged: a job's runs all
  have an attempt at most its final one (a run with a lower attempt is one
  whose completion never became durable, because the server died first:
  at-least-once, counted as a duplicate), and its final attempt ran at least
  once. It may have run more than once: a job is handed to a worker before
  its ``Assigned`` event is on disk, so a server killed first replays the
  job as pending and hands it out again with the same attempt number (also
  a duplicate). That is never a run after an acknowledged completion: the
  journal is written in order, so the flush that made the completion durable
  made the assignment before it durable too, and a durable assignment's
  number is never handed out again. For the same reason a job may run
  whose submit was never acknowledged (handed out before the server died
  and before its submit was on disk): the restarted server must not know
  its id (the producer submits it again with its key, as a new job);
- the counts add up: ``totals.completed`` equals the jobs; every run
  recorded is a job's final run or a duplicate.
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
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import attrs
import trio

from jobqueue import Client, ConnectionLost, Handler, Job, RequestError
from tests.helpers import free_port, wait_until_accepting

#: The repository root: worker processes run here so they can import this module.
ROOT = Path(__file__).resolve().parents[2]
#: This module's name when imported (``__name__`` is ``__main__`` under ``python -m``).
MODULE = "tests.process.journal_crash"
#: Where the handler writes its runs (set for the worker processes).
RUNS_ENV = "JOBQUEUE_CRASH_RUNS"
#: The server's ``--compact-ratio``: low, so that compactions come often
#: enough for kills to be aimed at them.
COMPACT_RATIO = 1.05


async def record_run(job: Job) -> int:
    """Work a little, then record this run as completed (one line, one write)."""
    await trio.sleep(job.payload["seconds"])
    path = os.path.join(os.environ[RUNS_ENV], f"runs-{os.getpid()}.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{job.id} {job.attempt} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return job.attempt


HANDLERS: dict[str, Handler] = {"record": record_run}


@attrs.define
class Report:
    """What a run saw and found."""

    restarts: int = 0
    jobs: int = 0
    runs: int = 0
    duplicates: int = 0
    unrecorded: int = 0
    unacknowledged: int = 0
    resubmitted: int = 0
    compactions_seen: int = 0
    aimed: int = 0
    killed_compacting: int = 0
    seconds: float = 0.0
    problems: list[str] = attrs.field(factory=list)

    def __str__(self) -> str:
        lines = [
            f"restarts (SIGKILL)    {self.restarts}",
            f"jobs acknowledged     {self.jobs}",
            f"runs recorded         {self.runs}",
            f"  runs again (completion not yet durable when killed)  {self.duplicates}",
            f"    the same attempt again (assignment not yet durable)  {self.unrecorded}",
            f"    of a job never acknowledged (submit not yet durable)  {self.unacknowledged}",
            f"submits sent again    {self.resubmitted}",
            f"segments compacted    {self.compactions_seen}",
            f"kills aimed at a compaction  {self.aimed}, of them while one was written  "
            f"{self.killed_compacting}",
            f"wall time             {self.seconds:.1f}s",
        ]
        lines += [f"PROBLEM: {p}" for p in self.problems[:20]]
        lines.append("every check passed" if not self.problems else "FAILED")
        return "\n".join(lines)


def _open_log(path: Path) -> IO[bytes]:
    # A local file opened once per process started: not worth a thread.
    return open(path, "ab")


class CrashRun:
    """One run: a server process to kill and restart, workers, producers."""

    def __init__(
        self, workdir: Path, restarts: int, seed: int, workers: int, producers: int, aim_every: int
    ):
        self.workdir = workdir
        self.journal = workdir / "journal"
        self.runs = workdir / "runs"
        self.runs.mkdir(parents=True, exist_ok=True)
        self.restarts = restarts
        self.rng = random.Random(seed)
        self.n_workers = workers
        self.n_producers = producers
        self.aim_every = aim_every
        self.port = free_port()
        self.server: trio.Process | None = None
        self.workers: list[trio.Process] = []
        self.acknowledged: dict[str, str] = {}  # key -> job id
        self.report = Report()
        self.crashing = True
        self._log: IO[bytes] | None = None

    async def start_server(self) -> None:
        assert self._log is not None
        self.server = await trio.lowlevel.open_process(
            [
                *(sys.executable, "-m", "jobqueue", "serve", "--port", str(self.port)),
                *("--journal", str(self.journal), "--lease-timeout", "5"),
                *("--compact-ratio", str(COMPACT_RATIO)),
            ],
            cwd=ROOT,
            stdout=self._log,
            stderr=self._log,
        )
        await wait_until_accepting(self.port, self.server)

    async def kill_server(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGKILL)
        await self.server.wait()

    async def produce(self, index: int) -> None:
        number = 0
        while self.crashing:
            key = f"p{index}-{number}"
            seconds = round(self.rng.uniform(0.0, 0.03), 3)
            tries = 0
            while key not in self.acknowledged:
                tries += 1
                try:
                    async with Client.connect(
                        "127.0.0.1", self.port, name=f"producer-{index}"
                    ) as c:
                        while key not in self.acknowledged:
                            job_id = await c.submit("record", {"seconds": seconds}, key=key)
                            self.acknowledged[key] = job_id
                except (ConnectionLost, OSError):
                    await trio.sleep(0.05)  # the server is down: try again soon
            self.report.resubmitted += tries - 1
            number += 1
            await trio.sleep(self.rng.uniform(0.0, 0.01))

    def compacting(self) -> bool:
        """Whether a compaction's snapshot is being written (its temporary file exists)."""
        return any(name.endswith(".tmp") for name in os.listdir(self.journal))

    async def await_compaction(self) -> None:
        """Return within 20 ms of a compaction starting (or after 30 s without one)."""
        with trio.move_on_after(30):
            while not self.compacting():  # noqa: ASYNC110 (nothing can wake us: another process)
                await trio.sleep(0.001)
            await trio.sleep(self.rng.uniform(0.0, 0.02))

    async def crash_loop(self) -> None:
        for number in range(1, self.restarts + 1):
            aimed = self.aim_every > 0 and number % self.aim_every == 0
            if aimed:
                await self.await_compaction()
                self.report.aimed += 1
                self.report.killed_compacting += self.compacting()
            else:
                await trio.sleep(self.rng.uniform(0.2, 1.5))
            self.check_workers()
            await self.kill_server()
            self.report.restarts += 1
            await self.start_server()
        await trio.sleep(0.5)
        self.crashing = False

    def check_workers(self) -> None:
        for process in self.workers:
            if process.returncode is not None:
                raise RuntimeError(f"a worker exited ({process.returncode}): see workers.log")

    async def run(self) -> Report:
        started = time.monotonic()
        env = {**os.environ, RUNS_ENV: str(self.runs)}
        workers = self.workers
        with _open_log(self.workdir / "server.log") as log_file:
            self._log = log_file
            try:
                await self.start_server()
                with _open_log(self.workdir / "workers.log") as worker_log:
                    for index in range(self.n_workers):
                        workers.append(
                            await trio.lowlevel.open_process(
                                [
                                    *(sys.executable, "-m", "jobqueue", "worker"),
                                    *("--connect", f"127.0.0.1:{self.port}", "--concurrency", "4"),
                                    *("--handlers", f"{MODULE}:HANDLERS", "--name", f"w{index}"),
                                ],
                                cwd=ROOT,
                                env=env,
                                stdout=worker_log,
                                stderr=worker_log,
                            )
                        )
                async with trio.open_nursery() as nursery:
                    for index in range(self.n_producers):
                        nursery.start_soon(self.produce, index)
                    nursery.start_soon(self.crash_loop)
                await self.check()
            finally:
                for process in [*workers, self.server]:
                    if process is not None and process.returncode is None:
                        process.kill()
                with trio.CancelScope(shield=True):
                    for process in [*workers, self.server]:
                        if process is not None:
                            await process.wait()
        self.report.seconds = time.monotonic() - started
        return self.report

    async def check(self) -> None:
        report, problems = self.report, self.report.problems
        ids = set(self.acknowledged.values())
        report.jobs = len(self.acknowledged)
        if len(ids) != len(self.acknowledged):
            problems.append("two keys acknowledged with one job id")
        final: dict[str, int] = {}
        async with Client.connect("127.0.0.1", self.port, name="checker") as client:
            with trio.fail_after(300):
                for job_id in sorted(ids):
                    self.check_workers()
                    info = await client.wait(job_id)
                    if info.state != "completed":
                        problems.append(f"{job_id} ended {info.state}: {info.error}")
                    final[job_id] = info.attempt
            stats = await client.stats()
            runs: Counter[tuple[str, int]] = Counter()
            for path in self.runs.glob("runs-*.log"):
                for line in path.read_text().splitlines():
                    run_id, run_attempt, _ = line.split()
                    runs[run_id, int(run_attempt)] += 1
            for job_id in sorted({job_id for job_id, _ in runs} - ids):
                # Handed to a worker before its submit was on disk; the
                # server died first, so it must have forgotten the job.
                try:
                    info = await client.status(job_id)
                except RequestError as exc:
                    if exc.code != "unknown_job":
                        raise
                else:
                    problems.append(f"a run of {job_id} ({info.state}), never acknowledged")
        if stats.totals["completed"] != len(ids) or stats.jobs["completed"] != len(ids):
            problems.append(f"completed {stats.totals['completed']} != {len(ids)} jobs")
        if stats.totals["submitted"] != len(ids):
            problems.append(f"submitted {stats.totals['submitted']} != {len(ids)} keys")
        report.runs = sum(runs.values())
        for (job_id, attempt), count in runs.items():
            if job_id not in final:
                report.duplicates += count
                report.unacknowledged += count
            elif attempt > final[job_id]:
                problems.append(f"{job_id} ran again (attempt {attempt}) after completing")
            elif attempt == final[job_id]:
                # More than once: assignments not yet on disk when killed.
                report.duplicates += count - 1
                report.unrecorded += count - 1
            else:
                report.duplicates += count
        for job_id, attempt in final.items():
            if not runs[job_id, attempt]:
                problems.append(f"{job_id}: its completed run (attempt {attempt}) left no record")
        if report.runs != len(final) + report.duplicates:
            problems.append(f"{report.runs} runs != {len(final)} jobs + {report.duplicates}")
        log_text = (self.workdir / "server.log").read_text(errors="replace")
        report.compactions_seen = log_text.count("compacted to")


async def crash_run(
    workdir: Path,
    restarts: int,
    seed: int,
    workers: int = 2,
    producers: int = 3,
    aim_every: int = 3,
) -> Report:
    """Run the crash test in ``workdir``; see the module's docstring."""
    return await CrashRun(workdir, restarts, seed, workers, producers, aim_every).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.process.journal_crash")
    parser.add_argument("--restarts", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--producers", type=int, default=3)
    parser.add_argument(
        "--aim-every", type=int, default=3, help="aim every Nth kill at a compaction; 0: none"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    with tempfile.TemporaryDirectory(prefix="jobqueue-crash-") as workdir:
        print(f"seed {seed}; work directory {workdir}", flush=True)
        report = trio.run(
            crash_run,
            Path(workdir),
            args.restarts,
            seed,
            args.workers,
            args.producers,
            args.aim_every,
        )
        print(report)
        if report.problems:
            subprocess.run(["tail", "-n", "40", os.path.join(workdir, "server.log")], check=False)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
