"""``jobqueue journal check DIR`` and ``jobqueue journal repair DIR``.

A server refuses to start on a journal damaged before its end (a record
that fails its checksum, or that does not replay), naming the file and the
offset. ``check`` reports what a start would find, without changing
anything; ``repair`` keeps every record before the first damage and moves
the rest aside, into ``DIR/damaged-<time>/``, so that nothing is deleted
and the server can start on what was readable. Both refuse a directory a
running server holds.
"""

from __future__ import annotations

import argparse
import os
import time

from ._errors import JobQueueError
from ._journal import MAGIC, JournalError
from ._journal_disk import fsync_directory, lock_directory
from ._journal_examine import Segment, examine


def check(args: argparse.Namespace) -> int:
    """``jobqueue journal check DIR``: exit 0 if a server would start on it as it is."""
    directory = args.directory
    lock = _locked(directory)
    try:
        found = _examined(directory)
    finally:
        os.close(lock)
    damaged = False
    for segment in found:
        name = os.path.basename(segment.path)
        notes = []
        if segment.snapshot:
            notes.append("starts with a snapshot")
        if segment.obsolete:
            notes.append("obsolete (a later snapshot replaces it; removed at start)")
        if segment.torn:
            notes.append(f"torn tail of {segment.torn} bytes (cut off at start)")
        print(f"{name}: {segment.size} bytes, {segment.records} records", *notes, sep="; ")
        if segment.damage is not None and not damaged:
            damaged = True
            offset, why = segment.damage
            print(f"DAMAGED: {segment.path} at byte {offset}: {why}")
    total = sum(s.records for s in found if not s.obsolete)
    if damaged:
        print(
            f"journal {directory} is damaged: a server will not start on it; "
            f"`jobqueue journal repair {directory}` keeps the records before the damage"
        )
        return 1
    print(f"journal {directory} is clean: {len(found)} segments, {total} records to replay")
    return 0


def repair(args: argparse.Namespace) -> int:
    """``jobqueue journal repair DIR``: keep what is readable up to the first damage."""
    directory = args.directory
    lock = _locked(directory)
    try:
        found = _examined(directory)
        first = next((i for i, s in enumerate(found) if s.damage is not None), None)
        torn = found[-1] if found and found[-1].torn and first is None else None
        if first is None and torn is None:
            print(f"journal {directory} is clean; nothing to repair")
            return 0
        aside = os.path.join(directory, time.strftime("damaged-%Y%m%dT%H%M%S"))
        os.makedirs(aside, exist_ok=True)
        if first is None:
            assert torn is not None
            _cut(torn, torn.size - torn.torn, aside)
        else:
            segment = found[first]
            assert segment.damage is not None
            offset, why = segment.damage
            print(f"damage: {segment.path} at byte {offset}: {why}")
            if offset < len(MAGIC) or (segment.records == 0 and segment.snapshot):
                _move(segment.path, aside)
            else:
                _cut(segment, offset, aside)
            for later in found[first + 1 :]:
                _move(later.path, aside)
        fsync_directory(directory)
        print(f"journal {directory} repaired; what was removed is in {aside}")
        return 0
    finally:
        os.close(lock)


def _cut(segment: Segment, offset: int, aside: str) -> None:
    with open(segment.path, "r+b") as file:
        file.seek(offset)
        rest = file.read()
        with open(
            os.path.join(aside, f"{os.path.basename(segment.path)}.from-{offset}"), "wb"
        ) as out:
            out.write(rest)
            out.flush()
            os.fsync(out.fileno())
        file.truncate(offset)
        file.flush()
        os.fsync(file.fileno())
    print(
        f"kept {segment.records} records ({offset} bytes) of {segment.path}; "
        f"moved its last {len(rest)} bytes aside"
    )


def _move(path: str, aside: str) -> None:
    os.rename(path, os.path.join(aside, os.path.basename(path)))
    print(f"moved {path} aside")


def _examined(directory: str) -> list[Segment]:
    try:
        return examine(directory)
    except JournalError as exc:
        raise JobQueueError(str(exc)) from None
    except OSError as exc:
        raise JobQueueError(f"cannot read journal {directory}: {exc}") from None


def _locked(directory: str) -> int:
    if not os.path.isdir(directory):
        raise JobQueueError(f"no journal directory {directory}")
    try:
        return lock_directory(directory)
    except JournalError as exc:
        raise JobQueueError(f"{exc}; stop it first") from None
