"""``--log-format json``'s formatter: one parseable object per line, job fields when given."""

from __future__ import annotations

import json
import logging
import re

from jobqueue._logformat import JsonFormatter


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
