"""The ``jobqueue`` command line (also ``python -m jobqueue``)."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import ssl
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import attrs
import trio

from ._cli_worker import DEFAULT_DRAIN_TIMEOUT, run_worker
from ._client import Client
from ._config import OptionError, QueueRules, ServerConfig
from ._demo import run_demo
from ._errors import JobQueueError, ProtocolError
from ._journal import JournalError
from ._json import decode_value
from ._limits import JOB_STATES, MAX_FETCH
from ._replies import JobInfo, JobList, Stats
from ._requests import SubmitJob
from ._routing import waiting_lines, warn_if_unserved
from ._server import serve_queue
from ._version import __version__
from ._worker import DEFAULT_JOB_TIMEOUT, Handler, Worker

#: The port a server listens on, and ``--connect HOST`` reaches, unless told.
DEFAULT_PORT = 8080
DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"
#: Environment variable the ``--token`` options default to.
TOKEN_ENV = "JOBQUEUE_TOKEN"


class UsageError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        print(f"jobqueue: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
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
        if _only_interrupts(exc):
            return 130
        raise


def _only_interrupts(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    inner: Sequence[BaseException] = getattr(exc, "exceptions", ())
    return bool(inner) and all(_only_interrupts(e) for e in inner)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are :class:`UsageError`.

    So a mistake argparse finds (an unknown option, a bad value) is reported
    like every other: one ``jobqueue: ...`` line, exit status 2, rather than
    argparse's usage block.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _HelpFormatter(argparse.HelpFormatter):
    """Ends every option's help with its default, as ``ArgumentDefaultsHelpFormatter`` does.

    Except: a help that states its default itself, ``(default: ...)``, is
    left alone (how ``--token`` keeps ``$JOBQUEUE_TOKEN``'s secret out of
    ``--help``); a flag's default reads "off" and ``None`` reads "none".
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        flag = isinstance(action, argparse._StoreTrueAction)
        if not action.option_strings or "(default" in text:
            return text
        if flag:
            return f"{text} (default: off)"
        if action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: {'none' if action.default is None else '%(default)s'})"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jobqueue",
        description="A distributed job queue built on trio.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    # -v works after the command too. The command's copy has no default, so
    # it cannot undo a -v given before the command.
    verbose = _Parser(add_help=False)
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
            formatter_class=_HelpFormatter,
        )

    serve = command("serve", "run the queue server")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind; the default serves this machine only"
    )
    serve.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="TCP port; 0 picks a free one"
    )
    for record in (QueueRules, ServerConfig):
        _add_record_options(serve, record)
    _add_token(serve, "require this shared secret in every connection's hello")
    serve.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve TLS with this certificate (PEM) (default: plain TCP)",
    )
    serve.add_argument(
        "--tls-key", metavar="FILE", help="the certificate's private key (default: in --tls-cert)"
    )
    serve.set_defaults(command=_serve)

    worker = command("worker", "run jobs from the queue")
    _add_connect(worker)
    worker.add_argument(
        "--concurrency", type=_positive_int, default=1, metavar="N", help="jobs run at once"
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
        type=_positive_float,
        default=DEFAULT_JOB_TIMEOUT,
        metavar="SECONDS",
        help="cancel and fail a handler running longer",
    )
    worker.add_argument(
        "--prefetch",
        type=_prefetch,
        default=1,
        metavar="N",
        help=f"jobs each slot takes and reports per round trip, 1 to {MAX_FETCH}; "
        "they run one after another",
    )
    worker.add_argument(
        "--drain-timeout",
        type=_positive_float,
        default=DEFAULT_DRAIN_TIMEOUT,
        metavar="SECONDS",
        help="on SIGTERM or the first Ctrl-C, how long running jobs may take to finish "
        "before they are stopped and given back; a second signal stops at once",
    )
    worker.set_defaults(command=_worker)

    submit = command("submit", "submit jobs and print their ids")
    _add_connect(submit)
    submit.add_argument("name", metavar="NAME", help="handler name, e.g. sleep")
    submit.add_argument(
        "--payload",
        default="null",
        metavar="JSON",
        help="job payload: JSON, @FILE to read it from FILE, or - to read standard input",
    )
    submit.add_argument(
        "--count", type=_positive_int, default=1, metavar="N", help="how many jobs to submit"
    )
    submit.add_argument(
        "--wait", action="store_true", help="wait for the jobs to finish and print their results"
    )
    submit.add_argument("--queue", default="default", help="queue to submit to")
    submit.add_argument("--priority", type=int, default=0, help="higher runs first")
    submit.add_argument(
        "--delay", type=float, default=0.0, metavar="SECONDS", help="run this much later"
    )
    submit.add_argument("--key", help="idempotency key (with --count N: KEY-1 ... KEY-N)")
    submit.add_argument(
        "--max-attempts",
        type=_positive_int,
        metavar="N",
        help="runs each job may take (default: the server's)",
    )
    submit.set_defaults(command=_submit)

    status = command("status", "print one job's status as JSON")
    _add_connect(status)
    status.add_argument("job_id", metavar="JOB_ID")
    status.set_defaults(command=_status)

    for action, help_text in (
        ("cancel", "cancel a job (a running one is stopped on its worker)"),
        ("retry", "requeue a failed job with a fresh budget of attempts"),
        ("delete", "forget a finished job"),
    ):
        act = command(action, help_text)
        _add_connect(act)
        act.add_argument("job_id", metavar="JOB_ID")
        act.set_defaults(command=partial(_act, action))

    listing = command("list", "list jobs in one state, oldest first")
    _add_connect(listing)
    listing.add_argument("--state", default="failed", choices=JOB_STATES, help="the state")
    listing.add_argument("--queue", help="only this queue (default: all)")
    listing.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="most jobs to list"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per job")
    listing.set_defaults(command=_list)

    stats = command("stats", "print queue statistics")
    _add_connect(stats)
    stats.add_argument("--json", action="store_true", help="print the raw stats reply")
    stats.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    stats.add_argument(
        "--interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="time between refreshes with --watch",
    )
    stats.set_defaults(command=_stats)

    demo = command("demo", "run a server, worker processes and a job stream; kill a worker mid-job")
    demo.add_argument(
        "--workers", type=_positive_int, default=3, metavar="N", help="worker processes"
    )
    demo.add_argument(
        "--concurrency", type=_positive_int, default=2, metavar="N", help="slots per worker"
    )
    demo.add_argument("--jobs", type=_positive_int, default=30, metavar="N", help="jobs to run")
    demo.add_argument("--seed", type=int, help="seed for job durations (default: random)")
    demo.set_defaults(command=run_demo)
    return parser


