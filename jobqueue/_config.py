"""Configuration records: every server option once, with its default and check.

A record is frozen and validated when it is built, so a bad value fails where
it was written, with a message naming the option, not later inside the
coordinator. Each field's ``metadata`` carries what the command line needs
(its help text and metavar, and a flag name where the CLI spells it
differently), so ``jobqueue serve`` builds its options from these fields
rather than declaring them again.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._limits import MAX_ATTEMPTS, MAX_LINE_BYTES, MAX_SCHEDULES
from ._schedule_spec import Schedule

#: The queue a job goes to, and a worker listens on, when none is named.
DEFAULT_QUEUE = "default"


def option(
    default: Any,
    help: str,
    *,
    metavar: str | None = None,
    flag: str | None = None,
    none_means: str | None = None,
    cli: bool = True,
    **kwargs: Any,
) -> Any:
    """An ``attrs.field`` carrying its command-line help.

    Args:
        default: The option's default value.
        help: One line for ``--help``; the default is added to it there.
        metavar: How ``--help`` names the value (``SECONDS``, ``N``).
        flag: The command-line flag, when it is not the field's name with
            dashes (``--retention`` for ``finished_retention``).
        none_means: For a field that may be ``None``: the command-line word
            that stands for ``None`` and what it means (``"0: no limit"``).
        cli: Whether ``jobqueue serve`` has a flag for it; ``False`` for
            values a command line cannot spell (an SSL context) or that it
            builds its own way (the token, from the environment too).
        **kwargs: Passed on to ``attrs.field`` (``validator``, ``converter``).
    """
    metadata = {
        "help": help,
        "metavar": metavar,
        "flag": flag,
        "none_means": none_means,
        "cli": cli,
    }
    return attrs.field(default=default, metadata=metadata, **kwargs)


class OptionError(ValueError):
    """An option's value breaks its rule.

    ``str(error)`` names the option (``lease_timeout must be ...``);
    :attr:`rule` does not, for a command line that names it its own way.
    """

    def __init__(self, name: str, requirement: str, value: object) -> None:
        self.name = name
        #: What the value must be: ``must be at least 1``.
        self.requirement = requirement
        #: What is wrong, without the option's name: ``must be at least 1, not 0``.
        self.rule = f"{requirement}, not {value!r}"
        super().__init__(f"{name} {self.rule}")


@attrs.frozen
class Check:
    """A validator: ``value`` must pass ``test`` (``None`` always passes).

    Also callable by the command line, which has no attrs instance to hand.
    """

    test: Callable[[Any], bool]
    rule: str

    def __call__(self, instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not self.test(value):
            raise OptionError(attribute.name, self.rule, value)


_positive = Check(lambda value: value > 0, "must be a positive number")


def _at_least(low: int) -> Check:
    return Check(lambda value: value >= low, f"must be at least {low}")


def _at_most(high: int) -> Check:
    return Check(lambda value: value <= high, f"must be at most {high}")


_non_empty = Check(lambda value: len(value) > 0, "must not be empty")


def _few_schedules(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    # Not a Check: its message would show every schedule.
    if len(value) > MAX_SCHEDULES:
        raise OptionError(attribute.name, f"may hold at most {MAX_SCHEDULES}", len(value))


#: How ``fsync`` may flush the journal (``jobqueue._journal_writer`` obeys them).
FSYNC_MODES = ("always", "interval", "never")


def metrics_address(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6; a bare ``PORT`` is on 127.0.0.1).

    Raises:
        ValueError: it is not of that shape.
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"bad address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9100")
    return host, int(port)


def _is_metrics_address(text: str) -> bool:
    try:
        metrics_address(text)
    except ValueError:
        return False
    return True


def _path(value: Any) -> str | None:
    return None if value is None else os.fspath(value)


@attrs.frozen
class QueueRules:
    """The rules the queue applies to every job: leases, retries, retention, room.

    These are what :class:`~jobqueue._state.QueueState` needs; the options
    of the listener and its connections live in :class:`ServerConfig`.
    """

    #: Seconds a worker keeps a job without a heartbeat before it goes back
    #: to the queue.
    lease_timeout: float = option(
        30.0, "how long a silent worker keeps a job", metavar="SECONDS", validator=_positive
    )
    #: How many runs a job may take, unless it sets its own.
    max_attempts: int = option(
        5,
        "runs a job may take unless it sets its own",
        metavar="N",
        validator=[_at_least(1), _at_most(MAX_ATTEMPTS)],
    )
    #: Backoff before the first retry of a job whose handler raised, in
    #: seconds; it doubles for each further retry (with jitter).
    retry_delay: float = option(
        1.0, "first backoff after a handler raised; doubles", metavar="SECONDS", validator=_positive
    )
    #: Cap on that backoff, in seconds.
    max_retry_delay: float = option(
        300.0, "cap on that backoff", metavar="SECONDS", validator=_positive
    )
    #: How many finished jobs are remembered for ``job_status``; older ones
    #: are forgotten, oldest first.
    finished_retention: int = option(
        100_000,
        "finished jobs remembered for status",
        metavar="N",
        flag="--retention",
        validator=_at_least(0),
    )
    #: Most bytes the finished jobs' payloads and results (each as its JSON
    #: text) may hold together; past it the oldest finished jobs are
    #: forgotten, as past ``finished_retention``. That one counts jobs, and a
    #: job's payload and result may be up to 1 MiB each, so without this the
    #: jobs a server remembers could fill its memory. ``None``: no limit.
    finished_retention_bytes: int | None = option(
        1 << 30,
        "bytes of payloads and results finished jobs may hold before the oldest are forgotten",
        metavar="BYTES",
        flag="--retention-bytes",
        none_means="0: no limit",
        validator=_at_least(1),
    )
    #: Most jobs that may wait at once (pending or scheduled) before submits
    #: get ``queue_full``: about 0.5 GB of server memory with small payloads.
    #: Jobs already accepted (a retry, a requeue) always get their place
    #: back. ``None``: no limit.
    max_pending: int | None = option(
        1_000_000,
        "jobs that may wait at once before submits get queue_full",
        metavar="N",
        none_means="0: no limit",
        validator=_at_least(1),
    )
    #: Most bytes the unfinished jobs' payloads (pending, scheduled and
    #: running, each as its JSON text) may hold together before submits get
    #: ``queue_full``: ``max_pending`` counts jobs, and a job's payload may be
    #: up to 1 MiB, so without this one client could fill the server's
    #: memory. Jobs already accepted always get their place back. ``None``:
    #: no limit.
    max_payload_bytes: int | None = option(
        1 << 30,
        "bytes of payloads unfinished jobs may hold before submits get queue_full",
        metavar="BYTES",
        none_means="0: no limit",
        validator=_at_least(1),
    )


@attrs.frozen
class ServerConfig:
    """Everything ``serve_queue`` needs besides where to listen.

    Build one with keyword arguments (``ServerConfig(token="s3cret")``) and
    replace parts with ``attrs.evolve``; :func:`server_config` does the same
    from the flat keyword arguments ``serve_queue`` and ``jobqueue.testing``
    accept.
    """

    #: The queue's rules for jobs.
    rules: QueueRules = attrs.field(factory=QueueRules, metadata={"cli": False})
    #: Longest message accepted from a peer, in bytes; a longer line gets
    #: ``message_too_large``.
    max_line_bytes: int = option(
        MAX_LINE_BYTES,
        "longest message accepted from a peer",
        metavar="BYTES",
        # The command line has never offered it: raising it does not help our
        # own clients and workers, whose read limits are fixed (protocol.md §1).
        cli=False,
        validator=_at_least(1),
    )
    #: Most connections open at once; one more gets a
    #: ``too_many_connections`` error and is closed.
    max_connections: int = option(
        1024, "connections open at once", metavar="N", validator=_at_least(1)
    )
    #: Seconds a new connection has to finish its TLS handshake and send its
    #: first request (its ``hello``, when a token is required); then it gets
    #: ``handshake_timeout`` and is closed.
    handshake_timeout: float = option(
        10.0,
        "time a new connection has for TLS and its first request",
        metavar="SECONDS",
        validator=_positive,
    )
    #: Seconds a connection may go without sending anything while it has no
    #: request outstanding; then it gets ``idle_timeout`` and is closed.
    #: ``None``: never. Workers are never idle: they always wait in
    #: ``request_job`` or heartbeat.
    idle_timeout: float | None = option(
        None,
        "close connections silent this long with nothing outstanding (default: never)",
        metavar="SECONDS",
        validator=_positive,
    )
    #: A shared secret. When set, every connection must start with a
    #: ``hello`` carrying it; anything else is answered with ``unauthorized``
    #: and the connection is closed. ``None``: no token.
    token: str | None = option(
        None,
        "the shared secret every hello must carry",
        cli=False,
        repr=False,
        validator=_non_empty,
    )
    #: Serve TLS with this context (from
    #: ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)`` with
    #: ``load_cert_chain``); ``None`` serves plain TCP.
    # (option() is attrs.field: the default is not a shared call result.)
    ssl_context: ssl.SSLContext | None = option(  # noqa: RUF009
        None,
        "serve TLS with this context",
        cli=False,
        validator=attrs.validators.optional(attrs.validators.instance_of(ssl.SSLContext)),
    )
    #: Keep the queue in this directory: replayed at start, appended to
    #: while serving (docs/design.md, "The journal"). ``None``: in memory
    #: only, and a restart loses every job.
    journal: str | None = option(
        None,
        "keep jobs in this directory, so a restart or crash loses none (default: memory only)",
        metavar="DIR",
        converter=_path,
        validator=_non_empty,
    )
    #: When the journal is flushed to disk: ``always`` before any reply
    #: that acknowledges a change; ``interval`` every ``fsync_interval``
    #: seconds; ``never`` (left to the operating system).
    fsync: str = option(
        "always",
        "flush the journal before acknowledging (always), every --fsync-interval, or never",
        metavar="|".join(FSYNC_MODES),
        validator=Check(lambda value: value in FSYNC_MODES, "must be always, interval or never"),
    )
    #: Serve Prometheus metrics at ``http://HOST:PORT/metrics`` (a bare
    #: ``PORT`` binds 127.0.0.1); needs the ``jobqueue[metrics]`` extra.
    #: ``None``: no metrics endpoint (docs/metrics.md).
    metrics: str | None = option(
        None,
        "serve Prometheus metrics at http://HOST:PORT/metrics; needs jobqueue[metrics] "
        "(default: none)",
        metavar="HOST:PORT",
        validator=Check(_is_metrics_address, "must be HOST:PORT, e.g. 127.0.0.1:9100"),
    )
    #: Seconds between journal flushes with ``fsync="interval"``.
    fsync_interval: float = option(
        1.0, "seconds between journal flushes with --fsync interval", metavar="SECONDS",
        validator=_positive,
    )  # fmt: skip
    #: Compact the journal once it holds this many times the bytes of its
    #: last snapshot (and at least 256 KiB), so its files stay within about
    #: this multiple of the live jobs' size. Lower keeps them smaller at the
    #: cost of more compactions, each of which writes every live job again.
    compact_ratio: float = option(
        4.0, "compact the journal once it is this many times its last snapshot", metavar="RATIO",
        validator=Check(lambda value: value > 1, "must be more than 1"),
    )  # fmt: skip
    #: Periodic schedules to add when the server starts (README, "Periodic
    #: jobs"); one that is already there unchanged keeps its history. The
    #: command line builds them from ``--schedule`` and ``--schedules``.
    schedules: tuple[Schedule, ...] = option(
        (),
        "periodic schedules to add at start",
        cli=False,
        converter=tuple,
        validator=[
            attrs.validators.deep_iterable(attrs.validators.instance_of(Schedule)),
            _few_schedules,
        ],
    )


_RULES = frozenset(field.name for field in attrs.fields(QueueRules))
_SERVER = frozenset(field.name for field in attrs.fields(ServerConfig))


def server_config(
    config: ServerConfig | None, options: Mapping[str, Any], *, caller: str
) -> ServerConfig:
    """``config`` (or the defaults) with ``options`` replacing some of its values.

    This is what lets ``serve_queue(0, lease_timeout=5)`` keep working: each
    option is a field name of :class:`ServerConfig` or of :class:`QueueRules`,
    and wins over the same value in ``config``.

    Args:
        config: The starting point; ``None`` for the defaults.
        options: Field names of either record, with their values.
        caller: The function taking them, for the error message.

    Raises:
        TypeError: an option that is neither record's field.
        ValueError: a value its field's check refuses (an :class:`OptionError`).
    """
    unknown = sorted(options.keys() - _RULES - _SERVER)
    if unknown:
        known = ", ".join(sorted(_SERVER | _RULES))
        raise TypeError(
            f"{caller}() got an unexpected keyword argument {unknown[0]!r} (options: {known})"
        )
    config = config if config is not None else ServerConfig()
    server = {name: value for name, value in options.items() if name in _SERVER}
    rules = {name: value for name, value in options.items() if name in _RULES}
    if rules:
        server["rules"] = attrs.evolve(server.get("rules", config.rules), **rules)
    return attrs.evolve(config, **server) if server else config
