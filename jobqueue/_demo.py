"""``jobqueue demo``: a server, worker processes and a job stream, one worker killed.

The demonstration README describes: it shows a job lost with a killed worker
going back to the queue and completing elsewhere. It uses the public pieces
only (``serve_queue``, ``Client``, ``jobqueue worker`` processes).

``jobqueue demo --crash-server`` shows the journal instead: the server runs
as a process of its own with ``--journal``, is killed with SIGKILL while
jobs run, and is started again on the same journal; every job still
completes.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import socket
import sys
import tempfile
import time
from functools import partial
from typing import BinaryIO, TextIO

import trio

from ._client import Client
from ._errors import JobQueueError
from ._replies import JobInfo, Stats
from ._server import serve_queue


def run_demo(args: argparse.Namespace) -> int:
    """``jobqueue demo``: run the demonstration; 0 when every job completed."""
    if getattr(args, "crash_server", False):
        return trio.run(_CrashDemo(args, sys.stdout).run)
    return trio.run(_Demo(args, sys.stdout).run)


def _open_log(path: str) -> BinaryIO:
    # A local file opened once per worker process: not worth a thread.
    return open(path, "wb")


class _Demo:
    """Server in this process, workers as real processes, one killed mid-job."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.n_workers: int = args.workers
        self.concurrency: int = args.concurrency
        self.n_jobs: int = args.jobs
        self.rng = random.Random(args.seed)
        self.out = out
        self.live = out.isatty()
        self.submitted: list[str] = []
        self.started = 0.0
        self.processes: dict[str, trio.Process] = {}
        self.killed: dict[str, list[str]] = {}
        self.half_submitted = trio.Event()
        self.all_submitted = trio.Event()

    def say(self, text: str) -> None:
        if self.live:
            self.out.write("\r\x1b[K")
        self.out.write(f"[{time.monotonic() - self.started:5.1f}s] {text}\n")
        self.out.flush()

    async def run(self) -> int:
        self.started = time.monotonic()
        logging.getLogger("jobqueue").setLevel(logging.WARNING)
        with tempfile.TemporaryDirectory(prefix="jobqueue-demo-") as logdir:
            async with trio.open_nursery() as nursery:
                host, port = await nursery.start(
                    partial(serve_queue, 0, host="127.0.0.1", lease_timeout=10.0)
                )
                self.say(f"queue server listening on {host}:{port} (in this process)")
                ok = await self._drive(host, port, logdir)
                nursery.cancel_scope.cancel()
        return 0 if ok else 1

    async def _drive(self, host: str, port: int, logdir: str) -> bool:
        try:
            await self._start_workers(host, port, logdir)
            async with (
                Client.connect(host, port, name="demo-submit") as submitter,
                Client.connect(host, port, name="demo-watch") as watcher,
                Client.connect(host, port, name="demo-wait") as waiter,
            ):
                await self._wait_for_workers(watcher)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._progress, watcher)
                    nursery.start_soon(self._submit_stream, submitter)
                    await self._kill_one_worker_mid_job(watcher)
                    results = await self._wait_all(waiter)
                    nursery.cancel_scope.cancel()
                stats = await submitter.stats()
            return self._summary(results, stats)
        finally:
            await self._kill_processes()

    async def _kill_processes(self) -> None:
        """Kill every process the demo started that still runs, and reap them all."""
        for process in self.processes.values():
            if process.returncode is None:
                process.kill()
        with trio.CancelScope(shield=True):
            for process in self.processes.values():
                await process.wait()

    async def _start_workers(self, host: str, port: int, logdir: str) -> None:
        for index in range(1, self.n_workers + 1):
            name = f"worker-{index}"
            with _open_log(os.path.join(logdir, f"{name}.log")) as log_file:
                self.processes[name] = await trio.lowlevel.open_process(
                    [
                        sys.executable,
                        "-m",
                        "jobqueue",
                        "worker",
                        "--connect",
                        f"{host}:{port}",
                        "--concurrency",
                        str(self.concurrency),
                        "--name",
                        name,
                    ],
                    stdout=log_file,
                    stderr=log_file,
                )
        pids = ", ".join(f"{n} pid {p.pid}" for n, p in self.processes.items())
        self.say(f"started {self.n_workers} worker processes x {self.concurrency} slots ({pids})")

    async def _wait_for_workers(self, watcher: Client) -> None:
        want = self.n_workers * self.concurrency
        with trio.fail_after(30):
            while (await watcher.stats()).waiting_workers < want:
                for name, process in self.processes.items():
                    if process.returncode is not None:
                        raise JobQueueError(f"{name} exited early ({process.returncode})")
                await trio.sleep(0.05)
        self.say(f"all {want} worker slots connected and waiting for jobs")

    async def _submit_stream(self, submitter: Client) -> None:
        for _ in range(self.n_jobs):
            seconds = round(self.rng.uniform(0.3, 1.5), 2)
            self.submitted.append(await submitter.submit("sleep", {"seconds": seconds}))
            if len(self.submitted) >= self.n_jobs // 2:
                self.half_submitted.set()
            await trio.sleep(0.05)
        self.all_submitted.set()

    async def _kill_one_worker_mid_job(self, watcher: Client) -> None:
        # Wait until the stream is well under way, then kill whichever worker
        # process holds the most jobs right now.
        await self.half_submitted.wait()
        held: dict[str, list[str]] = {}
        while not held:
            await trio.sleep(0.02)
            # One entry per connection; a worker process has one per slot.
            for entry in (await watcher.stats()).workers:
                if entry["name"] in self.processes:
                    held.setdefault(entry["name"], []).extend(entry["jobs"])
        victim = max(held, key=lambda name: len(held[name]))
        process = self.processes[victim]
        process.send_signal(signal.SIGKILL)
        await process.wait()
        self.killed[victim] = held[victim]
        self.say(
            f"killed {victim} (pid {process.pid}) with SIGKILL while it ran "
            f"{', '.join(held[victim])}"
        )

    async def _progress(self, watcher: Client) -> None:
        while True:
            stats = await watcher.stats()
            jobs, totals = stats.jobs, stats.totals
            line = (
                f"[{time.monotonic() - self.started:5.1f}s] submitted {totals['submitted']:>3}/"
                f"{self.n_jobs}  pending {jobs['pending']:>3}  running {jobs['running']:>2}  "
                f"completed {jobs['completed']:>3}  reassigned {totals['reassigned']}"
            )
            if self.live:
                self.out.write("\r\x1b[K" + line)
                self.out.flush()
                await trio.sleep(0.1)
            else:
                self.out.write(line + "\n")
                self.out.flush()
                await trio.sleep(1.0)

    async def _wait_all(self, waiter: Client) -> list[JobInfo]:
        await self.all_submitted.wait()
        with trio.fail_after(120):
            return [await waiter.wait(job_id) for job_id in self.submitted]

    def _summary(self, results: list[JobInfo], stats: Stats) -> bool:
        victims = ", ".join(self.killed)
        return self._report(
            results,
            f"lost when {victims} was killed",
            f"  jobs reassigned  {stats.totals['reassigned']}\n"
            f"  workers killed   {len(self.killed)} ({victims})\n",
        )

    def _report(self, results: list[JobInfo], rerun_because: str, what_happened: str) -> bool:
        """Say which jobs ran again and why, then the summary; ``True`` if all completed."""
        if self.live:
            self.out.write("\r\x1b[K")
        self.say("every submitted job has finished")
        for info in results:
            # (A run given back unstarted takes a number but did not run.)
            if info.attempts_spent > 1:
                self.say(
                    f"  job {info.job_id}: {rerun_because}, then {info.state} "
                    f"on attempt {info.attempts_spent} by {info.worker}"
                )
        completed = sum(info.state == "completed" for info in results)
        self.out.write(
            "\nsummary\n"
            f"  jobs submitted   {len(self.submitted)}\n"
            f"  jobs completed   {completed}\n"
            f"{what_happened}"
            f"  wall time        {time.monotonic() - self.started:.1f}s\n"
        )
        ok = completed == len(self.submitted)
        self.out.write(
            "every job completed\n" if ok else f"{len(results) - completed} jobs did not complete\n"
        )
        self.out.flush()
        return ok