def _add_connect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connect",
        default=DEFAULT_ADDRESS,
        metavar="HOST:PORT",
        help=f"the queue server; without :PORT, port {DEFAULT_PORT}",
    )
    _add_token(parser, "the server's shared secret")
    parser.add_argument(
        "--tls", action="store_true", help="connect with TLS, trusting the system's CAs"
    )
    parser.add_argument(
        "--tls-ca", metavar="FILE", help="connect with TLS, trusting this CA certificate (PEM)"
    )


def _add_token(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"{what} (default: ${TOKEN_ENV}; prefer that: other users can see command lines)",
    )


def _add_record_options(parser: argparse.ArgumentParser, record: type[Any]) -> None:
    """One option per field of ``record`` (``--lease-timeout`` for ``lease_timeout``).

    The field gives the option its default, its help and metavar, the type
    of its value and its check, so a new server option needs only a new
    field. Fields the command line spells its own way say so in their
    metadata (a ``flag`` of their own, a word for ``None``, or none at all).
    """
    hints = typing.get_type_hints(record)
    for field in attrs.fields(record):
        meta = field.metadata
        if not meta.get("cli", True):
            continue
        help_text: str = meta["help"]
        if meta.get("none_means"):
            help_text += f"; {meta['none_means']}"
        parser.add_argument(
            meta.get("flag") or "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=_field_value(field, hints[field.name]),
            default=field.default,
            metavar=meta.get("metavar"),
            help=help_text,
        )


def _field_value(field: attrs.Attribute[Any], hint: Any) -> Callable[[str], Any]:
    """Parse an option's text as its field's type, then apply the field's check."""
    kinds = [kind for kind in typing.get_args(hint) or (hint,) if kind is not type(None)]
    parsers: dict[Any, Callable[[str], Any]] = {int: _whole_number, float: _finite_number, str: str}
    parse = parsers[kinds[0]]
    none_means: str | None = field.metadata.get("none_means")
    none_word = none_means.partition(":")[0] if none_means else None

    def value(text: str) -> Any:
        if none_word is not None and text.strip() == none_word:
            return None
        result = parse(text)
        try:
            if field.validator is not None:
                field.validator(None, field, result)
        except OptionError as exc:
            # The value as typed: "not 0", where the record would say "not 0.0".
            rule = f"{exc.requirement}, not {text.strip()}"
            if none_means is not None:
                rule += f" (or {none_means})"
            raise argparse.ArgumentTypeError(rule) from None
        return result

    return value


