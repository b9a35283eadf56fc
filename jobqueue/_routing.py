"""Which worker connections run which job names: ``stats`` by name, and the submit warning.

A worker says in ``hello`` which job names it has handlers for; the state
hands it only those (``QueueState.assign(names=...)``), so a job no
connected worker runs simply waits. This module answers the questions
people then ask: which names are waiting, and is anyone there to run them?
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Container, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

from ._limits import MAX_LISTED

if TYPE_CHECKING:
    from ._client import Client
    from ._commands import Connection
    from ._replies import Stats


@attrs.frozen
class Routes:
    """How many worker connections run each job name, at one moment.

    Attributes:
        named: Per job name, the connections that said in ``hello`` they run it.
        anyone: Worker connections (waiting in ``request_job`` or holding
            jobs) that said nothing: they take any job, as before workers
            could say.
    """

    named: dict[str, int]
    anyone: int

    @classmethod
    def of(cls, conns: Iterable[Connection], holders: Container[Hashable]) -> Routes:
        """Count the open connections ``conns``; ``holders``: ids of those holding leases.

        A connection that named what it runs counts as a worker from its
        ``hello`` on; one that did not, only while it waits for a job or
        holds one (it may be a client).
        """
        named: dict[str, int] = {}
        anyone = 0
        for conn in conns:
            if conn.names is not None:
                for name in conn.names:
                    named[name] = named.get(name, 0) + 1
            elif conn.id in holders or (conn.parked is not None and conn.parked.job_id is None):
                anyone += 1
        return cls(named, anyone)

    def report(
        self, pending: Mapping[str, int], most: int = MAX_LISTED
    ) -> tuple[dict[str, dict[str, int]], int]:
        """``stats``' ``names``: per job name, pending jobs and the workers that run it.

        Args:
            pending: Pending jobs per name (``JobStore.pending_by_name``).
            most: Most names reported: those with the most pending jobs,
                then the most workers, ties to the name that sorts first.

        Returns:
            ``{name: {"pending": n, "workers": k}}`` for every name that has
            pending jobs or that a worker said it runs (the ``most`` first),
            sorted by name, and how many names were left out. A name with
            pending jobs and ``"workers": 0`` waits for a worker that runs
            it to connect.
        """
        named, anyone = self.named, self.anyone
        every = pending.keys() | named.keys()
        kept: Iterable[str] = every
        if len(every) > most:
            # Chosen before any entry is built: a careless producer may leave
            # hundreds of thousands of names, and this runs in the coordinator.
            kept = heapq.nsmallest(
                most, every, key=lambda name: (-pending.get(name, 0), -named.get(name, 0), name)
            )
        entries = {
            name: {"pending": pending.get(name, 0), "workers": named.get(name, 0) + anyone}
            for name in sorted(kept)
        }
        return entries, len(every) - len(entries)


def workers_for(name: str, stats: Stats) -> int:
    """How many connected workers run jobs named ``name``, from a ``stats`` reply.

    A name the reply does not list (none pending, no worker said it runs
    it) is run only by the workers that take any name. A server older than
    routing lists no names and counts no such workers, but may list workers:
    each of those takes any job.
    """
    entry = stats.names.get(name)
    if isinstance(entry, Mapping) and isinstance(entry.get("workers"), int):
        return int(entry["workers"])
    if not stats.names and not stats.any_name_workers:
        return len(stats.workers)  # nobody said anything: an older server, or no worker
    return stats.any_name_workers


def unserved_warning(name: str, stats: Stats) -> str | None:
    """The one-line warning ``jobqueue submit`` prints when no connected worker runs ``name``.

    None when the reply cannot tell: it left ``name`` out of a cut listing.
    """
    if workers_for(name, stats) or (name not in stats.names and stats.unlisted.get("names")):
        return None
    return (
        f"warning: no connected worker runs jobs named {name!r}; "
        "they will wait until one that has the handler connects"
    )


def waiting_lines(stats: Stats) -> list[str]:
    """For ``jobqueue stats``: a line per job name whose pending jobs no connected worker runs."""
    return [
        f"name {name}: pending {entry['pending']}, no connected worker runs it"
        for name, entry in stats.names.items()
        if isinstance(entry, Mapping) and entry.get("pending") and not entry.get("workers")
    ]


async def warn_if_unserved(client: Client, name: str) -> None:
    """Print the warning on stderr, in one line, if no connected worker runs ``name``.

    ``jobqueue submit`` asks once its jobs are accepted: a job nobody can
    run waits, which is right during a rolling deploy but a surprise after
    a typo in the name.
    """
    warning = unserved_warning(name, await client.stats())
    if warning is not None:
        print(f"jobqueue: {warning}", file=sys.stderr)
