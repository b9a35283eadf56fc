"""``--log-format json``: one JSON object per log line, for log shippers.

Each line has ``time`` (UTC, ISO 8601 with milliseconds), ``level``,
``logger`` and ``message``; a line about a job adds what its log call passed
in ``extra=`` (:data:`JOB_FIELDS`: ``job_id``, ``job_name``, ``queue``,
``attempt``, ``worker``, ``seconds``), and a line with an exception adds
``exception`` (the formatted traceback). Loki, Fluent Bit, Vector and the
like then index these fields without parsing prose.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

#: The ``extra=`` fields a job's log line may carry, in the order written.
JOB_FIELDS = ("job_id", "job_name", "queue", "attempt", "worker", "seconds")

#: The choices of ``--log-format``.
LOG_FORMATS = ("text", "json")

#: The choices of ``--log-level`` (``-v`` is ``debug``).
LOG_LEVELS = ("debug", "info", "warning", "error")

#: The text format (the default).
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class TextFormatter(logging.Formatter):
    """The text format (:data:`TEXT_FORMAT`), its lines as ``Formatter(TEXT_FORMAT)`` writes them.

    The worker writes a line per job, and the stock formatter spends about
    a sixth of that line's cost on ``localtime`` and ``strftime`` for the
    time stamp, whose date and time change only once a second: here they
    are made once a second, and only the milliseconds per line. A line
    without an exception is put together directly rather than through the
    format string; one with an exception or stack goes the stock way.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        # (second, its date and time): one tuple, so a reader never sees half an update.
        self._stamp: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's local time as the stock formatter writes it (``datefmt``: as asked)."""
        if datefmt:
            return super().formatTime(record, datefmt)
        return self.stamp(record.created, record.msecs)

    def stamp(self, created: float, msecs: float) -> str:
        """The time stamp of a record made at ``created`` (its ``msecs`` as the record has them)."""
        second, text = self._stamp
        if int(created) != second:
            text = time.strftime(self.default_time_format, self.converter(created))
            self._stamp = (int(created), text)
        msec_format = self.default_msec_format
        return msec_format % (text, msecs) if msec_format else text

    def format(self, record: logging.LogRecord) -> str:
        """The record as one text line: time, logger, level, message (and any traceback)."""
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        return f"{record.asctime} {record.name} {record.levelname} {record.message}"


if sys.version_info >= (3, 13):

    def _now() -> tuple[float, float]:
        """``created`` and ``msecs`` as ``LogRecord`` sets them now (3.13: from ``time_ns``)."""
        ns = time.time_ns()
        return ns / 1e9, (ns % 1_000_000_000) // 1_000_000 + 0.0

else:

    def _now() -> tuple[float, float]:
        """``created`` and ``msecs`` as ``LogRecord`` sets them now."""
        created = time.time()
        return created, int((created - int(created)) * 1000) + 0.0


def write_info(logger: logging.Logger, msg: str, args: tuple[object, ...]) -> bool:
    """Write ``logger.info(msg, *args)``'s text line to its handler, if that is all it does.

    The worker logs a line per job at INFO, and ``logging`` spends most of
    that line's cost on what the text format never shows: the caller's
    frame, the record's thirty fields, the filters' and handlers' walk.
    When logging is set up as ``configure_logging`` leaves it for the text
    format (one ``StreamHandler`` with a :class:`TextFormatter` on the root
    logger, no filters, no other handlers on the way, the stock record
    factory), this writes the same bytes the stock path would, under the
    handler's lock, and returns ``True``; otherwise (a user's handler or
    filter, the JSON format, a test's capture) it writes nothing and
    returns ``False``, and the caller logs as usual. The caller has
    checked ``logger.isEnabledFor(logging.INFO)``.
    """
    if logger.disabled or logging.getLogRecordFactory() is not logging.LogRecord:
        return False
    if len(args) == 1 and isinstance(args[0], Mapping):  # the record would format with the mapping
        return False
    root = logging.root
    node = logger
    while node is not root:
        if node.handlers or node.filters or not node.propagate:
            return False
        node = node.parent  # type: ignore[assignment]  # a logger below root has one
    if len(root.handlers) != 1 or root.filters:
        return False
    handler = root.handlers[0]
    if type(handler) is not logging.StreamHandler or handler.filters:
        return False
    formatter = handler.formatter
    if type(formatter) is not TextFormatter or handler.level > logging.INFO:
        return False
    created, msecs = _now()
    # Handler.acquire and release, written out (two calls a line): the
    # handler is a StreamHandler, not a subclass, so they are the stock ones.
    lock = handler.lock
    if lock:
        lock.acquire()
    try:
        line = (
            f"{formatter.stamp(created, msecs)} {logger.name} "
            f"{logging.getLevelName(logging.INFO)} {msg % args if args else msg}"
        )
        stream = handler.stream
        stream.write(line + handler.terminator)
        if stream and hasattr(stream, "flush"):  # StreamHandler.flush, under the lock held
            stream.flush()
    except RecursionError:
        raise
    except Exception:
        handler.handleError(logger.makeRecord(logger.name, logging.INFO, "", 0, msg, args, None))
    finally:
        if lock:
            lock.release()
    return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (never containing a newline)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object: time, level, logger, message, job fields, exception."""
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in JOB_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        # default=str: an odd value in extra= must not lose the line.
        return json.dumps(entry, ensure_ascii=False, default=str)


def add_log_format_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-format text|json`` and ``--log-level`` to a command (``serve``, ``worker``)."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="how log lines are written: text, or one JSON object per line for log shippers",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="the least severe lines written; at info the worker writes a line per job, "
        "warning keeps only the trouble and spares a busy worker that line's CPU",
    )


def configure_logging(*, verbose: bool, log_format: str = "text", level: str = "info") -> None:
    """Log to stderr at ``level`` (DEBUG when ``verbose``) in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    handler.setFormatter(formatter)
    threshold = logging.DEBUG if verbose else getattr(logging, level.upper())
    logging.basicConfig(level=threshold, handlers=[handler])
