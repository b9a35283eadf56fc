"""The log formatters: text as the stock formatter writes it; JSON, one object per line."""

from __future__ import annotations

import json
import logging
import re

import pytest

from jobqueue._logformat import TEXT_FORMAT, JsonFormatter, TextFormatter


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
