"""The journal's format and replay, as pure code: no trio, no clock of its own.

A journal is a directory of *segments*, ``00000000000000000001.jqj`` and up,
replayed in order of their number. A segment is a magic line followed by
*records*; each record is one event (:mod:`jobqueue._events`) framed as::

    length (4 bytes, little endian)  crc32 of the payload  crc32 of the 8 bytes before
    payload: the event as a JSON array, then its raw values, each after a newline:
        ["Submitted",4,"3f9a-17","resize",null,17,"default",0,3]
        {"image":"a.png"}

The header carries its own checksum so that a flipped bit in a length is
caught as damage, not mistaken for a record that runs past the end of the
file (which is what a crash mid-write leaves, and what start-up cuts off).

The array is ``[class name, raw mask, field values in attrs order...]``,
with trailing fields that hold their default left out (a plain submit stops
after ``max_attempts``). Arrays, not objects: a million of them are read at
start-up, and an array of values parses in about a third of the time of an
object with the same values under keys. Events are encoded generically, from
their attrs fields, and found again by class name in :data:`EVENT_TYPES`,
which is read off the ``Event`` union: a new event class needs no journal
code (a new field must go last, with a default). The events of an ordinary
job's life also have a hand-written fast path each (:data:`FAST`), held by
tests to the generic encoder's bytes.

Payloads, results and notes the server holds as raw JSON (``bytes``, see
:func:`~jobqueue._json.stored_form`) are not parsed back at all: their slot in
the array holds ``null``, bit *i* of the mask says field *i* is raw, and the
raw texts follow the array, in field order, each after a newline (compact
JSON never holds a newline, so the split is exact). Times are the state's
monotonic times shifted by ``wall_offset`` (wall clock minus monotonic
clock) on the way out and back on the way in, so a deadline means the same
moment after a restart, when the monotonic clock has started again from
elsewhere.
"""

from __future__ import annotations

import itertools
import json
import logging
import mmap
import os
import re
import struct
import typing
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Any

import attrs

from ._events import Assigned, Completed, Event, Submitted
from ._journal_fast import FAST
from ._json import encode_value, utf8
from ._quick import builder

log = logging.getLogger("jobqueue.journal")

#: Every event class, by the name its records carry: a new event is one entry.
EVENT_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in typing.get_args(Event)}

#: Fields holding a moment on the state's clock: shifted to wall-clock time.
TIME_FIELDS = frozenset(
    {"not_before", "lease_deadline", "retry_at", "at", "submitted_at", "started_at", "finished_at"}
)

#: What every segment starts with (its version is the digit).
MAGIC = b"jobqueue-journal 2\n"
#: How every snapshot record's payload starts (events start ``["<Class>",``),
#: and how the first record of a segment that starts with a snapshot starts
#: (see :mod:`jobqueue._snapshot`).
SNAPSHOT_MARK = b'["$",'
SNAPSHOT_HEADER = b'{"$":"snapshot"'
_HEADER = struct.Struct("<III")
HEADER_BYTES = _HEADER.size
_SEGMENT = re.compile(r"^(\d{20})\.jqj$")
#: Records decoded with one ``json.loads``: the per-call cost is paid once per batch.
BATCH = 4096
#: A field without a default: never left out.
_NO_DEFAULT = object()
_FACTORY: type[Any] = type(attrs.Factory(list))


@attrs.frozen
class Layout:
    """How one kind of record lays its fields out in an array.

    Attributes:
        tag: The array's first element.
        defaults: Each field's default (``_NO_DEFAULT``: none): trailing
            fields equal to theirs are left out.
        times: Indexes of the fields that hold a time on the state's clock.
    """

    tag: str
    defaults: tuple[Any, ...]
    times: frozenset[int]

    @classmethod
    def of(cls, tag: str, fields: Sequence[attrs.Attribute[Any]]) -> Layout:
        """The layout of an attrs class's ``fields`` under ``tag``."""
        defaults = tuple(
            _NO_DEFAULT
            if f.default is attrs.NOTHING or isinstance(f.default, _FACTORY)
            else f.default
            for f in fields
        )
        times = frozenset(i for i, f in enumerate(fields) if f.name in TIME_FIELDS)
        return cls(tag, defaults, times)


