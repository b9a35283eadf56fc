"""The journal's fast paths: the events of an ordinary job's life written as text.

Each writes one event kind's payload as text, for the field types the
server gives it (ids and names ``str``, numbers ``int``, times ``float``,
payloads and results ``None`` or raw ``bytes``), and returns ``None`` for
anything else, which then takes :func:`~jobqueue._journal.pack`. They must match ``pack``
byte for byte: tests/unit/test_journal_fast.py holds them to it for
arbitrary values. What they rely on: the encoder writes a ``str`` with
``encode_basestring``, an exact ``int`` or ``float`` as its ``repr`` (what
an f-string gives for exact types), ``None`` as ``null``, with no spaces;
a time is shifted by the offset and must come out finite (``pack`` raises
on NaN or infinity: the fallback then raises the same error); a trailing
field equal to its default is left out, so each path requires its last
field (``at``) to be set, which it always is on the server.

A float's repr is the dearest part (about 0.4 us, a third of an event).
The jobs of one command share its time, so each time field remembers its
last value and text: a batch of 100 submits writes its ``at`` once. Equal
floats have equal reprs except 0.0 and -0.0, so zero is never taken from
memory; NaN equals nothing, so it never is either.

The events of one command share more than their time: a ``submit_many``'s
``Submitted`` events differ only in their id, payload and ``seq``, a
``jobs_assigned``'s ``Assigned`` only in their id. So ``Submitted`` and
``Assigned`` keep the text of the rest with the values (and offset) it
was written from, and an event whose values there equal them takes it.
Every field's exact type is checked first, so equal values write one
text, but for a zero and its negative: text with a time that is zero
once shifted is never kept.
"""

from __future__ import annotations

import json.encoder
import math
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import attrs

from ._events import (
    Assigned,
    Completed,
    Forgotten,
    Promoted,
    Released,
    Revived,
    Submitted,
)
from ._json import utf8

_quote: Callable[[str], str] = json.encoder.encode_basestring

#: Per time field, its last shifted value and that value's text (one tuple,
#: replaced whole, so a reader in another thread sees a matching pair).
_NEVER: tuple[float, str] = (math.nan, "")
_SUBMITTED_AT = [_NEVER]
_ASSIGNED_LEASE = [_NEVER]
_ASSIGNED_AT = [_NEVER]
_COMPLETED_AT = [_NEVER]
#: What the events of one command share, kept as the times are: the values
#: (and offset) they were written from, then their text (``Submitted``: its
#: name's, and from ``queue`` on; ``Assigned``: after its job's id).
_NOTHING_SHARED: tuple[tuple[Any, ...], str, str] = ((), "", "")
_NOTHING_ASSIGNED: tuple[tuple[Any, ...], str] = ((), "")
_SUBMITTED_SHARED = [_NOTHING_SHARED]
_ASSIGNED_SHARED = [_NOTHING_ASSIGNED]


def float_text(value: float, memory: list[tuple[float, str]]) -> str | None:
    """``repr(value)``, from ``memory`` if ``value`` is the one before; ``None``: NaN or infinity.

    ``memory`` holds one ``(value, text)`` tuple, replaced whole, so that a
    reader in another thread never sees half an update.
    """
    last = memory[0]
    if value == last[0] and value:
        return last[1]
    if value - value:  # NaN or infinity: pack raises
        return None
    text = repr(value)
    memory[0] = (value, text)
    return text