def _record_values(args: argparse.Namespace, record: type[Any]) -> dict[str, Any]:
    """The values of ``record``'s fields that ``_add_record_options`` parsed."""
    return {
        field.name: getattr(args, field.name)
        for field in attrs.fields(record)
        if field.metadata.get("cli", True)
    }


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    """Where and how to connect, from ``--connect``, ``--token`` and ``--tls*``.

    Raises:
        UsageError: a bad address or an unreadable CA file.
    """
    host, port = parse_address(args.connect)
    context = None
    if args.tls or args.tls_ca:
        try:
            context = ssl.create_default_context(cafile=args.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot use --tls-ca {args.tls_ca!r}: {exc}") from None
    return {"host": host, "port": port, "token": args.token, "ssl_context": context}


def _client(
    args: argparse.Namespace, name: str = "jobqueue-cli"
) -> AbstractAsyncContextManager[Client]:
    return Client.connect(**_connection(args), name=name)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _prefetch(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_FETCH:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_FETCH}, not {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, not {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, not {value}")
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None


def _finite_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def parse_address(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6); a bare ``HOST`` takes port 8080.

    Raises:
        UsageError: if it is not of that shape.
    """
    if ":" not in text or (text.startswith("[") and text.endswith("]")):
        host, port_text = text, str(DEFAULT_PORT)
    else:
        host, _, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"bad address {text!r}: expected HOST:PORT or HOST, e.g. 127.0.0.1:8080")
    return host, int(port_text)


# -- serve / worker ------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
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
            rules=QueueRules(**_record_values(args, QueueRules)),
            token=args.token,
            ssl_context=context,
            **_record_values(args, ServerConfig),
        )
    except OptionError as exc:
        # The options parsed above were checked already: only --token is left.
        raise UsageError(f"--{exc.name.replace('_', '-')} {exc.rule}") from None
    try:
        trio.run(partial(serve_queue, args.port, host=args.host, config=config))
    except JournalError as exc:
        raise JobQueueError(str(exc)) from exc
    except OSError as exc:
        raise JobQueueError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from exc
    return 0  # pragma: no cover  (serve_queue only returns by raising)


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
    connection = _connection(args)
    handlers = load_handlers(args.handlers) if args.handlers else {}
    queues = tuple(q.strip() for q in args.queues.split(",") if q.strip())
    if not queues:
        raise UsageError("--queues needs at least one queue name")
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
    return run_worker(worker, args.drain_timeout)


# -- submit / status / stats ---------------------------------------------------


def _submit(args: argparse.Namespace) -> int:
    _connection(args)  # a bad address is a usage error before anything else
    text = _payload_text(args.payload)
    try:
        # The server's own rules: no NaN/Infinity, no 1e999, bounded nesting.
        payload = decode_value(text)
    except ProtocolError as exc:
        where = "" if text is args.payload else f" {args.payload}"
        raise UsageError(f"--payload{where} is not valid JSON: {exc.message}") from None

    jobs = []
    for index in range(1, args.count + 1):
        job: dict[str, Any] = {"name": args.name, "payload": payload}
        job.update(queue=args.queue, priority=args.priority, delay=args.delay)
        if args.key is not None:
            job["key"] = args.key if args.count == 1 else f"{args.key}-{index}"
        if args.max_attempts is not None:
            job["max_attempts"] = args.max_attempts
        jobs.append(job)
    try:
        # Checked here, by the server's rules, before connecting: a bad option
        # is a usage error even when no server is running.
        SubmitJob.from_wire({**jobs[0], "type": "submit"})
    except ProtocolError as exc:
        raise UsageError(f"bad job: {exc.message}") from None

    async def run() -> int:
        async with _client(args) as client:
            job_ids = await client.submit_many(jobs)
            await warn_if_unserved(client, args.name)
            if not args.wait:
                for job_id in job_ids:
                    print(job_id)
                return 0
            failures = 0
            for job_id in job_ids:
                info = await client.wait(job_id)
                failures += info.state != "completed"
                print(_json(_status_dict(info)))
            return 1 if failures else 0

    return trio.run(run)


def _payload_text(spec: str) -> str:
    """``--payload``'s JSON: ``spec`` itself, or read from ``@FILE`` or ``-`` (standard input).

    A payload may take up to 1 MiB - 16 KiB, but one command-line argument
    is limited to 128 KiB on Linux: a larger payload has to come from a file
    or a pipe. (No JSON text starts with ``@`` or is ``-`` alone.)

    Raises:
        UsageError: the file cannot be read, or is not UTF-8.
    """
    if spec == "-":
        read: Callable[[], bytes] = sys.stdin.buffer.read
    elif spec.startswith("@"):
        read = Path(spec[1:]).read_bytes
    else:
        return spec
    try:
        data = read()
    except OSError as exc:
        raise UsageError(f"cannot read --payload {spec}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"--payload {spec} is not UTF-8 (byte {exc.start})") from None


def _status(args: argparse.Namespace) -> int:

    async def run() -> JobInfo:
        async with _client(args) as client:
            return await client.status(args.job_id)

    print(_json(_status_dict(trio.run(run))))
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
    for queue, counts in sorted(stats.queues.items()):
        lines.append(f"queue {queue}: " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    lines.extend(waiting_lines(stats))
    for worker in stats.workers:
        held = ", ".join(worker["jobs"]) or ("waiting" if worker.get("waiting") else "idle")
        lines.append(f"  {worker['name']}: {held}")
    return "\n".join(lines)


def _status_dict(info: JobInfo) -> dict[str, Any]:
    return {k: v for k, v in info.to_wire().items() if k != "type"}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=False)