def _getter(names: tuple[str, ...]) -> Callable[[Any], Sequence[Any]]:
    """A C-level function from a record to its fields' values, as a sequence."""
    if len(names) == 1:
        get = attrgetter(names[0])
        return lambda record: (get(record),)
    return attrgetter(*names)


_LAYOUTS: dict[type[Any], Layout] = {
    cls: Layout.of(name, attrs.fields(cls)) for name, cls in EVENT_TYPES.items()
}

_BUILDERS: dict[type[Any], Callable[..., Event]] = {
    cls: builder(cls, *(f.name for f in attrs.fields(cls)))
    for cls in (Submitted, Assigned, Completed)
}

_GETTERS: dict[type[Any], Callable[[Any], Sequence[Any]]] = {
    cls: _getter(tuple(f.name for f in attrs.fields(cls))) for cls in EVENT_TYPES.values()
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


# -- values <-> payloads ---------------------------------------------------------------


def pack(layout: Layout, values: Sequence[Any], wall_offset: float) -> bytes:
    """``values`` (a record's fields, in order) as a payload laid out by ``layout``."""
    count = len(values)
    defaults = layout.defaults
    while count:
        value, default = values[count - 1], defaults[count - 1]
        if value is not default and (type(value) is not type(default) or value != default):
            break
        count -= 1
    row: list[Any] = [layout.tag, 0]
    raw: list[bytes] = []
    mask = 0
    times = layout.times
    for index in range(count):
        value = values[index]
        if type(value) is bytes:
            mask |= 1 << index
            raw.append(value)
            value = None
        elif index in times and value is not None:
            value += wall_offset
        row.append(value)
    row[1] = mask
    text = utf8(encode_value(row))
    return b"\n".join((text, *raw)) if raw else text


def unpack(payloads: Sequence[bytes]) -> list[list[Any]]:
    """Each payload's array, its raw values back in their slots as ``bytes``.

    Values are not shifted or checked against a layout: see :func:`fields_of`.

    Raises:
        ValueError: a payload that is not an array laid out as ``pack`` lays them.
    """
    heads: list[bytes] = []
    tails: list[bytes | None] = []
    for payload in payloads:
        head, newline, rest = payload.partition(b"\n")
        heads.append(head)
        tails.append(rest if newline else None)
    try:
        rows: list[list[Any]] = json.loads(b"[" + b",".join(heads) + b"]")
    except ValueError:
        if len(payloads) == 1:
            raise ValueError("a record is not JSON") from None
        for payload in payloads:  # name the bad one
            unpack([payload])
        raise  # pragma: no cover  (one of them failed alone)
    for row, tail in zip(rows, tails, strict=True):
        if type(row) is not list or len(row) < 2 or type(row[1]) is not int:
            raise ValueError("a record is not an array with a tag and a mask")
        mask = row[1]
        if mask:
            if tail is None:
                raise ValueError("a record's raw values do not match its mask")
            raw = tail.split(b"\n")
            index = 2
            while mask:
                if mask & 1:
                    if not raw or not raw[0] or index >= len(row):
                        raise ValueError("a record's raw values do not match its mask")
                    row[index] = raw.pop(0)
                mask >>= 1
                index += 1
            if raw:
                raise ValueError("a record's raw values do not match its mask")
        elif tail is not None:
            raise ValueError("a record has raw values its mask does not name")
    return rows


def fields_of(row: list[Any], layout: Layout, wall_offset: float) -> list[Any]:
    """The field values of an unpacked ``row`` of ``layout``, times shifted back."""
    values = row[2:]
    count = len(values)
    if count > len(layout.defaults):
        raise ValueError(f"a {layout.tag} record has more fields than this version knows")
    for index in layout.times:
        if index < count:
            value = values[index]
            if value is not None:
                values[index] = value - wall_offset
    return values


def encode_event(event: Event, wall_offset: float = 0.0) -> bytes:
    """``event`` as a record's payload (see the module's docstring).

    The events of an ordinary job's life take a fast path
    (:data:`~jobqueue._journal_fast.FAST`) that writes the same bytes as
    :func:`pack` in about a third of the time.
    """
    cls = type(event)
    fast = FAST.get(cls)
    if fast is not None:
        payload = fast(event, wall_offset)
        if payload is not None:
            return payload
    return pack(_LAYOUTS[cls], _GETTERS[cls](event), wall_offset)


def encode_generic(event: Event, wall_offset: float = 0.0) -> bytes:
    """``event`` as a record's payload, always by :func:`pack` (what the fast paths match)."""
    cls = type(event)
    return pack(_LAYOUTS[cls], _GETTERS[cls](event), wall_offset)


def decode_events(payloads: Sequence[bytes], wall_offset: float = 0.0) -> list[Event]:
    """The events ``payloads`` hold, decoded together (one JSON parse for all).

    Raises:
        ValueError: a payload that is no event this version knows.
    """
    events: list[Event] = []
    for row in unpack(payloads):
        cls = EVENT_TYPES.get(row[0]) if type(row[0]) is str else None
        if cls is None:
            raise ValueError("a record names no known event")
        layout = _LAYOUTS[cls]
        values = fields_of(row, layout, wall_offset)
        build = _BUILDERS.get(cls)
        if build is not None:
            missing = layout.defaults[len(values) :]
            if _NO_DEFAULT not in missing:
                events.append(build(*values, *missing))
                continue
        try:
            events.append(cls(*values))
        except TypeError as exc:
            raise ValueError(f"a {cls.__name__} record does not fit this version: {exc}") from None
    return events


def decode_event(payload: bytes, wall_offset: float = 0.0) -> Event:
    """The event a record's payload holds.

    Raises:
        ValueError: the payload is no event this version knows.
    """
    return decode_events([payload], wall_offset)[0]


# -- records ------------------------------------------------------------------------


#: The two halves of a record's header, packed with compiled formats.
pack_length_crc = struct.Struct("<II").pack
pack_crc = struct.Struct("<I").pack


def frame(payload: bytes) -> bytes:
    """One record: ``payload`` behind its checked header."""
    head = pack_length_crc(len(payload), zlib.crc32(payload))
    return head + pack_crc(zlib.crc32(head)) + payload


def frame_into(buffer: bytearray, payload: bytes) -> None:
    """Append :func:`frame` of ``payload`` to ``buffer``, without building the record first."""
    head = pack_length_crc(len(payload), zlib.crc32(payload))
    buffer += head
    buffer += pack_crc(zlib.crc32(head))
    buffer += payload


def segment_chunks(payloads: Iterable[bytes]) -> Iterator[bytes]:
    """A segment's bytes, ``MAGIC`` then ``payloads`` as records, in chunks of about 1 MiB."""
    chunk = bytearray(MAGIC)
    for payload in payloads:
        frame_into(chunk, payload)
        if len(chunk) >= 1 << 20:
            yield bytes(chunk)
            chunk.clear()
    yield bytes(chunk)


@attrs.frozen
class Scan:
    """What reading one segment found.

    Attributes:
        payloads: Every complete record's payload, in order.
        end: Where the last complete record ends (the segment's good length).
        torn: Bytes after ``end``: a record a crash cut short, and any zero
            bytes after it (0: none).
        spare: How many of the ``torn`` bytes are zeros at the very end:
            space the writer prepared and had not yet written (see
            :mod:`jobqueue._journal_writer`). ``torn == spare``: no record
            was cut short.
    """

    payloads: list[bytes]
    end: int
    torn: int
    spare: int = 0


@attrs.define
class Records:
    """The records of one segment's bytes, read as they are iterated.

    Iterating yields each complete record's payload, checking every
    checksum on the way; once it is exhausted, ``end``, ``torn`` and
    ``spare`` are as in :class:`Scan`. ``data`` may be a memory map, so a
    large segment is never copied into the heap whole: each payload is
    copied out as it is reached.
    """

    data: bytes | mmap.mmap
    path: str = "<segment>"
    end: int = 0
    torn: int = 0
    spare: int = 0

    def __iter__(self) -> Iterator[bytes]:
        data, path = self.data, self.path
        size = len(data)
        if size < len(MAGIC):
            if MAGIC.startswith(data[:size]):
                self._stop(0)
                return
            raise JournalDamaged(path, 0, "not a jobqueue journal segment (bad first line)")
        if data[: len(MAGIC)] != MAGIC:
            first = bytes(data[: len(MAGIC)])
            version = first[-2:-1]
            if first.startswith(MAGIC[:-2]) and version.isdigit() and first.endswith(b"\n"):
                raise JournalDamaged(
                    path,
                    0,
                    f"a segment of journal format {version.decode()}, "
                    f"which this version does not read (it reads {MAGIC[-2:-1].decode()})",
                )
            raise JournalDamaged(path, 0, "not a jobqueue journal segment (bad first line)")
        offset = len(MAGIC)
        crc32 = zlib.crc32
        unpack_from = _HEADER.unpack_from
        while size - offset >= HEADER_BYTES:
            length, crc, head_crc = unpack_from(data, offset)
            if crc32(data[offset : offset + 8]) != head_crc:
                # Torn, not damaged, if nothing was written after the header's
                # first bytes: a crash mid-write, or the zeros of space the
                # writer prepared (or a power cut left) after the last record.
                if self._written(offset) < HEADER_BYTES:
                    break
                raise JournalDamaged(path, offset, "a record's header fails its checksum")
            start = offset + HEADER_BYTES
            end = start + length
            if end > size:
                break
            payload = data[start:end]
            if crc32(payload) != crc:
                # Torn if its end was never written (the zeros of prepared
                # space) and nothing after it was: our payloads never end in
                # a zero byte, and no single flipped bit makes one.
                if offset + self._written(offset) < end:
                    break
                raise JournalDamaged(path, offset, "a record's contents fail their checksum")
            yield payload
            offset = end
        self._stop(offset)

    def _written(self, offset: int) -> int:
        """How many bytes from ``offset`` on come before the zeros at the end."""
        return len(self.data[offset:].rstrip(b"\0"))

    def _stop(self, offset: int) -> None:
        self.end, self.torn = offset, len(self.data) - offset
        self.spare = self.torn - self._written(offset)


def scan(data: bytes, path: str = "<segment>") -> Scan:
    """Split a segment's bytes into record payloads, checking every checksum.

    A record the file ends inside of, or whose end is still zeros (space
    prepared for it, or that a power cut left unwritten), is a torn write:
    it is reported in ``torn``, not raised, because the crash that made it
    came before its change could have been acknowledged.

    Raises:
        JournalDamaged: a bad magic line, or a complete record whose
            checksum fails, with the file and offset.
    """
    records = Records(data, path)
    payloads = list(records)
    return Scan(payloads, records.end, records.torn, records.spare)


def batches(payloads: Iterable[bytes], size: int = BATCH) -> Iterator[list[bytes]]:
    """``payloads`` in lists of up to ``size``, for :func:`decode_events` and the like."""
    items = iter(payloads)
    # (islice fills each list in C: no bytecode a payload)
    while batch := list(itertools.islice(items, size)):
        yield batch


# -- segments ------------------------------------------------------------------------


def segment_name(number: int) -> str:
    """The file name of segment ``number``."""
    return f"{number:020d}.jqj"


def segments(directory: str) -> list[tuple[int, str]]:
    """The segments in ``directory`` as ``(number, path)``, oldest first.

    Raises:
        JournalError: a segment's name on something that is not a regular
            file (a directory, a pipe, a device), which reading would fail
            on or wait on forever.
    """
    found = []
    for name in os.listdir(directory):
        match = _SEGMENT.match(name)
        if match:
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                raise JournalError(f"journal {directory}: {name} is not a regular file")
            found.append((int(match.group(1)), path))
    return sorted(found)


def is_compaction_leftover(name: str) -> bool:
    """Whether ``name`` is a snapshot segment a compaction was writing (never renamed, unused)."""
    return name.endswith(".tmp") and _SEGMENT.match(name[: -len(".tmp")]) is not None


@attrs.define
class Reading:
    """A journal directory found and checked, ready to replay.

    Attributes:
        live: The segments to replay, ``(number, path)``, oldest first.
        snapshotted: Whether the first of them starts with a snapshot.
        payloads: Every record, oldest first, over all segments (filled by
            :func:`read_journal`; :meth:`records` streams them instead).
        last: The last segment's ``(number, path)``, ``None`` if there is none.
        good_end: Where the last segment's complete records end.
        torn: Bytes after the last segment's good end (a torn record, zeros).
        spare: How many of those are zeros at the very end (``torn == spare``:
            nothing was cut short; see :class:`Scan`).
        obsolete: Segments before the last one that starts with a snapshot:
            compaction made them redundant and was cut short before
            removing them.
        size: Bytes in the segments replayed (the obsolete ones left out).
        snapshot_size: Bytes of the segment the snapshot starts (0: none).
    """

    live: list[tuple[int, str]] = attrs.field(factory=list)
    snapshotted: bool = False
    payloads: list[bytes] = attrs.field(factory=list)
    last: tuple[int, str] | None = None
    good_end: int = 0
    torn: int = 0
    spare: int = 0
    obsolete: list[str] = attrs.field(factory=list)
    size: int = 0
    snapshot_size: int = 0

    def records(self) -> Iterator[bytes]:
        """Every record's payload, oldest first, each segment memory-mapped in turn.

        The fields after ``payloads`` are filled in as the segments are
        read: they are final once this is exhausted. Only the last segment
        may end in a torn record: an earlier one was complete when the next
        was started, so a short one is damage.

        Raises:
            JournalDamaged: a record that fails its checksum, with file and offset.
            OSError: a segment cannot be read.
        """
        for index, (number, path) in enumerate(self.live):
            with open(path, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            try:
                found = Records(data, path)
                yield from found
            finally:
                if isinstance(data, mmap.mmap):
                    data.close()
            if found.torn > found.spare and index < len(self.live) - 1:
                raise JournalDamaged(path, found.end, "a segment that is not the last ends early")
            self.size += found.end
            if index == 0 and self.snapshotted:
                self.snapshot_size = found.end
            self.last = (number, path)
            self.good_end, self.torn, self.spare = found.end, found.torn, found.spare


def find_journal(directory: str) -> Reading:
    """The segments of ``directory`` to replay, their records not yet read.

    A segment that starts with a snapshot stands alone: the segments before
    it are listed as obsolete, not read.

    Raises:
        OSError: the directory or a segment cannot be read.
    """
    reading = Reading()
    found = segments(directory)
    start = 0
    for index in range(len(found) - 1, -1, -1):
        with open(found[index][1], "rb") as file:
            head = file.read(len(MAGIC) + HEADER_BYTES + len(SNAPSHOT_HEADER))
        if head[len(MAGIC) + HEADER_BYTES :] == SNAPSHOT_HEADER:
            start, reading.snapshotted = index, True
            break
    reading.obsolete = [path for _, path in found[:start]]
    reading.live = found[start:]
    return reading


def read_journal(directory: str) -> Reading:
    """Read every segment of ``directory``, oldest first, into ``payloads``.

    Raises:
        JournalDamaged: a record that fails its checksum, with file and offset.
        OSError: a segment cannot be read.
    """
    reading = find_journal(directory)
    reading.payloads = list(reading.records())
    return reading


def decode_all(payloads: Iterable[bytes], wall_offset: float) -> Iterator[Event]:
    """The events of ``payloads``, in order.

    Raises:
        ValueError: a record that checks out but holds no event this
            version knows (a journal from a newer version).
    """
    for batch in batches(payloads):
        yield from decode_events(batch, wall_offset)


def id_prefix_of(events: Iterable[Event]) -> str | None:
    """The id prefix the journal's jobs were numbered with (``None``: no jobs).

    The server keeps it across restarts, so ids go on from the same ``seq``
    and the store's fast path for fresh ids keeps working.
    """
    for event in events:
        if isinstance(event, Submitted) and type(event.job_id) is str:
            tail = str(event.seq)
            if event.job_id.endswith(tail):
                return event.job_id[: -len(tail)]
    return None
