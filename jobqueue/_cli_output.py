"""The command line's standard output: text it cannot encode, and a reader that went away.

Kept apart from the commands (``_cli``): every command's output goes through
these two context managers, which ``main`` enters around it.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TextIO, cast

from ._interrupts import only_cancelled

#: The exit status when standard output's reader went away: 128 + SIGPIPE,
#: as a shell reports ``cat`` or ``yes`` that a closed pipe killed.
OUTPUT_CLOSED = 141


class OutputClosed(Exception):
    """Standard output's reader went away, as in ``jobqueue stats | head -1``.

    Raised in place of the ``BrokenPipeError`` of a write to standard output
    only, so a broken pipe on a connection (the server went away) is still
    reported as one.
    """


class _StdoutWriter:
    """``sys.stdout`` for a command: its writes raise :class:`OutputClosed` for a broken pipe."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        """Write ``text`` to the stream.

        Raises:
            OutputClosed: the stream's reader went away.
        """
        try:
            return self._stream.write(text)
        except BrokenPipeError as exc:
            raise OutputClosed from exc

    def flush(self) -> None:
        """Flush the stream.

        Raises:
            OutputClosed: the stream's reader went away.
        """
        try:
            self._stream.flush()
        except BrokenPipeError as exc:
            raise OutputClosed from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def closable_output() -> Iterator[None]:
    """Turn a broken pipe on standard output into :class:`OutputClosed`, quietly.

    Every command's output goes through ``sys.stdout``, which the block
    replaces; what is left buffered is flushed at its end, so the broken
    pipe shows here and not as Python's own complaint at exit. Once the
    reader is gone, standard output is pointed at ``/dev/null`` (the
    recipe of the ``signal`` module's "Note on SIGPIPE") so that nothing
    written later, nor the flush at exit, fails again. SIGPIPE itself stays
    ignored, as Python leaves it: its default action would also kill the
    process for a connection the server closed.
    """
    stream = sys.stdout
    sys.stdout = cast(TextIO, _StdoutWriter(stream))
    try:
        yield
        sys.stdout.flush()
    except OutputClosed:
        _discard_output(stream)
        raise
    except BaseException as exc:
        if only_output_closed(exc):
            _discard_output(stream)
        raise
    finally:
        sys.stdout = stream


def _discard_output(stream: TextIO) -> None:
    """Point ``stream``'s file (standard output, once its reader is gone) at ``/dev/null``."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError, AttributeError):  # not a file: nothing is left to fail
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)


def only_output_closed(exc: BaseException) -> bool:
    """Whether ``exc`` is :class:`OutputClosed`, or groups of it beside cancellations only."""
    if isinstance(exc, OutputClosed):
        return True
    inner: Sequence[BaseException] = getattr(exc, "exceptions", ())
    members = [m for m in inner if not only_cancelled(m)]
    return bool(members) and all(only_output_closed(m) for m in members)


@contextmanager
def escaping_output() -> Iterator[None]:
    r"""Write what standard output and error cannot encode as backslash escapes.

    Text from the queue may hold a lone surrogate (a payload, result, error
    or name sent with a ``"\ud800"`` escape decodes to one), which no
    encoding can write: ``status``, ``list`` and the others would crash in
    ``print``. Text that encodes is written as it was. (``--json`` output
    is all ASCII, escapes included.)
    """
    streams = [s for s in (sys.stdout, sys.stderr) if isinstance(s, io.TextIOWrapper)]
    errors = [stream.errors for stream in streams]
    for stream in streams:
        stream.reconfigure(errors="backslashreplace")
    try:
        yield
    finally:
        # main() may run in-process (tests, embedding): leave the streams as found.
        for stream, before in zip(streams, errors, strict=True):
            with suppress(ValueError):  # closed meanwhile
                stream.reconfigure(errors=before)
