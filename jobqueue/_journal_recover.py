"""Recovery at a server's start: a journal directory replayed, its last segment readied.

Reading and checking the records is :func:`~jobqueue._journal.find_journal`'s,
rebuilding the queue from them :func:`~jobqueue._snapshot.replay`'s, and
naming a record that does not replay
:func:`~jobqueue._journal_examine.locate_damage`'s.
:func:`recover` puts the two together for
:meth:`Journal.open <jobqueue._journal_writer.Journal.open>`, and leaves the
directory ready to append to: the leftovers of a compaction cut short
removed, a torn last record (a crash mid-write) cut off and logged, and the
segment the next records go to open for writing.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import TYPE_CHECKING, NamedTuple

from ._journal import MAGIC, JournalDamaged, find_journal, is_compaction_leftover, segment_name
from ._journal_disk import fsync_directory
from ._journal_examine import locate_damage
from ._snapshot import replay

if TYPE_CHECKING:
    from ._state import QueueState

log = logging.getLogger("jobqueue.journal")


class Recovered(NamedTuple):
    """The segment to append to, as :func:`recover` leaves it."""

    #: Its number, and a descriptor open for writing (the caller's to close).
    number: int
    fd: int
    #: Bytes in the live segments, and in the last snapshot among them.
    size: int
    snapshot_size: int
    #: Where its records end: the next one is written there.
    end: int
    #: Events replayed, and the seconds it all took.
    replayed: int
    seconds: float


def recover(directory: str, state: QueueState, offset: float) -> Recovered:
    """Replay ``directory`` into ``state`` (fresh), then open its last segment to append to.

    ``offset`` turns the journal's wall-clock times into ``state``'s clock
    (wall clock minus ``now``). A directory without a journal gets its first
    segment, flushed with the directory.

    Raises:
        JournalDamaged: damage before the end of the journal: a record that
            fails its checksum, or that does not replay (named by file and
            offset, as ``jobqueue journal check`` names it).
        OSError: the directory cannot be read or written.
    """
    started = time.perf_counter()
    for name in os.listdir(directory):
        if is_compaction_leftover(name):  # a compaction cut short: never renamed, never used
            os.unlink(os.path.join(directory, name))
    reading = find_journal(directory)
    # Replay makes a million objects and no garbage cycles: the collector
    # would only walk the growing heap again and again (a third of the time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        try:
            replayed = replay(state, reading.records(), offset)
        except JournalDamaged:
            raise  # (a checksum that fails: named where it was found)
        except Exception as exc:
            # A record that does not replay: read again one by one, to name it.
            damage = locate_damage(directory)
            if damage is None:
                raise  # not the journal's doing
            raise damage from exc
        if collecting:
            # One pass now, before the server listens, takes the restored
            # jobs to the oldest generation. Left young, they would be walked
            # by the first collections once clients are served: two stalls
            # of about 0.3 s each at 10**6 jobs (docs/performance.md).
            gc.collect()
    finally:
        if collecting:
            gc.enable()
    for path in reading.obsolete:  # a compaction cut short after its rename
        os.unlink(path)
    if reading.last is None:
        path = os.path.join(directory, segment_name(1))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, MAGIC)
            os.fsync(fd)
            fsync_directory(directory)
        except BaseException:
            os.close(fd)
            raise
        seconds = time.perf_counter() - started
        return Recovered(1, fd, len(MAGIC), 0, len(MAGIC), replayed, seconds)
    number, path = reading.last
    fd = os.open(path, os.O_WRONLY)
    size, end = reading.size, reading.good_end
    try:
        if reading.torn > reading.spare:
            log.warning(
                "journal %s: cut off %d bytes of a torn last record at byte %d "
                "(a crash mid-write; nothing acknowledged is lost)",
                path,
                reading.torn - reading.spare,
                end,
            )
        if reading.torn:  # the torn record and the prepared space after it
            os.ftruncate(fd, end)
            if end == 0:
                os.write(fd, MAGIC)
                size += len(MAGIC)
                end = len(MAGIC)
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    seconds = time.perf_counter() - started
    return Recovered(number, fd, size, reading.snapshot_size, end, replayed, seconds)