def _submitted(event: Submitted, wall_offset: float) -> bytes | None:
    job_id, name, payload, seq, queue, priority, attempts, not_before, key, at = _GET_SUBMITTED(
        event
    )
    if (
        type(job_id) is not str
        or type(name) is not str
        or type(seq) is not int
        or type(queue) is not str
        or type(priority) is not int
        or type(attempts) is not int
        or type(at) is not float
        or (not_before is not None and type(not_before) is not float)
        or (key is not None and type(key) is not str)
    ):
        return None
    if payload is None:
        start = '["Submitted",0,'
    elif type(payload) is bytes:
        start = '["Submitted",4,'
    else:
        return None
    # The time first: where a command's events differ from the last command's.
    shared = (at, name, queue, priority, attempts, not_before, key, wall_offset)
    last = _SUBMITTED_SHARED[0]
    if shared == last[0]:
        named, rest = last[1], last[2]
    else:
        # Written here, not in a function of its own: one call less for the
        # event that starts a command, every event when commands have one each.
        at += wall_offset
        when = float_text(at, _SUBMITTED_AT)
        if when is None:
            return None
        if not_before is None:
            after = "null"
            zero = not at
        else:
            not_before += wall_offset
            if not_before - not_before:
                return None
            after = repr(not_before)
            zero = not at or not not_before
        keyed = "null" if key is None else _quote(key)
        named = _quote(name)
        rest = f"{_quote(queue)},{priority},{attempts},{after},{keyed},{when}]"
        # Never kept for a time that is zero once shifted: equal to the
        # zero of the other sign, whose text differs.
        _SUBMITTED_SHARED[0] = _NOTHING_SHARED if zero else (shared, named, rest)
    text = f"{start}{_quote(job_id)},{named},null,{seq},{rest}"
    # utf8() written out (an event's every call counts); it escapes lone surrogates.
    try:
        encoded = text.encode()
    except UnicodeEncodeError:
        encoded = utf8(text)
    return encoded if payload is None else encoded + b"\n" + payload


def _assigned(event: Assigned, wall_offset: float) -> bytes | None:
    job_id, worker, worker_name, lease_deadline, at = _GET_ASSIGNED(event)
    kind = type(worker)
    if (
        type(job_id) is not str
        or (kind is not int and kind is not str)
        or (worker_name is not None and type(worker_name) is not str)
        or type(lease_deadline) is not float
        or type(at) is not float
    ):
        return None
    shared = (at, lease_deadline, worker, worker_name, wall_offset)
    last = _ASSIGNED_SHARED[0]
    if shared == last[0]:
        rest = last[1]
    else:
        holder = repr(worker) if kind is int else _quote(worker)
        label = "null" if worker_name is None else _quote(worker_name)
        lease_deadline += wall_offset
        at += wall_offset
        lease = float_text(lease_deadline, _ASSIGNED_LEASE)
        when = float_text(at, _ASSIGNED_AT)
        if lease is None or when is None:
            return None
        rest = f"{holder},{label},{lease},{when}]"
        _ASSIGNED_SHARED[0] = _NOTHING_ASSIGNED if not lease_deadline or not at else (shared, rest)
    text = f'["Assigned",0,{_quote(job_id)},{rest}'
    try:
        return text.encode()
    except UnicodeEncodeError:
        return utf8(text)


def _completed(event: Completed, wall_offset: float) -> bytes | None:
    job_id, result, at = _GET_COMPLETED(event)
    if type(job_id) is not str or type(at) is not float:
        return None
    at += wall_offset
    last = _COMPLETED_AT[0]
    when = last[1] if at == last[0] and at else float_text(at, _COMPLETED_AT)
    if when is None:
        return None
    if result is None:
        text = f'["Completed",0,{_quote(job_id)},null,{when}]'
    elif type(result) is bytes:
        text = f'["Completed",2,{_quote(job_id)},null,{when}]'
    else:
        return None
    try:
        encoded = text.encode()
    except UnicodeEncodeError:
        encoded = utf8(text)
    return encoded if result is None else encoded + b"\n" + result


def _only_id(tag: str) -> Callable[[Any, float], bytes | None]:
    """The fast path of an event whose one field is ``job_id``."""
    start = f'["{tag}",0,'

    def encode(event: Any, wall_offset: float) -> bytes | None:
        job_id = event.job_id
        if type(job_id) is not str:
            return None
        return utf8(start + _quote(job_id) + "]")

    return encode


_GET_SUBMITTED = attrgetter(*(field.name for field in attrs.fields(Submitted)))
_GET_ASSIGNED = attrgetter(*(field.name for field in attrs.fields(Assigned)))
_GET_COMPLETED = attrgetter(*(field.name for field in attrs.fields(Completed)))

#: The fast path of each event kind that has one.
FAST: dict[type[Any], Callable[[Any, float], bytes | None]] = {
    Submitted: _submitted,
    Assigned: _assigned,
    Completed: _completed,
    **{cls: _only_id(cls.__name__) for cls in (Forgotten, Promoted, Released, Revived)},
}
