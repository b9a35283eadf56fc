"""The outbox: replies sent at once when nothing is queued, else by the writer, in order.

Over a real socket pair: the direct send is an ``os.write`` on the socket's
descriptor, and what the socket does not take (a peer that stops reading)
must reach the writer without any reply overtaking another.
"""

from __future__ import annotations

import socket

import trio
import trio.testing

from jobqueue._bytes import ByteStream
from jobqueue._commands import Outgoing
from jobqueue._outbox import Outbox
from jobqueue._replies import ErrorReply, JobCancelledNotice, Ok


async def read_lines(sock: trio.socket.SocketType, count: int) -> list[bytes]:
    data = b""
    while data.count(b"\n") < count:
        chunk = await sock.recv(65536)
        assert chunk, "closed early"
        data += chunk
    return data.splitlines()


async def test_sent_at_once_without_the_writer() -> None:
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        outbox = Outbox(ours.fileno())
        outbox.in_flight = 2
        outbox.send_nowait([Ok(), JobCancelledNotice("j-1", 1)])
        # No writer task runs: the bytes are already in the socket.
        with trio.fail_after(5):
            lines = await read_lines(theirs, 2)
        assert lines == [b'{"type":"ok"}', b'{"type":"job_cancelled","job_id":"j-1","attempt":1}']
        # The notice was not asked for: only the ok frees the window.
        assert outbox.in_flight == 1
        assert outbox.window_open.is_set()


async def test_a_full_socket_hands_the_rest_to_the_writer_in_order() -> None:
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        outbox = Outbox(ours.fileno())
        count = 200
        outbox.in_flight = count
        # Each about 2 KiB: far more than the socket holds while nobody reads.
        for index in range(count):
            replies: list[Outgoing] = [ErrorReply("bad_request", f"{index:05d} " + "x" * 2000)]
            outbox.send_nowait(replies)
        assert outbox.in_flight > 0  # some are waiting for the writer
        outbox.send_nowait(None)
        outbox.send_nowait([Ok()])  # after the end: dropped
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.drain, ByteStream(trio.SocketStream(ours)))
            with trio.fail_after(5):
                lines = await read_lines(theirs, count)
        assert [line.split(b'"message":"')[1][:5] for line in lines] == [
            f"{i:05d}".encode() for i in range(count)
        ]
        assert outbox.in_flight == 0


async def test_after_close_everything_goes_through_the_writer() -> None:
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        outbox = Outbox(ours.fileno())
        outbox.close()
        outbox.in_flight = 1
        outbox.send_nowait([Ok()])
        await trio.testing.wait_all_tasks_blocked()
        assert outbox.in_flight == 1  # nothing was written
        outbox.send_nowait(None)
        with trio.fail_after(5):
            await outbox.drain(ByteStream(trio.SocketStream(ours)))
            assert await read_lines(theirs, 1) == [b'{"type":"ok"}']
        assert outbox.in_flight == 0


async def test_byte_stream_send_all_waits_for_room_and_sends_everything() -> None:
    """A send the socket takes only in part goes on, in order, as the peer reads."""
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        stream = ByteStream(trio.SocketStream(ours))
        data = bytes(range(256)) * 4096  # 1 MiB: far more than the socket holds
        received = bytearray()

        async def read_all() -> None:
            while len(received) < len(data):
                chunk = await theirs.recv(65536)
                assert chunk, "closed early"
                received.extend(chunk)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                await stream.send_all(data)
                await stream.send_all(b"")  # nothing to send: returns at once
        assert received == data
