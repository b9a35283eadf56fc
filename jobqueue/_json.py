"""Strict JSON for the wire, and the raw-JSON splice for stored values.

Python's :mod:`json` accepts things RFC 8259 does not (``NaN``, ``1e400`` read
as infinity) and recurses without a bound; every message goes through
:func:`decode_object` instead, which refuses both with ``bad_json`` so one
peer cannot poison a later reply or raise RecursionError in the server.

Encoding is compact, UTF-8, built once per process (see :func:`_encoder`).
The server keeps payloads and results as the text it will send back, plain
``bytes`` (:func:`stored_form`), and :func:`encode_stored` splices them in
verbatim, so a reply never encodes them again. Only the server's encoders
(:func:`encode_stored`, :func:`encode_spliced`) splice; :func:`encode` and
:func:`encode_value`, which a client's requests go through, refuse ``bytes``
as JSON cannot represent them, so a caller's ``bytes`` payload or handler
result is a ``TypeError``, not text sent as it is.
"""

from __future__ import annotations

import functools
import json
import json.encoder
import json.scanner
import math
import re
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from ._errors import BAD_JSON, BAD_REQUEST, ProtocolError
from ._limits import MAX_DEPTH


def _reject_constant(name: str) -> NoReturn:
    raise ProtocolError(BAD_JSON, f"{name} is not valid JSON (RFC 8259 has no {name})")


def _parse_float(text: str) -> float:
    # Python reads an out-of-range literal such as 1e400 as infinity, which
    # JSON cannot represent: accepting it would poison every later reply.
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(BAD_JSON, f"number {text} is out of range for JSON")
    return value


class _Splice(Exception):
    """Raised inside the splicing JSON encoder on meeting stored raw JSON (``bytes``)."""


def _refuse(value: object) -> NoReturn:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _splice(value: object) -> NoReturn:
    if type(value) is bytes:
        raise _Splice
    _refuse(value)


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_parse_float)
_json_decode: Callable[[str], Any] = _decoder.decode
#: The decoder's scanner, called directly for a line that is one object and
#: nothing else: ``decode`` around it costs two regex matches and a wrapper.
#: (typeshed types ``make_scanner``'s argument as the scanner class itself.)
_scan_once: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(_decoder)  # type: ignore[arg-type]

#: The JSON value at ``text[start]`` and the index just after it, by the
#: rules of :func:`decode_object`, for the codec's fast paths. No whitespace
#: is skipped and nesting is not limited: the caller checks the depth first,
#: as :func:`decode_object` does. Raises ``StopIteration`` where no value
#: starts, and as the scanner does for a bad one.
scan_value = _scan_once
#: What the marking encoder writes for raw JSON, to be replaced by its text.
#: The control characters are always escaped, so only a string value or key
#: equal to the marker, or ending in '"' plus the marker's text, can produce
#: this sequence as well; encode_stored() counts the matches and takes the
#: slow path if there are more than raw values.
_MARK = "\x00jobqueue:raw\x00"
_MARK_TEXT = '"\\u0000jobqueue:raw\\u0000"'


def _mark(value: object) -> str:
    if type(value) is bytes:
        return _MARK
    _refuse(value)


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


_iterencode = _encoder(_refuse)
_iterencode_splicing = _encoder(_splice)
_iterencode_marking = _encoder(_mark)


def encode_value(value: Any) -> str:
    """``value`` as compact JSON text, lone surrogates left raw (see :func:`utf8`).

    For the codec's fast paths, which build a message as text around it.
    ``bytes`` are refused (:func:`encode_spliced` writes them as raw JSON).

    Raises:
        ValueError, TypeError: as for :func:`encode`.
    """
    try:
        return "".join(_iterencode(value))
    except RecursionError:
        raise ValueError(_SELF_HOLDING) from None


def encode_field(value: Any) -> str:
    """:func:`encode_value` for a message's id, name or attempt, quicker for a str or an int.

    Those are almost always a ``str`` or an ``int``, whose JSON text the
    encoder's own string function (lone surrogates left raw, as above) and
    ``int.__str__`` give directly; anything else takes :func:`encode_value`.
    """
    kind = type(value)
    if kind is str:
        return encode_str(value)
    if kind is int:
        return int.__repr__(value)
    return encode_value(value)


