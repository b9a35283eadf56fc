"""The ``jobqueue`` command line (also ``python -m jobqueue``)."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import ssl
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ._cli_dashboard import add_dashboard_command
from ._cli_options import (
    DEFAULT_PORT,
    HelpFormatter,
    Parser,
    UsageError,
    add_connect,
    add_payload,
    add_record_options,
    add_token,
    connect_options,
    host_option,
    nonempty,
    payload_option,
    port_number,
    positive_float,
    positive_int,
    prefetch,
    record_values,
)
from ._cli_options import TOKEN_ENV as TOKEN_ENV
from ._cli_options import parse_address as parse_address
from ._cli_output import (
    OUTPUT_CLOSED,
    OutputClosed,
    closable_output,
    escaping_output,
    only_output_closed,
)
from ._cli_schedule import add_serve_options, serve_schedules
from ._cli_schedule import register as register_schedule_commands
from ._cli_worker import DEFAULT_DRAIN_TIMEOUT, run_worker
from ._codec import encode_request
from ._config import OptionError, QueueRules, ServerConfig
from ._errors import JobQueueError, ProtocolError, reason
from ._interrupts import lone_interrupt
from ._job_text import describe
from ._limits import JOB_STATES, MAX_BATCH, MAX_FETCH, MAX_LINE_BYTES
from ._logformat import add_log_format_option, configure_logging
from ._replies import JobInfo, JobList, Stats
from ._requests import SubmitJob, SubmitJobs
from ._routing import waiting_lines, warn_if_unserved
from ._version import __version__
from ._worker import DEFAULT_JOB_TIMEOUT, Handler, Worker

# The client, the server and the journal are imported by the commands that
# use them: ``jobqueue worker`` loads none of them, as a smaller worker
# process closes its connections sooner when killed (docs/performance.md).
if TYPE_CHECKING:
    from ._client import Client


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        print(f"jobqueue: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        verbose=args.verbose,
        log_format=getattr(args, "log_format", "text"),
        level=getattr(args, "log_level", "info"),
    )
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        with escaping_output(), closable_output():
            return command(args)
    except OutputClosed:
        # Its reader went away (``jobqueue stats | head -1``): not an error
        # to report, but the output is cut short, as a shell says of a
        # process SIGPIPE killed.
        return OUTPUT_CLOSED
    except UsageError as exc:
        print(f"jobqueue: {exc}", file=sys.stderr)
        return 2
    except JobQueueError as exc:
        print(f"jobqueue: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"jobqueue: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except BaseException as exc:
        # trio.run re-raises Ctrl-C from inside a nursery wrapped in a
        # BaseExceptionGroup; either way it is a request to stop, not a crash.
        if lone_interrupt(exc) is not None:
            return 130
        if only_output_closed(exc):
            return OUTPUT_CLOSED
        raise


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="jobqueue",
        description="A distributed job queue built on trio.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    # -v works after the command too. The command's copy has no default, so
    # it cannot undo a -v given before the command.
    verbose = Parser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug detail"
    )
    parser.add_argument("--version", action="version", version=f"jobqueue {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[verbose],
            formatter_class=HelpFormatter,
        )

    serve = command("serve", "run the queue server")
    serve.add_argument(
        "--host",
        type=host_option,
        default="127.0.0.1",
        help="address to bind; the default serves this machine only",
    )
    serve.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help="TCP port; 0 picks a free one"
    )
    for record in (QueueRules, ServerConfig):
        add_record_options(serve, record)
    add_token(serve, "require this shared secret in every connection's hello")
    serve.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve TLS with this certificate (PEM) (default: plain TCP)",
    )
    serve.add_argument(
        "--tls-key", metavar="FILE", help="the certificate's private key (default: in --tls-cert)"
    )
    add_log_format_option(serve)
    add_serve_options(serve)
    serve.set_defaults(command=_serve)

    worker = command("worker", "run jobs from the queue")
    add_connect(worker)
    worker.add_argument(
        "--concurrency", type=positive_int, default=1, metavar="N", help="jobs run at once"
    )
    worker.add_argument(
        "--handlers",
        metavar="MODULE:ATTR",
        help="a dict (or other mapping) of job name -> handler (async def, def, or in_process), "
        "added to built-in 'sleep' (default: only 'sleep')",
    )
    worker.add_argument("--name", help="how the server names this worker (default: host:pid)")
    worker.add_argument(
        "--queues",
        default="default",
        metavar="Q1,Q2",
        help="comma-separated queues to take jobs from",
    )
    worker.add_argument(
        "--job-timeout",
        type=positive_float,
        default=DEFAULT_JOB_TIMEOUT,
        metavar="SECONDS",
        help="cancel and fail a handler running longer",
    )
    worker.add_argument(
        "--prefetch",
        type=prefetch,
        default="auto",
        metavar="N|auto",
        help=f"jobs each slot takes and reports per round trip, 1 to {MAX_FETCH}, or auto "
        "(more while a backlog of short jobs lasts); they run one after another",
    )
    worker.add_argument(
        "--drain-timeout",
        type=positive_float,
        default=DEFAULT_DRAIN_TIMEOUT,
        metavar="SECONDS",
        help="on SIGTERM or the first Ctrl-C, how long running jobs may take to finish "
        "before they are stopped and given back; a second signal stops at once",
    )
    add_log_format_option(worker)
    worker.set_defaults(command=_worker)

    submit = command("submit", "submit jobs and print their ids")
    add_connect(submit)
    submit.add_argument("name", metavar="NAME", help="handler name, e.g. sleep")
    add_payload(submit, "job payload")
    submit.add_argument(
        "--count",
        type=_count,
        default=1,
        metavar="N",
        help=f"how many jobs to submit, at most {MAX_COUNT:,}; sent in batches the server "
        "accepts, so a refused batch leaves the ones before it submitted",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="print the ids to standard error, then wait for the jobs to finish and print "
        "their results",
    )
    submit.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="with --wait: give up waiting after this long (exit status 3)",
    )
    submit.add_argument("--queue", default="default", help="queue to submit to")
    submit.add_argument("--priority", type=int, default=0, help="higher runs first")
    submit.add_argument(
        "--delay", type=float, default=0.0, metavar="SECONDS", help="run this much later"
    )
    submit.add_argument("--key", help="idempotency key (with --count N: KEY-1 ... KEY-N)")
    submit.add_argument(
        "--max-attempts",
        type=positive_int,
        metavar="N",
        help="runs each job may take (default: the server's)",
    )
    submit.set_defaults(command=_submit)

    status = command("status", "print one job's status: its state, times, result or error")
    add_connect(status)
    status.add_argument("job_id", type=nonempty, metavar="JOB_ID")
    status.add_argument("--payload", action="store_true", help="show the job's payload too")
    status.add_argument("--json", action="store_true", help="print the reply as JSON")
    status.set_defaults(command=_status)

    for action, help_text in (
        ("cancel", "cancel a job (a running one is stopped on its worker)"),
        ("retry", "requeue a failed job with a fresh budget of attempts"),
        ("delete", "forget a finished job"),
    ):
        act = command(action, help_text)
        add_connect(act)
        act.add_argument("job_id", type=nonempty, metavar="JOB_ID")
        act.set_defaults(command=partial(_act, action))

    listing = command("list", "list jobs in one state, oldest first")
    add_connect(listing)
    listing.add_argument("--state", default="failed", choices=JOB_STATES, help="the state")
    listing.add_argument("--queue", help="only this queue (default: all)")
    listing.add_argument(
        "--limit", type=positive_int, default=50, metavar="N", help="most jobs to list"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per job")
    listing.set_defaults(command=_list)

    stats = command("stats", "print queue statistics")
    add_connect(stats)
    stats.add_argument("--json", action="store_true", help="print the raw stats reply")
    stats.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    stats.add_argument(
        "--interval",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="time between refreshes with --watch",
    )
    stats.set_defaults(command=_stats)

    register_schedule_commands(command, add_connect, _client)
    _add_demo_command(command)
    add_dashboard_command(command)
    _add_journal_commands(command)
    return parser


def _add_journal_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add ``jobqueue journal check|repair DIR`` (``command`` makes a subcommand's parser)."""
    journal = command("journal", "check or repair a journal directory (with its server stopped)")
    actions = journal.add_subparsers(required=True, metavar="ACTION")
    for name, text in (
        ("check", "report segments, records, torn tail and damage; exit 1 if damaged"),
        ("repair", "keep the records before the first damage, move the rest aside"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("directory", metavar="DIR", help="the journal directory")
        action.set_defaults(command=partial(_journal, name))


def _journal(action: str, args: argparse.Namespace) -> int:
    from . import _journal_cli

    run: Callable[[argparse.Namespace], int] = getattr(_journal_cli, action)
    return run(args)


def _add_demo_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add ``jobqueue demo`` (``command`` makes a subcommand's parser)."""
    demo = command("demo", "run a server, worker processes and a job stream; kill a worker mid-job")
    demo.add_argument(
        "--workers",
        type=positive_int,
        default=3,
        metavar="N",
        help="worker processes, at least 2 unless --crash-server (one is killed)",
    )
    demo.add_argument(
        "--concurrency", type=positive_int, default=2, metavar="N", help="slots per worker"
    )
    demo.add_argument("--jobs", type=positive_int, default=30, metavar="N", help="jobs to run")
    demo.add_argument("--seed", type=int, help="seed for job durations (default: random)")
    demo.add_argument(
        "--crash-server",
        action="store_true",
        help="kill the server (with a journal) mid-run instead; restart it",
    )
    demo.set_defaults(command=_demo)


def _demo(args: argparse.Namespace) -> int:
    if args.workers < 2 and not args.crash_server:
        # With its only worker killed, nobody would run the jobs: it waited for ever.
        raise UsageError(
            "demo --workers must be at least 2: it kills one worker mid-job, and the others "
            "finish its jobs (or use --crash-server, which kills the server instead)"
        )
    from ._demo import run_demo

    return run_demo(args)


def _client(
    args: argparse.Namespace, name: str = "jobqueue-cli"
) -> AbstractAsyncContextManager[Client]:
    from ._client import Client

    return Client.connect(**connect_options(args), name=name)


# -- serve / worker ------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from ._collector import freezing_long_lived
    from ._journal import JournalError
    from ._server import serve_queue, stop_on_sigterm

    if args.tls_key and not args.tls_cert:
        raise UsageError("--tls-key needs --tls-cert")
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load --tls-cert/--tls-key: {exc}") from None
    try:
        config = ServerConfig(
            rules=QueueRules(**record_values(args, QueueRules)),
            token=args.token,
            ssl_context=context,
            schedules=serve_schedules(args),
            **record_values(args, ServerConfig),
        )
    except OptionError as exc:
        # The options parsed above were checked already: only --token is left.
        raise UsageError(f"--{exc.name.replace('_', '-')} {exc.rule}") from None
    try:
        # The process is the server's alone: it may freeze the heap (see _collector).
        with freezing_long_lived():
            trio.run(
                stop_on_sigterm, partial(serve_queue, args.port, host=args.host, config=config)
            )
    except JournalError as exc:
        raise JobQueueError(str(exc)) from exc
    except OSError as exc:
        raise JobQueueError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from exc
    except UnicodeError as exc:
        # A name --host let through (the stdlib's IDNA takes it) that trio's
        # stricter IDNA 2008 refuses: "☃.example".
        raise JobQueueError(f"cannot listen on {args.host}:{args.port}: {reason(exc)}") from exc
    return 0  # stopped by SIGTERM (or a test's stub returned)


def load_handlers(spec: str) -> dict[str, Handler]:
    """Import ``module:attr`` and return it as a handler mapping.

    The current directory is importable, as it is for ``python -m``.

    Raises:
        UsageError: if it cannot be imported or is not a mapping of callables.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"bad --handlers {spec!r}: expected MODULE:ATTR, e.g. myapp.jobs:HANDLERS")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing the user's module
        raise UsageError(
            f"cannot import {module_name!r} for --handlers: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        handlers = getattr(module, attr)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(handlers, Mapping) or not all(
        isinstance(name, str) and callable(fn) for name, fn in handlers.items()
    ):
        raise UsageError(f"{spec} must be a mapping of job name -> handler function")
    return dict(handlers)


def _worker(args: argparse.Namespace) -> int:
    connection = connect_options(args)
    handlers = load_handlers(args.handlers) if args.handlers else {}
    queues = tuple(q.strip() for q in args.queues.split(",") if q.strip())
    if not queues:
        raise UsageError("--queues needs at least one queue name")
    try:
        worker = Worker(
            **connection,
            handlers=handlers,
            concurrency=args.concurrency,
            queues=queues,
            job_timeout=args.job_timeout,
            prefetch=args.prefetch,
        )
        if args.name:
            worker.name = args.name
    except ValueError as exc:  # a name the server would refuse
        raise UsageError(str(exc)) from None
    except ImportError as exc:  # an in_process handler without jobqueue[processes]
        raise JobQueueError(str(exc)) from None
    return run_worker(worker, args.drain_timeout)


# -- submit / status / stats ---------------------------------------------------


def _submit(args: argparse.Namespace) -> int:
    connect_options(args)  # a bad address is a usage error before anything else
    if args.timeout is not None and not args.wait:
        raise UsageError("--timeout needs --wait: without it, submit does not wait")
    payload = payload_option(args.payload)

    def job(index: int) -> dict[str, Any]:
        job: dict[str, Any] = {"name": args.name, "payload": payload}
        job.update(queue=args.queue, priority=args.priority, delay=args.delay)
        if args.key is not None:
            job["key"] = args.key if args.count == 1 else f"{args.key}-{index}"
        if args.max_attempts is not None:
            job["max_attempts"] = args.max_attempts
        return job

    # The jobs differ only in their keys, and the last has the longest.
    largest = job(args.count)
    try:
        # Checked here, by the server's rules, before connecting: a bad option
        # is a usage error even when no server is running.
        SubmitJob.from_wire({**largest, "type": "submit"})
    except ProtocolError as exc:
        raise UsageError(f"bad job: {exc.message}") from None
    size = _batch_size(largest)

    async def run() -> int:
        async with _client(args) as client:
            job_ids: list[str] = []
            for start in range(1, args.count + 1, size):
                indexes = range(start, min(start + size, args.count + 1))
                try:
                    batch = await client.submit_many([job(index) for index in indexes])
                except JobQueueError as exc:
                    if not job_ids:
                        raise
                    raise JobQueueError(
                        f"{exc} ({len(job_ids)} of {args.count} jobs were submitted before "
                        "that; their ids are printed above)"
                    ) from exc
                if not job_ids:
                    await warn_if_unserved(client, args.name)
                job_ids += batch
                # As each batch is accepted: whatever stops the command
                # later (a refused batch, Ctrl-C, --timeout), the ids are out.
                # With --wait, standard output keeps one JSON line per job.
                for job_id in batch:
                    if args.wait:
                        print(f"submitted {job_id}", file=sys.stderr, flush=True)
                    else:
                        print(job_id, flush=True)
            if not args.wait:
                return 0
            failures = 0
            done = 0
            with trio.move_on_after(math.inf if args.timeout is None else args.timeout):
                for job_id in job_ids:
                    info = await client.wait(job_id)
                    failures += info.state != "completed"
                    print(_json(_status_dict(info)), flush=True)
                    done += 1
                return 1 if failures else 0
            left = job_ids[done:]
            states = [(await client.status(job_id)).state for job_id in left[:5]]
            named = ", ".join(
                f"{job_id} ({state})" for job_id, state in zip(left[:5], states, strict=True)
            )
            more = f" and {len(left) - 5} more" if len(left) > 5 else ""
            print(
                f"jobqueue: {len(left)} of {len(job_ids)} jobs did not finish within "
                f"{args.timeout:g}s: {named}{more}",
                file=sys.stderr,
            )
            return TIMED_OUT

    return trio.run(run)


#: ``submit --wait``'s exit status when ``--timeout`` ran out (1: a job failed).
TIMED_OUT = 3

#: Most jobs one ``submit --count`` may ask for. It goes in requests of at
#: most ``MAX_BATCH`` jobs each, but keeps every id to print or wait for.
MAX_COUNT = 1_000_000


def _batch_size(largest: dict[str, Any]) -> int:
    """How many jobs no larger than ``largest`` one ``submit_jobs`` request may carry.

    The server takes at most ``MAX_BATCH`` jobs a request, and a request
    line of at most ``MAX_LINE_BYTES``: jobs with a large payload fit fewer
    to a line, though each fits alone (``SubmitJob`` checked its payload).
    """
    one, two = (
        len(encode_request(SubmitJobs.from_wire({"type": "submit_jobs", "jobs": [largest] * n})))
        for n in (1, 2)
    )
    each = two - one  # one more job, and its comma
    # A line of n jobs is one - 1 + (n - 1) * each bytes, without its newline.
    return max(1, min(MAX_BATCH, 1 + (MAX_LINE_BYTES + 1 - one) // each))


def _count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_COUNT}, not {value}")
    return value


def _status(args: argparse.Namespace) -> int:

    async def run() -> JobInfo:
        async with _client(args) as client:
            return await client.status(args.job_id, payload=args.payload)

    info = trio.run(run)
    print(_json(_status_dict(info)) if args.json else describe(info, time.time()))
    return 0


def _act(action: str, args: argparse.Namespace) -> int:

    async def run() -> JobInfo | None:
        async with _client(args) as client:
            if action == "cancel":
                return await client.cancel(args.job_id)
            if action == "retry":
                return await client.retry(args.job_id)
            await client.delete(args.job_id)
            return None

    info = trio.run(run)
    print(_json(_status_dict(info)) if info is not None else f"deleted {args.job_id}")
    return 0


def _list(args: argparse.Namespace) -> int:

    async def run() -> JobList:
        async with _client(args) as client:
            return await client.list_jobs(args.state, queue=args.queue, limit=args.limit)

    listing = trio.run(run)
    for info in listing.jobs:
        if args.json:
            print(_json(_status_dict(info)))
        else:
            error = f"  {info.error['type']}: {info.error['message']}" if info.error else ""
            print(f"{info.job_id}  {info.name}  queue={info.queue}  attempt={info.attempt}{error}")
    if listing.truncated:
        print(f"(more than {args.limit}; use --limit to see more)", file=sys.stderr)
    return 0


def _stats(args: argparse.Namespace) -> int:

    async def run() -> None:
        async with _client(args) as client:
            while True:
                stats = await client.stats()
                if args.json:
                    print(_json({k: v for k, v in stats.to_wire().items() if k != "type"}))
                else:
                    text = _format_stats(stats)
                    if args.watch and sys.stdout.isatty():
                        # Home the cursor and clear: refresh in place.
                        sys.stdout.write("\x1b[H\x1b[J")
                    print(text, flush=True)
                if not args.watch:
                    return
                await trio.sleep(args.interval)

    trio.run(run)
    return 0


def _format_stats(stats: Stats) -> str:
    lines = [
        "jobs:   " + "  ".join(f"{state} {count}" for state, count in stats.jobs.items()),
        "totals: " + "  ".join(f"{name} {count}" for name, count in stats.totals.items()),
        f"connections {stats.connections}  waiting workers {stats.waiting_workers}",
    ]
    journal = stats.journal
    if journal is not None:
        line = (
            f"journal: fsync {journal.get('fsync')}  bytes {journal.get('bytes')}"
            f"  compactions {journal.get('compactions')}"
        )
        if journal.get("failing"):
            line += f"  FAILING, changes refused: {journal.get('error')}"
        lines.append(line)
    if stats.limits:
        lines.append("limits: " + "  ".join(_limit_text(k, v) for k, v in stats.limits.items()))
    for queue, counts in sorted(stats.queues.items()):
        lines.append(f"queue {queue}: " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    lines.extend(waiting_lines(stats))
    for worker in stats.workers:
        held = ", ".join(worker["jobs"]) or ("waiting" if worker.get("waiting") else "idle")
        lines.append(f"  {worker['name']}: {held}")
    for listing, count in stats.unlisted.items():
        if listing == "workers":
            lines.append(f"({count} more workers not listed: the server lists the first connected)")
        else:
            what = "job names" if listing == "names" else listing
            lines.append(f"({count} more {what} not listed: the server lists the busiest)")
    return "\n".join(lines)


def _limit_text(name: str, limit: dict[str, Any]) -> str:
    """``waiting 12 of 1,000,000``: one of ``stats``' limits, for people."""
    used, most = limit.get("used"), limit.get("max")
    bound = " (no limit)" if most is None else f" of {most:,}"
    return f"{name.replace('_', ' ')} {used:,}{bound}"


def _status_dict(info: JobInfo) -> dict[str, Any]:
    return {k: v for k, v in info.to_wire().items() if k != "type"}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=False)
