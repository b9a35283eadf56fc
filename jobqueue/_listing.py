"""Bounded listings: the busiest entries of a table that has to fit a reply.

Peers choose queue and job names freely, so the tables ``stats`` and the
metrics endpoint list (per queue, per job name, per worker connection) have
no size of their own. A reply must fit one line (``MAX_LINE_BYTES``) and a
scrape should stay small, so each listing keeps at most ``MAX_LISTED``
entries within a share of the line, the busiest first, and says how many
it left out. Below the limits, which is every ordinary server, a listing
is returned whole and unchanged.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ._json import encode_stored
from ._limits import MAX_LISTED, MAX_NAME_CHARS

V = TypeVar("V")

#: The longest a name (of a queue or a job, ``MAX_NAME_CHARS``) encodes to:
#: every character written as a six-byte ``\\uXXXX`` escape.
_LONGEST_NAME_BYTES = MAX_NAME_CHARS * 6


def busiest(
    table: Mapping[str, V],
    order: Callable[[str, V], Any],
    budget: int | None,
    *,
    most: int = MAX_LISTED,
    entry_bytes: int = 64,
) -> tuple[dict[str, V], int]:
    """The entries of ``table`` that fit: at most ``most``, in at most ``budget`` bytes.

    Args:
        table: Name to value, in the order the listing shows them.
        order: Sorts the busiest first (smallest first); ties should end in
            the name, so that the choice does not depend on ``table``'s order.
        budget: Bytes the kept entries may take, each as
            ``{"name": value}`` encodes; ``None`` for no byte limit (a
            listing that is not one reply line: the metrics page), so that
            nothing is encoded.
        most: Most entries kept.
        entry_bytes: The most a value can encode to, beside its name. A
            table that cannot reach ``budget`` at that size is only counted,
            not encoded.

    Returns:
        The kept entries in ``table``'s order, and how many were left out.
    """
    if len(table) <= most and (
        budget is None or len(table) * (_LONGEST_NAME_BYTES + entry_bytes) <= budget
    ):
        return dict(table), 0
    if len(table) > most:
        ranked = heapq.nsmallest(most, table, key=lambda name: order(name, table[name]))
    else:
        ranked = sorted(table, key=lambda name: order(name, table[name]))
    kept: set[str] = set()
    if budget is None:
        kept.update(ranked)
    else:
        for name in ranked:
            budget -= len(encode_stored({name: table[name]}))
            if budget < 0:
                break
            kept.add(name)
    return {name: value for name, value in table.items() if name in kept}, len(table) - len(kept)


def most_unfinished(queue: str, counts: Mapping[str, int]) -> tuple[int, str]:
    """:func:`busiest`'s order for queues: the most unfinished jobs first, then by name."""
    return -sum(counts.values()), queue


def busiest_items(
    entries: list[dict[str, Any]], budget: int, *, most: int = MAX_LISTED
) -> tuple[list[dict[str, Any]], int]:
    """The first of ``entries`` that fit: at most ``most``, in at most ``budget`` bytes.

    For a list already in the order it should be cut in (``stats``'
    workers, oldest connection first). An entry too long for what is left
    is skipped, so one huge entry does not hide the rest.

    Returns:
        The kept entries, and how many were left out.
    """
    kept: list[dict[str, Any]] = []
    for entry in entries:
        if len(kept) == most:
            break
        size = len(encode_stored(entry)) + 1
        if size <= budget:
            budget -= size
            kept.append(entry)
    return kept, len(entries) - len(kept)
