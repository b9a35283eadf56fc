"""The command line's option plumbing: parsing values, shared options, usage errors.

Split from ``_cli`` (which has the commands) so each stays a readable size:
everything here turns text on a command line into checked values, and
reports a mistake as one :class:`UsageError` line rather than argparse's
usage block.
"""

from __future__ import annotations

import argparse
import math
import os
import ssl
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NoReturn

import attrs

from ._config import OptionError
from ._errors import ProtocolError, reason
from ._json import decode_value
from ._limits import MAX_FETCH

#: The port a server listens on, and ``--connect HOST`` reaches, unless told.
DEFAULT_PORT = 8080
DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"
#: Environment variable the ``--token`` options default to.
TOKEN_ENV = "JOBQUEUE_TOKEN"


class UsageError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are :class:`UsageError`.

    So a mistake argparse finds (an unknown option, a bad value) is reported
    like every other: one ``jobqueue: ...`` line, exit status 2, rather than
    argparse's usage block.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


class HelpFormatter(argparse.HelpFormatter):
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


def add_connect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connect",
        default=DEFAULT_ADDRESS,
        metavar="HOST:PORT",
        help=f"the queue server; without :PORT, port {DEFAULT_PORT}",
    )
    add_token(parser, "the server's shared secret")
    parser.add_argument(
        "--tls", action="store_true", help="connect with TLS, trusting the system's CAs"
    )
    parser.add_argument(
        "--tls-ca", metavar="FILE", help="connect with TLS, trusting this CA certificate (PEM)"
    )


def add_payload(parser: argparse.ArgumentParser, what: str) -> None:
    """``--payload``, read by :func:`payload_option` (``submit``, ``schedule add``)."""
    parser.add_argument(
        "--payload",
        default="null",
        metavar="JSON",
        help=f"{what}: JSON, @FILE to read it from FILE, or - to read standard input",
    )


def payload_option(spec: str) -> Any:
    """``--payload``'s value: its JSON, checked by the server's own rules.

    No NaN or Infinity, no 1e999, bounded nesting: what the server would
    refuse is a usage error here, before anything is sent.

    Raises:
        UsageError: the text cannot be read or is not JSON the server takes.
    """
    text = _payload_text(spec)
    try:
        return decode_value(text)
    except ProtocolError as exc:
        where = "" if text is spec else f" {spec}"
        raise UsageError(f"--payload{where} is not valid JSON: {exc.message}") from None


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


def add_token(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"{what} (default: ${TOKEN_ENV}; prefer that: other users can see command lines)",
    )


def add_record_options(parser: argparse.ArgumentParser, record: type[Any]) -> None:
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
    parsers: dict[Any, Callable[[str], Any]] = {int: whole_number, float: finite_number, str: str}
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


def record_values(args: argparse.Namespace, record: type[Any]) -> dict[str, Any]:
    """The values of ``record``'s fields that ``add_record_options`` parsed."""
    return {
        field.name: getattr(args, field.name)
        for field in attrs.fields(record)
        if field.metadata.get("cli", True)
    }


def connect_options(args: argparse.Namespace) -> dict[str, Any]:
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


def nonempty(text: str) -> str:
    """An argument the server would refuse empty (a job id, a schedule's name).

    Refused here, as a usage error, even when no server is running.
    """
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def prefetch(text: str) -> int | Literal["auto"]:
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    if value > MAX_FETCH:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_FETCH}, not {value}")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, not {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, not {value}")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None


def finite_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def parse_address(
    text: str, *, default_port: int = DEFAULT_PORT, what: str = "address", listen: bool = False
) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6); a bare ``HOST`` takes ``default_port``.

    Args:
        text: The option's value.
        default_port: The port of a bare ``HOST`` (the queue's, 8080, by default).
        what: How the error names the value (``--listen``, say).
        listen: An address to listen on, where port 0 (any free port) is allowed.

    Raises:
        UsageError: if it is not of that shape, is an IPv6 address without
            brackets (or with a bracket unmatched), or names a host no lookup
            would take (:func:`host_problem`).
    """
    if ":" not in text or (text.startswith("[") and text.endswith("]")):
        host, port_text = text, str(default_port)
    else:
        host, _, port_text = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]") and len(host) > 1
    inner = host[1:-1] if bracketed else host
    if (":" in host and not bracketed) or "[" in inner or "]" in inner:
        # "::1" would split into host ":" and port 1, and so would "[::1".
        raise UsageError(
            f"bad {what} {text!r}: an IPv6 address goes in brackets, e.g. [::1]:{default_port}"
        )
    host = inner
    lowest = 0 if listen else 1
    if not host or not port_text.isdigit() or not lowest <= int(port_text) < 65536:
        raise UsageError(
            f"bad {what} {text!r}: expected HOST:PORT or HOST, e.g. 127.0.0.1:{default_port}"
        )
    problem = host_problem(host)
    if problem is not None:
        raise UsageError(f"bad {what} {text!r}: {problem}")
    return host, int(port_text)


def host_problem(host: str) -> str | None:
    """Why no lookup of ``host`` would even be tried, or ``None`` if one would.

    Every lookup (the stdlib's, trio's, asyncio's) first encodes the name
    with IDNA, which refuses a label that is empty ("a..b") or longer than
    63 characters. Caught on the command line, it is a usage error before
    anything starts, where a worker would otherwise retry it for ever.
    """
    try:
        host.encode("idna")
    except UnicodeError as exc:
        return reason(exc)
    return None


def host_option(text: str) -> str:
    """``serve --host``: an address or host name to bind."""
    problem = host_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} is {problem}")
    return text
