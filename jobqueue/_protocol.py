"""The wire protocol: a sans-IO line codec and the message classes.

Nothing here touches a socket or imports trio. Bytes go in through
:meth:`LineDecoder.receive_data`, whole lines come out of
:meth:`LineDecoder.next_line`, and :func:`decode_request` / :func:`decode_reply`
turn one line into a typed message. Every way a peer can get the protocol
wrong raises :class:`ProtocolError` with a stable snake_case ``code``; the
connection handler is the one door that turns it into an ``error`` reply.

The message classes keep the Python model and the wire format apart: each has
``from_wire(obj)`` (validating a decoded JSON object) and ``to_wire()``
(building one), never ``Msg(**json)``.
"""

from __future__ import annotations

import enum
import functools
import json
import json.encoder
import math
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Final, NoReturn, TypeVar

import attrs

from ._errors import ProtocolError as ProtocolError
from ._errors import Refusal
from ._job import FINISHED, JobState

_T = TypeVar("_T")

#: Longest line (one message, without its ``\n``) a peer may send: 1 MiB.
#: Long enough for any sensible job payload, short enough that one hostile
#: connection cannot make the server buffer without bound.
MAX_LINE_BYTES = 1 << 20

#: Deepest nesting of arrays/objects accepted in a message. Python's JSON
#: decoder and encoder recurse, so an unbounded depth would let a peer raise
#: RecursionError inside the server.
MAX_DEPTH = 64

#: Room kept in a line for a reply's envelope (ids, names, error text) around
#: a payload or result: a stored value re-encodes to at most
#: ``MAX_LINE_BYTES - ENVELOPE_BYTES`` bytes, so every reply fits in
#: ``MAX_LINE_BYTES`` plus this much.
ENVELOPE_BYTES = 16384

#: Longest error message kept from ``job_failed``, in characters (longer ones
#: are cut: the message is for people, the limit keeps replies bounded).
MAX_ERROR_CHARS = 4096

#: Priorities run from -MAX_PRIORITY to MAX_PRIORITY (higher runs first).
MAX_PRIORITY = 1_000_000

#: Most runs a job may be allowed.
MAX_ATTEMPTS = 1000

#: Longest delay a submit may ask for: one year, in seconds.
MAX_DELAY_SECONDS = 366 * 86400.0

#: Most jobs one ``submit_jobs`` may carry (bounds the reply's list of ids).
MAX_BATCH = 10_000

#: Most queues one ``request_job`` may name.
MAX_QUEUES = 64

#: Most jobs one ``request_job`` (or a report's ``fetch``) may take at once.
MAX_FETCH = 1000

#: Longest progress note, encoded.
MAX_NOTE_BYTES = 4096

#: Most jobs one ``list_jobs`` returns.
MAX_LIST_LIMIT = 1000

#: Every state a job can be in, as the wire names it.
JOB_STATES = tuple(state.value for state in JobState)

#: The states a job never leaves by itself, as the wire names them.
FINISHED_STATES = frozenset(state.value for state in FINISHED)

#: Longest accepted job name (and ``hello`` name), in characters.
MAX_NAME_CHARS = 200

#: Longest wait (``request_job`` / ``wait_job``) a peer may ask for, in seconds.
MAX_WAIT_SECONDS = 3600.0


class Need(enum.Enum):
    """What :meth:`LineDecoder.next_line` returns when it has no line to give."""

    #: More bytes are needed before the next line is complete.
    DATA = "need_data"
    #: The peer closed its side and every complete line has been handed out.
    EOF = "eof"


NEED_DATA: Final = Need.DATA
EOF: Final = Need.EOF


