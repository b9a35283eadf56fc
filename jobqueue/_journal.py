"""The journal's format and replay, as pure code: no trio, no clock of its own.

A journal is a directory of *segments*, ``00000000000000000001.jqj`` and up,
replayed in order of their number. A segment is a magic line followed by
*records*; each record is one event (:mod:`jobqueue._events`) framed as::

    length (4 bytes, little endian)  crc32 of the payload  crc32 of the 8 bytes before
    payload: the event as one JSON object, {"@": "Completed", "job_id": ..., ...}

The header carries its own checksum so that a flipped bit in a length is
caught as damage, not mistaken for a record that runs past the end of the
file (which is what a crash mid-write leaves, and what start-up cuts off).

Events are encoded generically, from their attrs fields, and found again by
class name in :data:`EVENT_TYPES`, which is read off the ``Event`` union: a new
event class needs no journal code.
Payloads, results and notes the server holds as :class:`~jobqueue._json.RawJSON`
are written verbatim and read back as ``RawJSON`` (their keys are listed
under ``"~"``). Times are the state's monotonic times shifted by
``wall_offset`` (wall clock minus monotonic clock) on the way out and back on
the way in, so a deadline means the same moment after a restart, when the
monotonic clock has started again from elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import typing
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from ._events import (
    Event,
    Submitted,
)
from ._json import RawJSON, encode, stored_form

log = logging.getLogger("jobqueue.journal")

#: Every event class, by the name its records carry: a new event is one entry.
EVENT_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in typing.get_args(Event)}

#: Fields holding a moment on the state's clock: shifted to wall-clock time.
TIME_FIELDS = frozenset({"not_before", "lease_deadline", "retry_at", "at"})

#: What every segment starts with (its version is the digit).
MAGIC = b"jobqueue-journal 1\n"
#: How every snapshot record's payload starts (events start ``{"@":``), and
#: how the first record of a segment that starts with a snapshot starts
#: (see :mod:`jobqueue._snapshot`).
SNAPSHOT_MARK = b'{"$":'
SNAPSHOT_HEADER = b'{"$":"snapshot"'
_HEADER = struct.Struct("<III")
HEADER_BYTES = _HEADER.size
_SEGMENT = re.compile(r"^(\d{20})\.jqj$")

# The fields of each class, looked up once rather than per event.
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(field.name for field in attrs.fields(cls)) for cls in EVENT_TYPES.values()
}


class JournalError(Exception):
    """The journal cannot be used as it is; the message says why and where."""


class JournalDamaged(JournalError):
    """A record before the end of a segment does not check out.

    Attributes:
        path: The segment.
        offset: Where the bad record starts, in bytes from the segment's start.
    """

    def __init__(self, path: str, offset: int, why: str) -> None:
        self.path = path
        self.offset = offset
        super().__init__(
            f"journal damaged: {path} at byte {offset}: {why}; the records before it can be "
            f"kept with `jobqueue journal repair {os.path.dirname(path) or '.'}`"
        )


# -- events <-> payloads --------------------------------------------------------------


def encode_event(event: Event, wall_offset: float = 0.0) -> bytes:
    """``event`` as a record's payload (JSON, UTF-8, no newline)."""
    cls = type(event)
    obj: dict[str, Any] = {"@": cls.__name__}
    raw: list[str] = []
    for name in _FIELDS[cls]:
        value = getattr(event, name)
        if isinstance(value, RawJSON):
            raw.append(name)
        elif name in TIME_FIELDS and value is not None:
            value += wall_offset
        obj[name] = value
    if raw:
        obj["~"] = raw
    return encode(obj)[:-1]


def decode_event(payload: bytes, wall_offset: float = 0.0) -> Event:
    """The event a record's payload holds.

    Raises:
        ValueError: the payload is no event this version knows.
    """
    obj = json.loads(payload)
    if not isinstance(obj, dict):
        raise ValueError("a record is not a JSON object")
    cls = EVENT_TYPES.get(str(obj.pop("@", "")))
    if cls is None:
        raise ValueError("a record names no known event")
    for name in obj.pop("~", ()):
        obj[name] = stored_form(obj[name])
    for name in TIME_FIELDS.intersection(obj):
        if obj[name] is not None:
            obj[name] -= wall_offset
    try:
        event: Event = cls(**obj)
    except TypeError as exc:
        raise ValueError(f"a {cls.__name__} record does not fit this version: {exc}") from None
    return event


