"""What one journal flush costs around its ``fdatasync``: a thread, or the kernel's AIO.

With ``--fsync always`` the journal hands each flush to a thread of its own
(``_journal_disk.DiskThread``: a ``SimpleQueue`` in, ``run_sync_soon`` back),
so the coordinator keeps serving while the disk works. Each flush then costs
two wake-ups and hand-offs of the GIL besides the disk's own time. Linux's
native AIO can start an ``fdatasync`` without a thread of ours
(``IOCB_CMD_FDSYNC``, run by a kernel worker since Linux 4.18) and signal its
end on an ``eventfd`` that trio waits on like a socket. This measures, for a
loop of ``pwrite`` of 200 bytes into space already written then a flush,
awaited in trio one at a time:

- ``thread``: the journal's way (the same queue and callback, reduced);
- ``aio``: ``pwrite`` in trio's thread, then ``io_submit`` of an FDSYNC
  whose completion wakes trio through the ``eventfd``.

For each, per flush: wall time, this process's CPU, and the whole machine's
busy CPU from ``/proc/stat`` (the kernel worker's share is only there; it is
counted in 10 ms ticks, so it needs a quiet machine and many flushes).

    python -m benchmarks.flush_handoff [--flushes 3000] [--rounds 3] [--dir build]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import queue
import resource
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable

import trio

# x86_64 system call numbers and <linux/aio_abi.h> constants.
_IO_SETUP, _IO_DESTROY, _IO_GETEVENTS, _IO_SUBMIT = 206, 207, 208, 209
_IOCB_CMD_FDSYNC = 3
_IOCB_FLAG_RESFD = 1
#: struct iocb: data, key, rw_flags, opcode, reqprio, fildes, buf, nbytes,
#: offset, reserved2, flags, resfd (64 bytes).
_IOCB = struct.Struct("<QIiHhIQQqQII")
#: struct io_event: data, obj, res, res2.
_EVENT = struct.Struct("<QQqq")

_RECORD = b"x" * 200


def _busy_ticks() -> int:
    """Ticks the machine's CPUs spent not idle, from /proc/stat's first line."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4]


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Aio:
    """One AIO context with one FDSYNC control block, completed on an eventfd."""

    def __init__(self, fd: int) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self._context = ctypes.c_ulong(0)
        if self._libc.syscall(_IO_SETUP, 8, ctypes.byref(self._context)) < 0:
            raise OSError(ctypes.get_errno(), "io_setup failed")
        self.eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._iocb = ctypes.create_string_buffer(_IOCB.size)
        _IOCB.pack_into(
            self._iocb, 0, 1, 0, 0, _IOCB_CMD_FDSYNC, 0, fd, 0, 0, 0, 0, _IOCB_FLAG_RESFD,
            self.eventfd,
        )  # fmt: skip
        self._blocks = (ctypes.c_void_p * 1)(ctypes.addressof(self._iocb))
        self._event = ctypes.create_string_buffer(_EVENT.size)

    async def fdatasync(self) -> None:
        if self._libc.syscall(_IO_SUBMIT, self._context, 1, self._blocks) != 1:
            raise OSError(ctypes.get_errno(), "io_submit failed")
        await trio.lowlevel.wait_readable(self.eventfd)
        os.eventfd_read(self.eventfd)
        if self._libc.syscall(_IO_GETEVENTS, self._context, 1, 1, self._event, None) != 1:
            raise OSError(ctypes.get_errno(), "io_getevents failed")
        result = _EVENT.unpack(self._event)[2]
        if result < 0:
            raise OSError(-result, "fdatasync failed")

    def close(self) -> None:
        self._libc.syscall(_IO_DESTROY, self._context)
        os.close(self.eventfd)


async def _by_thread(fd: int, flushes: int) -> None:
    calls: queue.SimpleQueue[tuple[int, trio.Event] | None] = queue.SimpleQueue()
    token = trio.lowlevel.current_trio_token()

    def disk() -> None:
        while (call := calls.get()) is not None:
            offset, done = call
            os.pwrite(fd, _RECORD, offset)
            os.fdatasync(fd)
            token.run_sync_soon(done.set)

    thread = threading.Thread(target=disk, daemon=True)
    thread.start()
    for number in range(flushes):
        done = trio.Event()
        calls.put((number * len(_RECORD), done))
        await done.wait()
    calls.put(None)
    thread.join()


async def _by_aio(fd: int, flushes: int) -> None:
    aio = _Aio(fd)
    try:
        for number in range(flushes):
            os.pwrite(fd, _RECORD, number * len(_RECORD))
            await aio.fdatasync()
    finally:
        aio.close()


async def _main(flushes: int, rounds: int, directory: str) -> None:
    path = os.path.join(directory, "flush_handoff.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        # Written and flushed once first, as the journal prepares its space.
        os.write(fd, bytes(flushes * len(_RECORD)))
        os.fsync(fd)
        ways: list[tuple[str, Callable[[int, int], Awaitable[None]]]] = [
            ("thread", _by_thread),
            ("aio", _by_aio),
        ]
        tick = os.sysconf("SC_CLK_TCK")
        print("way     wall us  process CPU us  machine CPU us   (per flush)")
        for _ in range(rounds):
            for name, way in ways:
                busy, cpu, start = _busy_ticks(), _process_cpu(), time.perf_counter()
                await way(fd, flushes)
                wall = time.perf_counter() - start
                cpu = _process_cpu() - cpu
                machine = (_busy_ticks() - busy) / tick
                per = 1e6 / flushes
                print(f"{name:6} {wall * per:8.0f} {cpu * per:15.0f} {machine * per:15.0f}")
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flushes", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="build", help="a directory on the journal's disk")
    args = parser.parse_args()
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        parser.exit(2, "flush_handoff: needs Linux on x86_64 (its AIO system call numbers)\n")
    os.makedirs(args.dir, exist_ok=True)
    trio.run(_main, args.flushes, args.rounds, args.dir)


if __name__ == "__main__":
    main()