class LineDecoder:
    r"""Splits a byte stream into ``\n``-terminated lines, with a cap on line length.

    Feed bytes with :meth:`receive_data` (``b""`` means the peer closed its
    side) and pull lines with :meth:`next_line` until it returns
    :data:`NEED_DATA` or :data:`EOF`. A trailing ``\\r`` is dropped and blank
    lines are skipped, so a person typing into ``nc`` is understood.

    Error handling:
        A line longer than ``max_line`` raises ``ProtocolError("message_too_large")``
        once, as soon as the excess is seen; the rest of that line is discarded
        without being buffered and decoding resumes after its ``\n``, so the
        connection stays usable. Bytes left without a ``\n`` at EOF raise
        ``ProtocolError("incomplete_message")`` once.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._max_line = max_line
        self._buf = bytearray()
        # Where to resume looking for b"\n": feeding one byte at a time must not
        # rescan the whole buffer each time (that would be quadratic).
        self._scan_from = 0
        self._discarding = False
        self._eof = False

    @property
    def max_line(self) -> int:
        """The longest line accepted, in bytes."""
        return self._max_line

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out as lines."""
        return len(self._buf)

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes from the peer; ``b""`` marks end of stream.

        Raises:
            RuntimeError: if called with more data after end of stream.
        """
        if self._eof:
            if data:
                raise RuntimeError("received data after EOF")
            return
        if data:
            self._buf += data
        else:
            self._eof = True

    def next_line(self) -> bytes | Need:
        """Return the next complete line, or :data:`NEED_DATA` / :data:`EOF`.

        Raises:
            ProtocolError: ``message_too_large`` or ``incomplete_message``, as
                described in the class docstring.
        """
        while True:
            newline = self._buf.find(b"\n", self._scan_from)
            if newline < 0:
                return self._no_newline()
            line = bytes(self._buf[:newline])
            # CPython deletes from the front of a bytearray in O(1).
            del self._buf[: newline + 1]
            self._scan_from = 0
            if self._discarding:
                self._discarding = False
                continue
            if len(line) > self._max_line:
                raise _too_large(self._max_line)
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.strip():
                return line

    def _no_newline(self) -> Need:
        if self._discarding:
            self._buf.clear()
        elif len(self._buf) > self._max_line:
            self._buf.clear()
            self._discarding = True
            self._scan_from = 0
            raise _too_large(self._max_line)
        self._scan_from = len(self._buf)
        if not self._eof:
            return NEED_DATA
        if self._buf.strip() and not self._discarding:
            self._buf.clear()
            self._scan_from = 0
            raise ProtocolError(
                "incomplete_message",
                "the connection closed in the middle of a message (no final newline)",
            )
        return EOF


def _too_large(limit: int) -> ProtocolError:
    return ProtocolError(
        "message_too_large",
        f"message is longer than the {limit}-byte limit; it was discarded",
    )


def _reject_constant(name: str) -> NoReturn:
    raise ProtocolError("bad_json", f"{name} is not valid JSON (RFC 8259 has no {name})")


def _parse_float(text: str) -> float:
    # Python reads an out-of-range literal such as 1e400 as infinity, which
    # JSON cannot represent: accepting it would poison every later reply.
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError("bad_json", f"number {text} is out of range for JSON")
    return value


class RawJSON(bytes):
    """A JSON value kept as the UTF-8 text :func:`encode` writes for it.

    The server only stores payloads and results and sends them back, so it
    keeps them in this form (see :func:`stored_form`): an object of 100 bytes
    of JSON costs 152 bytes, where its decoded ``dict`` and contents cost
    731, and a reply carries the text without encoding the value again.
    :func:`encode` writes it verbatim. It is ``bytes``, not ``str``, because
    a JSON encoder would quietly write any ``str`` as a string; an encoder
    that does not know this type raises ``TypeError`` instead.
    """

    __slots__ = ()


class _Splice(Exception):
    """Raised inside the JSON encoder on meeting a :class:`RawJSON`."""


def _no_default(value: object) -> NoReturn:
    if isinstance(value, RawJSON):
        raise _Splice
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_json_decode: Callable[[str], Any] = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_parse_float
).decode
#: What the marking encoder writes for a RawJSON, to be replaced by its text.
#: The control characters are always escaped, so only a string value or key
#: equal to the marker, or ending in '"' plus the marker's text, can produce
#: this sequence as well; encode() counts the matches and takes the slow path
#: if there are more than RawJSON values.
_MARK = "\x00jobqueue:raw\x00"
_MARK_TEXT = '"\\u0000jobqueue:raw\\u0000"'


def _mark(value: object) -> str:
    if isinstance(value, RawJSON):
        return _MARK
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encoder(default: Callable[[object], object]) -> Callable[[Any], Iterable[str]]:
    """An iterencode with the wire's settings, built once.

    ``json.JSONEncoder.encode`` builds a new C encoder on every call, which
    costs as much as encoding a small message. No circular reference check:
    messages are built from decoded JSON and plain fields, which cannot hold
    a cycle (one would raise RecursionError).
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover  (CPython always has the C encoder)
        return json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=default
        ).iterencode
    encoder = make(
        None, default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    return functools.partial(encoder, _current_indent_level=0)


_iterencode = _encoder(_no_default)
_iterencode_marking = _encoder(_mark)


def _json_encode(value: Any) -> str:
    return "".join(_iterencode(value))


# A lone surrogate (legal in JSON as "\ud800") has no UTF-8 encoding. The
# encoder above leaves it as a raw code point, which can only sit inside a
# string literal, so escaping just those code points keeps the JSON valid and
# no longer than it came in.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def decode_object(line: bytes) -> dict[str, Any]:
    """Decode one line as a strict JSON object with a string ``type`` field.

    Raises:
        ProtocolError: ``bad_json`` (not UTF-8, not JSON, ``NaN``/``Infinity``,
            too deeply nested) or ``bad_request`` (not an object, no ``type``).
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            "bad_json", f"message is not valid UTF-8 (bad byte at offset {exc.start})"
        ) from None
    if line.count(b"[") + line.count(b"{") > MAX_DEPTH:
        _check_depth(line, text)
    try:
        obj = _json_decode(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            "bad_json", f"message is not valid JSON: {exc.msg} at column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        # ValueError: e.g. an integer literal with more digits than Python allows.
        raise ProtocolError("bad_json", f"message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(
            "bad_request", f"a message must be a JSON object, not {_json_type(obj)}"
        )
    if not isinstance(obj.get("type"), str):
        raise ProtocolError("bad_request", 'a message must have a string field "type"')
    return obj


def decode_value(text: str) -> Any:
    """Decode any JSON value by the same strict rules as messages.

    Raises:
        ProtocolError: ``bad_json``, as for :func:`decode_object`.
    """
    if text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth(text.encode("utf-8", "surrogatepass"), text)
    try:
        return _json_decode(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"{exc.msg} at column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", str(exc)) from None


#: Every byte but the ones nesting depends on: brackets, quotes, backslashes.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"\\')
#: Objects and arrays nest alike: ``{`` reads as ``[`` and ``}`` as ``]``.
_ONE_BRACKET = bytes.maketrans(b"{}", b"[]")


def _check_depth(line: bytes, text: str) -> None:
    """Reject nesting deeper than MAX_DEPTH without recursing.

    Only called when the line has more brackets than MAX_DEPTH, so ordinary
    messages never pay for the scan. Brackets inside strings are skipped.
    A batch (``submit_jobs``, ``jobs_assigned``) has many brackets but little
    depth, so the check first works in C, on ``line``: keep only brackets
    (``{}`` read as ``[]``), quotes and backslashes, and drop each ``""`` (a
    string with no bracket or escape in it). If no quote or backslash is
    left, each pass that deletes the adjacent ``[]`` pairs removes exactly
    the innermost level, so nesting of at most MAX_DEPTH levels is gone
    after MAX_DEPTH passes. Anything else (strings holding brackets or
    escapes, too deep, not JSON) is scanned exactly, character by
    character, in ``text``.
    """
    reduced = line.translate(_ONE_BRACKET, _NOT_STRUCTURE)
    if b"\\" not in reduced:
        reduced = reduced.replace(b'""', b"")
        if b'"' not in reduced:
            for _ in range(MAX_DEPTH):
                reduced = reduced.replace(b"[]", b"")
                if not reduced:
                    return
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ProtocolError("bad_json", f"message is nested deeper than {MAX_DEPTH} levels")
        elif char in "]}":
            depth -= 1


#: The ``fetch`` member of a report, by request: a worker sends the same one
#: with every report. Cleared when full, so any number of them is fine.
_FETCH_TEXTS: dict[RequestJob, str] = {}


def _fetch_text(fetch: RequestJob) -> str:
    text = _FETCH_TEXTS.get(fetch)
    if text is None:
        if len(_FETCH_TEXTS) >= 64:
            _FETCH_TEXTS.clear()
        wire = fetch.to_wire()
        del wire["type"]
        text = _FETCH_TEXTS[fetch] = f',"fetch":{_json_encode(wire)}'
    return text


def encode_request(message: Request) -> bytes:
    """``encode(message.to_wire())``, byte for byte, with the commonest requests built directly.

    A producer sends a ``submit_job`` and a worker a ``job_complete`` for
    every job; a plain submit (no options) and a completion are written as
    text, and only their values go through the JSON encoder.

    Raises:
        ValueError, TypeError: as for :func:`encode`.
    """
    cls = type(message)
    if cls is SubmitJob:
        assert isinstance(message, SubmitJob)
        if (
            message.queue != "default"
            or message.priority
            or message.max_attempts is not None
            or message.delay
            or message.run_at is not None
            or message.key is not None
        ):
            return encode(message.to_wire())
        payload = "null" if message.payload is None else _json_encode(message.payload)
        text = f'{{"type":"submit_job","name":{_json_encode(message.name)},"payload":{payload}}}\n'
    elif cls is JobComplete:
        assert isinstance(message, JobComplete)
        result = "null" if message.result is None else _json_encode(message.result)
        text = f'{{"type":"job_complete","job_id":{_json_encode(message.job_id)},"result":{result}'
        if message.attempt is not None:
            text += f',"attempt":{_json_encode(message.attempt)}'
        if message.fetch is not None:
            text += _fetch_text(message.fetch)
        text += "}\n"
    else:
        return encode(message.to_wire())
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub(_escape_surrogate, text).encode("utf-8")


def encode(obj: dict[str, Any]) -> bytes:
    r"""Encode one message as a line of UTF-8 JSON ending in ``\n``.

    Non-ASCII text is written as UTF-8, not escaped (escaping could triple
    its size); only lone surrogates, which UTF-8 cannot carry, are written as
    ``\\uXXXX`` escapes.

    Raises:
        ValueError: if ``obj`` holds NaN or infinity.
        TypeError: if ``obj`` holds something JSON cannot represent.
    """
    text = "".join(_iterencode_marking(obj)) + "\n"
    if _MARK_TEXT not in text:
        return _utf8(text)
    # A RawJSON value: splice its text in where the encoder wrote the marker.
    raws = [value for value in obj.values() if isinstance(value, RawJSON)]
    pieces = text.split(_MARK_TEXT)
    if len(pieces) != len(raws) + 1:  # one nested deeper, or a string that looks like one
        return _splice_container(obj) + b"\n"
    out = [_utf8(pieces[0])]
    for raw, piece in zip(raws, pieces[1:], strict=True):
        out += (raw, _utf8(piece))
    return b"".join(out)


def stored_form(value: Any) -> Any:
    """``value`` as the server stores a payload or result, to send back as is.

    Strings, arrays and objects become :class:`RawJSON` (their encoded text);
    numbers, booleans and ``null`` stay as they are, already small and
    written the same way every time.

    Raises:
        ValueError: if ``value`` holds NaN or infinity.
        TypeError: if ``value`` holds something JSON cannot represent.
    """
    if isinstance(value, (str, list, dict)):
        return RawJSON(_utf8(_json_encode(value)))
    return value


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub(_escape_surrogate, text).encode("utf-8")


def _spliced(value: Any) -> bytes:
    """``value`` encoded as :func:`encode` does, with :class:`RawJSON` written verbatim."""
    if isinstance(value, RawJSON):
        return value
    try:
        return _utf8(_json_encode(value))
    except _Splice:
        return _splice_container(value)


def _splice_container(value: Any) -> bytes:
    """An array or object that holds a :class:`RawJSON` somewhere, encoded.

    The runs of fields around the raw ones go through the encoder in one call
    each, so a reply with a raw payload costs about three encoder calls.
    """
    if isinstance(value, (list, tuple)):
        return b"[" + b",".join(map(_spliced, value)) + b"]"
    if not isinstance(value, dict):  # pragma: no cover  (only containers hold one)
        raise TypeError(f"cannot encode {type(value).__name__}")
    parts: list[bytes] = []
    run: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"keys must be str, not {type(key).__name__}")
        if isinstance(item, (RawJSON, dict, list, tuple)):
            if run:
                parts.append(_utf8(_json_encode(run))[1:-1])
                run = {}
            parts.append(_utf8(json.encoder.encode_basestring(key)) + b":" + _spliced(item))
        else:
            run[key] = item
    if run:
        parts.append(_utf8(_json_encode(run))[1:-1])
    return b"{" + b",".join(parts) + b"}"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# -- field readers: each names the message and field in its error -------------


def _bad(obj: dict[str, Any], key: str, want: str) -> ProtocolError:
    if obj.get(key) == "":
        return ProtocolError("bad_request", f'"{obj["type"]}" field "{key}" must not be empty')
    if key in obj:
        got = _json_type(obj[key])
        return ProtocolError(
            "bad_request", f'"{obj["type"]}" field "{key}" must be {want}, not {got}'
        )
    return ProtocolError("bad_request", f'"{obj["type"]}" needs field "{key}" ({want})')


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _bad(obj, key, "a non-empty string")
    return value


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(obj, key, "a string")
    return value


def _short_str(obj: dict[str, Any], key: str) -> str:
    value = _str(obj, key)
    if len(value) > MAX_NAME_CHARS:
        raise ProtocolError(
            "bad_request",
            f'"{obj["type"]}" field "{key}" is longer than {MAX_NAME_CHARS} characters',
        )
    return value


def _opt_int(obj: dict[str, Any], key: str, default: _T, low: int, high: int) -> int | _T:
    if obj.get(key) is None:
        return default
    value = _int(obj, key)
    if not low <= value <= high:
        raise ProtocolError(
            "bad_request", f'"{obj["type"]}" field "{key}" must be from {low} to {high}'
        )
    return value


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(obj, key, "an integer")
    return value


def _opt_attempt(obj: dict[str, Any]) -> int | None:
    if obj.get("attempt") is None:
        return None
    attempt = _int(obj, "attempt")
    if attempt < 1:
        raise ProtocolError("bad_request", f'"{obj["type"]}" field "attempt" must be >= 1')
    return attempt


def _wait(obj: dict[str, Any], default: float | None) -> float | None:
    value = obj.get("wait")
    if value is None:
        return default
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not 0 <= value <= MAX_WAIT_SECONDS
    ):
        raise ProtocolError(
            "bad_request",
            f'"{obj["type"]}" field "wait" must be a number of seconds '
            f"from 0 to {MAX_WAIT_SECONDS:g}",
        )
    return float(value)


def _number(obj: dict[str, Any], key: str) -> float:
    value = obj.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise _bad(obj, key, "a number")
    return float(value)


def _stored_value(obj: dict[str, Any], key: str) -> tuple[Any, Any]:
    """A payload or result the server will store and send back later.

    Checked by its re-encoded size, not its size on the wire: numbers can come
    back longer than they went in (``1e15`` is written ``1000000000000000.0``),
    and the reply that carries the value must still fit a peer's line limit.

    Returns:
        The value, and its :func:`stored_form`: the encoding the size check
        needed anyway, kept so the server never encodes the value again.
    """
    value = obj.get(key)
    stored = stored_form(value)
    if isinstance(value, (dict, list, str, float)):
        # As long as encode({key: value}): '{"' key '":' value '}\n'.
        size = len(key) + 6 + (len(stored) if isinstance(stored, RawJSON) else len(repr(value)))
        if size > MAX_LINE_BYTES - ENVELOPE_BYTES:
            raise ProtocolError(
                "message_too_large",
                f'"{obj["type"]}" field "{key}" encodes to {size} bytes; '
                f"the limit is {MAX_LINE_BYTES - ENVELOPE_BYTES}",
            )
    return value, stored


def _object(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise _bad(obj, key, "an object")
    return value


# -- requests: client/worker -> server ----------------------------------------


@attrs.frozen
class Hello:
    """First message: names the peer (shown in ``stats``) and carries its token.

    Optional unless the server requires a token; then it must come first.
    """

    TYPE: ClassVar[str] = "hello"
    name: str | None = None
    #: The shared secret, for a server started with one. Kept out of repr so
    #: it never reaches a log line.
    token: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Hello:
        """Validate a decoded ``hello``."""
        name = _opt_str(obj, "name")
        if name is not None and len(name) > MAX_NAME_CHARS:
            raise ProtocolError(
                "bad_request", f'"hello" name is longer than {MAX_NAME_CHARS} characters'
            )
        return cls(name=name, token=_opt_str(obj, "token"))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE}
        if self.name is not None:
            out["name"] = self.name
        if self.token is not None:
            out["token"] = self.token
        return out


@attrs.frozen
class SubmitJob:
    """Add a job to the queue.

    Attributes:
        name: Which handler runs it.
        payload: Any JSON value, passed to the handler.
        queue: Which queue it waits in (workers choose the queues they serve).
        priority: Higher runs first within a queue (and across the queues a
            worker serves); equal priorities run in submission order.
        max_attempts: How many runs it may take (``None``: the server's default).
        delay: Seconds to wait before it may run.
        run_at: Wall-clock time (Unix seconds) before which it may not run.
        key: Idempotency key: while a job with this key is remembered, the
            same key returns that job instead of adding another.
    """

    TYPE: ClassVar[str] = "submit_job"
    name: str
    payload: Any = None
    queue: str = "default"
    priority: int = 0
    max_attempts: int | None = None
    delay: float = 0.0
    run_at: float | None = None
    key: str | None = None
    #: ``payload`` as the server stores it (:func:`stored_form`), set by
    #: :meth:`from_wire`; ``None`` for a ``None`` payload or when not decoded.
    stored_payload: Any = attrs.field(default=None, eq=False, repr=False, kw_only=True)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> SubmitJob:
        """Validate a decoded ``submit_job`` (or one job of ``submit_jobs``)."""
        name = _short_str(obj, "name")
        queue = _short_str(obj, "queue") if obj.get("queue") is not None else "default"
        key = _short_str(obj, "key") if obj.get("key") is not None else None
        priority = _opt_int(obj, "priority", 0, -MAX_PRIORITY, MAX_PRIORITY)
        max_attempts = _opt_int(obj, "max_attempts", None, 1, MAX_ATTEMPTS)
        delay = obj.get("delay")
        run_at = obj.get("run_at")
        if delay is not None and run_at is not None:
            raise ProtocolError(
                "bad_request", f'"{obj["type"]}" takes "delay" or "run_at", not both'
            )
        if delay is not None:
            delay = _number(obj, "delay")
            if not 0 <= delay <= MAX_DELAY_SECONDS:
                raise ProtocolError(
                    "bad_request",
                    f'"{obj["type"]}" field "delay" must be 0 to {MAX_DELAY_SECONDS:g} seconds',
                )
        if run_at is not None:
            run_at = _number(obj, "run_at")
            if run_at > time.time() + MAX_DELAY_SECONDS:
                raise ProtocolError(
                    "bad_request",
                    f'"{obj["type"]}" field "run_at" is more than a year ahead',
                )
        payload, stored = _stored_value(obj, "payload")
        return cls(
            name=name,
            payload=payload,
            stored_payload=stored,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            delay=delay or 0.0,
            run_at=run_at,
            key=key,
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object (options only where they differ from the defaults)."""
        out: dict[str, Any] = {"type": self.TYPE, "name": self.name, "payload": self.payload}
        if self.queue != "default":
            out["queue"] = self.queue
        if self.priority:
            out["priority"] = self.priority
        if self.max_attempts is not None:
            out["max_attempts"] = self.max_attempts
        if self.delay:
            out["delay"] = self.delay
        if self.run_at is not None:
            out["run_at"] = self.run_at
        if self.key is not None:
            out["key"] = self.key
        return out


@attrs.frozen
class SubmitJobs:
    """Add several jobs in one message: all of them, or (if any is invalid) none."""

    TYPE: ClassVar[str] = "submit_jobs"
    jobs: tuple[SubmitJob, ...]

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> SubmitJobs:
        """Validate a decoded ``submit_jobs``; any bad job rejects the whole batch."""
        jobs = obj.get("jobs")
        if not isinstance(jobs, list) or not jobs:
            raise _bad(obj, "jobs", "a non-empty array of job objects")
        if len(jobs) > MAX_BATCH:
            raise ProtocolError(
                "bad_request", f'"submit_jobs" takes at most {MAX_BATCH} jobs, not {len(jobs)}'
            )
        parsed = []
        for index, job in enumerate(jobs):
            if not isinstance(job, dict):
                raise ProtocolError("bad_request", f'"submit_jobs" job {index} is not an object')
            try:
                parsed.append(SubmitJob.from_wire({**job, "type": "submit_jobs"}))
            except ProtocolError as exc:
                raise ProtocolError(exc.code, f"job {index}: {exc.message}") from None
        return cls(tuple(parsed))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        jobs = []
        for job in self.jobs:
            wire = job.to_wire()
            del wire["type"]
            jobs.append(wire)
        return {"type": self.TYPE, "jobs": jobs}


@attrs.frozen
class RequestJob:
    """Ask for the next job; with ``wait`` > 0 the reply waits for one to arrive.

    With ``max`` set, ask for up to that many jobs at once: the reply is
    ``jobs_assigned`` (or ``no_job``) instead of ``job_assigned``.
    """

    TYPE: ClassVar[str] = "request_job"
    wait: float = 0.0
    #: The queues this worker serves (the best job across all of them wins).
    queues: tuple[str, ...] = ("default",)
    #: Most jobs to take at once (``None``: one, as ``job_assigned``).
    max: int | None = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> RequestJob:
        """Validate a decoded ``request_job`` (or a report's ``fetch`` object)."""
        wait = _wait(obj, 0.0)
        assert wait is not None
        most = _opt_int(obj, "max", None, 1, MAX_FETCH)
        queues = obj.get("queues")
        if queues is None:
            return cls(wait=wait, max=most)
        if (
            not isinstance(queues, list)
            or not 0 < len(queues) <= MAX_QUEUES
            or not all(isinstance(q, str) and 0 < len(q) <= MAX_NAME_CHARS for q in queues)
        ):
            raise _bad(obj, "queues", f"an array of 1 to {MAX_QUEUES} queue names")
        return cls(wait=wait, queues=tuple(queues), max=most)

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE}
        if self.wait:
            out["wait"] = self.wait
        if self.queues != ("default",):
            out["queues"] = list(self.queues)
        if self.max is not None:
            out["max"] = self.max
        return out


def _fetch(obj: dict[str, Any]) -> RequestJob | None:
    """The optional ``fetch`` of a report: a ``request_job`` served right after it."""
    fetch = obj.get("fetch")
    if fetch is None:
        return None
    if not isinstance(fetch, dict):
        raise _bad(obj, "fetch", "an object with the fields of request_job")
    try:
        return RequestJob.from_wire({**fetch, "type": obj["type"]})
    except ProtocolError as exc:
        raise ProtocolError(exc.code, f"in fetch: {exc.message}") from None


def _fetch_wire(out: dict[str, Any], fetch: RequestJob | None) -> dict[str, Any]:
    if fetch is not None:
        wire = fetch.to_wire()
        del wire["type"]
        out["fetch"] = wire
    return out


@attrs.frozen
class JobComplete:
    """Report that the lease holder finished a job, with an optional result.

    With ``fetch``, the same request then asks for the next job(s) (ack and
    fetch): the reply is what that ``request_job`` would get, not ``ok``.
    """

    TYPE: ClassVar[str] = "job_complete"
    job_id: str
    attempt: int | None = None
    result: Any = None
    fetch: RequestJob | None = None
    #: ``result`` as the server stores it (:func:`stored_form`), set by
    #: :meth:`from_wire`; ``None`` for a ``None`` result or when not decoded.
    stored_result: Any = attrs.field(default=None, eq=False, repr=False, kw_only=True)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobComplete:
        """Validate a decoded ``job_complete``."""
        result, stored = _stored_value(obj, "result")
        return cls(
            job_id=_str(obj, "job_id"),
            attempt=_opt_attempt(obj),
            result=result,
            stored_result=stored,
            fetch=_fetch(obj),
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE, "job_id": self.job_id, "result": self.result}
        if self.attempt is not None:
            out["attempt"] = self.attempt
        return _fetch_wire(out, self.fetch)


@attrs.frozen
class JobFailed:
    """Report that the lease holder's handler raised; the attempt is spent.

    ``fetch`` works as for :class:`JobComplete`.
    """

    TYPE: ClassVar[str] = "job_failed"
    job_id: str
    error_type: str
    error_message: str
    attempt: int | None = None
    fetch: RequestJob | None = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobFailed:
        """Validate a decoded ``job_failed``."""
        error = _object(obj, "error")
        error_type = error.get("type")
        message = error.get("message", "")
        if not isinstance(error_type, str) or not isinstance(message, str):
            raise ProtocolError(
                "bad_request",
                '"job_failed" field "error" must be {"type": STRING, "message": STRING}',
            )
        return cls(
            job_id=_str(obj, "job_id"),
            error_type=error_type[:MAX_NAME_CHARS],
            error_message=message[:MAX_ERROR_CHARS],
            attempt=_opt_attempt(obj),
            fetch=_fetch(obj),
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {
            "type": self.TYPE,
            "job_id": self.job_id,
            "error": {"type": self.error_type, "message": self.error_message},
        }
        if self.attempt is not None:
            out["attempt"] = self.attempt
        return _fetch_wire(out, self.fetch)


@attrs.frozen
class Heartbeat:
    """Extend the lease on a running job."""

    TYPE: ClassVar[str] = "heartbeat"
    job_id: str
    attempt: int | None = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Heartbeat:
        """Validate a decoded ``heartbeat``."""
        return cls(job_id=_str(obj, "job_id"), attempt=_opt_attempt(obj))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE, "job_id": self.job_id}
        if self.attempt is not None:
            out["attempt"] = self.attempt
        return out


@attrs.frozen
class Progress:
    """The lease holder reports how far along a job is (also extends the lease)."""

    TYPE: ClassVar[str] = "progress"
    job_id: str
    attempt: int | None = None
    #: A number, e.g. a fraction done or items processed.
    progress: float | None = None
    #: A short JSON note, e.g. ``{"stage": "upload"}``.
    note: Any = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Progress:
        """Validate a decoded ``progress``."""
        progress = _number(obj, "progress") if obj.get("progress") is not None else None
        note = obj.get("note")
        # The note's own encoded size: minus the 10 bytes of '{"note":' + '}\n'.
        if note is not None and len(encode({"note": note})) - 10 > MAX_NOTE_BYTES:
            raise ProtocolError(
                "message_too_large", f'"progress" note is longer than {MAX_NOTE_BYTES} bytes'
            )
        return cls(_str(obj, "job_id"), _opt_attempt(obj), progress, note)

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE, "job_id": self.job_id}
        if self.attempt is not None:
            out["attempt"] = self.attempt
        if self.progress is not None:
            out["progress"] = self.progress
        if self.note is not None:
            out["note"] = self.note
        return out


