"""Where a journal is damaged: every segment checked, then replayed record by record.

A server replays its journal in bulk, a batch of records at a time, and
checks every checksum on the way. A record whose checksums hold but that
does not replay (written by a bug, edited by hand) is found only once it
fails, and a batch does not say which record failed. :func:`examine` reads
the directory again one record at a time, to name the file and the offset
of the first damage: for ``jobqueue journal check`` and ``repair``, and for
the server's refusal to start (:func:`locate_damage`).
"""

from __future__ import annotations

import json

import attrs

from ._events import Submitted
from ._job import InvalidTransition
from ._journal import (
    HEADER_BYTES,
    MAGIC,
    JournalDamaged,
    JournalError,
    decode_event,
    find_journal,
    id_prefix_of,
    scan,
)
from ._snapshot import is_snapshot, replay
from ._state import QueueState


@attrs.define
class Segment:
    """What one segment holds, as ``check`` found it.

    Attributes:
        path: The file.
        size: Its bytes.
        records: Complete records before any damage.
        snapshot: Whether it starts with a snapshot.
        obsolete: A later segment starts with a snapshot: this one is not
            replayed (a compaction stopped before removing it).
        torn: Bytes of a torn record at its end.
        damage: Where and why its first bad record is, ``None`` if none.
    """

    path: str
    size: int
    records: int = 0
    snapshot: bool = False
    obsolete: bool = False
    torn: int = 0
    damage: tuple[int, str] | None = None


def examine(directory: str) -> list[Segment]:
    """Check the segments of ``directory`` a server would replay: checksums, then a replay.

    The segments are the ones a server starts from (see
    :func:`~jobqueue._journal.find_journal`): those before the last that
    starts with a snapshot are listed as obsolete, counted but not judged,
    since a server removes them unread. The first damage found among the
    others (a failed checksum, a torn record in a segment that is not the
    last, or a record that does not replay) is recorded on its segment; the
    segments after it are not replayed.
    """
    reading = find_journal(directory)
    found = []
    for path in reading.obsolete:
        with open(path, "rb") as file:
            data = file.read()
        found.append(Segment(path, len(data), _readable(data, path), obsolete=True))
    live = []
    for _, path in reading.live:
        with open(path, "rb") as file:
            data = file.read()
        segment = Segment(path, len(data))
        live.append(segment)
        try:
            result = scan(data, path)
        except JournalDamaged as exc:
            segment.damage = (exc.offset, str(exc).split(": ", 2)[-1].split(";")[0])
            segment.records = _readable(data, path)
            continue
        segment.records = len(result.payloads)
        # Zeros alone after the last record are prepared space, not a torn record.
        segment.torn = result.torn if result.torn > result.spare else 0
        segment.snapshot = bool(result.payloads) and is_snapshot(result.payloads[0])
    found += live
    state = QueueState()
    for position, segment in enumerate(live):
        if segment.damage is not None:
            return found
        if segment.torn and position < len(live) - 1:
            segment.damage = (
                segment.size - segment.torn,
                "a segment that is not the last ends early",
            )
            return found
        with open(segment.path, "rb") as file:
            data = file.read()
        payloads = scan(data, segment.path).payloads
        bad = _first_unreplayable(state, payloads)
        if bad is not None:
            index, why = bad
            segment.damage = (_offset_of(payloads, index), why)
            segment.records = index
            return found
    return found


def _readable(data: bytes, path: str) -> int:
    """How many records of a segment's ``data`` come before any damage."""
    try:
        return len(scan(data, path).payloads)
    except JournalDamaged as exc:
        return len(scan(data[: exc.offset], path).payloads) if exc.offset >= len(MAGIC) else 0


def _first_unreplayable(state: QueueState, payloads: list[bytes]) -> tuple[int, str] | None:
    """The index of the first record that does not replay into ``state``, and why.

    Any exception counts (a journal written by this version replays without
    one): the server names the record only if this finds it, so a failure
    of its bulk replay that this does not reproduce is still raised as it is.
    """
    first = 0
    if payloads and is_snapshot(payloads[0]):
        try:
            count = int(json.loads(payloads[0])["jobs"])
            replay(state, payloads[: count + 1], 0.0)
        except Exception as exc:
            return 0, f"a snapshot that does not restore: {_reason(exc)}"
        first = count + 1
    for index in range(first, len(payloads)):
        try:
            event = decode_event(payloads[index])
            if not state.id_prefix and isinstance(event, Submitted):
                # As replay takes it: from the first Submitted (ids go on from it).
                state.id_prefix = id_prefix_of([event]) or ""
            state.apply(event)
        except Exception as exc:
            return index, f"a record that does not replay: {_reason(exc)}"
    return None


def _reason(exc: Exception) -> str:
    """What went wrong, in words: our own errors say it; others are named by their type."""
    if isinstance(exc, (ValueError, JournalError, InvalidTransition, KeyError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _offset_of(payloads: list[bytes], index: int) -> int:
    return len(MAGIC) + sum(HEADER_BYTES + len(p) for p in payloads[:index])


def locate_damage(directory: str) -> JournalDamaged | None:
    """The first damage :func:`examine` finds in ``directory``, as an error to raise."""
    for segment in examine(directory):
        if segment.damage is not None:
            offset, why = segment.damage
            return JournalDamaged(segment.path, offset, why)
    return None
