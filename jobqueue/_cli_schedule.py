"""``jobqueue schedule add|list|remove``, and ``serve``'s ``--schedule`` and ``--schedules``.

Kept out of :mod:`jobqueue._cli`, which registers it with a line or two: the
command group builds on the same ``Client`` methods a program calls.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import trio

from ._cli_options import UsageError, add_payload, nonempty, payload_option
from ._schedule_spec import Schedule, parse_schedule_option, schedule_fields, schedules_from_json
from ._schedule_wire import ScheduleInfo

if TYPE_CHECKING:
    from ._client import Client

#: Opens the command's client from its parsed ``--connect``, ``--token``, ``--tls*``.
ClientFactory = Callable[[argparse.Namespace], AbstractAsyncContextManager["Client"]]


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    """``serve --schedule NAME=SPEC:JOB`` (repeatable) and ``serve --schedules FILE``."""
    serve.add_argument(
        "--schedule",
        action="append",
        default=[],
        metavar="NAME=SPEC:JOB",
        type=_schedule_option,
        help="add a periodic schedule at start, e.g. 'tick=every 60:report' or "
        "'nightly=0 3 * * * Europe/Paris:cleanup' (repeatable) (default: none)",
    )
    serve.add_argument(
        "--schedules",
        metavar="FILE",
        help="add the schedules in this JSON file at start: an array of objects with "
        "name, job, payload, every or cron, tz, queue, priority, max_attempts",
    )


def serve_schedules(args: argparse.Namespace) -> tuple[Schedule, ...]:
    """The schedules ``serve``'s options name, file first.

    Raises:
        UsageError: the file cannot be read or holds a bad schedule.
    """
    schedules: tuple[Schedule, ...] = ()
    if args.schedules:
        try:
            with open(args.schedules, encoding="utf-8") as file:
                text = file.read()
        except OSError as exc:
            raise UsageError(f"cannot read --schedules {args.schedules!r}: {exc}") from None
        try:
            schedules = schedules_from_json(text, args.schedules)
        except ValueError as exc:
            raise UsageError(f"--schedules {exc}") from None
    return schedules + tuple(args.schedule)


def register(
    commands: Callable[[str, str], argparse.ArgumentParser],
    add_connect: Callable[[argparse.ArgumentParser], None],
    client: ClientFactory,
) -> None:
    """Add the ``schedule`` command group.

    Args:
        commands: Makes a top-level command (name, help) as ``_cli`` does.
        add_connect: Adds ``--connect``, ``--token`` and ``--tls*``.
        client: Opens a client from those options.
    """
    group = commands("schedule", "manage periodic schedules on the server")
    actions = group.add_subparsers(required=True, metavar="ACTION")

    add = actions.add_parser("add", help="add (or replace) a schedule")
    add_connect(add)
    add.add_argument("name", metavar="NAME", help="the schedule's name")
    add.add_argument("job", metavar="JOB", help="the job name each firing submits")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", type=float, metavar="SECONDS", help="fire every SECONDS")
    when.add_argument("--cron", metavar="EXPR", help="fire on a cron expression ('0 3 * * *')")
    add.add_argument("--tz", default="UTC", help="time zone for --cron (default: UTC)")
    add_payload(add, "the jobs' payload")
    add.add_argument("--queue", default="default", help="the jobs' queue (default: default)")
    add.add_argument("--priority", type=int, default=0, help="the jobs' priority (default: 0)")
    add.add_argument("--max-attempts", type=int, metavar="N", help="the jobs' budget of runs")
    add.add_argument("--json", action="store_true", help="print the schedule as JSON")
    add.set_defaults(command=lambda args: _add(args, client))

    listing = actions.add_parser("list", help="list the schedules")
    add_connect(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per schedule")
    listing.set_defaults(command=lambda args: _list(args, client))

    remove = actions.add_parser("remove", help="remove a schedule")
    add_connect(remove)
    remove.add_argument("name", type=nonempty, metavar="NAME")
    remove.set_defaults(command=lambda args: _remove(args, client))


def _schedule_option(text: str) -> Schedule:
    try:
        return parse_schedule_option(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add(args: argparse.Namespace, client: ClientFactory) -> int:
    payload = payload_option(args.payload)
    try:
        Schedule(args.name, args.job, payload, args.every, args.cron, args.tz)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    async def run() -> ScheduleInfo:
        async with client(args) as connected:
            return await connected.add_schedule(
                args.name,
                args.job,
                payload,
                every=args.every,
                cron=args.cron,
                tz=args.tz,
                queue=args.queue,
                priority=args.priority,
                max_attempts=args.max_attempts,
            )

    _print(trio.run(run), args.json)
    return 0


def _list(args: argparse.Namespace, client: ClientFactory) -> int:
    async def run() -> list[ScheduleInfo]:
        async with client(args) as connected:
            return await connected.list_schedules()

    for info in trio.run(run):
        _print(info, args.json)
    return 0


def _remove(args: argparse.Namespace, client: ClientFactory) -> int:
    async def run() -> None:
        async with client(args) as connected:
            await connected.remove_schedule(args.name)

    trio.run(run)
    print(f"removed {args.name}")
    return 0


def _print(info: ScheduleInfo, as_json: bool) -> None:
    if as_json:
        out: dict[str, Any] = schedule_fields(info.schedule)
        out.update(next_fire=info.next_fire, last_fire=info.last_fire)
        if info.payload_omitted:
            del out["payload"]
            out["payload_omitted"] = True
        print(json.dumps(out))
        return
    schedule = info.schedule
    last = "never" if info.last_fire is None else _iso(info.last_fire)
    print(
        f"{schedule.name}  {schedule.when}  -> {schedule.job}  queue={schedule.queue}  "
        f"next={_iso(info.next_fire)}  last={last}"
    )


def _iso(moment: float) -> str:
    """``moment`` (Unix seconds) as an ISO date in UTC, or as the number past year 9999.

    A schedule's next firing may lie beyond what ``datetime`` can show (a
    huge ``every``): it is printed as its number of seconds rather than
    failing the whole ``schedule list``.
    """
    try:
        return datetime.fromtimestamp(moment, timezone.utc).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{moment!r}s after the epoch"
