"""``serve_queue()``: the TCP front of the queue.

Each connection gets a handler that only decodes lines, forwards requests to
the coordinator and encodes its replies. All queue rules live behind the
coordinator; nothing here decides anything about jobs.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
from typing import NoReturn

import trio

from ._coordinator import Call, Command, Connected, Connection, Coordinator, Disconnected
from ._protocol import (
    EOF,
    MAX_LINE_BYTES,
    NEED_DATA,
    ErrorReply,
    LineDecoder,
    ProtocolError,
    Reply,
    Request,
    decode_request,
    encode,
)
from ._state import DEFAULT_FINISHED_RETENTION, DEFAULT_LEASE_TIMEOUT, QueueState

log = logging.getLogger("jobqueue.server")

#: Bytes asked of the socket per read.
_RECEIVE_SIZE = 65536
#: Replies to pipelined requests are gathered and written together, but never
#: more than this many bytes at a time, so a peer that pipelines many
#: requests with large replies cannot make the server buffer without bound.
_FLUSH_BYTES = 65536


async def serve_queue(
    port: int = 8080,
    *,
    host: str = "127.0.0.1",
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
    finished_retention: int = DEFAULT_FINISHED_RETENTION,
    max_line_bytes: int = MAX_LINE_BYTES,
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
    ) -> None:
        self.state = QueueState(
            lease_timeout=lease_timeout,
            finished_retention=finished_retention,
            id_prefix=secrets.token_hex(4) + "-",
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
        """Serve one connection until the peer closes it."""
        peer_name = "memory"
        if isinstance(stream, trio.SocketStream):
            try:
                peer = stream.socket.getpeername()
                peer_name = f"{peer[0]}:{peer[1]}"
            except OSError:  # the peer reset before we asked
                peer_name = "?"
        reply_send, reply_receive = trio.open_memory_channel[Reply | ProtocolError](1)
        conn = Connection(next(self._ids), peer_name, reply_send)
        commands = self._commands
        handler = _ConnectionHandler(
            stream, conn, reply_receive, commands, LineDecoder(self._max_line_bytes)
        )
        log.debug("connection %d from %s opened", conn.id, peer_name)
        try:
            await commands.send(Connected(conn))
            await handler.serve()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # The peer reset the connection, or the coordinator is shutting down.
            log.debug("connection %d from %s broke: %r", conn.id, peer_name, exc)
        finally:
            # Shielded so a cancelled handler still returns its leases; the
            # coordinator closes its channel when it exits, so this cannot hang.
            with (
                trio.CancelScope(shield=True),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await commands.send(Disconnected(conn))
            await trio.aclose_forcefully(stream)
            log.debug("connection %d from %s closed", conn.id, peer_name)


class _ConnectionHandler:
    """Bytes in, requests to the coordinator, replies out, for one connection."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: Connection,
        replies: trio.MemoryReceiveChannel[Reply | ProtocolError],
        commands: trio.MemorySendChannel[Command],
        decoder: LineDecoder,
    ) -> None:
        self._stream = stream
        self._conn = conn
        self._replies = replies
        self._commands = commands
        self._decoder = decoder
        self._out = bytearray()

    async def serve(self) -> None:
        """Answer requests in order until the peer closes its side."""
        decoder = self._decoder
        while True:
            try:
                line = decoder.next_line()
            except ProtocolError as exc:
                self._queue_reply(exc)
                continue
            if line is NEED_DATA:
                await self._flush()
                decoder.receive_data(await self._stream.receive_some(_RECEIVE_SIZE))
                continue
            if line is EOF:
                await self._flush()
                return
            try:
                request = decode_request(line)
            except ProtocolError as exc:
                self._queue_reply(exc)
                continue
            if request.may_block:
                # Earlier replies must not wait behind a blocking request.
                await self._flush()
                reply = await self._call_watching_peer(request)
                if reply is None:
                    return
            else:
                reply = await self._call(request)
            self._queue_reply(reply)
            if len(self._out) >= _FLUSH_BYTES:
                await self._flush()

    def _queue_reply(self, reply: Reply | ProtocolError) -> None:
        if isinstance(reply, ProtocolError):
            reply = ErrorReply.from_exception(reply)
        self._out += encode(reply.to_wire())

    async def _flush(self) -> None:
        if self._out:
            data = bytes(self._out)
            self._out.clear()
            await self._stream.send_all(data)

    async def _call(self, request: Request) -> Reply | ProtocolError:
        await self._commands.send(Call(self._conn, request))
        return await self._replies.receive()

    async def _call_watching_peer(self, request: Request) -> Reply | ProtocolError | None:
        """Like ``_call``, but give up if the peer goes away meanwhile.

        A worker blocked in ``request_job`` is not otherwise reading its
        socket, so without this a killed worker would only be noticed when a
        job was handed to it. Returns ``None`` if the peer closed or reset.
        """
        peer_gone = False
        reply: Reply | ProtocolError | None = None

        async def watch(cancel_scope: trio.CancelScope) -> None:
            nonlocal peer_gone
            try:
                # Keep reading (pipelined requests are kept for later), but
                # stop once a full line's worth is buffered: backpressure.
                while self._decoder.buffered <= self._decoder.max_line:
                    data = await self._stream.receive_some(_RECEIVE_SIZE)
                    self._decoder.receive_data(data)
                    if not data:
                        break
                else:
                    await trio.sleep_forever()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            peer_gone = True
            cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            reply = await self._call(request)
            nursery.cancel_scope.cancel()
        return None if peer_gone else reply
