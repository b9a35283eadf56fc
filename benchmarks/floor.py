"""How fast one sequential producer can go here at all, whatever the queue does.

The throughput scenario's shape has one producer that waits for each submit's
reply before the next, so no system can beat one request/reply round trip per
job. This measures that ceiling on this machine, with servers that do nothing
but answer, each in its own process as the queue's server is:

- ``plain``: blocking sockets on both sides, no event loop (the machine's floor);
- ``trio``: trio on both sides, reading and writing through jobqueue's own
  ``ByteStream`` (the cheapest trio path we know), the server one task per
  connection and no work per line: what trio's scheduler costs per round trip;
- ``hops``: the same, but the server passes each request from a reader task
  to one coordinator task and the reply to a writer task, over memory
  channels, as jobqueue's server does: what that architecture costs;
- ``submit``: jobqueue's real server and ``Client.submit`` with no worker
  attached, so the server does a submit's work and nothing else.

For each: round trips per second, and the CPU each side spent per round trip.

    python -m benchmarks.floor [--trips 20000]
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Callable
from typing import Any

import trio

from benchmarks.harness import Stopwatch, free_port, spawned, wait_ready
from jobqueue import Client
from jobqueue._bytes import ByteStream

_REQUEST = b'{"type":"submit_job","name":"noop"}\n'
_REPLY = b'{"type":"job_submitted","id":"0a1b2c3d-1"}\n'


def _serve_plain(port: int) -> None:
    with socket.create_server(("127.0.0.1", port)) as listener:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(65536):
            conn.sendall(_REPLY * data.count(b"\n"))


async def _serve_trio(port: int) -> None:
    async def answer(stream: trio.SocketStream) -> None:
        io = ByteStream(stream)
        while data := await io.receive_some():
            await io.send_all(_REPLY * data.count(b"\n"))

    await trio.serve_tcp(answer, port, host="127.0.0.1")


async def _serve_hops(port: int) -> None:
    """The queue server's shape with no queue in it.

    A reader task per connection forwards each batch of lines to one
    coordinator task over a memory channel; the coordinator puts one reply
    per line in the connection's outbox; a writer task per connection writes
    them. No decoding, no state, no encoding: only the hops.
    """
    commands, inbox = trio.open_memory_channel[tuple[int, trio.MemorySendChannel[bytes]]](0)

    async def coordinator() -> None:
        async for count, outbox in inbox:
            outbox.send_nowait(_REPLY * count)

    async def connection(stream: trio.SocketStream) -> None:
        io = ByteStream(stream)
        outbox, replies = trio.open_memory_channel[bytes](float("inf"))

        async def write() -> None:
            async for data in replies:
                await io.send_all(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            while data := await io.receive_some():
                try:
                    commands.send_nowait((data.count(b"\n"), outbox))
                except trio.WouldBlock:
                    await commands.send((data.count(b"\n"), outbox))
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(coordinator)
        await trio.serve_tcp(connection, port, host="127.0.0.1")


def _connect(port: int) -> socket.socket:
    deadline = time.monotonic() + 20
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _timed(variant: str, trips: int, server_pid: int, run: Callable[[], None]) -> dict[str, Any]:
    """Time ``run`` (``trips`` round trips) and make its row."""
    watch = Stopwatch(server_pid)
    run()
    seconds = watch.seconds()
    return {
        "system": "floor",
        "variant": variant,
        "scenario": "floor",
        "trips": trips,
        "trips_per_s": trips / seconds,
        "rtt_us": seconds / trips * 1e6,
        "client_cpu_us": watch.own_cpu() / trips * 1e6,
        "server_cpu_us": watch.server_cpu() / trips * 1e6,
    }


def plain(trips: int) -> dict[str, Any]:
    """Blocking sockets on both sides."""
    port = free_port()
    with (
        spawned("--serve", "plain", "--port", str(port), module="benchmarks.floor") as server,
        _connect(port) as sock,
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def run() -> None:
            for _ in range(trips):
                sock.sendall(_REQUEST)
                while not sock.recv(65536).endswith(b"\n"):
                    pass

        return _timed("plain", trips, server.pid, run)


def trio_round_trips(trips: int, serve: str = "trio") -> dict[str, Any]:
    """trio on both sides, through ``ByteStream``, an empty server.

    With ``serve="hops"`` the server has the queue server's tasks and
    channels (reader, coordinator, writer) but still does no work.
    """
    port = free_port()
    with spawned("--serve", serve, "--port", str(port), module="benchmarks.floor") as server:
        _connect(port).close()  # listening

        async def drive() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            io = ByteStream(stream)
            for _ in range(trips):
                await io.send_all(_REQUEST)
                while not (await io.receive_some()).endswith(b"\n"):
                    pass
            await stream.aclose()

        return _timed(serve, trips, server.pid, lambda: trio.run(drive))


def submit_only(trips: int) -> dict[str, Any]:
    """jobqueue's server and ``Client.submit``, no worker: a submit's cost alone."""
    port = free_port()
    with spawned("serve", "--port", str(port)) as server:
        trio.run(wait_ready, port, 0)

        async def drive() -> None:
            async with Client.connect("127.0.0.1", port) as client:
                for _ in range(trips):
                    await client.submit("noop")

        return _timed("submit", trips, server.pid, lambda: trio.run(drive))


def floor(trips: int) -> list[dict[str, Any]]:
    """All three, side by side."""
    return [
        plain(trips),
        trio_round_trips(trips),
        trio_round_trips(trips, "hops"),
        submit_only(trips),
    ]


def print_floor(rows: list[dict[str, Any]]) -> None:
    """The floor rows as a table."""
    labels = {
        "plain": "blocking sockets, no event loop",
        "trio": "trio both sides, empty server",
        "hops": "same, server with jobqueue's hops",
        "submit": "jobqueue submit, no worker",
    }
    print(f"  {'round trip':<34}{'trips/s':>9}{'RTT us':>8}{'client CPU us':>15}"
          f"{'server CPU us':>15}")  # fmt: skip
    for row in rows:
        print(f"  {labels[row['variant']]:<34}{row['trips_per_s']:>9,.0f}{row['rtt_us']:>8.0f}"
              f"{row['client_cpu_us']:>15.0f}{row['server_cpu_us']:>15.0f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=20000)
    parser.add_argument("--serve", choices=["plain", "trio", "hops"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "plain":
        _serve_plain(args.port)
    elif args.serve == "trio":
        trio.run(_serve_trio, args.port)
    elif args.serve == "hops":
        trio.run(_serve_hops, args.port)
    else:
        print_floor(floor(args.trips))


if __name__ == "__main__":
    main()
