"""Configuration records: every server option once, with its default and check.

A record is frozen and validated when it is built, so a bad value fails where
it was written, with a message naming the option, not later inside the
coordinator. Each field's ``metadata`` carries what the command line needs
(its flag, help text and metavar), so ``jobqueue serve`` builds its options
from these fields rather than declaring them again.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._limits import MAX_ATTEMPTS

#: The queue a job goes to, and a worker listens on, when none is named.
DEFAULT_QUEUE = "default"


def option(default: Any, help: str, *, metavar: str | None = None, **kwargs: Any) -> Any:
    """An ``attrs.field`` carrying its command-line help.

    Args:
        default: The option's default value.
        help: One line for ``--help``; the default is added to it there.
        metavar: How ``--help`` names the value (``SECONDS``, ``N``).
        **kwargs: Passed on to ``attrs.field`` (``validator``, ``converter``).
    """
    return attrs.field(default=default, metadata={"help": help, "metavar": metavar}, **kwargs)


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _at_least(low: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
        if value is not None and value < low:
            raise ValueError(f"{attribute.name} must be >= {low}, not {value!r}")

    return check


def _attempts(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= MAX_ATTEMPTS:
        raise ValueError(f"{attribute.name} must be from 1 to {MAX_ATTEMPTS}, not {value!r}")


@attrs.frozen
class QueueRules:
    """The rules the queue applies to every job: leases, retries, retention, room.

    These are what :class:`~jobqueue._state.QueueState` needs; the options
    of the listener and its connections live in the server's record.
    """

    #: Seconds a worker keeps a job without a heartbeat before it goes back
    #: to the queue.
    lease_timeout: float = option(
        30.0, "how long a silent worker keeps a job", metavar="SECONDS", validator=_positive
    )
    #: How many runs a job may take, unless it sets its own.
    max_attempts: int = option(
        5, "runs a job may take unless it sets its own", metavar="N", validator=_attempts
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
        100_000, "finished jobs remembered for status", metavar="N", validator=_at_least(0)
    )
    #: Most jobs that may wait at once (pending or scheduled) before submits
    #: get ``queue_full``: about 0.5 GB of server memory with small payloads.
    #: ``None``: no limit.
    max_pending: int | None = option(
        1_000_000,
        "jobs that may wait at once before submits get queue_full",
        metavar="N",
        validator=_at_least(1),
    )
