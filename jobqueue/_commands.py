r"""What the server and the coordinator say to each other, and the coordinator's view of a peer.

Connection handlers send the coordinator :data:`Command`\ s over a memory
channel; it answers each connection on that connection's outbox with
:data:`Outgoing` replies. Kept apart from the coordinator so the server, the
journal and the tests can name these without the coordinator's rules.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

import attrs
import trio

from ._errors import ProtocolError, Refusal
from ._metrics import JournalFigures, MetricsSnapshot
from ._replies import Reply
from ._requests import Request

#: What a connection handler forwards: a decoded request, or the error that
#: decoding a line raised (passed through so its reply keeps its place in line).
Item = Request | ProtocolError
#: What the coordinator sends back: a reply, or the refusal a request raised
#: (from the codec or from the queue's rules).
Outgoing = Reply | Refusal


class ReplySink(Protocol):
    """Where a connection's replies go: the server's ``Outbox``, or a memory channel in tests."""

    def send_nowait(self, replies: list[Outgoing] | None, /) -> None:
        """Take ``replies`` (``None``: the connection is finished) without blocking."""


@attrs.define(eq=False)
class Connection:
    """The coordinator's view of one client or worker connection.

    Attributes:
        id: Unique per server run; the identity leases are held under.
        peer: ``host:port`` of the remote end, used when it gave no name.
        outbox: Where the coordinator puts this connection's replies, in
            request order, a list per batch; ``None`` tells the writer the
            connection is finished. ``send_nowait`` never blocks the
            coordinator; the handler bounds what waits there by never
            having more than a fixed number of requests in flight.
        name: What the peer called itself in ``hello``.
        names: The job names it said in ``hello`` it runs (``None``: any);
            it is handed no other jobs.
    """

    id: int
    peer: str
    outbox: ReplySink
    name: str | None = None
    names: frozenset[str] | None = None
    #: The blocking request this connection is parked in, if any.
    parked: Parked | None = None
    #: Requests that arrived behind the parked one; served once it is answered.
    backlog: deque[Item] = attrs.field(factory=deque)
    closed: bool = False

    @property
    def label(self) -> str:
        """How this connection is named in status and stats."""
        return self.name or self.peer


@attrs.define(eq=False)
class Parked:
    """A blocking request waiting for a job (``job_id`` None) or for a job to end."""

    conn: Connection
    deadline: float
    job_id: str | None
    #: For a worker waiting for a job: the queues it serves.
    queues: Sequence[str] = ()
    #: For a worker waiting for a job: ``max`` of its request (``None``: one job).
    most: int | None = None


@attrs.frozen
class Batch:
    """Requests from one connection, in the order they arrived."""

    conn: Connection
    items: list[Item]


@attrs.frozen
class Connected:
    """A connection opened."""

    conn: Connection


@attrs.frozen
class Disconnected:
    """A connection closed: its leases, parked request and backlog end now."""

    conn: Connection


@attrs.frozen
class Snapshot:
    """The metrics endpoint asks for the figures; they go to ``reply``.

    A command like any other, so the numbers are read by the task that owns
    them, between two commands, and cost O(queues + connections).
    """

    reply: trio.MemorySendChannel[MetricsSnapshot]


Command = Batch | Connected | Disconnected | Snapshot


class Durability(Protocol):
    """What the coordinator asks of a journal."""

    @property
    def failing(self) -> bool:
        """Whether the last write failed: changes are refused until one succeeds."""

    def begin(self) -> None:
        """A command begins: replies from here on depend on the events it applies."""

    def owe(self, conn: Connection) -> None:
        """The reply that answers ``conn``'s request acknowledges the change just applied."""

    def hold(self, conn: Connection, replies: list[Outgoing] | None) -> bool:
        """Keep ``replies`` for ``conn`` until a flush covers them; ``False``: send now."""

    def figures(self) -> JournalFigures:
        """Its figures, for ``stats`` (and ``GET /metrics``): O(1)."""


@attrs.frozen
class CoordinatorStatistics:
    """What :meth:`Coordinator.statistics` reports.

    Attributes:
        timer_wakeups: How many times the coordinator woke because a deadline
            arrived (a lease or a blocking request timing out), as opposed to
            a command arriving. Idle peers cause none.
        last_timer_wakeup: The trio time of the latest such wake-up
            (``None`` before the first).
    """

    timer_wakeups: int
    last_timer_wakeup: float | None
