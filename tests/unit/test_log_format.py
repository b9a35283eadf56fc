"""The log formatters: text as the stock formatter writes it; JSON, one object per line."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from unittest import mock

import hypothesis
import pytest
from hypothesis import strategies as st

from jobqueue._logformat import TEXT_FORMAT, JsonFormatter, TextFormatter, write_info


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("jobqueue.worker", logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_a_plain_line_has_time_level_logger_and_message() -> None:
    line = JsonFormatter().format(record("queue listening on %s", "127.0.0.1:8080"))
    entry = json.loads(line)
    assert entry.keys() == {"time", "level", "logger", "message"}
    assert (entry["level"], entry["logger"]) == ("INFO", "jobqueue.worker")
    assert entry["message"] == "queue listening on 127.0.0.1:8080"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])


def test_a_job_line_carries_the_job_fields() -> None:
    fields = {"job_id": "ab-1", "job_name": "resize", "queue": "images", "attempt": 2}
    line = JsonFormatter().format(record("job done", worker="w1", seconds=0.25, **fields))
    entry = json.loads(line)
    assert entry == entry | fields | {"worker": "w1", "seconds": 0.25}


def test_an_exception_and_odd_text_stay_on_one_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        import sys

        made = record('a "quoted"\nmessage\u2028', job_id=object())
        made.exc_info = sys.exc_info()
    line = JsonFormatter().format(made)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == 'a "quoted"\nmessage\u2028'
    assert "ValueError: bad\nvalue" in entry["exception"]
    assert isinstance(entry["job_id"], str)  # an unencodable value is written as its str()


@pytest.mark.parametrize(
    "created",
    [1_700_000_000.0, 1_700_000_000.9995, 1_700_000_001.25, 1_700_003_600.5, 1_700_000_000.001],
)
def test_text_lines_are_the_stock_formatters(created: float) -> None:
    # One formatter for all the times in turn, so its once-a-second time
    # stamp is reused within a second and remade across one.
    ours, stock = TextFormatter(), logging.Formatter(TEXT_FORMAT)
    for when in (created, created + 0.0004, created + 1.0, created):
        made = record("job %s (%s) completed in %.3fs", "ab-1", "resize", 0.25)
        made.created, made.msecs = when, int((when - int(when)) * 1000) + 0.0
        assert ours.format(made) == stock.format(made)


def test_text_lines_with_a_traceback_are_the_stock_formatters() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        made = record("job %s failed", "ab-1")
        made.exc_info = sys.exc_info()
    text = TextFormatter().format(made)
    made.exc_text = None
    assert text == logging.Formatter(TEXT_FORMAT).format(made)
    assert text.endswith("ValueError: bad")


# --------------------------------------------------------------- write_info, the quick path

_COMPLETED = "job %s (%s) completed in %.3fs"


@contextlib.contextmanager
def plain_logging(stream: io.StringIO, at: float) -> Iterator[logging.Logger]:
    """``configure_logging``'s text set-up on ``stream``, the clock stopped at ``at``.

    The root's handlers are swapped for the one (pytest's capture handler
    would otherwise be a second), and put back after.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("jobqueue.worker")
    root = logging.root
    saved = root.handlers, root.level
    root.handlers, root.level = [handler], logging.INFO
    logger.setLevel(logging.NOTSET)  # (also clears the loggers' level caches)
    try:
        with (
            mock.patch.object(time, "time", return_value=at),
            mock.patch.object(time, "time_ns", return_value=int(at * 1e9)),
        ):
            yield logger
    finally:
        root.handlers, root.level = saved
        logger.setLevel(logging.NOTSET)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    job_id=st.text(),
    name=st.text(),
    seconds=st.floats(allow_nan=False, allow_infinity=False),
)
def test_write_info_writes_what_logging_writes(
    at: float, job_id: str, name: str, seconds: float
) -> None:
    quick, stock = io.StringIO(), io.StringIO()
    with plain_logging(quick, at) as logger:
        assert write_info(logger, _COMPLETED, (job_id, name, seconds))
    with plain_logging(stock, at) as logger:
        logger.info(_COMPLETED, job_id, name, seconds)
    assert quick.getvalue() == stock.getvalue()