@attrs.frozen
class JobAction:
    """A person acts on one job: ``cancel_job``, ``retry_job`` or ``delete_job``."""

    TYPES: ClassVar[tuple[str, ...]] = ("cancel_job", "retry_job", "delete_job")
    TYPE: str
    job_id: str

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobAction:
        """Validate a decoded ``cancel_job`` / ``retry_job`` / ``delete_job``."""
        return cls(obj["type"], _str(obj, "job_id"))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE, "job_id": self.job_id}


@attrs.frozen
class ListJobs:
    """Ask for the jobs in one state, oldest first, up to ``limit``."""

    TYPE: ClassVar[str] = "list_jobs"
    state: str
    queue: str | None = None
    limit: int = 100

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ListJobs:
        """Validate a decoded ``list_jobs``."""
        state = _str(obj, "state")
        if state not in JOB_STATES:
            raise ProtocolError(
                "bad_request", f'"list_jobs" state must be one of: {", ".join(JOB_STATES)}'
            )
        queue = _short_str(obj, "queue") if obj.get("queue") is not None else None
        return cls(state, queue, _opt_int(obj, "limit", 100, 1, MAX_LIST_LIMIT))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE, "state": self.state, "limit": self.limit}
        if self.queue is not None:
            out["queue"] = self.queue
        return out