class _CrashDemo(_Demo):
    """The server as a process of its own with a journal, killed and restarted mid-run."""

    server: trio.Process
    journal = ""
    server_log = ""
    starts = 0

    async def run(self) -> int:
        self.started = time.monotonic()
        logging.getLogger("jobqueue").setLevel(logging.WARNING)
        with tempfile.TemporaryDirectory(prefix="jobqueue-demo-") as workdir:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            self.journal = os.path.join(workdir, "journal")
            self.server_log = os.path.join(workdir, "server.log")
            server = await self._start_server(port)
            try:
                ok = await self._drive_crash(port, workdir)
            finally:
                server = self.server
                if server.returncode is None:
                    server.terminate()
                with trio.CancelScope(shield=True):
                    await server.wait()
        return 0 if ok else 1

    async def _start_server(self, port: int) -> trio.Process:
        self.starts += 1
        with _open_log(f"{self.server_log}.{self.starts}") as log_file:
            self.server = await trio.lowlevel.open_process(
                [
                    *(sys.executable, "-m", "jobqueue", "serve", "--port", str(port)),
                    *("--journal", self.journal, "--lease-timeout", "10"),
                ],
                stdout=log_file,
                stderr=log_file,
            )
        with trio.fail_after(30):
            while True:
                if self.server.returncode is not None:
                    raise JobQueueError(f"the server exited ({self.server.returncode})")
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.05)
                else:
                    await stream.aclose()
                    break
        self.say(
            f"queue server pid {self.server.pid} listening on 127.0.0.1:{port} "
            f"with --journal {self.journal}"
        )
        return self.server

    async def _drive_crash(self, port: int, workdir: str) -> bool:
        try:
            await self._start_workers("127.0.0.1", port, workdir)
            async with Client.connect("127.0.0.1", port, name="demo-submit") as client:
                await self._wait_for_workers(client)
                for _ in range(self.n_jobs):
                    seconds = round(self.rng.uniform(0.3, 1.5), 2)
                    self.submitted.append(await client.submit("sleep", {"seconds": seconds}))
                self.say(f"submitted {self.n_jobs} jobs; each acknowledged once on disk")
                with trio.fail_after(60):
                    while True:
                        stats = await client.stats()
                        if stats.jobs["completed"] >= self.n_jobs // 4 and stats.jobs["running"]:
                            break
                        await trio.sleep(0.05)
            jobs = stats.jobs
            self.server.send_signal(signal.SIGKILL)
            await self.server.wait()
            self.say(
                f"killed the server (pid {self.server.pid}) with SIGKILL: {jobs['completed']} "
                f"completed, {jobs['running']} running, {jobs['pending']} pending"
            )
            await self._start_server(port)
            async with Client.connect("127.0.0.1", port, name="demo-wait") as waiter:
                stats = await waiter.stats()
                self.say(
                    f"restarted on the same journal: {stats.jobs['completed']} completed, "
                    f"{stats.jobs['pending']} pending (the runs cut short are back in line)"
                )
                with trio.fail_after(120):
                    results = [await waiter.wait(job_id) for job_id in self.submitted]
                stats = await waiter.stats()
            return self._crash_summary(results, stats)
        finally:
            await self._kill_processes()

    def _crash_summary(self, results: list[JobInfo], stats: Stats) -> bool:
        return self._report(
            results,
            "its run was cut short by the crash",
            "  server killed    1 (SIGKILL), restarted on its journal\n",
        )
