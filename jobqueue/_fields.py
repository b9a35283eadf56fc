"""Field readers: how every message class validates one field of a decoded object.

Each reader returns the field's value or raises :class:`ProtocolError` naming
the message type and the field, so a peer that gets a message wrong is told
exactly what to fix, and every message reads its fields the same way.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from ._errors import BAD_REQUEST, MESSAGE_TOO_LARGE, ProtocolError
from ._job import InvalidTransition
from ._json import json_type, stored_form
from ._limits import MAX_ATTEMPTS, MAX_NAME_CHARS, MAX_PRIORITY, MAX_STORED_BYTES, MAX_WAIT_SECONDS

_T = TypeVar("_T")


def field_error(obj: dict[str, Any], key: str, want: str) -> ProtocolError:
    """The error for field ``key`` missing, empty or not ``want`` (a phrase)."""
    if obj.get(key) == "":
        return ProtocolError(BAD_REQUEST, f'"{obj["type"]}" field "{key}" must not be empty')
    if key in obj:
        got = json_type(obj[key])
        return ProtocolError(
            BAD_REQUEST, f'"{obj["type"]}" field "{key}" must be {want}, not {got}'
        )
    return ProtocolError(BAD_REQUEST, f'"{obj["type"]}" needs field "{key}" ({want})')


def nonempty_str(obj: dict[str, Any], key: str) -> str:
    """A required, non-empty string (ids, names)."""
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise field_error(obj, key, "a non-empty string")
    return value


def optional_str(obj: dict[str, Any], key: str) -> str | None:
    """A string, or ``None`` when absent or null."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise field_error(obj, key, "a string")
    return value


def short_str(obj: dict[str, Any], key: str) -> str:
    """A required name (job, queue, key): non-empty, at most ``MAX_NAME_CHARS``."""
    value = nonempty_str(obj, key)
    if len(value) > MAX_NAME_CHARS:
        raise ProtocolError(
            BAD_REQUEST,
            f'"{obj["type"]}" field "{key}" is longer than {MAX_NAME_CHARS} characters',
        )
    return value


def optional_int(obj: dict[str, Any], key: str, default: _T, low: int, high: int) -> int | _T:
    """An integer from ``low`` to ``high``, or ``default`` when absent or null."""
    if obj.get(key) is None:
        return default
    value = integer(obj, key)
    if not low <= value <= high:
        raise ProtocolError(
            BAD_REQUEST, f'"{obj["type"]}" field "{key}" must be from {low} to {high}'
        )
    return value


def integer(obj: dict[str, Any], key: str) -> int:
    """A required integer (``true`` is not 1 here, though Python says it is)."""
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise field_error(obj, key, "an integer")
    return value


def optional_attempt(obj: dict[str, Any]) -> int | None:
    """A report's ``attempt``: at least 1, or ``None`` for whichever run holds the lease."""
    if obj.get("attempt") is None:
        return None
    attempt = integer(obj, "attempt")
    if attempt < 1:
        raise ProtocolError(BAD_REQUEST, f'"{obj["type"]}" field "attempt" must be >= 1')
    return attempt


def wait_seconds(obj: dict[str, Any], default: float | None) -> float | None:
    """A blocking request's ``wait``: 0 to ``MAX_WAIT_SECONDS``, or ``default``."""
    value = obj.get("wait")
    if value is None:
        return default
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not 0 <= value <= MAX_WAIT_SECONDS
    ):
        raise ProtocolError(
            BAD_REQUEST,
            f'"{obj["type"]}" field "wait" must be a number of seconds '
            f"from 0 to {MAX_WAIT_SECONDS:g}",
        )
    return float(value)


def number(obj: dict[str, Any], key: str) -> float:
    """A required finite number, as a float."""
    value = obj.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise field_error(obj, key, "a number")
    try:
        result = float(value)
    except OverflowError:
        # An integer past the largest float: the wire carries any number of
        # digits, and float() of 400 of them raises.
        result, value = math.inf, "an integer past 1.8e308"
    if not math.isfinite(result):
        # Not "must be a number, not a number": NaN and infinity are numbers
        # to Python (the wire cannot carry them; a Python caller can).
        raise ProtocolError(
            BAD_REQUEST, f'"{obj["type"]}" field "{key}" must be a finite number, not {value}'
        )
    return result


def stored_value(obj: dict[str, Any], key: str) -> tuple[Any, Any]:
    """A payload or result the server will store and send back later.

    The limit, ``MAX_STORED_BYTES``, is on the value's own encoding as the
    server re-encodes it, not on its size on the wire: numbers can come back
    longer than they went in (``1e15`` is written ``1000000000000000.0``),
    and the reply that carries the value must still fit a peer's line limit.
    Only a string, array or object can come near it, and those are encoded
    by :func:`stored_form` anyway.

    Returns:
        The value, and its :func:`stored_form`: the encoding the size check
        needed anyway, kept so the server never encodes the value again.
    """
    value = obj.get(key)
    stored = stored_form(value)
    if type(stored) is bytes and len(stored) > MAX_STORED_BYTES:
        raise ProtocolError(
            MESSAGE_TOO_LARGE,
            f'"{obj["type"]}" field "{key}" encodes to {len(stored)} bytes; '
            f"the limit is {MAX_STORED_BYTES}",
        )
    return value, stored


def json_object(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """A required JSON object."""
    value = obj.get(key)
    if not isinstance(value, dict):
        raise field_error(obj, key, "an object")
    return value


def check_job_options(queue: object, priority: object, max_attempts: object) -> None:
    """Refuse options the wire would have refused.

    The codec checks a request's; these come from a journal, which may have
    been written elsewhere or edited, and a wrong type would fail only later,
    in the coordinator. Checked once per new combination, not per job.
    """
    if type(queue) is not str or not queue:
        raise InvalidTransition(f"a job's queue must be non-empty text, not {queue!r}")
    if type(priority) is not int or not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidTransition(
            f"a job's priority must be an integer within ±{MAX_PRIORITY}, not {priority!r}"
        )
    if type(max_attempts) is not int or not 1 <= max_attempts <= MAX_ATTEMPTS:
        raise InvalidTransition(
            f"a job's max_attempts must be an integer from 1 to {MAX_ATTEMPTS}, "
            f"not {max_attempts!r}"
        )
