r"""Framing: a byte stream cut into ``\n``-terminated lines, sans IO.

Nothing here touches a socket or imports trio: bytes go in through
:meth:`LineDecoder.receive_data` and whole lines come out of
:meth:`LineDecoder.next_line`, so the server, the client and the tests drive
the same decoder. The line cap is enforced here, while bytes arrive, because
it is what bounds the memory one connection can make the server hold.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Final

from ._errors import INCOMPLETE_MESSAGE, MESSAGE_TOO_LARGE, ProtocolError
from ._limits import MAX_LINE_BYTES


class Need(enum.Enum):
    """What :meth:`LineDecoder.next_line` returns when it has no line to give."""

    #: More bytes are needed before the next line is complete.
    DATA = "need_data"
    #: The peer closed its side and every complete line has been handed out.
    EOF = "eof"


NEED_DATA: Final = Need.DATA
EOF: Final = Need.EOF


class LineDecoder:
    r"""Splits a byte stream into ``\n``-terminated lines, with a cap on line length.

    Feed bytes with :meth:`receive_data` (``b""`` means the peer closed its
    side) and pull lines with :meth:`next_line` until it returns
    :data:`NEED_DATA` or :data:`EOF`. A trailing ``\\r`` is dropped and blank
    lines are skipped, so a person typing into ``nc`` is understood.

    Error handling:
        A line longer than ``max_line`` raises ``ProtocolError("message_too_large")``
        once, as soon as the excess is seen; the rest of that line is discarded
        without being buffered and decoding resumes after its ``\n``, so the
        connection stays usable. Bytes left without a ``\n`` at EOF raise
        ``ProtocolError("incomplete_message")`` once.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._max_line = max_line
        self._buf = bytearray()
        # Where to resume looking for b"\n": feeding one byte at a time must not
        # rescan the whole buffer each time (that would be quadratic).
        self._scan_from = 0
        self._discarding = False
        self._eof = False
        # A chunk that came in as exactly one line while nothing else was
        # buffered (the usual read: one request), kept as it came: the line
        # is cut from it without a trip through the buffer.
        self._whole: bytes | None = None
        # Complete lines cut from the buffer and not yet handed out: when the
        # buffer holds several (a worker's reports, written together), they
        # are split off in one call, not found and copied one by one.
        self._lines: deque[bytes] = deque()

    @property
    def max_line(self) -> int:
        """The longest line accepted, in bytes."""
        return self._max_line

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out as lines."""
        return (
            len(self._buf)
            + (0 if self._whole is None else len(self._whole))
            + sum(len(line) + 1 for line in self._lines)
        )

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes from the peer; ``b""`` marks end of stream.

        Raises:
            RuntimeError: if called with more data after end of stream.
        """
        if self._eof:
            if data:
                raise RuntimeError("received data after EOF")
            return
        if not data:
            self._eof = True
            return
        if self._whole is not None:
            self._buf += self._whole
            self._whole = None
        elif (
            not self._buf
            and not self._lines
            and not self._discarding
            and type(data) is bytes
            and data.find(b"\n") == len(data) - 1
        ):
            self._whole = data
            return
        self._buf += data

    def next_line(self) -> bytes | Need:
        """Return the next complete line, or :data:`NEED_DATA` / :data:`EOF`.

        Raises:
            ProtocolError: ``message_too_large`` or ``incomplete_message``, as
                described in the class docstring.
        """
        whole = self._whole
        if whole is not None:
            self._whole = None
            line = whole[:-1]
            if len(line) > self._max_line:
                raise _too_large(self._max_line)
            if line[-1:] == b"\r":  # (a slice, not endswith: a call with a tuple)
                line = line[:-1]
            if line.strip():
                return line
        elif not self._buf and not self._lines:
            # Nothing buffered, so nothing to discard or to find too long.
            return EOF if self._eof else NEED_DATA
        lines = self._lines
        while True:
            if lines:
                line = lines.popleft()
            else:
                buf = self._buf
                end = buf.rfind(b"\n", self._scan_from)
                if end < 0:
                    return self._no_newline()
                # Every complete line at once: one split, where a find, a
                # slice and a copy a line cost about three times as much.
                lines.extend(bytes(buf[:end]).split(b"\n"))
                # CPython deletes from the front of a bytearray in O(1).
                del buf[: end + 1]
                self._scan_from = 0
                line = lines.popleft()
            if self._discarding:
                self._discarding = False
                continue
            if len(line) > self._max_line:
                raise _too_large(self._max_line)
            if line[-1:] == b"\r":  # (a slice, not endswith: a call with a tuple)
                line = line[:-1]
            if line.strip():
                return line

    def _no_newline(self) -> Need:
        if self._discarding:
            self._buf.clear()
        elif len(self._buf) > self._max_line:
            self._buf.clear()
            self._discarding = True
            self._scan_from = 0
            raise _too_large(self._max_line)
        self._scan_from = len(self._buf)
        if not self._eof:
            return NEED_DATA
        if self._buf.strip() and not self._discarding:
            self._buf.clear()
            self._scan_from = 0
            raise ProtocolError(
                INCOMPLETE_MESSAGE,
                "the connection closed in the middle of a message (no final newline)",
            )
        return EOF


def _too_large(limit: int) -> ProtocolError:
    return ProtocolError(
        MESSAGE_TOO_LARGE,
        f"message is longer than the {limit}-byte limit; it was discarded",
    )