def test_write_info_keeps_the_second_s_stamp_across_lines() -> None:
    quick, stock = io.StringIO(), io.StringIO()
    for at in (1_700_000_000.0004, 1_700_000_000.9996, 1_700_000_001.5, 1_700_000_000.25):
        with plain_logging(quick, at) as logger:
            assert write_info(logger, "job %s done", ("ab-1",))
            assert write_info(logger, "no arguments", ())
        with plain_logging(stock, at) as logger:
            logger.info("job %s done", "ab-1")
            logger.info("no arguments")
    assert quick.getvalue() == stock.getvalue()
    assert quick.getvalue().count("\n") == 8


def _extra_handler(logger: logging.Logger) -> None:
    logging.root.addHandler(logging.StreamHandler(io.StringIO()))


def _handler_of(logger: logging.Logger) -> logging.Handler:
    return logging.root.handlers[0]


def _own_handler(logger: logging.Logger) -> None:
    logger.addHandler(logging.NullHandler())


def _no_propagation(logger: logging.Logger) -> None:
    logger.propagate = False


def _disabled(logger: logging.Logger) -> None:
    logger.disabled = True


def _quiet_handler(logger: logging.Logger) -> None:
    _handler_of(logger).setLevel(logging.WARNING)


def _filtered(where: str) -> Callable[[logging.Logger], None]:
    def add(logger: logging.Logger) -> None:
        target = {
            "logger": logger,
            "parent": logging.getLogger("jobqueue"),
            "root": logging.root,
            "handler": _handler_of(logger),
        }[where]
        target.addFilter(lambda record: True)

    return add


def _formatter(made: logging.Formatter) -> Callable[[logging.Logger], None]:
    def use(logger: logging.Logger) -> None:
        _handler_of(logger).setFormatter(made)

    return use


@pytest.mark.parametrize(
    "change",
    [
        _extra_handler,
        _own_handler,
        _no_propagation,
        _disabled,
        _quiet_handler,
        _filtered("logger"),
        _filtered("parent"),
        _filtered("root"),
        _filtered("handler"),
        _formatter(JsonFormatter()),
        _formatter(logging.Formatter(TEXT_FORMAT)),
    ],
)
def test_write_info_leaves_any_other_set_up_to_logging(
    change: Callable[[logging.Logger], None],
) -> None:
    stream = io.StringIO()
    with plain_logging(stream, 1_700_000_000.5) as logger:
        parent = logging.getLogger("jobqueue")
        saved = (
            list(logger.handlers), list(logger.filters), logger.propagate, logger.disabled,
            list(parent.filters), list(logging.root.filters),
        )  # fmt: skip
        try:
            change(logger)
            assert not write_info(logger, _COMPLETED, ("ab-1", "resize", 0.25))
        finally:
            logger.handlers, logger.filters, logger.propagate, logger.disabled = saved[:4]
            parent.filters, logging.root.filters = saved[4], saved[5]
    assert stream.getvalue() == ""


def test_write_info_leaves_a_record_factory_or_a_mapping_to_logging() -> None:
    stream = io.StringIO()
    with plain_logging(stream, 1_700_000_000.5) as logger:
        assert not write_info(logger, "job %(id)s", ({"id": "ab-1"},))
        factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(lambda *args, **kwargs: factory(*args, **kwargs))
        try:
            assert not write_info(logger, _COMPLETED, ("ab-1", "resize", 0.25))
        finally:
            logging.setLogRecordFactory(factory)
    assert stream.getvalue() == ""


def test_write_info_reports_a_failed_write_as_logging_does() -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    errors: list[logging.LogRecord] = []
    with plain_logging(Broken(), 1_700_000_000.5) as logger:
        handler = logging.root.handlers[0]
        with mock.patch.object(handler, "handleError", errors.append):
            assert write_info(logger, _COMPLETED, ("ab-1", "resize", 0.25))
    assert [record.getMessage() for record in errors] == ["job ab-1 (resize) completed in 0.250s"]
