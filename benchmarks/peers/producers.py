"""Many producers at once: processes, each with its own client, let go together.

The ``producers`` scenario measures what a server takes from many web
processes: ``count`` producer processes (8 by default), each connected
through its system's own client, submit their share of the jobs one request
at a time, all at once, while the same workers as the ``throughput`` shape
run them.

The parent (:func:`crowd`) starts the producers; each connects, prints
``ready`` and waits on its standard input; once all are ready the parent
starts its clocks and writes ``go`` to every one. Each producer prints one
JSON line with the CPU it spent after ``go`` and exits. Producer processes
run this module::

    python -m benchmarks.peers.producers MODULE:FUNCTION ADDRESS JOBS

where ``FUNCTION(address, jobs, go)`` connects, calls ``go()`` (which
blocks until the parent lets every producer go) and submits ``jobs`` jobs.

Only the standard library is imported here, like ``run_all``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

from benchmarks.harness import ROOT

#: How many producers the scenario runs unless told otherwise.
PRODUCERS = 8

#: What a producer function is given: the address, its jobs, and the start barrier.
Produce = Callable[[str, int, Callable[[], None]], None]


def shares(jobs: int, count: int) -> list[int]:
    """``jobs`` split over ``count`` producers, as evenly as whole jobs allow."""
    base, extra = divmod(jobs, count)
    return [base + (1 if index < extra else 0) for index in range(count)]


class Crowd:
    """Producer processes that have all connected and wait for :meth:`go`."""

    def __init__(self, procs: Sequence[subprocess.Popen[str]], logs: Sequence[str]) -> None:
        self._procs = procs
        self._logs = logs

    def go(self) -> None:
        """Let every producer start submitting."""
        for proc in self._procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            proc.stdin.close()

    def finish(self, timeout: float) -> tuple[float, float]:
        """Wait for every producer to exit.

        Returns:
            ``perf_counter()`` when the last one had exited, and the CPU
            seconds they spent after ``go``, summed.

        Raises:
            RuntimeError: a producer failed (its stderr's tail is in the message).
        """
        deadline = time.monotonic() + timeout
        cpu = 0.0
        for proc, log in zip(self._procs, self._logs, strict=True):
            # A producer writes one short line after "ready": the pipe never fills.
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            assert proc.stdout is not None
            out = proc.stdout.read()
            report = [line for line in out.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not report:
                raise RuntimeError(f"a producer failed (exit {proc.returncode}): {_tail(log)}")
            cpu += float(json.loads(report[-1])["cpu_s"])
        return time.perf_counter(), cpu


def _tail(path: str) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return " | ".join(f.read().strip().splitlines()[-5:])
    return "no stderr"


@contextlib.contextmanager
def crowd(
    target: str,
    address: str,
    jobs: int,
    count: int = PRODUCERS,
    *,
    python: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[Crowd]:
    """``count`` producer processes running ``target``, connected and ready to go.

    Args:
        target: ``module:function``, a :data:`Produce` function.
        address: What the function connects to (a URL, or ``host:port``).
        jobs: Jobs in all, split over the producers by :func:`shares`.
        count: How many producers.
        python: Their interpreter (default: this one).
        env: Added to their environment.
        timeout: Seconds for all of them to connect.

    Raises:
        RuntimeError: a producer exited or did not say ``ready`` in time.
    """
    procs: list[subprocess.Popen[str]] = []
    logs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-producers-") as tmp:
        try:
            for index, share in enumerate(shares(jobs, count)):
                log = os.path.join(tmp, f"producer{index}.log")
                logs.append(log)
                with open(log, "w") as stderr:
                    procs.append(
                        subprocess.Popen(
                            [python or sys.executable, "-m", __name__, target, address, str(share)],
                            cwd=ROOT,
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            stderr=stderr,
                            text=True,
                            env={**os.environ, **(env or {})},
                        )
                    )
            deadline = time.monotonic() + timeout
            for proc, log in zip(procs, logs, strict=True):
                assert proc.stdout is not None
                # readline blocks; a producer that dies closes stdout, so it returns.
                line = proc.stdout.readline().strip()
                if line != "ready" or time.monotonic() > deadline:
                    raise RuntimeError(f"a producer did not get ready ({line!r}): {_tail(log)}")
            yield Crowd(procs, logs)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()


def main(argv: Sequence[str]) -> None:
    """A producer process: run ``MODULE:FUNCTION ADDRESS JOBS``; report CPU after ``go``."""
    target, address, jobs = argv
    module, _, name = target.partition(":")
    produce: Produce = getattr(importlib.import_module(module), name)
    started: list[float] = []

    def go() -> None:
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("the parent went away before go")
        started.append(time.process_time())

    produce(address, int(jobs), go)
    if not started:
        raise SystemExit(f"{target} never called go()")
    print(json.dumps({"cpu_s": time.process_time() - started[0], "jobs": int(jobs)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