#: A ``str`` as JSON text, non-ASCII and lone surrogates left raw (see :func:`utf8`):
#: the encoder's own string function, for the codec's loops over many strings.
encode_str: Callable[[str], str] = json.encoder.encode_basestring


# A lone surrogate (legal in JSON as "\ud800") has no UTF-8 encoding. The
# encoder above leaves it as a raw code point, which can only sit inside a
# string literal, so escaping just those code points keeps the JSON valid and
# no longer than it came in.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


#: The deepest nesting a reply may have: a stored value (a payload, result
#: or note), which the server accepts at ``MAX_DEPTH``, inside the reply's
#: own levels (``jobs_assigned``: the message, its ``jobs`` array, a job).
REPLY_DEPTH = MAX_DEPTH + 3


def decode_object(line: bytes, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Decode one line as a strict JSON object with a string ``type`` field.

    ``max_depth`` is the deepest nesting allowed: ``MAX_DEPTH`` for a
    request; a reply may nest a little deeper (see :data:`REPLY_DEPTH`).

    Raises:
        ProtocolError: ``bad_json`` (not UTF-8, not JSON, ``NaN``/``Infinity``,
            too deeply nested) or ``bad_request`` (not an object, no ``type``).
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            BAD_JSON, f"message is not valid UTF-8 (bad byte at offset {exc.start})"
        ) from None
    if line.count(b"[") + line.count(b"{") > max_depth:
        _check_depth(line, text, max_depth)
    if text.startswith("{"):
        # The usual line; anything else (whitespace around it, bad JSON)
        # takes the full path below, which words its errors.
        try:
            obj, end = _scan_once(text, 0)
        except Exception:  # decoded again below, which raises it as it should
            end = -1
        if end == len(text) and isinstance(obj, dict) and isinstance(obj.get("type"), str):
            return obj
    try:
        obj = _json_decode(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            BAD_JSON, f"message is not valid JSON: {exc.msg} at column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        # ValueError: e.g. an integer literal with more digits than Python allows.
        raise ProtocolError(BAD_JSON, f"message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_REQUEST, f"a message must be a JSON object, not {json_type(obj)}")
    if not isinstance(obj.get("type"), str):
        raise ProtocolError(BAD_REQUEST, 'a message must have a string field "type"')
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
        raise ProtocolError(BAD_JSON, f"{exc.msg} at column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(BAD_JSON, str(exc)) from None


#: Every byte but the ones nesting depends on: brackets, quotes, backslashes.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"\\')
#: Objects and arrays nest alike: ``{`` reads as ``[`` and ``}`` as ``]``.
_ONE_BRACKET = bytes.maketrans(b"{}", b"[]")


def _check_depth(line: bytes, text: str, max_depth: int = MAX_DEPTH) -> None:
    """Reject nesting deeper than ``max_depth`` without recursing.

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
            for _ in range(max_depth):
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
            if depth > max_depth:
                raise ProtocolError(BAD_JSON, f"message is nested deeper than {max_depth} levels")
        elif char in "]}":
            depth -= 1


#: Why a value that holds itself cannot be sent. The encoder does not look
#: for cycles (a look per container would cost every message), so such a
#: value, like one nested thousands deep, ends in RecursionError; callers
#: get the ValueError they expect for a value JSON cannot represent.
_SELF_HOLDING = "value holds itself, or is nested too deeply, to be JSON"


def encode(obj: dict[str, Any]) -> bytes:
    r"""Encode one message as a line of UTF-8 JSON ending in ``\n``.

    Non-ASCII text is written as UTF-8, not escaped (escaping could triple
    its size); only lone surrogates, which UTF-8 cannot carry, are written as
    ``\\uXXXX`` escapes. ``bytes`` are refused, as anything else JSON cannot
    represent: a message holding stored raw JSON goes through
    :func:`encode_stored`.

    Raises:
        ValueError: if ``obj`` holds NaN or infinity, or a value that holds
            itself (or is nested thousands deep).
        TypeError: if ``obj`` holds something JSON cannot represent.
    """
    try:
        text = "".join(_iterencode(obj))
    except RecursionError:
        raise ValueError(_SELF_HOLDING) from None
    return utf8(text + "\n")


def encode_stored(obj: dict[str, Any]) -> bytes:
    """Encode one message as :func:`encode` does, writing ``bytes`` values verbatim.

    For what the server writes (replies, snapshots): its ``bytes`` values are
    payloads and results kept by :func:`stored_form`, JSON text already.

    Raises:
        ValueError, TypeError: as for :func:`encode`.
    """
    text = "".join(_iterencode_marking(obj)) + "\n"
    if _MARK_TEXT not in text:
        return utf8(text)
    # Raw JSON: splice its text in where the encoder wrote the marker.
    raws = [value for value in obj.values() if type(value) is bytes]
    pieces = text.split(_MARK_TEXT)
    if len(pieces) != len(raws) + 1:  # one nested deeper, or a string that looks like one
        return _splice_container(obj) + b"\n"
    out = [utf8(pieces[0])]
    for raw, piece in zip(raws, pieces[1:], strict=True):
        out += (raw, utf8(piece))
    return b"".join(out)


def stored_form(value: Any) -> Any:
    """``value`` as the server stores a payload or result, to send back as is.

    Strings, arrays and objects become their encoded text, plain ``bytes``;
    numbers, booleans and ``null`` stay as they are, already small and
    written the same way every time. The server only stores these values and
    sends them back: an object of 100 bytes of JSON costs 133 bytes kept this
    way, where its decoded ``dict`` and contents cost 731, and a reply
    carries the text without encoding the value again. ``bytes``, not
    ``str``, because a JSON encoder writes any ``str`` as a string, and
    plain ``bytes``, not a subclass, because an instance of a class defined
    in Python carries a garbage collector header (16 bytes a job) that
    ``bytes`` does not. No decoded JSON value is ever ``bytes``, so on the
    server a ``bytes`` value is always one of these.

    Raises:
        ValueError: if ``value`` holds NaN or infinity.
        TypeError: if ``value`` holds something JSON cannot represent.
    """
    if isinstance(value, (str, list, dict)):
        return utf8(encode_value(value))
    return value


def utf8(text: str) -> bytes:
    """``text`` (JSON from :func:`encode_value`) as UTF-8, lone surrogates escaped."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub(_escape_surrogate, text).encode("utf-8")


def encode_spliced(value: Any) -> bytes:
    """``value`` encoded as :func:`encode_stored` does, ``bytes`` written verbatim."""
    if type(value) is bytes:
        return value
    try:
        return utf8("".join(_iterencode_splicing(value)))
    except _Splice:
        return _splice_container(value)


def _splice_container(value: Any) -> bytes:
    """An array or object that holds stored raw JSON (``bytes``) somewhere, encoded.

    The runs of fields around the raw ones go through the encoder in one call
    each, so a reply with a raw payload costs about three encoder calls.
    """
    if isinstance(value, (list, tuple)):
        return b"[" + b",".join(map(encode_spliced, value)) + b"]"
    if not isinstance(value, dict):  # pragma: no cover  (only containers hold one)
        raise TypeError(f"cannot encode {type(value).__name__}")
    parts: list[bytes] = []
    run: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"keys must be str, not {type(key).__name__}")
        if isinstance(item, (bytes, dict, list, tuple)):
            if run:
                parts.append(utf8(encode_value(run))[1:-1])
                run = {}
            parts.append(utf8(json.encoder.encode_basestring(key)) + b":" + encode_spliced(item))
        else:
            run[key] = item
    if run:
        parts.append(utf8(encode_value(run))[1:-1])
    return b"{" + b",".join(parts) + b"}"


def json_type(value: object) -> str:
    """How an error message names the JSON type of a decoded ``value``."""
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
