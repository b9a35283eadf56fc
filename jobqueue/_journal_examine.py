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

from ._job import InvalidTransition
from ._journal import (
    HEADER_BYTES,
    MAGIC,
    JournalDamaged,
    JournalError,
    decode_event,
    scan,
    segments,
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
    """Check every segment of ``directory``: checksums, then a replay of the live ones.

    The first damage found (a failed checksum, a torn record in a segment
    that is not the last, or a record that does not replay) is recorded on
    its segment; the segments after it are not replayed.
    """
    found = []
    start = 0
    for index, (_, path) in enumerate(segments(directory)):
        with open(path, "rb") as file:
            data = file.read()
        segment = Segment(path, len(data))
        found.append(segment)
        try:
            result = scan(data, path)
        except JournalDamaged as exc:
            segment.damage = (exc.offset, str(exc).split(": ", 2)[-1].split(";")[0])
            if exc.offset >= len(MAGIC):
                segment.records = len(scan(data[: exc.offset], path).payloads)
            continue
        segment.records = len(result.payloads)
        # Zeros alone after the last record are prepared space, not a torn record.
        segment.torn = result.torn if result.torn > result.spare else 0
        segment.snapshot = bool(result.payloads) and is_snapshot(result.payloads[0])
        if segment.snapshot:
            start = index
    for segment in found[:start]:
        segment.obsolete = True
    state = QueueState()
    live = found[start:]
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


def _first_unreplayable(state: QueueState, payloads: list[bytes]) -> tuple[int, str] | None:
    first = 0
    if payloads and is_snapshot(payloads[0]):
        try:
            count = int(json.loads(payloads[0])["jobs"])
            replay(state, payloads[: count + 1], 0.0)
        except (JournalError, ValueError, KeyError, TypeError, InvalidTransition) as exc:
            return 0, f"a snapshot that does not restore: {exc}"
        first = count + 1
    for index in range(first, len(payloads)):
        try:
            state.apply(decode_event(payloads[index]))
        except (ValueError, KeyError, TypeError, InvalidTransition) as exc:
            return index, f"a record that does not replay: {exc}"
    return None


def _offset_of(payloads: list[bytes], index: int) -> int:
    return len(MAGIC) + sum(HEADER_BYTES + len(p) for p in payloads[:index])


def locate_damage(directory: str) -> JournalDamaged | None:
    """The first damage :func:`examine` finds in ``directory``, as an error to raise."""
    for segment in examine(directory):
        if segment.damage is not None:
            offset, why = segment.damage
            return JournalDamaged(segment.path, offset, why)
    return None