@attrs.frozen
class GetStatus:
    """Ask for one job's state (wire type ``job_status``)."""

    TYPE: ClassVar[str] = "job_status"
    job_id: str

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> GetStatus:
        """Validate a decoded ``job_status`` request."""
        return cls(job_id=_str(obj, "job_id"))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE, "job_id": self.job_id}


@attrs.frozen
class WaitJob:
    """Reply with the job's status once it has finished (or after ``wait`` seconds)."""

    TYPE: ClassVar[str] = "wait_job"
    job_id: str
    wait: float | None = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> WaitJob:
        """Validate a decoded ``wait_job``."""
        return cls(job_id=_str(obj, "job_id"), wait=_wait(obj, None))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {"type": self.TYPE, "job_id": self.job_id}
        if self.wait is not None:
            out["wait"] = self.wait
        return out


@attrs.frozen
class GetStats:
    """Ask for queue-wide counters (wire type ``stats``)."""

    TYPE: ClassVar[str] = "stats"

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> GetStats:
        """Validate a decoded ``stats`` request."""
        return cls()

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE}


Request = (
    Hello | SubmitJob | SubmitJobs | RequestJob | JobComplete | JobFailed | Heartbeat | Progress
    | GetStatus | WaitJob | GetStats | JobAction | ListJobs
)  # fmt: skip

