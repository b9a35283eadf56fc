"""Moving a connection's bytes with as few trips through trio's scheduler as it allows.

Shared by the server's connection handler and the client side's ``Link``.
"""

from __future__ import annotations

import contextlib
import socket

import attrs
import trio

#: Bytes asked of the socket per read.
RECEIVE_SIZE = 65536


@attrs.define(eq=False)
class ByteStream:
    """``receive_some`` and ``send_all`` for one stream, direct on a plain TCP socket.

    On this path a request costs little more than a trip through the
    scheduler, so trio's own stream methods are measurably slow here:
    ``send_all`` yields after a send that already fit in the socket buffer,
    and ``receive_some`` tries a read before it waits, which fails almost
    every time because a request or reply is rarely there yet. For a plain
    ``trio.SocketStream`` this reads and writes the socket under it instead;
    any other stream (TLS, in-memory) is used through its own methods.

    The socket is reached through trio's private ``SocketType._sock``; if a
    future trio does not have it, every stream goes through its own methods.
    """

    stream: trio.abc.Stream
    _raw: socket.socket | None = attrs.field(init=False)
    # The raw socket's descriptor: wait_readable given the socket would ask
    # it for its fileno() on every wait.
    _fd: int = attrs.field(init=False)

    @_raw.default
    def _raw_socket(self) -> socket.socket | None:
        if type(self.stream) is not trio.SocketStream:
            return None
        raw = getattr(self.stream.socket, "_sock", None)
        return raw if isinstance(raw, socket.socket) else None

    @_fd.default
    def _raw_descriptor(self) -> int:
        return -1 if self._raw is None else self._raw.fileno()

    async def receive_some(self) -> bytes | bytearray:
        """The next bytes; ``b""`` at the end of the stream.

        Raises:
            trio.BrokenResourceError, OSError: the connection broke.
        """
        raw = self._raw
        if raw is None:
            return await self.stream.receive_some(RECEIVE_SIZE)
        # Wait first: whoever reads here has consumed everything buffered.
        await trio.lowlevel.wait_readable(self._fd)
        while True:
            try:
                return raw.recv(RECEIVE_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)

    async def send_all(self, data: bytes) -> None:
        """Send all of ``data``.

        On a plain socket this may return without a checkpoint (when the
        data fit in the socket buffer): callers wait for something next,
        which is their checkpoint.

        Raises:
            trio.BrokenResourceError, OSError: the connection broke.
        """
        raw = self._raw
        if raw is None:
            await self.stream.send_all(data)
            return
        if not data:
            return
        try:
            sent = raw.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return  # the usual case: it fit, with no view to make and slice
        # The socket's buffer is full: wait for room before each try.
        view = memoryview(data)[sent:]
        while view:
            await trio.lowlevel.wait_writable(raw)
            with contextlib.suppress(BlockingIOError):
                view = view[raw.send(view) :]
