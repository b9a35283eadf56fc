"""Run every peer benchmark in sequence and print one JSON line per result.

    python -m benchmarks.peers.run_all                    # all peers, all scenarios
    python -m benchmarks.peers.run_all --only beanstalkd --scenarios throughput,memory
    python -m benchmarks.peers.run_all --full             # beanstalkd memory at 1,000,000

From Python (this module and ``benchmarks.harness`` import only the standard
library, so any interpreter can import them; each peer runs in a subprocess of
the bench venv's Python)::

    from benchmarks.peers.run_all import run_peers
    results = run_peers(jobs=20000, concurrency=8, rate=500)

Each result is the dict a runner printed. A peer that cannot run here (server
binary or client package missing) gives ``{"system", "variant", "scenario",
"skipped": reason}``; a run that failed or timed out gives ``{..., "error":
reason}``. Human-readable progress goes to stderr; stdout carries only JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.harness import ROOT, add_shape_options

SCENARIOS = ("throughput", "latency", "producers", "memory", "failover")

#: The systems that run the ``producers`` scenario (many producers at once).
CROWD_SYSTEMS = ("taskiq", "dramatiq")

#: (system, module, variant, server binary, client modules that must import)
PEERS: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    ("taskiq", "taskiq_peer", "2proc", "redis-server", ("taskiq", "taskiq_redis", "redis")),
    ("dramatiq", "dramatiq_peer", "default", "redis-server", ("dramatiq", "redis")),
    ("dramatiq", "dramatiq_peer", "prefetch64", "redis-server", ("dramatiq", "redis")),
    ("saq", "saq_peer", "default", "redis-server", ("saq", "redis")),
    ("beanstalkd", "beanstalkd_peer", "8threads", "beanstalkd", ("greenstalk",)),
]


def default_python() -> str:
    """The bench venv's Python: $BENCH_VENV, else <repo>/.bench-venv, else this one."""
    venv = os.environ.get("BENCH_VENV") or os.path.join(ROOT, ".bench-venv")
    candidate = os.path.join(venv, "bin", "python")
    return candidate if os.path.exists(candidate) else sys.executable