_REQUESTS: dict[str, Callable[[dict[str, Any]], Request]] = {
    cls.TYPE: cls.from_wire
    for cls in (
        Hello, SubmitJob, SubmitJobs, RequestJob, JobComplete, JobFailed, Heartbeat, Progress,
        GetStatus, WaitJob, GetStats, ListJobs,
    )
}  # fmt: skip
for _type in JobAction.TYPES:
    _REQUESTS[_type] = JobAction.from_wire


def decode_request(line: bytes) -> Request:
    """Decode one line into a request message.

    Raises:
        ProtocolError: ``bad_json``, ``bad_request`` or ``unknown_type``.
    """
    obj = decode_object(line)
    from_wire = _REQUESTS.get(obj["type"])
    if from_wire is None:
        known = ", ".join(sorted(_REQUESTS))
        raise ProtocolError(
            "unknown_type", f"unknown message type {obj['type']!r}; expected one of: {known}"
        )
    return from_wire(obj)


# -- replies: server -> client/worker ------------------------------------------
#
# Replies are built by the server and read by our own Client and Worker; their
# from_wire methods are strict so a protocol mismatch shows up as a clear error.


@attrs.frozen
class Welcome:
    """Reply to ``hello``: who the server is and the lease it grants."""

    TYPE: ClassVar[str] = "hello"
    server: str
    version: str
    lease_timeout: float

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Welcome:
        """Validate a decoded ``hello`` reply."""
        return cls(
            server=_str(obj, "server"),
            version=_str(obj, "version"),
            lease_timeout=_number(obj, "lease_timeout"),
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {
            "type": self.TYPE,
            "server": self.server,
            "version": self.version,
            "lease_timeout": self.lease_timeout,
        }


@attrs.frozen
class JobSubmitted:
    """Reply to ``submit_job``: the job's id.

    ``duplicate`` is true when the submit's ``key`` matched a job the server
    still remembers: no new job was added and this is that job's id.
    """

    TYPE: ClassVar[str] = "job_submitted"
    job_id: str
    duplicate: bool = False

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobSubmitted:
        """Validate a decoded ``job_submitted``."""
        return cls(job_id=_str(obj, "job_id"), duplicate=obj.get("duplicate") is True)

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        if self.duplicate:
            return {"type": self.TYPE, "job_id": self.job_id, "duplicate": True}
        return {"type": self.TYPE, "job_id": self.job_id}


@attrs.frozen
class JobsSubmitted:
    """Reply to ``submit_jobs``: the ids, in the order the jobs were given."""

    TYPE: ClassVar[str] = "jobs_submitted"
    job_ids: tuple[str, ...]

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobsSubmitted:
        """Validate a decoded ``jobs_submitted``."""
        ids = obj.get("job_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _bad(obj, "job_ids", "an array of strings")
        return cls(tuple(ids))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE, "job_ids": list(self.job_ids)}


@attrs.frozen
class JobAssigned:
    """Reply to ``request_job``: a job is now leased to this connection."""

    TYPE: ClassVar[str] = "job_assigned"
    job_id: str
    name: str
    payload: Any
    attempt: int
    #: Seconds the lease lasts without a heartbeat.
    lease_timeout: float

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobAssigned:
        """Validate a decoded ``job_assigned``."""
        return cls(
            job_id=_str(obj, "job_id"),
            name=_str(obj, "name"),
            payload=obj.get("payload"),
            attempt=_int(obj, "attempt"),
            lease_timeout=_number(obj, "lease_timeout"),
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {
            "type": self.TYPE,
            "job_id": self.job_id,
            "name": self.name,
            "payload": self.payload,
            "attempt": self.attempt,
            "lease_timeout": self.lease_timeout,
        }


@attrs.frozen
class JobsAssigned:
    """Reply to ``request_job`` with ``max``: one or more jobs, each now leased.

    Each job in ``jobs`` carries the same fields as ``job_assigned``; the
    lease timeout is shared and given once on the wire.
    """

    TYPE: ClassVar[str] = "jobs_assigned"
    jobs: tuple[JobAssigned, ...]
    lease_timeout: float

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobsAssigned:
        """Validate a decoded ``jobs_assigned``."""
        jobs = obj.get("jobs")
        if not isinstance(jobs, list) or not jobs or not all(isinstance(j, dict) for j in jobs):
            raise _bad(obj, "jobs", "a non-empty array of job objects")
        lease_timeout = _number(obj, "lease_timeout")
        return cls(
            tuple(
                JobAssigned.from_wire({**job, "type": cls.TYPE, "lease_timeout": lease_timeout})
                for job in jobs
            ),
            lease_timeout,
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {
            "type": self.TYPE,
            "jobs": [
                {
                    "job_id": job.job_id,
                    "name": job.name,
                    "payload": job.payload,
                    "attempt": job.attempt,
                }
                for job in self.jobs
            ],
            "lease_timeout": self.lease_timeout,
        }


@attrs.frozen
class NoJob:
    """Reply to ``request_job`` when nothing is pending (after ``wait``, if given)."""

    TYPE: ClassVar[str] = "no_job"

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> NoJob:
        """Validate a decoded ``no_job``."""
        return cls()

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE}


@attrs.frozen
class Ok:
    """Reply to ``job_complete``, ``job_failed`` and ``heartbeat``."""

    TYPE: ClassVar[str] = "ok"
    #: For ``heartbeat``: seconds until the extended lease runs out.
    lease_timeout: float | None = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Ok:
        """Validate a decoded ``ok``."""
        return cls(lease_timeout=_number(obj, "lease_timeout") if "lease_timeout" in obj else None)

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        if self.lease_timeout is None:
            return {"type": self.TYPE}
        return {"type": self.TYPE, "lease_timeout": self.lease_timeout}


@attrs.frozen
class JobInfo:
    """One job as ``job_status``, ``wait_job`` and ``list_jobs`` report it.

    Attributes:
        job_id: The id the server gave the job.
        name: The handler name it was submitted with.
        state: One of ``pending``, ``scheduled``, ``running``, ``completed``,
            ``failed``, ``cancelled``.
        attempt: How many times it has been handed to a worker (0 = never yet).
        worker: Name of the worker holding it (running) or that last held it.
        result: The handler's return value, once completed.
        error: ``{"type": ..., "message": ...}`` of the last failed attempt.
        queue: The queue it waits in.
        priority: Higher runs first.
        max_attempts: How many runs it may take.
        progress: The last progress number its current run reported.
        note: The last progress note its current run reported.
    """

    TYPE: ClassVar[str] = "job_status"
    job_id: str
    name: str
    state: str
    attempt: int
    worker: str | None = None
    result: Any = None
    error: dict[str, str] | None = None
    queue: str = "default"
    priority: int = 0
    max_attempts: int | None = None
    progress: float | None = None
    note: Any = None

    @property
    def finished(self) -> bool:
        """Whether the job has reached a state it never leaves by itself."""
        return self.state in FINISHED_STATES

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobInfo:
        """Validate a decoded ``job_status`` reply."""
        error = obj.get("error")
        progress = obj.get("progress")
        return cls(
            job_id=_str(obj, "job_id"),
            name=_str(obj, "name"),
            state=_str(obj, "state"),
            attempt=_int(obj, "attempt"),
            worker=_opt_str(obj, "worker"),
            result=obj.get("result"),
            error=error if isinstance(error, dict) else None,
            queue=_opt_str(obj, "queue") or "default",
            priority=_opt_int(obj, "priority", 0, -MAX_PRIORITY, MAX_PRIORITY),
            max_attempts=_opt_int(obj, "max_attempts", None, 1, MAX_ATTEMPTS),
            progress=_number(obj, "progress") if progress is not None else None,
            note=obj.get("note"),
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        out: dict[str, Any] = {
            "type": self.TYPE,
            "job_id": self.job_id,
            "name": self.name,
            "state": self.state,
            "attempt": self.attempt,
            "queue": self.queue,
            "priority": self.priority,
        }
        if self.max_attempts is not None:
            out["max_attempts"] = self.max_attempts
        if self.worker is not None:
            out["worker"] = self.worker
        if self.state == "completed":
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        if self.progress is not None:
            out["progress"] = self.progress
        if self.note is not None:
            out["note"] = self.note
        return out


@attrs.frozen
class JobList:
    """Reply to ``list_jobs``: the jobs, and whether the limit cut the list short."""

    TYPE: ClassVar[str] = "job_list"
    jobs: tuple[JobInfo, ...]
    truncated: bool = False

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobList:
        """Validate a decoded ``job_list``."""
        jobs = obj.get("jobs")
        if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
            raise _bad(obj, "jobs", "an array of job objects")
        return cls(
            tuple(JobInfo.from_wire({**j, "type": "job_status"}) for j in jobs),
            obj.get("truncated") is True,
        )

    @staticmethod
    def entry(info: JobInfo) -> dict[str, Any]:
        """One job as a listing shows it: the status fields minus ``type`` and ``result``."""
        wire = info.to_wire()
        del wire["type"]
        wire.pop("result", None)
        return wire

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {
            "type": self.TYPE,
            "jobs": [self.entry(info) for info in self.jobs],
            "truncated": self.truncated,
        }


@attrs.frozen
class JobCancelledNotice:
    """Sent by the server, unasked, to the worker running a job that was cancelled.

    Not a reply: it may arrive at any moment, between replies. The worker
    should stop the job's handler and report nothing; the job is already
    ``cancelled`` and a late report gets ``not_leased``.
    """

    TYPE: ClassVar[str] = "job_cancelled"
    job_id: str
    attempt: int

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> JobCancelledNotice:
        """Validate a decoded ``job_cancelled``."""
        return cls(_str(obj, "job_id"), _int(obj, "attempt"))

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE, "job_id": self.job_id, "attempt": self.attempt}


@attrs.frozen
class Stats:
    """Reply to ``stats``: queue-wide counters and who holds what.

    Attributes:
        jobs: Jobs currently known, by state (finished ones within retention).
        totals: Counters since the server started: ``submitted``,
            ``completed``, ``failed``, ``reassigned`` (a lease lost to a closed
            connection or to expiry) and ``expired`` (the expiry share of it).
        connections: Open connections.
        waiting_workers: Connections blocked in ``request_job`` right now.
        workers: One entry per worker connection (holding jobs or waiting
            in ``request_job``): ``{"name", "jobs": [ids], "waiting": bool,
            "queues": [names]}``.
        queues: Per queue in use: ``{"pending", "scheduled", "running"}``.
    """

    TYPE: ClassVar[str] = "stats"
    jobs: dict[str, int]
    totals: dict[str, int]
    connections: int
    waiting_workers: int
    workers: list[dict[str, Any]]
    queues: dict[str, dict[str, int]] = attrs.field(factory=dict)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Stats:
        """Validate a decoded ``stats`` reply."""
        workers = obj.get("workers")
        if not isinstance(workers, list):
            raise _bad(obj, "workers", "an array")
        return cls(
            jobs=_object(obj, "jobs"),
            totals=_object(obj, "totals"),
            connections=_int(obj, "connections"),
            waiting_workers=_int(obj, "waiting_workers"),
            workers=workers,
            queues=_object(obj, "queues") if "queues" in obj else {},
        )

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {
            "type": self.TYPE,
            "jobs": self.jobs,
            "totals": self.totals,
            "connections": self.connections,
            "waiting_workers": self.waiting_workers,
            "workers": self.workers,
            "queues": self.queues,
        }


@attrs.frozen
class ErrorReply:
    """Sent instead of a request's usual reply when the request cannot be served."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ErrorReply:
        """Validate a decoded ``error``."""
        return cls(code=_str(obj, "code"), message=_opt_str(obj, "message") or "")

    @classmethod
    def from_exception(cls, exc: Refusal) -> ErrorReply:
        """The reply that reports ``exc`` to the peer."""
        return cls(code=exc.code, message=exc.message)

    def to_wire(self) -> dict[str, Any]:
        """Build the wire object."""
        return {"type": self.TYPE, "code": self.code, "message": self.message}


Reply = (
    Welcome | JobSubmitted | JobsSubmitted | JobAssigned | JobsAssigned | NoJob | Ok | JobInfo
    | JobList | Stats | ErrorReply | JobCancelledNotice
)  # fmt: skip

_REPLIES: dict[str, Callable[[dict[str, Any]], Reply]] = {
    cls.TYPE: cls.from_wire
    for cls in (
        Welcome, JobSubmitted, JobsSubmitted, JobAssigned, JobsAssigned, NoJob, Ok, JobInfo,
        JobList, Stats, ErrorReply, JobCancelledNotice,
    )
}  # fmt: skip


_OK = Ok()
_OK_LINE = encode(_OK.to_wire())[:-1]


def encode_reply(reply: Reply) -> bytes:
    """``encode(reply.to_wire())``, byte for byte, with the commonest replies built directly.

    A server sends ``job_submitted`` and ``job_assigned`` for every job;
    building them as text skips the dict and the encoder's walk over it
    (only the name, id and payload go through the JSON encoder).

    Raises:
        ValueError, TypeError: as for :func:`encode`.
    """
    cls = type(reply)
    if cls is JobSubmitted:
        assert isinstance(reply, JobSubmitted)
        if not reply.duplicate:
            text = f'{{"type":"job_submitted","job_id":{_json_encode(reply.job_id)}}}\n'
        else:
            return encode(reply.to_wire())
    elif cls is JobAssigned:
        assert isinstance(reply, JobAssigned)
        # The payload is usually stored as RawJSON: its bytes go in as they are.
        head = (
            f'{{"type":"job_assigned","job_id":{_json_encode(reply.job_id)},'
            f'"name":{_json_encode(reply.name)},"payload":'
        )
        tail = (
            f',"attempt":{int(reply.attempt)},'
            f'"lease_timeout":{_json_encode(reply.lease_timeout)}}}\n'
        )
        return _utf8(head) + _spliced(reply.payload) + _utf8(tail)
    elif cls is Ok and reply == _OK:
        return _OK_LINE + b"\n"
    else:
        return encode(reply.to_wire())
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub(_escape_surrogate, text).encode("utf-8")


_SUBMITTED_HEAD = b'{"type":"job_submitted","job_id":"'


def decode_reply(line: bytes) -> Reply:
    """Decode one line from the server into a reply message.

    Raises:
        ProtocolError: if the line is not a reply this package knows.
    """
    if line == _OK_LINE:
        return _OK  # the commonest reply by far for a worker
    if line.startswith(_SUBMITTED_HEAD) and line.endswith(b'"}'):
        # The commonest for a producer, exactly as encode_reply writes it:
        # an id of printable ASCII with no quote or escape is read as is.
        job_id = line[len(_SUBMITTED_HEAD) : -2]
        if job_id.isascii() and b'"' not in job_id and b"\\" not in job_id:
            text = job_id.decode("ascii")
            if text.isprintable() and text:
                return JobSubmitted(text)
    obj = decode_object(line)
    from_wire = _REPLIES.get(obj["type"])
    if from_wire is None:
        raise ProtocolError("unknown_type", f"unexpected reply type {obj['type']!r}")
    return from_wire(obj)