# -- records ------------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    """One record: ``payload`` behind its checked header."""
    head = struct.pack("<II", len(payload), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


@attrs.frozen
class Scan:
    """What reading one segment found.

    Attributes:
        payloads: Every complete record's payload, in order.
        end: Where the last complete record ends (the segment's good length).
        torn: Bytes after ``end``: a record a crash cut short (0: none).
    """

    payloads: list[bytes]
    end: int
    torn: int


def scan(data: bytes, path: str = "<segment>") -> Scan:
    """Split a segment's bytes into record payloads, checking every checksum.

    A record the file ends inside of (or a tail of zero bytes, which a power
    cut can leave where data was never written) is a torn write: it is
    reported in ``torn``, not raised, because the crash that made it came
    before its change could have been acknowledged.

    Raises:
        JournalDamaged: a bad magic line, or a complete record whose
            checksum fails, with the file and offset.
    """
    size = len(data)
    if size < len(MAGIC):
        if MAGIC.startswith(data):
            return Scan([], 0, size)
        raise JournalDamaged(path, 0, "not a jobqueue journal segment (bad first line)")
    if not data.startswith(MAGIC):
        raise JournalDamaged(path, 0, "not a jobqueue journal segment (bad first line)")
    payloads: list[bytes] = []
    offset = len(MAGIC)
    view = memoryview(data)
    crc32 = zlib.crc32
    while offset < size:
        if size - offset < HEADER_BYTES:
            return Scan(payloads, offset, size - offset)
        length, crc, head_crc = _HEADER.unpack_from(data, offset)
        if crc32(view[offset : offset + 8]) != head_crc:
            if not any(view[offset:]):
                return Scan(payloads, offset, size - offset)
            raise JournalDamaged(path, offset, "a record's header fails its checksum")
        start = offset + HEADER_BYTES
        end = start + length
        if end > size:
            return Scan(payloads, offset, size - offset)
        payload = data[start:end]
        if crc32(payload) != crc:
            raise JournalDamaged(path, offset, "a record's contents fail their checksum")
        payloads.append(payload)
        offset = end
    return Scan(payloads, offset, 0)


# -- segments ------------------------------------------------------------------------


def segment_name(number: int) -> str:
    """The file name of segment ``number``."""
    return f"{number:020d}.jqj"


def segments(directory: str) -> list[tuple[int, str]]:
    """The segments in ``directory`` as ``(number, path)``, oldest first."""
    found = []
    for name in os.listdir(directory):
        match = _SEGMENT.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


@attrs.define
class Reading:
    """A journal directory read and checked, ready to replay.

    Attributes:
        payloads: Every record, oldest first, over all segments.
        last: The last segment's ``(number, path)``, ``None`` if there is none.
        good_end: Where the last segment's complete records end.
        torn: Bytes of a torn record at the end of the last segment.
        obsolete: Segments before the last one that starts with a snapshot:
            compaction made them redundant and was cut short before
            removing them.
        size: Bytes in the segments replayed (the obsolete ones left out).
        snapshot_size: Bytes of the segment the snapshot starts (0: none).
    """

    payloads: list[bytes] = attrs.field(factory=list)
    last: tuple[int, str] | None = None
    good_end: int = 0
    torn: int = 0
    obsolete: list[str] = attrs.field(factory=list)
    size: int = 0
    snapshot_size: int = 0


def read_journal(directory: str) -> Reading:
    """Read every segment of ``directory``, oldest first.

    Only the last segment may end in a torn record: an earlier one was
    complete when the next was started, so a short one is damage. A segment
    that starts with a snapshot stands alone: the segments before it are
    listed as obsolete, not read.

    Raises:
        JournalDamaged: a record that fails its checksum, with file and offset.
        OSError: a segment cannot be read.
    """
    reading = Reading()
    found = segments(directory)
    start, snapshotted = 0, False
    for index in range(len(found) - 1, -1, -1):
        with open(found[index][1], "rb") as file:
            head = file.read(len(MAGIC) + HEADER_BYTES + len(SNAPSHOT_HEADER))
        if head[len(MAGIC) + HEADER_BYTES :] == SNAPSHOT_HEADER:
            start, snapshotted = index, True
            break
    reading.obsolete = [path for _, path in found[:start]]
    found = found[start:]
    for index, (number, path) in enumerate(found):
        with open(path, "rb") as file:
            data = file.read()
        result = scan(data, path)
        if result.torn and index < len(found) - 1:
            raise JournalDamaged(path, result.end, "a segment that is not the last ends early")
        reading.payloads.extend(result.payloads)
        reading.size += result.end
        if index == 0 and snapshotted:
            reading.snapshot_size = result.end
        reading.last = (number, path)
        reading.good_end, reading.torn = result.end, result.torn
    return reading


def decode_all(payloads: Iterable[bytes], wall_offset: float) -> Iterator[Event]:
    """The events of ``payloads``, in order.

    Raises:
        ValueError: a record that checks out but holds no event this
            version knows (a journal from a newer version).
    """
    for payload in payloads:
        yield decode_event(payload, wall_offset)


def id_prefix_of(events: Iterable[Event]) -> str | None:
    """The id prefix the journal's jobs were numbered with (``None``: no jobs).

    The server keeps it across restarts, so ids go on from the same ``seq``
    and the store's fast path for fresh ids keeps working.
    """
    for event in events:
        if isinstance(event, Submitted):
            tail = str(event.seq)
            if event.job_id.endswith(tail):
                return event.job_id[: -len(tail)]
    return None