def _missing(python: str, binary: str, modules: Sequence[str], cache: dict[str, str]) -> str:
    """Why this peer cannot run here, or '' if it can."""
    if shutil.which(binary) is None:
        return f"{binary} not installed (run benchmarks/peers/setup.sh)"
    key = ",".join(modules)
    if key not in cache:
        try:
            proc = subprocess.run(
                [python, "-c", f"import {key}"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
            )
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            cache[key] = (
                ""
                if proc.returncode == 0
                else f"{python} cannot import {key}: {last} (run benchmarks/peers/setup.sh)"
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            cache[key] = f"{python} cannot import {key}: {exc}"
    return cache[key]


def _run_one(python: str, module: str, args: Sequence[str], timeout: float) -> dict[str, Any]:
    cmd = [python, "-m", f"benchmarks.peers.{module}", *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s: {' '.join(cmd[1:])}"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                result: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            return result
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}", "stderr_tail": proc.stderr[-1500:]}


def run_peers(
    *,
    jobs: int = 20000,
    concurrency: int = 8,
    rate: float = 500.0,
    latency_duration: float = 5.0,
    memory_pending: int = 200_000,
    full: bool = False,
    body_bytes: int = 100,
    failover_trials: int = 20,
    producers: int = 8,
    scenarios: Sequence[str] = SCENARIOS,
    only: Sequence[str] | None = None,
    python: str | None = None,
    run_timeout: float = 600.0,
    echo: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the peer benchmarks in sequence and return their results.

    Args:
        jobs: Throughput: jobs per run.
        concurrency: Worker concurrency (8-way: see each runner's docstring).
        rate: Latency: steady submission rate, jobs/s.
        latency_duration: Latency: seconds of submission.
        memory_pending: beanstalkd memory: pending jobs (1,000,000 with ``full``).
        full: Use the full-size beanstalkd memory run.
        body_bytes: beanstalkd memory: body size of each job.
        failover_trials: beanstalkd failover: number of kills.
        producers: ``producers`` scenario (taskiq, Dramatiq): producer processes at once.
        scenarios: Which of throughput, latency, producers, memory, failover to run.
        only: Limit to these systems (e.g. ``["taskiq", "beanstalkd"]``).
        python: The interpreter with the peer clients (default: the bench venv's).
        run_timeout: Seconds before one runner is killed and reported as an error.
        echo: Called with each result as it arrives (e.g. to print it).

    Returns:
        One dict per run, in order; see the module docstring for skipped/error entries.
    """
    python = python or default_python()
    pending = 1_000_000 if full else memory_pending
    results: list[dict[str, Any]] = []
    cache: dict[str, str] = {}
    plan: list[tuple[str, str, str, str, tuple[str, ...], str, list[str]]] = []
    for system, module, variant, binary, modules in PEERS:
        if only and system not in only:
            continue
        shape = ["--concurrency", str(concurrency)]
        if system != "beanstalkd":
            shape += ["--variant", variant]
        # scenario -> (variant, the runner's arguments); memory and failover are beanstalkd's.
        runs = {
            "throughput": (variant, ["--jobs", str(jobs), *shape]),
            "latency": (
                variant,
                ["--rate", str(rate), "--duration", str(latency_duration), *shape],
            ),
        }
        if system in CROWD_SYSTEMS:
            runs["producers"] = (
                variant,
                ["--jobs", str(jobs), "--producers", str(producers), *shape],
            )
        if system == "beanstalkd":
            runs["memory"] = (
                "default",
                ["--pending", str(pending), "--body-bytes", str(body_bytes)],
            )
            runs["failover"] = ("default", ["--trials", str(failover_trials)])
        for scenario in SCENARIOS:
            if scenario in scenarios and scenario in runs:
                run_variant, args = runs[scenario]
                plan.append(
                    (system, module, run_variant, binary, modules, scenario,
                     ["--scenario", scenario, *args])
                )  # fmt: skip
    for system, module, variant, binary, modules, scenario, args in plan:
        head = {"system": system, "variant": variant, "scenario": scenario}
        reason = _missing(python, binary, modules, cache)
        if reason:
            print(f"run_all: skip {system}/{variant} {scenario}: {reason}", file=sys.stderr)
            result: dict[str, Any] = {**head, "skipped": reason}
        else:
            print(f"run_all: {system}/{variant} {scenario} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            result = _run_one(python, module, args, run_timeout)
            if "error" in result:
                print(
                    f"run_all: FAILED {system}/{variant} {scenario}: {result['error']}",
                    file=sys.stderr,
                )
                result = {**head, **result}
            print(f"run_all:   took {time.monotonic() - started:.1f}s", file=sys.stderr)
        results.append(result)
        if echo:
            echo(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shape_options(parser, "--latency-duration")
    parser.add_argument("--memory-pending", type=int, default=200_000)
    parser.add_argument("--full", action="store_true", help="beanstalkd memory at 1,000,000")
    parser.add_argument("--body-bytes", type=int, default=100)
    parser.add_argument("--failover-trials", type=int, default=20)
    parser.add_argument("--producers", type=int, default=8, help="producers scenario: how many")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--only", default="", help="comma-separated systems, e.g. taskiq,saq")
    parser.add_argument("--python", default=None, help="interpreter with the peer clients")
    parser.add_argument("--run-timeout", type=float, default=600.0)
    parser.add_argument("--json-out", default=None, help="also write all results to this file")
    args = parser.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    results = run_peers(
        jobs=args.jobs,
        concurrency=args.concurrency,
        rate=args.rate,
        latency_duration=args.latency_duration,
        memory_pending=args.memory_pending,
        full=args.full,
        body_bytes=args.body_bytes,
        failover_trials=args.failover_trials,
        producers=args.producers,
        scenarios=scenarios,
        only=[s for s in args.only.split(",") if s] or None,
        python=args.python,
        run_timeout=args.run_timeout,
        echo=lambda r: print(json.dumps(r), flush=True),
    )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
