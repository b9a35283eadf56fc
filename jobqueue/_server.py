"""``serve_queue()``: the TCP front of the queue.

Each connection gets a handler that only decodes lines, forwards requests to
the coordinator and encodes its replies. All queue rules live behind the
coordinator; nothing here decides anything about jobs.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import itertools
import logging
import secrets
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import attrs
import trio

from ._bytes import ByteStream
from ._codec import decode_request
from ._commands import Batch, Command, Connected, Connection, Disconnected, Item, Snapshot
from ._config import ServerConfig, metrics_address, server_config
from ._coordinator import Coordinator
from ._errors import (
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    INTERNAL_ERROR,
    TOO_MANY_CONNECTIONS,
    UNAUTHORIZED,
    JobQueueError,
    ProtocolError,
    RuleError,
)
from ._framing import EOF, NEED_DATA, LineDecoder
from ._interrupts import interrupts_unwrapped
from ._journal_writer import Journal
from ._json import encode
from ._metrics import JobTimes, MetricsSnapshot
from ._metrics_http import require_h11, serve_metrics
from ._outbox import MAX_IN_FLIGHT, Outbox
from ._replies import ErrorReply
from ._requests import Hello
from ._state import QueueState

log = logging.getLogger("jobqueue.server")

#: Longest a farewell error may take to write before the connection is dropped.
_FAREWELL_TIMEOUT = 1.0


async def serve_queue(
    port: int = 8080,
    *,
    host: str = "127.0.0.1",
    config: ServerConfig | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> NoReturn:
    """Run a queue server until cancelled.

    Use it as ``address = await nursery.start(serve_queue, 0)``: the server is
    accepting connections by the time ``start`` returns the bound
    ``(host, port)``, so port 0 (any free port) works.

    Options come either as one record, ``config=ServerConfig(...)``, or as
    keyword arguments named after its fields and those of its
    :class:`~jobqueue.QueueRules` (``serve_queue(0, lease_timeout=5,
    token="s3cret")``); keyword arguments win over the same values in
    ``config``. The fields, with their defaults, are:

    - ``lease_timeout`` (30 s), ``max_attempts`` (5), ``retry_delay`` (1 s),
      ``max_retry_delay`` (300 s), ``finished_retention`` (100,000),
      ``finished_retention_bytes`` (1 GiB; ``None``: no limit),
      ``max_pending`` (1,000,000; ``None``: no limit), ``max_payload_bytes``
      (1 GiB; ``None``: no limit): the queue's rules,
      see :class:`~jobqueue.QueueRules`.
    - ``max_line_bytes`` (1 MiB), ``max_connections`` (1,024),
      ``handshake_timeout`` (10 s), ``idle_timeout`` (``None``: never),
      ``token`` (``None``), ``ssl_context`` (``None``: plain TCP): the
      listener's, see :class:`~jobqueue.ServerConfig`.
    - ``journal`` (``None``: memory only), ``fsync`` (``"always"``),
      ``fsync_interval`` (1 s): keep the queue on disk across restarts.
    - ``metrics`` (``None``): serve Prometheus metrics at ``"HOST:PORT"``
      (``GET /metrics``; needs ``jobqueue[metrics]``; docs/metrics.md).

    Args:
        port: TCP port to listen on; 0 picks a free one.
        host: Address to bind. The default serves this machine only.
        config: The server's options; ``None`` for the defaults.
        task_status: Set by ``nursery.start``.
        **options: Fields of ``ServerConfig`` or ``QueueRules`` by name.

    Raises:
        TypeError: an option that is no field of either record.
        ValueError: an option's value its field refuses; the message names it.

    Error handling:
        Anything a peer sends wrong gets an ``error`` reply on that
        connection only. A peer that vanishes mid-request just ends its own
        connection, and its leased jobs go straight back to the queue.
        Failing to bind raises ``OSError`` before ``start`` returns; a
        journal directory another server holds, or one damaged before its
        end, raises ``JournalError``.
        Binding an address other machines can reach without a ``token``
        (or without TLS) logs a warning. Ctrl-C leaves as a plain
        ``KeyboardInterrupt``, not wrapped in an exception group by the
        server's tasks.
    """
    config = server_config(config, options, caller="serve_queue")
    service = QueueService(config)
    token, ssl_context = config.token, config.ssl_context
    _check_file_limit(config.max_connections)
    if config.metrics is not None:
        require_h11()  # before anything starts: the error names the extra
    await service.open_journal()
    # Before the nursery, as the journal's errors: a schedule refused here
    # stops the server with its own error, not one wrapped in a group.
    service.add_configured_schedules()
    listeners = await trio.open_tcp_listeners(port, host=host)
    sockname = listeners[0].socket.getsockname()
    address = (str(sockname[0]), int(sockname[1]))
    if not all(_is_loopback(listener) for listener in listeners):
        if token is None:
            log.warning(
                "queue bound to %s with no token: anyone who can reach this address can "
                "submit, cancel and run jobs; set a token (serve --token) or bind 127.0.0.1",
                host,
            )
        if ssl_context is None:
            log.warning(
                "queue bound to %s without TLS: jobs%s cross the network in clear text",
                host,
                " and the token" if token is not None else "",
            )
    with interrupts_unwrapped():  # Ctrl-C leaves as KeyboardInterrupt, not in a group
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await nursery.start(trio.serve_listeners, service.handle_stream, listeners)
            if config.metrics is not None:
                await nursery.start(
                    serve_metrics, service.metrics_snapshot, *metrics_address(config.metrics)
                )
            log.info(
                "queue listening on %s:%d%s (lease timeout %gs)",
                address[0],
                address[1],
                " with TLS" if ssl_context is not None else "",
                config.rules.lease_timeout,
            )
            task_status.started(address)
    raise AssertionError("serve_queue's tasks never return")  # pragma: no cover


async def stop_on_sigterm(
    serve: Callable[[], Awaitable[None]], logger: logging.Logger = log
) -> None:
    """Run ``serve()`` (``serve_queue``) until SIGTERM, which stops it as Ctrl-C does.

    Python's default for SIGTERM ends the process on the spot, so the
    server could not say what becomes of its jobs (see ``_log_stop``).
    ``logger`` says that SIGTERM came: the dashboard's process passes its own.
    """
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    async for _ in signals:
                        logger.info("SIGTERM received: stopping")
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(watch)
                await serve()
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            # serve()'s own error (it cannot listen, say), not wrapped in the
            # nursery's group: callers handle it as they would serve_queue's.
            inner: Sequence[BaseException] = getattr(exc, "exceptions", ())
            if len(inner) == 1:
                raise inner[0] from None
            raise


class QueueService:
    """The queue without a listener: a coordinator plus a per-stream handler.

    ``serve_queue`` feeds it TCP connections; ``jobqueue.testing`` feeds it
    in-memory streams so whole systems can run under trio's mock clock.
    """

    def __init__(self, config: ServerConfig | None = None, **options: Any) -> None:
        """Build the queue from ``config`` and ``options``, as :func:`serve_queue` does.

        Raises:
            TypeError: an option that is no field of either record.
            ValueError: an option's value its field refuses.
        """
        config = server_config(config, options, caller="QueueService")
        #: The options this queue was built with.
        self.config = config
        rules = config.rules
        self.state = QueueState(
            rules=rules,
            id_prefix=secrets.token_hex(4) + "-",
        )
        token = config.token
        self._max_line_bytes = config.max_line_bytes
        self._max_connections = config.max_connections
        self._open_connections = 0
        # Connections refused since the limit was last reached.
        self._refused = 0
        self._ssl_context = config.ssl_context
        self._guard = _Guard(
            _token_bytes(token) if token is not None else None,
            config.handshake_timeout,
            config.idle_timeout,
        )
        # Unbuffered: a handler's send is a hand-off to the coordinator, which
        # gives natural backpressure when it is busy.
        self._commands, self._commands_receive = trio.open_memory_channel[Command](0)
        self._ids = itertools.count(1)
        self.journal: Journal | None = None
        self._journal_open = False
        self._schedules_added = False
        if config.journal is not None:
            self.journal = Journal(
                config.journal,
                config.fsync,
                config.fsync_interval,
                compact_ratio=config.compact_ratio,
            )
        #: The coordinator that alone touches ``state`` once :meth:`run` starts.
        self.coordinator = Coordinator(
            self.state, times=JobTimes() if config.metrics is not None else None
        )

    async def open_journal(self) -> None:
        """Lock and replay the journal, if there is one and it is not open yet.

        ``serve_queue`` calls this before it listens, so a locked or damaged
        journal stops it before any client can connect; ``run`` calls it
        otherwise.

        Raises:
            JournalError: the directory is locked by another server, or damaged.
            OSError: it cannot be read or written.
        """
        journal = self.journal
        if journal is None or self._journal_open:
            return
        await trio.to_thread.run_sync(journal.open, self.state, trio.current_time())
        self._journal_open = True
        journal.start(self.state, trio.current_time())

    def add_configured_schedules(self) -> None:
        """Add ``config.schedules``, once, after the journal's replay (if any).

        ``serve_queue`` calls this before it listens; ``run`` calls it
        itself for a service run without ``serve_queue``.

        Raises:
            JobQueueError: one would make too many (``too_many_schedules``):
                the journal may hold up to ``MAX_SCHEDULES`` schedules
                added over the wire, and the configured ones come on top.
        """
        if self._schedules_added:
            return
        scheduler = self.coordinator.scheduler
        for schedule in self.config.schedules:
            try:
                scheduler.add(schedule)
            except RuleError as exc:
                message = f"cannot add schedule {schedule.name!r}: {exc.message}"
                raise JobQueueError(message) from None
        self._schedules_added = True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the coordinator (and the journal, with one) until cancelled.

        Raises:
            JournalError: before ``started``, if the journal directory is
                locked by another server or damaged.
        """
        journal = self.journal
        if journal is None:
            self.add_configured_schedules()
            task_status.started()
            try:
                await self.coordinator.run(self._commands_receive)
            finally:
                self._log_stop()
            return
        await self.open_journal()
        # After the replay, so the journal records them and knows their history.
        self.add_configured_schedules()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(journal.run)
                task_status.started()
                self.coordinator.durability = journal
                await self.coordinator.run(self._commands_receive)
        finally:
            self._log_stop()

    async def metrics_snapshot(self) -> MetricsSnapshot:
        """The figures of ``GET /metrics``, taken by the coordinator between two commands.

        Raises:
            trio.BrokenResourceError: the coordinator has stopped.
        """
        send, receive = trio.open_memory_channel[MetricsSnapshot](1)
        async with receive:
            await self._commands.send(Snapshot(send))
            snapshot = await receive.receive()
        if self.journal is None:
            return snapshot
        # The journal's own figures, read here in trio's thread: they are the
        # flusher's, not queue state, so the coordinator need not copy them.
        return attrs.evolve(snapshot, journal=self.journal.figures())

    def _log_stop(self) -> None:
        """Say what becomes of the jobs as the server stops (Ctrl-C, SIGTERM, cancelled)."""
        counts = self.state.counts()
        live = "%d pending, %d scheduled and %d running jobs"
        numbers = (counts["pending"], counts["scheduled"], counts["running"])
        if self.journal is None:
            log.info(
                "stopping without a journal: dropping " + live + " and %d finished records "
                "(serve --journal DIR keeps them across restarts)",
                *numbers,
                len(self.state) - sum(numbers),
            )
        else:
            log.info(
                "stopping: " + live + " are safe in the journal %s%s; running jobs run "
                "again after a restart",
                *numbers,
                self.journal.directory,
                "" if self.journal.idle else " (the last changes, never acknowledged, may not be)",
            )

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until the peer closes it.

        Two tasks per connection: a reader that decodes requests and forwards
        them to the coordinator in batches, and a writer that sends the
        replies the connection's outbox could not send at once. Because the
        reader never stops reading (except for backpressure), a peer that
        vanishes is noticed at once, even while it is blocked in
        ``request_job``.
        """
        peer_name = _peer_name(stream)
        if isinstance(stream, trio.SocketStream):
            _keep_alive(stream)
        if self._ssl_context is not None:
            stream = trio.SSLStream(stream, self._ssl_context, server_side=True)
        if self._open_connections >= self._max_connections:
            # One warning per episode, not one per refused peer: a flood of
            # connections must not become a flood of log lines.
            if not self._refused:
                log.warning(
                    "refusing connections (from %s first): %d are open (max_connections)",
                    peer_name,
                    self._open_connections,
                )
            self._refused += 1
            await _farewell(
                stream,
                ErrorReply(
                    TOO_MANY_CONNECTIONS,
                    f"the server has its limit of {self._max_connections} connections open; "
                    "try again later",
                ),
            )
            await trio.aclose_forcefully(stream)
            return
        self._open_connections += 1
        outbox = Outbox(_descriptor(stream), track_activity=self._guard.idle_timeout is not None)
        conn = Connection(next(self._ids), peer_name, outbox)
        handler = _ConnectionHandler(
            stream, conn, outbox, self._commands, LineDecoder(self._max_line_bytes), self._guard
        )
        log.debug("connection %d from %s opened", conn.id, peer_name)
        try:
            await self._commands.send(Connected(conn))
            try:
                await handler.serve()
            finally:
                # From here on only this task writes to the stream, which it
                # closes below.
                outbox.close()
            if handler.farewell is not None:
                log.info(
                    "closing connection %d from %s: %s",
                    conn.id,
                    peer_name,
                    handler.farewell.message,
                )
                await _farewell(stream, handler.farewell)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # The coordinator is shutting down.
            log.debug("connection %d from %s broke: %r", conn.id, peer_name, exc)
        except Exception:
            # A bug met while serving one peer costs that peer's connection,
            # never the server and the others (the queue's state is the
            # coordinator's, which this task only sends commands to).
            log.exception("connection %d from %s: unexpected error; closing it", conn.id, peer_name)
            await _farewell(
                stream,
                ErrorReply(
                    INTERNAL_ERROR,
                    "the server met an unexpected error serving this connection and closed "
                    "it; the server's log has the details",
                ),
            )
        finally:
            self._open_connections -= 1
            if self._refused:
                log.warning("accepting connections again; %d were refused", self._refused)
                self._refused = 0
            if not handler.said_goodbye:
                # Shielded so a cancelled handler still returns its leases; the
                # coordinator closes its channel when it exits, so this cannot
                # hang. (A second Disconnected for the same connection would be
                # ignored, but would cost the coordinator a wake-up.)
                with (
                    trio.CancelScope(shield=True),
                    contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
                ):
                    await self._commands.send(Disconnected(conn))
            await trio.aclose_forcefully(stream)
            log.debug("connection %d from %s closed", conn.id, peer_name)


@attrs.frozen
class _Guard:
    """What a connection must do to be served: authenticate in time, stay active."""

    token: bytes | None
    handshake_timeout: float
    idle_timeout: float | None

    def admits(self, hello: Hello) -> bool:
        """Whether ``hello`` carries the token (always, without one)."""
        if self.token is None:
            return True
        # Constant time: how long the refusal takes says nothing about how
        # much of the token was right.
        return hello.token is not None and hmac.compare_digest(
            _token_bytes(hello.token), self.token
        )


def _token_bytes(token: str) -> bytes:
    """``token`` as bytes to compare, whatever it holds.

    JSON can carry a lone surrogate (an escaped half of a pair), which a
    plain ``encode()`` refuses: "surrogatepass" encodes it as well.
    """
    return token.encode("utf-8", "surrogatepass")


class _ConnectionHandler:
    """Bytes in, requests to the coordinator, replies out, for one connection."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: Connection,
        outbox: Outbox,
        commands: trio.MemorySendChannel[Command],
        decoder: LineDecoder,
        guard: _Guard,
    ) -> None:
        self._stream = stream
        self._conn = conn
        self._outbox = outbox
        self._commands = commands
        self._decoder = decoder
        self._guard = guard
        # When the peer last sent bytes (idle timeout; the outbox keeps when
        # it was last written to).
        self._last_received = trio.current_time()
        #: Whether the reader has told the coordinator the connection is over.
        self.said_goodbye = False
        #: The error to send after the last reply, just before closing, when
        #: the server (not the peer) ends the connection.
        self.farewell: ErrorReply | None = None
        self._bytes = ByteStream(stream)

    async def serve(self) -> None:
        """Run the reader and the writer until the connection is finished."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, nursery.cancel_scope)
            try:
                await self._outbox.drain(self._bytes)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                nursery.cancel_scope.cancel()  # stop the reader too; the caller does the rest

    async def _read(self, cancel_scope: trio.CancelScope) -> None:
        try:
            await self._read_requests()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The coordinator is gone (shutdown): the writer will never be
            # told to finish, so end the connection from here.
            cancel_scope.cancel()

    async def _read_requests(self) -> None:
        decoder = self._decoder
        guard = self._guard
        outbox = self._outbox
        idle_timeout = guard.idle_timeout
        receive_some = self._bytes.receive_some
        batch: list[Item] = []
        # Until the first request is accepted (the hello, with a token), the
        # connection is in its handshake: anything else ends it.
        handshake_deadline: float | None = trio.current_time() + guard.handshake_timeout
        while True:
            if outbox.in_flight + len(batch) >= MAX_IN_FLIGHT:
                await self._forward(batch)
                batch = []
                while outbox.in_flight >= MAX_IN_FLIGHT:
                    outbox.window_open = trio.Event()
                    await outbox.window_open.wait()
                continue
            try:
                line = decoder.next_line()
            except ProtocolError as exc:
                if handshake_deadline is not None and guard.token is not None:
                    self.farewell = ErrorReply.from_exception(exc)
                    break
                handshake_deadline = None
                batch.append(exc)
                continue
            if line is NEED_DATA:
                if batch:
                    await self._forward(batch)
                    batch = []
                if handshake_deadline is None and idle_timeout is None:
                    # The usual case once the hello is in: no deadline, so
                    # neither a cancel scope nor the activity clock is
                    # needed, and on this path they cost as much as the read.
                    try:
                        data = await receive_some()
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        data = b""  # a reset is an end of stream
                else:
                    received = await self._receive(handshake_deadline)
                    if received is None:
                        break
                    data = received
                decoder.receive_data(data)
                continue
            if line is EOF:
                break
            try:
                request = decode_request(line)
            except ProtocolError as exc:
                if handshake_deadline is not None and guard.token is not None:
                    self.farewell = ErrorReply.from_exception(exc)
                    break
                batch.append(exc)
            else:
                if handshake_deadline is not None and guard.token is not None:
                    if not isinstance(request, Hello):
                        self.farewell = ErrorReply(
                            UNAUTHORIZED, 'this server needs a "hello" with its token first'
                        )
                        break
                    if not guard.admits(request):
                        self.farewell = ErrorReply(UNAUTHORIZED, "wrong or missing token")
                        break
                batch.append(request)
            handshake_deadline = None
        # The peer has closed its side (or the server is ending the
        # connection). Whatever it sent is answered first; then the
        # coordinator drops any blocking request (a worker that is gone must
        # not be handed a job) and tells the writer to finish.
        await self._forward(batch)
        await self._commands.send(Disconnected(self._conn))
        self.said_goodbye = True

    async def _receive(self, handshake_deadline: float | None) -> bytes | bytearray | None:
        """The next bytes from the peer by a deadline; ``b""`` at its end, ``None`` on a timeout.

        For the handshake, or with an idle timeout (the reader reads
        without a deadline itself otherwise). A timeout sets :attr:`farewell`.
        """
        guard = self._guard
        while True:
            if handshake_deadline is not None:
                deadline = handshake_deadline
            else:
                assert guard.idle_timeout is not None
                deadline = self._last_activity() + guard.idle_timeout
            with trio.move_on_at(deadline):
                try:
                    data = await self._bytes.receive_some()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""  # a reset (or a failed TLS handshake) is an end of stream
                self._last_received = trio.current_time()
                return data
            if handshake_deadline is not None:
                what = '"hello" with the token' if guard.token is not None else "request"
                self.farewell = ErrorReply(
                    HANDSHAKE_TIMEOUT, f"no {what} within {guard.handshake_timeout:g}s"
                )
                return None
            # Idle only if nothing is outstanding and nothing was written
            # since the wait began: a worker parked in request_job is busy.
            assert guard.idle_timeout is not None
            if self._outbox.in_flight == 0 and (
                trio.current_time() >= self._last_activity() + guard.idle_timeout
            ):
                self.farewell = ErrorReply(
                    IDLE_TIMEOUT, f"nothing received for {guard.idle_timeout:g}s"
                )
                return None
            if self._outbox.in_flight > 0:
                self._last_received = trio.current_time()

    async def _forward(self, batch: list[Item]) -> None:
        if batch:
            self._outbox.in_flight += len(batch)
            command = Batch(self._conn, batch)
            # Hand straight to a waiting coordinator without a trip through
            # the scheduler; wait (backpressure) only when it is busy.
            try:
                self._commands.send_nowait(command)
            except trio.WouldBlock:
                await self._commands.send(command)

    def _last_activity(self) -> float:
        """When the peer last sent bytes or was last written to."""
        return max(self._last_received, self._outbox.last_activity)


def _descriptor(stream: trio.abc.Stream) -> int | None:
    """The descriptor of a plain TCP stream, for the outbox's direct send; else ``None``."""
    if type(stream) is not trio.SocketStream:
        return None
    return stream.socket.fileno()


