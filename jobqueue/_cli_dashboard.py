"""``jobqueue dashboard``: the web dashboard, as a client of a running queue."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import trio

from ._cli_options import UsageError, add_connect, connect_options, parse_address
from ._dashboard_defaults import DEFAULT_HOST, DEFAULT_PORT, MIN_TOKEN_CHARS, POLL_INTERVAL
from ._errors import reason

#: Environment variable ``--login-token`` defaults to.
LOGIN_TOKEN_ENV = "JOBQUEUE_DASHBOARD_TOKEN"


def add_dashboard_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add ``dashboard`` to the command line (``command`` makes a subcommand's parser)."""
    parser = command("dashboard", "serve a web page to watch and operate the queue")
    add_connect(parser)
    parser.add_argument(
        "--listen",
        default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help=f"where the page is served; without :PORT, port {DEFAULT_PORT}; "
        "beyond loopback a login token is required",
    )
    parser.add_argument(
        "--login-token",
        default=os.environ.get(LOGIN_TOKEN_ENV) or None,
        metavar="TOKEN",
        help=f"the token people log in with, at least {MIN_TOKEN_CHARS} characters; required "
        f"unless --listen is loopback (default: ${LOGIN_TOKEN_ENV}; prefer that: other users "
        "can see command lines)",
    )
    parser.add_argument(
        "--interval",
        type=_interval,
        default=POLL_INTERVAL,
        metavar="SECONDS",
        help="time between two rounds of questions to the queue (and live updates)",
    )
    parser.set_defaults(command=_dashboard)


def listen_address(text: str) -> tuple[str, int]:
    """Split ``--listen``'s ``HOST:PORT`` (``[v6]:PORT``); a bare ``HOST`` takes port 8081.

    Raises:
        UsageError: if it is not of that shape.
    """
    return parse_address(text, default_port=DEFAULT_PORT, what="--listen", listen=True)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be from 0.1 to 3600 seconds, not {text}")
    return value


def _dashboard(args: argparse.Namespace) -> int:
    # Imported here: every command line is built with this module loaded.
    from ._client import Client
    from ._dashboard import DashboardError, require_h11, serve_dashboard
    from ._dashboard import log as dashboard_log
    from ._server import stop_on_sigterm

    host, port = listen_address(args.listen)
    token = args.login_token
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise UsageError(
            f"--login-token is too short to resist guessing: use at least {MIN_TOKEN_CHARS} "
            "characters, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    connection = connect_options(args)
    require_h11()  # before connecting: the error names the extra

    async def run() -> None:
        async with Client.connect(**connection, name="jobqueue-dashboard") as client:
            await serve_dashboard(client, host, port, login_token=token, interval=args.interval)

    try:
        trio.run(stop_on_sigterm, run, dashboard_log)
    except OSError as exc:
        raise DashboardError(f"cannot listen on {args.listen}: {exc.strerror or exc}") from exc
    except UnicodeError as exc:
        # A name --listen let through (the stdlib's IDNA takes it) that
        # trio's stricter IDNA 2008 refuses: "☃.example".
        raise DashboardError(f"cannot listen on {args.listen}: {reason(exc)}") from exc
    return 0
