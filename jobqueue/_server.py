"""``serve_queue()``: the TCP front of the queue.

Each connection gets a handler that only decodes lines, forwards requests to
the coordinator and encodes its replies. All queue rules live behind the
coordinator; nothing here decides anything about jobs.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import secrets
import socket
from typing import NoReturn

import trio

from ._coordinator import (
    Batch,
    Command,
    Connected,
    Connection,
    Coordinator,
    Disconnected,
    Item,
    Outgoing,
)
from ._protocol import (
    EOF,
    MAX_LINE_BYTES,
    NEED_DATA,
    ErrorReply,
    JobCancelledNotice,
    LineDecoder,
    ProtocolError,
    decode_request,
    encode,
)
from ._state import (
    DEFAULT_FINISHED_RETENTION,
    DEFAULT_LEASE_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_RETRY_DELAY,
    DEFAULT_RETRY_DELAY,
    QueueState,
)

log = logging.getLogger("jobqueue.server")

#: Bytes asked of the socket per read.
_RECEIVE_SIZE = 65536


async def serve_queue(
    port: int = 8080,
    *,
    host: str = "127.0.0.1",
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
    finished_retention: int = DEFAULT_FINISHED_RETENTION,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run a queue server until cancelled.

    Use it as ``address = await nursery.start(serve_queue, 0)``: the server is
    accepting connections by the time ``start`` returns the bound
    ``(host, port)``, so port 0 (any free port) works.

    Args:
        port: TCP port to listen on; 0 picks a free one.
        host: Address to bind. The default serves this machine only.
        lease_timeout: Seconds a worker keeps a job without a heartbeat
            before it goes back to the queue.
        finished_retention: How many finished jobs are remembered for
            ``job_status``; older ones are forgotten, oldest first.
        max_line_bytes: Longest message accepted from a peer.
        max_attempts: How many runs a job may take, unless it sets its own.
        retry_delay: Backoff before the first retry of a job whose handler
            raised, in seconds; it doubles for each further retry (with jitter).
        max_retry_delay: Cap on that backoff.
        task_status: Set by ``nursery.start``.

    Error handling:
        Anything a peer sends wrong gets an ``error`` reply on that
        connection only. A peer that vanishes mid-request just ends its own
        connection, and its leased jobs go straight back to the queue.
        Failing to bind raises ``OSError`` before ``start`` returns.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    sockname = listeners[0].socket.getsockname()
    address = (str(sockname[0]), int(sockname[1]))
    service = QueueService(
        lease_timeout=lease_timeout,
        finished_retention=finished_retention,
        max_line_bytes=max_line_bytes,
        max_attempts=max_attempts,
        retry_delay=retry_delay,
        max_retry_delay=max_retry_delay,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        await nursery.start(trio.serve_listeners, service.handle_stream, listeners)
        log.info(
            "queue listening on %s:%d (lease timeout %gs)", address[0], address[1], lease_timeout
        )
        task_status.started(address)
    raise AssertionError("serve_queue's tasks never return")  # pragma: no cover


class QueueService:
    """The queue without a listener: a coordinator plus a per-stream handler.

    ``serve_queue`` feeds it TCP connections; ``jobqueue.testing`` feeds it
    in-memory streams so whole systems can run under trio's mock clock.
    """

    def __init__(
        self,
        *,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
        finished_retention: int = DEFAULT_FINISHED_RETENTION,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY,
    ) -> None:
        self.state = QueueState(
            lease_timeout=lease_timeout,
            finished_retention=finished_retention,
            id_prefix=secrets.token_hex(4) + "-",
            max_attempts=max_attempts,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
        )
        self._max_line_bytes = max_line_bytes
        # Unbuffered: a handler's send is a hand-off to the coordinator, which
        # gives natural backpressure when it is busy.
        self._commands, self._commands_receive = trio.open_memory_channel[Command](0)
        self._ids = itertools.count(1)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the coordinator until cancelled."""
        task_status.started()
        await Coordinator(self.state).run(self._commands_receive)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until the peer closes it.

        Two tasks per connection: a reader that decodes requests and forwards
        them to the coordinator in batches, and a writer that encodes the
        coordinator's replies. Because the reader never stops reading (except
        for backpressure), a peer that vanishes is noticed at once, even
        while it is blocked in ``request_job``.
        """
        peer_name = "memory"
        if isinstance(stream, trio.SocketStream):
            try:
                peer = stream.socket.getpeername()
                peer_name = f"{peer[0]}:{peer[1]}"
            except OSError:  # the peer reset before we asked
                peer_name = "?"
        outbox, replies = trio.open_memory_channel[list[Outgoing] | None](math.inf)
        conn = Connection(next(self._ids), peer_name, outbox)
        handler = _ConnectionHandler(
            stream, conn, replies, self._commands, LineDecoder(self._max_line_bytes)
        )
        log.debug("connection %d from %s opened", conn.id, peer_name)
        try:
            await self._commands.send(Connected(conn))
            await handler.serve()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # The coordinator is shutting down.
            log.debug("connection %d from %s broke: %r", conn.id, peer_name, exc)
        finally:
            # Shielded so a cancelled handler still returns its leases; the
            # coordinator closes its channel when it exits, so this cannot hang.
            # (A second Disconnected for the same connection is ignored.)
            with (
                trio.CancelScope(shield=True),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await self._commands.send(Disconnected(conn))
            await trio.aclose_forcefully(stream)
            log.debug("connection %d from %s closed", conn.id, peer_name)


#: Requests one connection may have sent to the coordinator and not yet had
#: written back. Bounds what a peer that stops reading can make the server
#: hold (at most this many replies), while letting pipelined requests flow.
_MAX_IN_FLIGHT = 64


class _ConnectionHandler:
    """Bytes in, requests to the coordinator, replies out, for one connection."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: Connection,
        replies: trio.MemoryReceiveChannel[list[Outgoing] | None],
        commands: trio.MemorySendChannel[Command],
        decoder: LineDecoder,
    ) -> None:
        self._stream = stream
        self._conn = conn
        self._replies = replies
        self._commands = commands
        self._decoder = decoder
        self._in_flight = 0
        self._window_open = trio.Event()
        self._raw = _raw_socket(stream)

    async def _receive(self) -> bytes | bytearray:
        raw = self._raw
        if raw is None:
            return await self._stream.receive_some(_RECEIVE_SIZE)
        # Wait first: the reader gets here once it has served everything
        # buffered, so trying a read before waiting would usually fail.
        await trio.lowlevel.wait_readable(raw)
        while True:
            try:
                return raw.recv(_RECEIVE_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(raw)

    async def _send(self, data: bytes) -> None:
        raw = self._raw
        if raw is None:
            await self._stream.send_all(data)
            return
        # Without send_all's yield after each send: the writer goes straight
        # back to waiting for replies, which is its checkpoint.
        view = memoryview(data)
        while view:
            try:
                view = view[raw.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(raw)

    async def serve(self) -> None:
        """Run the reader and the writer until the connection is finished."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, nursery.cancel_scope)
            await self._write(nursery.cancel_scope)

    async def _read(self, cancel_scope: trio.CancelScope) -> None:
        try:
            await self._read_requests()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The coordinator is gone (shutdown): the writer will never be
            # told to finish, so end the connection from here.
            cancel_scope.cancel()

    async def _read_requests(self) -> None:
        decoder = self._decoder
        batch: list[Item] = []
        while True:
            if self._in_flight + len(batch) >= _MAX_IN_FLIGHT:
                await self._forward(batch)
                batch = []
                while self._in_flight >= _MAX_IN_FLIGHT:
                    self._window_open = trio.Event()
                    await self._window_open.wait()
                continue
            try:
                line = decoder.next_line()
            except ProtocolError as exc:
                batch.append(exc)
                continue
            if line is NEED_DATA:
                if batch:
                    await self._forward(batch)
                    batch = []
                try:
                    data = await self._receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""  # a reset is an end of stream with no goodbye
                decoder.receive_data(data)
                continue
            if line is EOF:
                break
            try:
                batch.append(decode_request(line))
            except ProtocolError as exc:
                batch.append(exc)
        # The peer has closed its side. Whatever it sent is answered first;
        # then the coordinator drops any blocking request (a worker that is
        # gone must not be handed a job) and tells the writer to finish.
        await self._forward(batch)
        await self._commands.send(Disconnected(self._conn))

    async def _forward(self, batch: list[Item]) -> None:
        if batch:
            self._in_flight += len(batch)
            command = Batch(self._conn, batch)
            # Hand straight to a waiting coordinator without a trip through
            # the scheduler; wait (backpressure) only when it is busy.
            try:
                self._commands.send_nowait(command)
            except trio.WouldBlock:
                await self._commands.send(command)

    async def _write(self, cancel_scope: trio.CancelScope) -> None:
        replies = self._replies
        while True:
            outgoing = await replies.receive()
            chunks: list[bytes] = []
            written = 0
            finished = False
            # Coalesce whatever else is ready: one write for many replies.
            while True:
                if outgoing is None:
                    finished = True
                    break
                # Notices were not asked for: they do not free the window.
                written += sum(not isinstance(reply, JobCancelledNotice) for reply in outgoing)
                chunks.extend(map(_encode_outgoing, outgoing))
                try:
                    outgoing = replies.receive_nowait()
                except trio.WouldBlock:
                    break
            if chunks:
                try:
                    await self._send(b"".join(chunks))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    cancel_scope.cancel()  # stop the reader too; finally does the rest
                    return
            self._in_flight -= written
            if self._in_flight < _MAX_IN_FLIGHT:
                self._window_open.set()
            if finished:
                return


def _raw_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The socket under a plain TCP stream, for reads and writes without trio's wrappers.

    ``None`` for any other stream (TLS, in-memory), which is then used as is.
    """
    if type(stream) is not trio.SocketStream:
        return None
    raw = getattr(stream.socket, "_sock", None)
    return raw if isinstance(raw, socket.socket) else None


def _encode_outgoing(reply: Outgoing) -> bytes:
    if isinstance(reply, ProtocolError):
        reply = ErrorReply.from_exception(reply)
    return encode(reply.to_wire())