def _peer_name(stream: trio.abc.Stream) -> str:
    if not isinstance(stream, trio.SocketStream):
        return "memory"
    try:
        peer = stream.socket.getpeername()
    except OSError:  # the peer reset before we asked
        return "?"
    return f"{peer[0]}:{peer[1]}"


def _keep_alive(stream: trio.SocketStream) -> None:
    """Have the kernel probe a quiet connection.

    A peer whose machine vanished (no FIN, no RST) then frees its connection
    slot within minutes, not hours.
    """
    with contextlib.suppress(OSError):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6)):
            if hasattr(socket, option):
                stream.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


async def _farewell(stream: trio.abc.Stream, error: ErrorReply) -> None:
    """Best effort: tell the peer why the server is closing its connection."""
    with (
        trio.move_on_after(_FAREWELL_TIMEOUT),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.send_all(encode(error.to_wire()))


def _check_file_limit(max_connections: int) -> None:
    """Warn if the process may run out of file descriptors before ``max_connections``.

    Past that limit ``accept`` fails with EMFILE and trio retries quietly, so
    new connections would hang instead of getting ``too_many_connections``.
    """
    try:
        import resource  # Unix only
    except ImportError:  # pragma: no cover
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Headroom for the listeners, logs and whatever the embedding program holds.
    if soft != resource.RLIM_INFINITY and max_connections + 64 > soft:
        log.warning(
            "max_connections is %d but this process may open only %d files; raise the "
            "limit (ulimit -n) or lower max_connections, or new connections will hang",
            max_connections,
            soft,
        )


def _is_loopback(listener: trio.SocketListener) -> bool:
    host = str(listener.socket.getsockname()[0]).partition("%")[0]
    return ipaddress.ip_address(host).is_loopback
