"""Tests for the sans-IO wire codec: LineDecoder, decode_*, encode, messages.

Every byte stream is fed to a LineDecoder twice, once whole and once one byte
at a time, and both feeds must produce the same lines and the same errors.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jobqueue._codec import decode_reply, decode_request, encode_reply, encode_request
from jobqueue._coordinator import Coordinator
from jobqueue._errors import ProtocolError
from jobqueue._framing import EOF, NEED_DATA, LineDecoder
from jobqueue._json import RawJSON, decode_object, encode, stored_form
from jobqueue._limits import (
    ENVELOPE_BYTES,
    JOB_STATES,
    MAX_ATTEMPTS,
    MAX_DELAY_SECONDS,
    MAX_DEPTH,
    MAX_LINE_BYTES,
    MAX_LIST_LIMIT,
    MAX_NAME_CHARS,
    MAX_NOTE_BYTES,
    MAX_PRIORITY,
    MAX_QUEUES,
    MAX_STORED_BYTES,
    MAX_WAIT_SECONDS,
)
from jobqueue._replies import (
    ErrorReply,
    JobAssigned,
    JobCancelledNotice,
    JobInfo,
    JobList,
    JobsSubmitted,
    JobSubmitted,
    NoJob,
    Ok,
    Reply,
    Stats,
    Welcome,
)
from jobqueue._requests import (
    CancelJob,
    DeleteJob,
    GetStats,
    GetStatus,
    Heartbeat,
    Hello,
    JobComplete,
    JobFailed,
    ListJobs,
    Progress,
    Request,
    RequestJob,
    RetryJob,
    SubmitJob,
    SubmitJobs,
    WaitJob,
)

# What a feed produced, in order: a line (bytes), or ("error", code). A feed
# always ends with "EOF".
Output = bytes | tuple[str, str]


def drain(decoder: LineDecoder, out: list[Output | str], limit: int) -> None:
    """Pull lines until the decoder wants more data or reports EOF.

    Every line or error uses up at least one byte, so more than ``limit``
    (bytes fed + 1) outputs means the decoder is stuck repeating itself.
    """
    while True:
        assert len(out) <= limit
        try:
            item = decoder.next_line()
        except ProtocolError as exc:
            out.append(("error", exc.code))
            continue
        if item is NEED_DATA:
            return
        if item is EOF:
            out.append("EOF")
            return
        assert isinstance(item, bytes)
        out.append(item)


def feed(chunks: Iterable[bytes], *, max_line: int = MAX_LINE_BYTES) -> list[Output | str]:
    """Feed ``chunks`` then EOF; everything the decoder handed out."""
    decoder = LineDecoder(max_line)
    out: list[Output | str] = []
    fed = 0
    for chunk in chunks:
        decoder.receive_data(chunk)
        fed += len(chunk)
        drain(decoder, out, fed + 1)
    decoder.receive_data(b"")
    drain(decoder, out, fed + 1)
    assert out[-1] == "EOF"
    # EOF is sticky: asking again changes nothing.
    assert decoder.next_line() is EOF
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def feed_both(data: bytes, *, max_line: int = MAX_LINE_BYTES) -> list[Output | str]:
    """Feed ``data`` whole and one byte at a time; both must agree."""
    whole = feed([data] if data else [], max_line=max_line)
    assert feed(bytewise(data), max_line=max_line) == whole
    return whole


def decode_line(line: bytes) -> Request:
    """Decode ``line`` as a request after passing it through a LineDecoder both ways."""
    lines = feed_both(line + b"\n")
    assert lines == [line, "EOF"]
    return decode_request(line)


def request_error(line: bytes) -> ProtocolError:
    lines = feed_both(line + b"\n")
    assert lines == [line, "EOF"]
    with pytest.raises(ProtocolError) as info:
        decode_request(line)
    return info.value


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON types all the way down (True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- LineDecoder ----------------------------------------------------------------


def test_several_messages_in_one_chunk() -> None:
    data = b'{"type":"stats"}\n{"type":"hello"}\n{"type":"no_job"}\n'
    assert feed_both(data) == [
        b'{"type":"stats"}',
        b'{"type":"hello"}',
        b'{"type":"no_job"}',
        "EOF",
    ]


def test_lines_come_out_as_soon_as_complete() -> None:
    decoder = LineDecoder()
    assert decoder.next_line() is NEED_DATA
    decoder.receive_data(b"ab")
    assert decoder.next_line() is NEED_DATA
    assert decoder.buffered == 2
    decoder.receive_data(b"c\nde")
    assert decoder.next_line() == b"abc"
    assert decoder.next_line() is NEED_DATA
    assert decoder.buffered == 2
    decoder.receive_data(b"f\n")
    assert decoder.next_line() == b"def"
    assert decoder.next_line() is NEED_DATA
    assert decoder.buffered == 0
    decoder.receive_data(b"")
    assert decoder.next_line() is EOF
    assert decoder.next_line() is EOF


def test_crlf_and_blank_lines() -> None:
    data = b"\n\r\n  \n\t\r\na\r\nb\n\n\r\nc\r\n \r\n"
    assert feed_both(data) == [b"a", b"b", b"c", "EOF"]


def test_only_one_trailing_cr_is_dropped() -> None:
    assert feed_both(b"a\r\r\n") == [b"a\r", "EOF"]
    # A CR in the middle of a line is data.
    assert feed_both(b"a\rb\n") == [b"a\rb", "EOF"]


def test_empty_stream() -> None:
    assert feed([]) == ["EOF"]
    assert feed_both(b"") == ["EOF"]


def test_whitespace_left_at_eof_is_not_a_message() -> None:
    assert feed_both(b"a\n  \r") == [b"a", "EOF"]


def test_partial_line_at_eof_raises_once() -> None:
    assert feed_both(b'{"type":"stats"}\n{"type":"st') == [
        b'{"type":"stats"}',
        ("error", "incomplete_message"),
        "EOF",
    ]
    decoder = LineDecoder()
    decoder.receive_data(b"abc")
    assert decoder.next_line() is NEED_DATA
    decoder.receive_data(b"")
    with pytest.raises(ProtocolError) as info:
        decoder.next_line()
    assert info.value.code == "incomplete_message"
    assert decoder.next_line() is EOF
    assert decoder.next_line() is EOF
    assert decoder.buffered == 0


def test_line_of_exactly_max_line_is_accepted() -> None:
    assert feed_both(b"abcde\nfghij\n", max_line=5) == [b"abcde", b"fghij", "EOF"]


@pytest.mark.parametrize(
    "data",
    [
        # A complete over-long line arrives.
        b"abcdef\nok\n",
        # Much longer than the limit, then the next line.
        b"x" * 100 + b"\nok\n",
        # The newline ending the over-long line arrives much later.
        b"abcdefghijklmnopqrstuvwxyz" * 10 + b"\r\nok\r\n",
    ],
)
def test_over_long_line_raises_once_and_is_discarded(data: bytes) -> None:
    assert feed_both(data, max_line=5) == [("error", "message_too_large"), b"ok", "EOF"]


def test_over_long_line_without_newline_raises_as_soon_as_seen() -> None:
    decoder = LineDecoder(max_line=5)
    decoder.receive_data(b"abcde")
    assert decoder.next_line() is NEED_DATA
    decoder.receive_data(b"f")
    with pytest.raises(ProtocolError) as info:
        decoder.next_line()
    assert info.value.code == "message_too_large"
    # The excess is not buffered while the rest of the line streams in.
    assert decoder.buffered == 0
    assert decoder.next_line() is NEED_DATA
    decoder.receive_data(b"ghijklmnop")
    assert decoder.next_line() is NEED_DATA
    assert decoder.buffered == 0
    decoder.receive_data(b"qrs\nok\n")
    assert decoder.next_line() == b"ok"
    assert decoder.next_line() is NEED_DATA
    decoder.receive_data(b"")
    assert decoder.next_line() is EOF


def test_over_long_line_cut_off_by_eof_raises_only_once() -> None:
    assert feed_both(b"ok\n" + b"y" * 50, max_line=5) == [
        b"ok",
        ("error", "message_too_large"),
        "EOF",
    ]


def test_two_over_long_lines_raise_twice() -> None:
    assert feed_both(b"abcdefg\nhijklmn\nok\n", max_line=5) == [
        ("error", "message_too_large"),
        ("error", "message_too_large"),
        b"ok",
        "EOF",
    ]


def test_data_after_eof_is_an_error() -> None:
    decoder = LineDecoder()
    decoder.receive_data(b"a\n")
    decoder.receive_data(b"")
    # A second EOF is harmless.
    decoder.receive_data(b"")
    with pytest.raises(RuntimeError):
        decoder.receive_data(b"b\n")
    assert decoder.next_line() == b"a"
    assert decoder.next_line() is EOF


def test_default_max_line() -> None:
    assert LineDecoder().max_line == MAX_LINE_BYTES == 1 << 20
    assert LineDecoder(7).max_line == 7


def test_byte_at_a_time_overflow_is_not_quadratic() -> None:
    decoder = LineDecoder(max_line=1024)
    codes = []
    for _ in range(200_000):
        decoder.receive_data(b"z")
        try:
            assert decoder.next_line() is NEED_DATA
        except ProtocolError as exc:
            codes.append(exc.code)
        assert decoder.buffered <= 1025
    assert codes == ["message_too_large"]
    decoder.receive_data(b"\nok\n")
    assert decoder.next_line() == b"ok"


def test_byte_at_a_time_long_line_is_not_quadratic() -> None:
    # Under the default 1 MiB limit: a 300 KB line fed one byte at a time,
    # looking for a line after every byte.
    decoder = LineDecoder()
    payload = b"q" * 300_000
    for i in range(len(payload)):
        decoder.receive_data(payload[i : i + 1])
        assert decoder.next_line() is NEED_DATA
    decoder.receive_data(b"\n")
    assert decoder.next_line() == payload
    assert decoder.buffered == 0


# -- decode_object / decode_request ------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"submit_job","name":"x","payload":NaN}',
        b'{"type":"submit_job","name":"x","payload":Infinity}',
        b'{"type":"submit_job","name":"x","payload":-Infinity}',
        b'{"type":"submit_job","name":"x","payload":[1,{"a":NaN}]}',
        b'{"type":"request_job","wait":Infinity}',
        b"NaN",
    ],
)
def test_nan_and_infinity_are_rejected(line: bytes) -> None:
    assert request_error(line).code == "bad_json"
    with pytest.raises(ProtocolError) as info:
        decode_object(line)
    assert info.value.code == "bad_json"


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"submit_job","name":"x","payload":1e999}',
        b'{"type":"submit_job","name":"x","payload":{"a":[-1e400]}}',
        b'{"type":"job_complete","job_id":"1","result":1E309}',
        b'{"type":"request_job","wait":1e400}',
        b'{"type":"hello","lease_timeout":1e400}',
    ],
)
def test_float_literal_overflowing_to_infinity_is_bad_json(line: bytes) -> None:
    # Python would read these as inf, which no reply could carry.
    assert request_error(line).code == "bad_json"
    with pytest.raises(ProtocolError) as info:
        decode_reply(line)
    assert info.value.code == "bad_json"


def test_extreme_finite_floats_are_accepted() -> None:
    line = b'{"type":"submit_job","name":"x","payload":[1.7976931348623157e308,-5e-324,1e-400]}'
    request = decode_line(line)
    assert request == SubmitJob("x", [1.7976931348623157e308, -5e-324, 0.0])
    assert decode_line(encode(request.to_wire())[:-1]) == request


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"hello","name":"\xff"}',
        b'{"type":"hello","name":"\xc0\xaf"}',  # overlong encoding of "/"
        b'{"type":"hello","name":"\xed\xa0\x80"}',  # a surrogate encoded as UTF-8
        b'{"type":"hello","name":"\xe2\x82"}',  # truncated sequence
        b"\xfe\xff",
    ],
)
def test_invalid_utf8_is_bad_json(line: bytes) -> None:
    error = request_error(line)
    assert error.code == "bad_json"
    assert "UTF-8" in error.message


@pytest.mark.parametrize(
    "line",
    [
        b"{",
        b'{"type":"stats"',
        b'{"type":"stats"}}',
        b'{"type":"stats"} {"type":"stats"}',
        b"{'type':'stats'}",
        b'{"type":"stats",}',
        b'{"type":"hello","name":"a\tb"}',  # raw control character in a string
        b"\xef\xbb\xbf{}",  # a byte order mark
        b"nul",
    ],
)
def test_malformed_json_is_bad_json(line: bytes) -> None:
    assert request_error(line).code == "bad_json"


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"[]", "an array"),
        (b'[{"type":"stats"}]', "an array"),
        (b'"stats"', "a string"),
        (b"12", "a number"),
        (b"-1.5e3", "a number"),
        (b"null", "null"),
        (b"true", "a boolean"),
    ],
)
def test_non_object_is_bad_request(line: bytes, kind: str) -> None:
    error = request_error(line)
    assert error.code == "bad_request"
    assert error.message == f"a message must be a JSON object, not {kind}"


@pytest.mark.parametrize(
    "line",
    [
        b"{}",
        b'{"job_id":"1"}',
        b'{"type":1}',
        b'{"type":null}',
        b'{"type":["stats"]}',
        b'{"type":true}',
        b'{"Type":"stats"}',
    ],
)
def test_missing_or_non_string_type_is_bad_request(line: bytes) -> None:
    error = request_error(line)
    assert error.code == "bad_request"
    assert '"type"' in error.message
    with pytest.raises(ProtocolError) as info:
        decode_reply(line)
    assert info.value.code == "bad_request"


@pytest.mark.parametrize(
    "kind",
    [
        "",
        "STATS",
        "job_assigned",
        "no_job",
        "error",
        "stats ",
        "jobs_submitted",
        "job_list",
        "job_cancelled",
        "cancel",
        "retry_jobs",
    ],
)
def test_unknown_request_type(kind: str) -> None:
    error = request_error(json.dumps({"type": kind}).encode())
    assert error.code == "unknown_type"
    assert repr(kind) in error.message


@pytest.mark.parametrize("cls", get_args(Request), ids=lambda cls: cls.__name__)
def test_every_request_class_is_decoded_by_its_type(cls: type[Request]) -> None:
    # A class missing from the codec's table would be refused as unknown_type.
    error: ProtocolError | None = None
    try:
        request = decode_request(json.dumps({"type": cls.TYPE}).encode())
    except ProtocolError as exc:
        error = exc
    if error is None:
        assert type(request) is cls
    else:
        assert error.code == "bad_request"  # known, but missing its fields


def test_every_request_class_has_a_coordinator_handler() -> None:
    # A request class with no handler would reach the coordinator and crash it.
    assert sorted(map(str, get_args(Request))) == sorted(map(str, Coordinator._HANDLERS))


@pytest.mark.parametrize(
    "kind",
    [
        "submit_job",
        "request_job",
        "heartbeat",
        "bogus",
        "submit_jobs",
        "progress",
        "cancel_job",
        "list_jobs",
    ],
)
def test_unknown_reply_type(kind: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_reply(json.dumps({"type": kind}).encode())
    assert info.value.code == "unknown_type"


@pytest.mark.parametrize(
    "line",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000,
        b'{"type":"submit_job","name":"x","payload":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"type":"submit_job","name":"x","payload":' + b'{"a":' * 100_000,
        # Closing brackets first must not let deep nesting through later.
        b'{"type":"submit_job","name":"]]]]","payload":' + b"[" * 100 + b"]" * 100 + b"}",
    ],
)
def test_deep_nesting_is_bad_json_not_recursion_error(line: bytes) -> None:
    # Straight into the decoders: each bracket as its own byte through the
    # line decoder is covered elsewhere and would only slow this down.
    for decode in (decode_object, decode_request, decode_reply):
        with pytest.raises(ProtocolError) as info:
            decode(line)
        assert info.value.code == "bad_json"


def nested_submit(depth: int) -> bytes:
    """A submit_job whose whole message is nested ``depth`` levels deep."""
    payload = "[" * (depth - 1) + "]" * (depth - 1)
    return f'{{"type":"submit_job","name":"x","payload":{payload}}}'.encode()


def test_nesting_limit_is_exact() -> None:
    request = decode_line(nested_submit(MAX_DEPTH))
    assert isinstance(request, SubmitJob)
    expected: Any = []
    for _ in range(MAX_DEPTH - 2):
        expected = [expected]
    assert request.payload == expected
    error = request_error(nested_submit(MAX_DEPTH + 1))
    assert error.code == "bad_json"
    assert str(MAX_DEPTH) in error.message


@pytest.mark.parametrize(
    "text",
    [
        "[" * 200,
        "{" * 200,
        '\\"' + "[" * 200,  # an escaped quote does not end the string
        "\\\\" + "[" * 200,
    ],
)
def test_brackets_inside_strings_do_not_count_as_nesting(text: str) -> None:
    line = json.dumps({"type": "submit_job", "name": "x", "payload": text}).encode()
    assert decode_line(line) == SubmitJob("x", json.loads(line)["payload"])


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"submit_job","name":"x","payload":' + b"9" * 5000 + b"}",
        b'{"type":"submit_job","name":"x","payload":-' + b"1" * 100_000 + b"}",
        b'{"type":"job_complete","job_id":"1","attempt":' + b"1" * 5000 + b"}",
    ],
)
def test_huge_integer_literal_is_bad_json(line: bytes) -> None:
    assert request_error(line).code == "bad_json"


REQUESTS: list[Request] = [
    Hello(),
    Hello(name="worker-1"),
    Hello(name=""),
    Hello(name="h" * MAX_NAME_CHARS),
    SubmitJob(name="resize"),
    SubmitJob(name="n" * MAX_NAME_CHARS, payload={"a": [1, 2.5, None, True, False, "s"], "b": {}}),
    SubmitJob(name="é✓😀", payload="\U0001f600 \u2028 \x00"),
    SubmitJob(name="x", payload=[]),
    SubmitJob(name="x", payload=-(2**70)),
    RequestJob(),
    RequestJob(wait=0.5),
    RequestJob(wait=2.5),
    RequestJob(wait=MAX_WAIT_SECONDS),
    JobComplete(job_id="1"),
    JobComplete(job_id="abc-7", attempt=3, result={"ok": [1, None]}),
    JobComplete(job_id="1", attempt=1, result=0.1),
    JobFailed(job_id="1", error_type="ValueError", error_message="boom"),
    JobFailed(job_id="j", error_type="", error_message="", attempt=2),
    Heartbeat(job_id="1"),
    Heartbeat(job_id="1", attempt=7),
    GetStatus(job_id="r9"),
    WaitJob(job_id="1"),
    WaitJob(job_id="1", wait=0.0),
    WaitJob(job_id="1", wait=12.5),
    GetStats(),
    # Submit options.
    SubmitJob(name="x", queue="mail", priority=7, max_attempts=3, delay=2.5, key="order-1"),
    SubmitJob(name="x", priority=-MAX_PRIORITY, max_attempts=1, run_at=1.7e9),
    SubmitJob(
        name="x",
        queue="q" * MAX_NAME_CHARS,
        priority=MAX_PRIORITY,
        max_attempts=MAX_ATTEMPTS,
        delay=MAX_DELAY_SECONDS,
        key="k" * MAX_NAME_CHARS,
    ),
    SubmitJob(name="x", run_at=-5.0),
    SubmitJob(name="x", delay=1e-9),
    SubmitJobs(jobs=(SubmitJob(name="one"),)),
    SubmitJobs(
        jobs=(
            SubmitJob(name="a", payload=[1]),
            SubmitJob(name="b", queue="q", priority=-1, max_attempts=2, delay=1.0, key="k"),
            SubmitJob(name="c", run_at=10.0),
        )
    ),
    RequestJob(queues=("mail",)),
    RequestJob(wait=5.0, queues=("a", "default", "b")),
    RequestJob(queues=tuple(f"q{i}" for i in range(MAX_QUEUES))),
    RequestJob(queues=("q" * MAX_NAME_CHARS, "a")),
    Progress(job_id="1"),
    Progress(job_id="1", attempt=2, progress=0.5, note={"stage": "upload", "n": [1, 2]}),
    Progress(job_id="1", progress=0.0),
    Progress(job_id="1", progress=-3.0, note=""),
    Progress(job_id="1", note="n" * (MAX_NOTE_BYTES - 100)),
    CancelJob("1"),
    RetryJob("r-2"),
    DeleteJob("x" * 300),
    ListJobs(state="failed"),
    ListJobs(state="pending", queue="mail", limit=MAX_LIST_LIMIT),
    ListJobs(state="cancelled", limit=1),
    *(ListJobs(state=state) for state in JOB_STATES),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=repr)
def test_request_round_trip(request_: Request) -> None:
    wire = request_.to_wire()
    assert wire["type"] == request_.TYPE
    assert type(request_).from_wire(wire) == request_
    line = encode(wire)
    decoded = decode_line(line[:-1])
    assert type(decoded) is type(request_)
    assert decoded == request_
    assert same(decoded.to_wire(), wire)


REPLIES: list[Reply] = [
    Welcome(server="jobqueue", version="0.1.0", lease_timeout=30.0),
    JobSubmitted(job_id="1"),
    JobSubmitted(job_id="1", duplicate=True),
    JobsSubmitted(job_ids=("1", "2", "3")),
    JobsSubmitted(job_ids=()),
    JobAssigned(job_id="1", name="n", payload={"k": [1]}, attempt=2, lease_timeout=10.0),
    JobAssigned(job_id="1", name="n", payload=None, attempt=1, lease_timeout=0.5),
    NoJob(),
    Ok(),
    Ok(lease_timeout=30.0),
    JobInfo(job_id="1", name="n", state="pending", attempt=0),
    JobInfo(job_id="1", name="n", state="running", attempt=1, worker="w"),
    JobInfo(job_id="1", name="n", state="completed", attempt=1, worker="w", result=[1, "a"]),
    JobInfo(
        job_id="1",
        name="n",
        state="failed",
        attempt=3,
        worker="w",
        error={"type": "KeyError", "message": "'x'"},
    ),
    JobInfo(job_id="1", name="n", state="scheduled", attempt=1, queue="mail", max_attempts=3),
    JobInfo(
        job_id="1",
        name="n",
        state="running",
        attempt=2,
        worker="w",
        error={"type": "WorkerLost", "message": "gone"},
        queue="q",
        priority=-MAX_PRIORITY,
        max_attempts=MAX_ATTEMPTS,
        progress=0.75,
        note={"stage": "encode"},
    ),
    JobInfo(job_id="1", name="n", state="cancelled", attempt=0, priority=MAX_PRIORITY),
    JobInfo(job_id="1", name="n", state="running", attempt=1, progress=0.0, note=[]),
    JobList(jobs=()),
    JobList(
        jobs=(
            JobInfo(job_id="1", name="n", state="failed", attempt=5, max_attempts=5),
            JobInfo(job_id="2", name="m", state="failed", attempt=1, queue="q", priority=3),
        ),
        truncated=True,
    ),
    JobCancelledNotice(job_id="1", attempt=2),
    Stats(
        jobs={"pending": 1, "running": 0, "completed": 2, "failed": 0},
        totals={"submitted": 3, "completed": 2, "failed": 0, "reassigned": 1, "expired": 0},
        connections=2,
        waiting_workers=1,
        workers=[{"name": "w", "jobs": ["1", "2"]}],
    ),
    Stats(
        jobs=dict.fromkeys(JOB_STATES, 1),
        totals={"submitted": 6, "cancelled": 1, "retried": 4},
        connections=1,
        waiting_workers=0,
        workers=[{"name": "w", "jobs": [], "waiting": True, "queues": ["a", "b"]}],
        queues={"a": {"pending": 1, "scheduled": 0, "running": 2}},
    ),
    ErrorReply(code="bad_json", message="nope"),
    ErrorReply(code="unknown_job", message=""),
]


@pytest.mark.parametrize("reply", REPLIES, ids=repr)
def test_reply_round_trip(reply: Reply) -> None:
    wire = reply.to_wire()
    assert type(reply).from_wire(wire) == reply
    decoded = decode_reply(encode(wire)[:-1])
    assert type(decoded) is type(reply)
    assert decoded == reply


def test_request_wait_integer_becomes_float() -> None:
    request = decode_line(b'{"type":"request_job","wait":5}')
    assert request == RequestJob(wait=5.0)
    assert isinstance(request, RequestJob)
    assert type(request.wait) is float
    assert decode_line(b'{"type":"request_job","wait":0}') == RequestJob()
    assert decode_line(b'{"type":"request_job","wait":null}') == RequestJob()
    assert decode_line(b'{"type":"wait_job","job_id":"1","wait":null}') == WaitJob("1")


def test_optional_fields_default() -> None:
    assert decode_line(b'{"type":"submit_job","name":"x"}') == SubmitJob("x", None)
    assert decode_line(b'{"type":"job_complete","job_id":"1","attempt":null}') == JobComplete("1")
    assert decode_line(b'{"type":"job_failed","job_id":"1","error":{"type":"E"}}') == JobFailed(
        "1", "E", ""
    )
    # Unknown extra fields are ignored.
    assert decode_line(b'{"type":"heartbeat","job_id":"1","extra":[1]}') == Heartbeat("1")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # job_id
        (b'{"type":"job_status","job_id":5}', '"job_id"'),
        (b'{"type":"job_status"}', '"job_id"'),
        (b'{"type":"job_status","job_id":""}', '"job_id"'),
        (b'{"type":"heartbeat","job_id":null}', '"job_id"'),
        (b'{"type":"wait_job","job_id":["1"]}', '"job_id"'),
        (b'{"type":"job_complete","job_id":1.0}', '"job_id"'),
        (b'{"type":"job_failed","job_id":7,"error":{"type":"E","message":"m"}}', '"job_id"'),
        # wait
        (b'{"type":"request_job","wait":-1}', '"wait"'),
        (b'{"type":"request_job","wait":-0.001}', '"wait"'),
        (b'{"type":"request_job","wait":true}', '"wait"'),
        (b'{"type":"request_job","wait":false}', '"wait"'),
        (b'{"type":"request_job","wait":"5"}', '"wait"'),
        (b'{"type":"request_job","wait":3600.001}', '"wait"'),
        (b'{"type":"request_job","wait":' + b"9" * 400 + b"}", '"wait"'),
        (b'{"type":"wait_job","job_id":"1","wait":-1}', '"wait"'),
        (b'{"type":"wait_job","job_id":"1","wait":[]}', '"wait"'),
        (b'{"type":"wait_job","job_id":"1","wait":7200}', '"wait"'),
        # attempt
        (b'{"type":"job_complete","job_id":"1","attempt":0}', '"attempt"'),
        (b'{"type":"job_complete","job_id":"1","attempt":-2}', '"attempt"'),
        (b'{"type":"job_complete","job_id":"1","attempt":true}', '"attempt"'),
        (b'{"type":"heartbeat","job_id":"1","attempt":1.0}', '"attempt"'),
        (b'{"type":"heartbeat","job_id":"1","attempt":"1"}', '"attempt"'),
        (b'{"type":"job_failed","job_id":"1","error":{"type":"E"},"attempt":0}', '"attempt"'),
        # name
        (
            b'{"type":"submit_job","name":"' + b"n" * (MAX_NAME_CHARS + 1) + b'"}',
            f'"name" is longer than {MAX_NAME_CHARS} characters',
        ),
        (b'{"type":"submit_job"}', '"name"'),
        (b'{"type":"submit_job","name":""}', '"name"'),
        (b'{"type":"submit_job","name":5}', '"name"'),
        (b'{"type":"submit_job","name":null,"payload":1}', '"name"'),
        (b'{"type":"hello","name":5}', '"name"'),
        (b'{"type":"hello","name":["w"]}', '"name"'),
        (b'{"type":"hello","name":"' + b"n" * (MAX_NAME_CHARS + 1) + b'"}', "name is longer"),
        # error
        (b'{"type":"job_failed","job_id":"1"}', '"error"'),
        (b'{"type":"job_failed","job_id":"1","error":"boom"}', '"error"'),
        (b'{"type":"job_failed","job_id":"1","error":["E","m"]}', '"error"'),
        (b'{"type":"job_failed","job_id":"1","error":{"message":"m"}}', '"error"'),
        (b'{"type":"job_failed","job_id":"1","error":{"type":1,"message":"m"}}', '"error"'),
        (b'{"type":"job_failed","job_id":"1","error":{"type":"E","message":5}}', '"error"'),
        (b'{"type":"job_failed","job_id":"1","error":{"type":"E","message":null}}', '"error"'),
    ],
)
def test_wrong_field_is_bad_request_naming_the_field(line: bytes, expected: str) -> None:
    error = request_error(line)
    assert error.code == "bad_request"
    assert expected in error.message


def test_name_length_limit_counts_characters() -> None:
    name = "é" * MAX_NAME_CHARS  # 400 bytes, 200 characters
    assert decode_line(json.dumps({"type": "submit_job", "name": name}).encode()) == SubmitJob(name)


# -- the job lifecycle's messages ----------------------------------------------------


def wire_line(**fields: Any) -> bytes:
    """A compact JSON line (no newline) from keyword fields; ``type`` goes first."""
    return json.dumps(fields, separators=(",", ":")).encode()


def test_submit_options_default_and_null_means_default() -> None:
    plain = SubmitJob("x")
    assert (plain.queue, plain.priority, plain.max_attempts, plain.delay) == (
        "default",
        0,
        None,
        0.0,
    )
    assert (plain.run_at, plain.key) == (None, None)
    assert plain.to_wire() == {"type": "submit_job", "name": "x", "payload": None}
    nulls = dict.fromkeys(("queue", "priority", "max_attempts", "delay", "run_at", "key"))
    assert decode_line(wire_line(type="submit_job", name="x", **nulls)) == plain
    assert decode_line(wire_line(type="submit_job", name="x", delay=0, priority=0)) == plain
    assert decode_line(wire_line(type="submit_job", name="x", queue="default")) == plain


def test_submit_numbers_become_floats() -> None:
    request = decode_line(wire_line(type="submit_job", name="x", delay=5, priority=2))
    assert request == SubmitJob("x", delay=5.0, priority=2)
    assert isinstance(request, SubmitJob)
    assert type(request.delay) is float
    request = decode_line(wire_line(type="submit_job", name="x", run_at=1700000000))
    assert isinstance(request, SubmitJob)
    assert request.run_at == 1.7e9
    assert type(request.run_at) is float


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # priority
        ({"priority": MAX_PRIORITY + 1}, f'"priority" must be from {-MAX_PRIORITY} to'),
        ({"priority": -MAX_PRIORITY - 1}, '"priority" must be from'),
        ({"priority": 1.5}, '"priority" must be an integer'),
        ({"priority": "1"}, '"priority" must be an integer'),
        ({"priority": True}, '"priority" must be an integer'),
        # max_attempts
        ({"max_attempts": 0}, f'"max_attempts" must be from 1 to {MAX_ATTEMPTS}'),
        ({"max_attempts": -1}, '"max_attempts" must be from 1'),
        ({"max_attempts": MAX_ATTEMPTS + 1}, '"max_attempts" must be from 1'),
        ({"max_attempts": 2.0}, '"max_attempts" must be an integer'),
        ({"max_attempts": False}, '"max_attempts" must be an integer'),
        # delay
        ({"delay": -0.5}, '"delay" must be 0 to'),
        ({"delay": -1}, '"delay" must be 0 to'),
        ({"delay": MAX_DELAY_SECONDS + 1}, '"delay" must be 0 to'),
        ({"delay": "5"}, '"delay" must be a number'),
        ({"delay": True}, '"delay" must be a number'),
        ({"delay": [5]}, '"delay" must be a number'),
        # run_at
        ({"run_at": "tomorrow"}, '"run_at" must be a number'),
        ({"run_at": True}, '"run_at" must be a number'),
        ({"run_at": {}}, '"run_at" must be a number'),
        # both
        ({"delay": 5, "run_at": 1.7e9}, 'takes "delay" or "run_at", not both'),
        ({"delay": 0, "run_at": 1.7e9}, 'takes "delay" or "run_at", not both'),
        # queue
        ({"queue": ""}, '"queue" must not be empty'),
        ({"queue": 5}, '"queue" must be a non-empty string'),
        ({"queue": ["a"]}, '"queue" must be a non-empty string'),
        ({"queue": "q" * (MAX_NAME_CHARS + 1)}, f'"queue" is longer than {MAX_NAME_CHARS}'),
        # key
        ({"key": ""}, '"key" must not be empty'),
        ({"key": 17}, '"key" must be a non-empty string'),
        ({"key": "k" * (MAX_NAME_CHARS + 1)}, f'"key" is longer than {MAX_NAME_CHARS}'),
    ],
)
def test_bad_submit_option_is_bad_request_naming_it(fields: dict[str, Any], expected: str) -> None:
    error = request_error(wire_line(type="submit_job", name="x", **fields))
    assert error.code == "bad_request"
    assert error.message.startswith('"submit_job" ')
    assert expected in error.message
    # The same job inside a batch: the same complaint, naming the job.
    line = wire_line(type="submit_jobs", jobs=[{"name": "ok"}, {"name": "x", **fields}])
    error = request_error(line)
    assert error.code == "bad_request"
    assert error.message.startswith('job 1: "submit_jobs" ')
    assert expected in error.message


def test_submit_limits_are_inclusive() -> None:
    line = wire_line(
        type="submit_job",
        name="x",
        priority=-MAX_PRIORITY,
        max_attempts=MAX_ATTEMPTS,
        delay=MAX_DELAY_SECONDS,
        queue="q" * MAX_NAME_CHARS,
        key="é" * MAX_NAME_CHARS,
    )
    request = decode_line(line)
    assert request == SubmitJob(
        "x",
        priority=-MAX_PRIORITY,
        max_attempts=MAX_ATTEMPTS,
        delay=MAX_DELAY_SECONDS,
        queue="q" * MAX_NAME_CHARS,
        key="é" * MAX_NAME_CHARS,
    )
    assert decode_line(wire_line(type="submit_job", name="x", max_attempts=1)) == SubmitJob(
        "x", max_attempts=1
    )


def test_submit_jobs_decodes_every_job_in_order() -> None:
    line = wire_line(
        type="submit_jobs",
        jobs=[
            {"name": "a", "payload": {"i": 0}},
            {"name": "b", "queue": "q", "priority": 3, "key": "k", "type": "ignored"},
            {"name": "c", "delay": 2, "max_attempts": 1},
        ],
    )
    assert decode_line(line) == SubmitJobs(
        (
            SubmitJob("a", {"i": 0}),
            SubmitJob("b", queue="q", priority=3, key="k"),
            SubmitJob("c", delay=2.0, max_attempts=1),
        )
    )
    # The jobs on the wire carry no "type" of their own.
    wire = SubmitJobs((SubmitJob("a", 1, queue="q"),)).to_wire()
    assert wire == {"type": "submit_jobs", "jobs": [{"name": "a", "payload": 1, "queue": "q"}]}


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        (None, '"submit_jobs" needs field "jobs" (a non-empty array of job objects)'),
        ([], '"jobs" must be a non-empty array of job objects'),
        ({"name": "x"}, '"jobs" must be a non-empty array of job objects, not an object'),
        ("x", '"jobs" must be a non-empty array of job objects, not a string'),
        ([5], '"submit_jobs" job 0 is not an object'),
        ([{"name": "a"}, None], '"submit_jobs" job 1 is not an object'),
        ([{"name": "a"}, {"name": "b"}, [1]], '"submit_jobs" job 2 is not an object'),
        ([{}], 'job 0: "submit_jobs" needs field "name"'),
        ([{"name": "a"}, {"name": "b"}, {"name": ""}], 'job 2: "submit_jobs" field "name"'),
        (
            [{"name": "a"}, {"name": "b", "delay": 1, "run_at": 2}],
            'job 1: "submit_jobs" takes "delay" or "run_at", not both',
        ),
    ],
)
def test_submit_jobs_any_bad_job_rejects_the_batch(jobs: Any, expected: str) -> None:
    fields = {} if jobs is None else {"jobs": jobs}
    error = request_error(wire_line(type="submit_jobs", **fields))
    assert error.code == "bad_request"
    assert expected in error.message


def test_submit_jobs_too_large_payload_names_the_job() -> None:
    big = "x" * (MAX_LINE_BYTES - ENVELOPE_BYTES)
    line = wire_line(type="submit_jobs", jobs=[{"name": "a"}, {"name": "b", "payload": big}])
    with pytest.raises(ProtocolError) as info:
        decode_request(line)
    assert info.value.code == "message_too_large"
    assert info.value.message.startswith('job 1: "submit_jobs" field "payload" encodes to')


@pytest.mark.parametrize(
    "queues",
    [
        [],
        "default",
        {"a": 1},
        [""],
        ["a", ""],
        [1],
        ["a", None],
        [["a"]],
        ["q" * (MAX_NAME_CHARS + 1)],
        [f"q{i}" for i in range(MAX_QUEUES + 1)],
    ],
)
def test_bad_request_job_queues(queues: Any) -> None:
    error = request_error(wire_line(type="request_job", queues=queues))
    assert error.code == "bad_request"
    assert '"request_job" field "queues"' in error.message
    assert f"1 to {MAX_QUEUES} queue names" in error.message


def test_request_job_queues_default() -> None:
    assert RequestJob().queues == ("default",)
    assert decode_line(b'{"type":"request_job","queues":null}') == RequestJob()
    assert decode_line(b'{"type":"request_job","queues":["default"]}') == RequestJob()
    assert RequestJob().to_wire() == {"type": "request_job"}
    request = decode_line(b'{"type":"request_job","wait":1,"queues":["b","a","b"]}')
    assert request == RequestJob(wait=1.0, queues=("b", "a", "b"))
    assert isinstance(request, RequestJob)


def test_progress_fields() -> None:
    assert decode_line(b'{"type":"progress","job_id":"1"}') == Progress("1")
    request = decode_line(b'{"type":"progress","job_id":"1","attempt":3,"progress":7,"note":"x"}')
    assert request == Progress("1", 3, 7.0, "x")
    assert isinstance(request, Progress)
    assert type(request.progress) is float
    nulls = b'{"type":"progress","job_id":"1","attempt":null,"progress":null,"note":null}'
    assert decode_line(nulls) == Progress("1")
    assert Progress("1").to_wire() == {"type": "progress", "job_id": "1"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"type":"progress"}', '"job_id"'),
        (b'{"type":"progress","job_id":""}', '"job_id"'),
        (b'{"type":"progress","job_id":1,"progress":0.5}', '"job_id"'),
        (b'{"type":"progress","job_id":"1","progress":"50%"}', '"progress" must be a number'),
        (b'{"type":"progress","job_id":"1","progress":true}', '"progress" must be a number'),
        (b'{"type":"progress","job_id":"1","progress":[0.5]}', '"progress" must be a number'),
        (b'{"type":"progress","job_id":"1","attempt":0}', '"attempt"'),
        (b'{"type":"progress","job_id":"1","attempt":"2"}', '"attempt"'),
        (b'{"type":"cancel_job"}', '"cancel_job" needs field "job_id"'),
        (b'{"type":"retry_job","job_id":""}', '"retry_job" field "job_id" must not be empty'),
        (b'{"type":"delete_job","job_id":7}', '"delete_job" field "job_id" must be'),
        (b'{"type":"cancel_job","job_id":null}', '"cancel_job" field "job_id" must be'),
        (b'{"type":"list_jobs"}', '"list_jobs" needs field "state"'),
        (b'{"type":"list_jobs","state":""}', '"state"'),
        (b'{"type":"list_jobs","state":3}', '"state"'),
        (b'{"type":"list_jobs","state":"done"}', '"list_jobs" state must be one of'),
        (b'{"type":"list_jobs","state":"PENDING"}', '"list_jobs" state must be one of'),
        (b'{"type":"list_jobs","state":"failed","limit":0}', '"limit" must be from 1 to 1000'),
        (b'{"type":"list_jobs","state":"failed","limit":-5}', '"limit" must be from 1'),
        (b'{"type":"list_jobs","state":"failed","limit":1001}', '"limit" must be from 1'),
        (b'{"type":"list_jobs","state":"failed","limit":"10"}', '"limit" must be an integer'),
        (b'{"type":"list_jobs","state":"failed","limit":1.5}', '"limit" must be an integer'),
        (b'{"type":"list_jobs","state":"failed","limit":true}', '"limit" must be an integer'),
        (b'{"type":"list_jobs","state":"failed","queue":""}', '"queue" must not be empty'),
        (b'{"type":"list_jobs","state":"failed","queue":4}', '"queue" must be a non-empty'),
    ],
)
def test_wrong_lifecycle_field_is_bad_request(line: bytes, expected: str) -> None:
    error = request_error(line)
    assert error.code == "bad_request"
    assert expected in error.message


def test_list_jobs_names_every_state_in_its_error() -> None:
    error = request_error(b'{"type":"list_jobs","state":"dead"}')
    for state in JOB_STATES:
        assert state in error.message


def test_progress_note_size_limit() -> None:
    def progress_with(note: Any) -> bytes:
        return wire_line(type="progress", job_id="1", note=note)

    # The note's own encoded size is measured: a string costs its two quotes.
    room = MAX_NOTE_BYTES - 2
    fits = "é" * (room // 2)
    assert decode_line(progress_with(fits)) == Progress("1", note=fits)
    for too_big in ("n" * MAX_NOTE_BYTES, {"k": ["v" * 100] * 50}, "é" * (room // 2 + 1)):
        with pytest.raises(ProtocolError) as info:
            decode_request(progress_with(too_big))
        assert info.value.code == "message_too_large"
        assert f"longer than {MAX_NOTE_BYTES} bytes" in info.value.message


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("cancel_job", CancelJob), ("retry_job", RetryJob), ("delete_job", DeleteJob)],
)
def test_job_actions_decode_each_to_its_own_class(
    kind: str, cls: type[CancelJob | RetryJob | DeleteJob]
) -> None:
    request = decode_line(wire_line(type=kind, job_id="j-1"))
    assert type(request) is cls
    assert request == cls("j-1")
    assert kind == request.TYPE
    assert request.to_wire() == {"type": kind, "job_id": "j-1"}
    # Same job, different action: not the same request.
    others = {CancelJob("j-1"), RetryJob("j-1"), DeleteJob("j-1")} - {request}
    assert len(others) == 2


def test_list_jobs_defaults() -> None:
    request = decode_line(b'{"type":"list_jobs","state":"failed"}')
    assert request == ListJobs("failed", None, 100)
    assert decode_line(b'{"type":"list_jobs","state":"failed","queue":null,"limit":null}') == (
        request
    )
    assert ListJobs("failed").to_wire() == {"type": "list_jobs", "state": "failed", "limit": 100}


def test_job_submitted_duplicate_flag() -> None:
    assert JobSubmitted("1").to_wire() == {"type": "job_submitted", "job_id": "1"}
    assert JobSubmitted("1", True).to_wire() == {
        "type": "job_submitted",
        "job_id": "1",
        "duplicate": True,
    }
    for flag, expected in ((True, True), (False, False), (None, False), ("yes", False)):
        line = wire_line(type="job_submitted", job_id="1", duplicate=flag)
        assert decode_reply(line) == JobSubmitted("1", expected)


def test_job_info_new_fields_default_for_older_servers() -> None:
    reply = decode_reply(
        b'{"type":"job_status","job_id":"1","name":"n","state":"running","attempt":1}'
    )
    assert reply == JobInfo("1", "n", "running", 1)
    assert isinstance(reply, JobInfo)
    assert (reply.queue, reply.priority, reply.max_attempts) == ("default", 0, None)
    assert (reply.progress, reply.note) == (None, None)
    wire = JobInfo("1", "n", "pending", 0).to_wire()
    assert wire == {
        "type": "job_status",
        "job_id": "1",
        "name": "n",
        "state": "pending",
        "attempt": 0,
        "queue": "default",
        "priority": 0,
    }


@pytest.mark.parametrize("state", JOB_STATES)
def test_job_info_finished_states(state: str) -> None:
    info = JobInfo("1", "n", state, 1)
    assert info.finished == (state in ("completed", "failed", "cancelled"))


def test_stats_queues_default_and_round_trip() -> None:
    line = (
        b'{"type":"stats","jobs":{},"totals":{},"connections":0,"waiting_workers":0,"workers":[]}'
    )
    reply = decode_reply(line)
    assert isinstance(reply, Stats)
    assert reply.queues == {}
    assert reply.to_wire()["queues"] == {}


def test_job_cancelled_notice_is_a_server_push() -> None:
    reply = decode_reply(b'{"type":"job_cancelled","job_id":"7","attempt":2}')
    assert reply == JobCancelledNotice("7", 2)
    # Not something a client may send.
    assert request_error(b'{"type":"job_cancelled","job_id":"7","attempt":2}').code == (
        "unknown_type"
    )


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"jobs_submitted"}',
        b'{"type":"jobs_submitted","job_ids":"1"}',
        b'{"type":"jobs_submitted","job_ids":[1,2]}',
        b'{"type":"job_list"}',
        b'{"type":"job_list","jobs":{}}',
        b'{"type":"job_list","jobs":[1]}',
        b'{"type":"job_list","jobs":[{"job_id":"1","state":"pending","attempt":0}]}',
        b'{"type":"job_cancelled","job_id":"1"}',
        b'{"type":"job_cancelled","attempt":1}',
        b'{"type":"job_cancelled","job_id":"1","attempt":"1"}',
        b'{"type":"job_status","job_id":"1","name":"n","state":"failed","attempt":1,"queue":5}',
        b'{"type":"job_status","job_id":"1","name":"n","state":"failed","attempt":1,"priority":1e9}',
        b'{"type":"job_status","job_id":"1","name":"n","state":"failed","attempt":1,'
        b'"max_attempts":0}',
        b'{"type":"job_status","job_id":"1","name":"n","state":"running","attempt":1,'
        b'"progress":"half"}',
        b'{"type":"stats","jobs":{},"totals":{},"connections":1,"waiting_workers":0,'
        b'"workers":[],"queues":[]}',
    ],
)
def test_malformed_lifecycle_reply_is_bad_request(line: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_reply(line)
    assert info.value.code == "bad_request"


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"hello","server":"jobqueue","version":"1","lease_timeout":"30"}',
        b'{"type":"hello","server":"jobqueue","version":"1","lease_timeout":true}',
        b'{"type":"job_assigned","job_id":"1","name":"n","attempt":1.5,"lease_timeout":1}',
        b'{"type":"job_assigned","job_id":"1","name":"n","attempt":1}',
        b'{"type":"ok","lease_timeout":null}',
        b'{"type":"job_status","job_id":"1","name":"n","state":"pending"}',
        b'{"type":"stats","jobs":{},"totals":{},"connections":1,"waiting_workers":0}',
        b'{"type":"error","message":"m"}',
    ],
)
def test_malformed_reply_is_bad_request(line: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_reply(line)
    assert info.value.code == "bad_request"


# -- encode ------------------------------------------------------------------------


def test_encode_exact_output() -> None:
    obj = {"type": "ok", "a": [1, 2.5, None, True], "b": {"c": 'é\n😀"\\'}}
    assert encode(obj) == '{"type":"ok","a":[1,2.5,null,true],"b":{"c":"é\\n😀\\"\\\\"}}\n'.encode()


def test_encode_writes_utf8_not_escapes() -> None:
    # A reply carrying a payload is no longer than the request that brought
    # it in: escaping non-ASCII would make it up to six times longer.
    payload = "é" * 1000 + "😀" * 1000
    line = encode(SubmitJob("x", payload).to_wire())
    assert line == b'{"type":"submit_job","name":"x","payload":"' + payload.encode() + b'"}\n'
    assert decode_line(line[:-1]) == SubmitJob("x", payload)


def test_lone_surrogate_escapes_only_itself() -> None:
    # One lone surrogate must not switch the whole line to ASCII escapes
    # (every 2-byte "é" would become the 6-byte "\\u00e9").
    line = b'{"type":"submit_job","name":"x","payload":["\\ud800","' + "é".encode() * 1000 + b'"]}'
    request = decode_line(line)
    reencoded = encode(request.to_wire())
    assert len(reencoded) == len(line) + 1
    assert decode_line(reencoded[:-1]) == request


def test_stored_value_is_limited_by_its_reencoded_size() -> None:
    # Python writes the float 1e15 as 1000000000000000.0 (4 bytes become 18),
    # so a payload under the line limit can re-encode to several times it.
    line = b'{"type":"submit_job","name":"x","payload":[' + b",".join([b"1e15"] * 200_000) + b"]}"
    assert len(line) <= MAX_LINE_BYTES
    with pytest.raises(ProtocolError) as info:
        decode_request(line)
    assert info.value.code == "message_too_large"
    assert "payload" in info.value.message


def stored_line(field: str, value: Any) -> bytes:
    """A request line carrying ``value`` as its payload or result (UTF-8, not escaped)."""
    if field == "payload":
        fields = {"type": "submit_job", "name": "n", "payload": value}
    else:
        fields = {"type": "job_complete", "job_id": "j", "result": value}
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def own_size(value: Any) -> int:
    """``value``'s compact encoding, by the standard library: the oracle for the limit."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def test_the_stored_value_limit_is_the_documented_one() -> None:
    # docs/protocol.md (submit_job, and section 6): 1,032,192 bytes, 1 MiB - 16 KiB.
    assert MAX_STORED_BYTES == 1_032_192 == MAX_LINE_BYTES - ENVELOPE_BYTES


def numbers_that_grow(size: int) -> list[Any]:
    """Floats sent as ``1e15`` (written back as ``1000000000000000.0``), padded to ``size``."""
    numbers: list[Any] = [1e15] * ((size - 32) // 19)
    return [*numbers, "x" * (size - own_size([*numbers, ""]))]


# Values whose own encoding is exactly the limit: ASCII, two-byte UTF-8, and
# numbers that come back longer than they were sent.
AT_LIMIT = [
    pytest.param("x" * (MAX_STORED_BYTES - 2), id="ascii"),
    pytest.param("é" * ((MAX_STORED_BYTES - 2) // 2), id="two-byte-utf8"),
    pytest.param(numbers_that_grow(MAX_STORED_BYTES), id="numbers-that-grow"),
]


@pytest.mark.parametrize("field", ["payload", "result"])
@pytest.mark.parametrize("value", AT_LIMIT)
def test_a_value_of_exactly_the_stored_limit_is_accepted(field: str, value: Any) -> None:
    assert own_size(value) == MAX_STORED_BYTES
    request = decode_line(stored_line(field, value))
    assert isinstance(request, (SubmitJob, JobComplete))
    if isinstance(request, SubmitJob):
        assert (request.payload, len(request.stored_payload)) == (value, MAX_STORED_BYTES)
    else:
        assert (request.result, len(request.stored_result)) == (value, MAX_STORED_BYTES)


@pytest.mark.parametrize("field", ["payload", "result"])
@pytest.mark.parametrize("value", AT_LIMIT)
def test_one_byte_over_the_stored_limit_is_refused_with_the_values_own_size(
    field: str, value: Any
) -> None:
    over = value + "x" if isinstance(value, str) else [*value[:-1], value[-1] + "x"]
    assert own_size(over) == MAX_STORED_BYTES + 1
    error = request_error(stored_line(field, over))
    assert error.code == "message_too_large"
    assert error.message.endswith(
        f'field "{field}" encodes to {MAX_STORED_BYTES + 1} bytes; the limit is {MAX_STORED_BYTES}'
    )


@pytest.mark.parametrize("field", ["payload", "result"])
def test_largest_accepted_value_fits_in_the_clients_reply_limit(field: str) -> None:
    # Fill the value up to the stored-value limit, then build the largest
    # reply that can carry it: it must fit what jobqueue._link reads with.
    value = "é" * ((MAX_STORED_BYTES - 2) // 2)
    assert own_size(value) == MAX_STORED_BYTES
    if field == "payload":
        request = decode_request(encode(SubmitJob("x", value).to_wire())[:-1])
        assert isinstance(request, SubmitJob)
        name = "\ud800" * MAX_NAME_CHARS  # escapes to 6 bytes a character
        reply = encode(JobAssigned("1" * 64, name, request.payload, 99, 30.0).to_wire())
    else:
        request = decode_request(encode(JobComplete("j", 1, value).to_wire())[:-1])
        assert isinstance(request, JobComplete)
        info = JobInfo(
            "1" * 64,
            "\ud800" * MAX_NAME_CHARS,
            "completed",
            99,
            worker="\ud800" * MAX_NAME_CHARS,
            result=request.result,
        )
        reply = encode(info.to_wire())
    client = LineDecoder(MAX_LINE_BYTES + 65536)  # what jobqueue._link reads replies with
    client.receive_data(reply)
    assert client.next_line() == reply[:-1]


def test_encode_is_one_line_without_spaces() -> None:
    obj = {"type": "x", "s": "tab\there\r\nnewline\u2028é✓\x00", "k": {"n": [1, {"m": -0.5}]}}
    line = encode(obj)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b"\r" not in line
    assert b"\t" not in line
    assert b"\x00" not in line
    assert b" " not in line
    assert json.loads(line.decode("utf-8")) == obj
    assert decode_object(line[:-1]) == obj


def test_encode_ascii_input_gives_ascii_output() -> None:
    line = encode({"type": "x", "s": "plain", "n": [1, 2]})
    assert line == b'{"type":"x","s":"plain","n":[1,2]}\n'


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_encode_refuses_nan_and_infinity(bad: float) -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        encode({"type": "x", "v": [bad]})


def test_lone_surrogate_round_trips() -> None:
    line = b'{"type":"submit_job","name":"\\udc00x","payload":{"\\ud800":"\\ud800"}}'
    request = decode_line(line)
    assert request == SubmitJob(name="\udc00x", payload={"\ud800": "\ud800"})
    encoded = encode(request.to_wire())
    assert encoded == (b'{"type":"submit_job","name":"\\udc00x","payload":{"\\ud800":"\\ud800"}}\n')
    assert decode_line(encoded[:-1]) == request


def test_lone_surrogate_next_to_other_text_escapes_only_itself() -> None:
    # A lone surrogate has no UTF-8 form: it alone is written as an escape.
    request = decode_line(b'{"type":"submit_job","name":"x","payload":["\\ud800","\xc3\xa9"]}')
    assert request == SubmitJob("x", ["\ud800", "é"])
    encoded = encode(request.to_wire())
    assert encoded == b'{"type":"submit_job","name":"x","payload":["\\ud800","\xc3\xa9"]}\n'
    assert decode_line(encoded[:-1]) == request


def test_error_reply_from_exception() -> None:
    exc = ProtocolError("not_leased", "too late")
    assert exc.code == "not_leased"
    assert exc.message == "too late"
    assert str(exc) == "not_leased: too late"
    assert ErrorReply.from_exception(exc) == ErrorReply("not_leased", "too late")


# -- fuzzing ---------------------------------------------------------------------


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` split at random points (no empty chunk: that would mean EOF)."""
    if len(data) < 2:
        return [data] if data else []
    cuts = sorted(draw(st.sets(st.integers(1, len(data) - 1), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if a < b]


TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\\",
    b"\n",
    b"\r",
    b" ",
    b"\xff",
    b"\xe2\x82",
    b'"type"',
    b'"name"',
    b'"job_id"',
    b'"wait"',
    b'"attempt"',
    b'"error"',
    b'"payload"',
    b'"message"',
    b'"result"',
    b'"submit_job"',
    b'"request_job"',
    b'"job_complete"',
    b'"job_failed"',
    b'"heartbeat"',
    b'"job_status"',
    b'"wait_job"',
    b'"stats"',
    b'"hello"',
    b'"ok"',
    b'"job_assigned"',
    b'"no_job"',
    b'"error"',
    b"0",
    b"1",
    b"-1",
    b"3601",
    b"1.5",
    b"1e999",
    b"NaN",
    b"Infinity",
    b"true",
    b"false",
    b"null",
    b'"x"',
    b'""',
    b'"\\ud800"',
    b"99999999999999999999",
    # The job lifecycle's messages and fields.
    b'"submit_jobs"',
    b'"progress"',
    b'"cancel_job"',
    b'"retry_job"',
    b'"delete_job"',
    b'"list_jobs"',
    b'"jobs_submitted"',
    b'"job_list"',
    b'"job_cancelled"',
    b'"queue"',
    b'"queues"',
    b'"priority"',
    b'"max_attempts"',
    b'"delay"',
    b'"run_at"',
    b'"key"',
    b'"jobs"',
    b'"job_ids"',
    b'"note"',
    b'"state"',
    b'"limit"',
    b'"duplicate"',
    b'"truncated"',
    b'"pending"',
    b'"failed"',
    b"1000001",
    b"1001",
]

fuzz_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), raw=fuzz_bytes, max_line=st.sampled_from([8, 64, MAX_LINE_BYTES]))
def test_fuzz_only_protocol_errors(data: st.DataObject, raw: bytes, max_line: int) -> None:
    out = feed(data.draw(chunked(raw)), max_line=max_line)
    # However the bytes are cut up, the same lines and errors come out.
    assert out == feed([raw] if raw else [], max_line=max_line)
    assert out == feed(bytewise(raw), max_line=max_line)
    for item in out:
        if isinstance(item, tuple):
            assert item[1] in ("message_too_large", "incomplete_message")
        elif isinstance(item, bytes):
            assert len(item) <= max_line
            assert b"\n" not in item
            assert item.strip()
            for decode in (decode_request, decode_reply):
                try:
                    decode(item)
                except ProtocolError as exc:
                    code = exc.code
                else:
                    continue
                assert code in ("bad_json", "bad_request", "unknown_type")


def depth(value: Any) -> int:
    """Nesting depth of arrays and objects in ``value`` (a scalar is 0)."""
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | text,
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5)
        ),
        max_leaves=25,
    )


# Any code point, lone surrogates included.
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
plain_text = st.text(max_size=12)

REQUEST_TYPES = sorted(
    cls.TYPE
    for cls in (
        Hello,
        SubmitJob,
        RequestJob,
        JobComplete,
        JobFailed,
        Heartbeat,
        GetStatus,
        WaitJob,
        GetStats,
        SubmitJobs,
        Progress,
        ListJobs,
        CancelJob,
        RetryJob,
        DeleteJob,
    )
)
FIELDS = [
    "name",
    "payload",
    "wait",
    "job_id",
    "attempt",
    "result",
    "error",
    "queue",
    "queues",
    "priority",
    "max_attempts",
    "delay",
    "run_at",
    "key",
    "jobs",
    "progress",
    "note",
    "state",
    "limit",
]
# A job inside submit_jobs: sometimes valid, sometimes not.
batch_job = st.fixed_dictionaries(
    {"name": plain_text},
    optional={
        "priority": st.integers(-2, 2) | plain_text,
        "delay": st.integers(-1, 5),
        "run_at": st.integers(0, 5),
        "queue": plain_text,
        "max_attempts": st.integers(0, 3),
    },
)


# Where a fuzzed request starts: a valid request of each kind, or a bare type.
# Random fields are then laid over it, so valid and invalid fields of every
# kind of request both get exercised.
valid_requests = st.sampled_from([request.to_wire() for request in REQUESTS])
fuzz_bases = (
    valid_requests
    | valid_requests
    | st.sampled_from(REQUEST_TYPES).map(lambda kind: {"type": kind})
)


@settings(max_examples=400, deadline=None)
@given(
    base=fuzz_bases,
    fields=st.dictionaries(
        st.sampled_from(FIELDS),
        json_values(plain_text)
        | st.integers(-2, 3700)
        | st.fixed_dictionaries({"type": plain_text}, optional={"message": plain_text})
        | st.sampled_from(JOB_STATES)
        | st.lists(plain_text, max_size=3)
        | st.lists(batch_job | st.integers(), max_size=3),
        max_size=3,
    ),
)
def test_fuzz_decoded_requests_round_trip(base: dict[str, Any], fields: dict[str, Any]) -> None:
    kind = base["type"]
    line = encode({**base, **fields, "type": kind})[:-1]
    try:
        request = decode_request(line)
    except ProtocolError as exc:
        code = exc.code
    else:
        assert kind == request.TYPE
        assert decode_request(encode(request.to_wire())[:-1]) == request
        return
    assert code == "bad_request"


@settings(max_examples=200, deadline=None)
@given(data=st.data(), payload=json_values(any_text), name=any_text.filter(bool))
def test_fuzz_payload_round_trips_exactly(data: st.DataObject, payload: Any, name: str) -> None:
    assume(depth(payload) < MAX_DEPTH)
    request = SubmitJob(name=name, payload=payload)
    line = encode(request.to_wire())
    assert line.endswith(b"\n")
    assert b"\n" not in line[:-1]
    line.decode("utf-8")  # never raises: UTF-8, or ASCII escapes for surrogates
    out = feed(data.draw(chunked(line)))
    assert len(out) == 2
    assert out[1] == "EOF"
    assert isinstance(out[0], bytes)
    decoded = decode_request(out[0])
    assert isinstance(decoded, SubmitJob)
    assert decoded.name == name
    assert same(decoded.payload, payload)


@settings(max_examples=200, deadline=None)
@given(
    payload=json_values(any_text),
    name=any_text.filter(bool),
    job_id=any_text.filter(bool),
    attempt=st.integers(1, 10**6),
    lease=st.floats(0.001, 1e6) | st.integers(1, 10**6),
    duplicate=st.booleans(),
)
def test_encode_reply_matches_the_generic_encoding(
    payload: Any, name: str, job_id: str, attempt: int, lease: float, duplicate: bool
) -> None:
    """The server's direct encoding of its hot replies is byte for byte ``encode``'s."""
    replies: list[Reply] = [
        JobAssigned(job_id, name, payload, attempt, lease),
        # As the server holds it: stored as raw JSON text (and the same bytes out).
        JobAssigned(job_id, name, stored_form(payload), attempt, lease),
        JobSubmitted(job_id, duplicate=duplicate),
        Ok(),
        Ok(lease_timeout=lease),
        NoJob(),
    ]
    for reply in replies:
        assert encode_reply(reply) == encode(reply.to_wire())
    assert encode_reply(replies[1]) == encode_reply(replies[0])


@settings(max_examples=200, deadline=None)
@given(
    value=json_values(any_text),
    name=any_text.filter(bool),
    job_id=any_text.filter(bool),
    attempt=st.none() | st.integers(1, 10**6),
    wait=st.sampled_from([0.0, 0.5, 30.0]),
    queues=st.sampled_from([("default",), ("a", "b")]),
    most=st.none() | st.integers(1, 64),
    fetch=st.booleans(),
    priority=st.sampled_from([0, 3]),
)
def test_encode_request_matches_the_generic_encoding(
    value: Any,
    name: str,
    job_id: str,
    attempt: int | None,
    wait: float,
    queues: tuple[str, ...],
    most: int | None,
    fetch: bool,
    priority: int,
) -> None:
    """The client's direct encoding of its hot requests is byte for byte ``encode``'s."""
    request_job = RequestJob(wait=wait, queues=queues, max=most) if fetch else None
    requests: list[Request] = [
        SubmitJob(name, value),
        SubmitJob(name, value, priority=priority, key=job_id if priority else None),
        JobComplete(job_id, attempt, value, request_job),
        Heartbeat(job_id, attempt),
    ]
    for request in requests:
        assert encode_request(request) == encode(request.to_wire())


@pytest.mark.parametrize(
    "job_id", ["5f3a-1", "x", "é", "a b", "tab\tin", 'q"uote', "back\\slash", "\ud800"]
)
def test_decode_reply_reads_job_submitted_ids_exactly(job_id: str) -> None:
    for reply in (JobSubmitted(job_id), JobSubmitted(job_id, duplicate=True)):
        assert decode_reply(encode_reply(reply)[:-1]) == reply


def test_decode_reply_still_refuses_a_bad_job_submitted() -> None:
    for line in (
        b'{"type":"job_submitted","job_id":""}',
        b'{"type":"job_submitted","job_id":"a\x01"}',
    ):
        with pytest.raises(ProtocolError):
            decode_reply(line)


def test_encode_reply_refuses_what_encode_refuses() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        encode_reply(JobAssigned("j", "n", float("nan"), 1, 30.0))
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_reply(JobAssigned("j", "n", object(), 1, 30.0))


# -- the depth check's fast path for batches --------------------------------------


def nested(levels: int, inner: Any = None) -> Any:
    """``levels`` of alternating arrays and objects around ``inner``."""
    value = inner
    for index in range(levels):
        value = [value] if index % 2 else {"k": value}
    return value


@pytest.mark.parametrize("levels", [MAX_DEPTH - 1, MAX_DEPTH])
@pytest.mark.parametrize(
    "text", ["plain", "[{", "]}", '"[', "\\[", "\\", '{"a":[1]}', "\u00e9\u2028\ud800"]
)
def test_nesting_limit_is_exact_in_a_batch_with_any_strings(levels: int, text: str) -> None:
    # A batch is an object (1) holding an array (2) of objects (3): the payload may add
    # MAX_DEPTH - 3 levels; many siblings give the line far more brackets than MAX_DEPTH.
    payload = nested(levels - 3, text)
    jobs = [{"name": text or "x", "payload": [text, {"t": text}]} for _ in range(40)]
    jobs.append({"name": "deep", "payload": payload})
    line = encode({"type": "submit_jobs", "jobs": jobs})[:-1]
    assert depth(json.loads(line)) == levels
    assert isinstance(decode_request(line), SubmitJobs)
    # One level more: still fine below the limit, refused above it.
    jobs[-1] = {"name": "deeper", "payload": [payload]}
    deeper = encode({"type": "submit_jobs", "jobs": jobs})[:-1]
    if levels < MAX_DEPTH:
        assert isinstance(decode_request(deeper), SubmitJobs)
        return
    with pytest.raises(ProtocolError) as excinfo:
        decode_request(deeper)
    assert (excinfo.value.code, str(MAX_DEPTH) in excinfo.value.message) == ("bad_json", True)


@settings(max_examples=300, deadline=None)
@given(
    value=json_values(any_text), extra=st.integers(0, MAX_DEPTH + 2), siblings=st.integers(0, 70)
)
def test_fuzz_depth_check_agrees_with_the_real_depth(value: Any, extra: int, siblings: int) -> None:
    payload = [nested(extra, value), *([[]] * siblings)]
    line = encode({"type": "submit_job", "name": "x", "payload": payload})[:-1]
    real = depth(json.loads(line))
    if real <= MAX_DEPTH:
        assert isinstance(decode_request(line), SubmitJob)
    else:
        with pytest.raises(ProtocolError) as excinfo:
            decode_request(line)
        assert excinfo.value.code == "bad_json"


# -- payloads and results kept as raw JSON text ---------------------------------

ODD_VALUES: list[Any] = [
    "",
    "plain",
    'quotes " and \\ backslashes \n\t and control \x00\x1f',
    "é✓😀 \u2028\u2029",
    "\ud800 lone \udfff surrogates",
    {"\ud800": ["\udc00", {"é": None}]},
    [],
    {},
    [[[[]]], {"a": {"b": {"c": [1, 2.5, True, False, None]}}}],
    2**70,
    -(2**64),
    1e15,
    1e-7,
    -0.0,
    1.7976931348623157e308,
    0,
    True,
    None,
]


@pytest.mark.parametrize("value", ODD_VALUES)
def test_a_stored_value_encodes_exactly_as_the_value(value: Any) -> None:
    # The server keeps strings, arrays and objects as their encoded text and
    # splices it into replies: the bytes on the wire must not change.
    stored = stored_form(value)
    assert isinstance(stored, RawJSON) == isinstance(value, (str, list, dict))
    for wire in (
        JobAssigned("1", "n", value, 1, 30.0).to_wire(),
        JobInfo("1", "n", "completed", 1, result=value).to_wire(),
    ):
        spliced = {key: stored if item is value else item for key, item in wire.items()}
        assert encode(spliced) == encode(wire)
    reply = decode_reply(encode(JobAssigned("1", "n", stored, 1, 30.0).to_wire())[:-1])
    assert isinstance(reply, JobAssigned)
    assert same(reply.payload, json.loads(encode({"v": value}))["v"])


def test_decoding_keeps_the_stored_form_that_the_size_check_encoded() -> None:
    line = b'{"type":"submit_job","name":"x","payload":{"k":[1e15,"\\ud800","\xc3\xa9"]}}'
    request = decode_line(line)
    assert isinstance(request, SubmitJob)
    assert request.payload == {"k": [1e15, "\ud800", "é"]}
    assert request.stored_payload == RawJSON('{"k":[1000000000000000.0,"\\ud800","é"]}'.encode())
    # Not part of equality: a request built in Python is the same request.
    assert request == SubmitJob("x", {"k": [1e15, "\ud800", "é"]})
    complete = decode_line(b'{"type":"job_complete","job_id":"1","result":"r"}')
    assert isinstance(complete, JobComplete)
    assert (complete.result, complete.stored_result) == ("r", RawJSON(b'"r"'))
    scalar = decode_line(b'{"type":"job_complete","job_id":"1","result":12}')
    assert isinstance(scalar, JobComplete)
    assert scalar.stored_result == 12


def test_raw_values_nested_in_lists_and_objects_are_spliced_in_order() -> None:
    raw = stored_form({"a": [1, "é"]})
    message = {
        "type": "t",
        "first": 1,
        "jobs": [{"x": raw, "y": {"z": raw}}, raw, "s"],
        "raw": raw,
        "last": None,
    }
    expected = {
        **message,
        "jobs": [{"x": {"a": [1, "é"]}, "y": {"z": {"a": [1, "é"]}}}, {"a": [1, "é"]}, "s"],
        "raw": {"a": [1, "é"]},
    }
    assert encode(message) == encode(expected)


def test_only_raw_json_is_spliced_other_bytes_are_refused() -> None:
    with pytest.raises(TypeError):
        encode({"type": "t", "v": b'"not raw"'})
    with pytest.raises(TypeError):
        encode({"type": "t", "w": stored_form("s"), "v": [stored_form(1.5), object()]})
    with pytest.raises(ValueError, match="not JSON compliant"):
        stored_form([float("nan")])


@settings(max_examples=200, deadline=None)
@given(value=json_values(any_text))
def test_fuzz_stored_values_encode_exactly_as_the_values(value: Any) -> None:
    assume(depth(value) < MAX_DEPTH)
    wire = JobAssigned("1", "n", value, 1, 30.0).to_wire()
    line = encode({**wire, "payload": stored_form(value)})
    assert line == encode(wire)
    decoded = decode_reply(line[:-1])
    assert isinstance(decoded, JobAssigned)
    assert same(decoded.payload, json.loads(line)["payload"])


@pytest.mark.parametrize(
    "lookalike",
    ["\x00jobqueue:raw\x00", 'x"\x00jobqueue:raw\x00', "\x00jobqueue:raw\x00 and more"],
)
def test_a_string_that_looks_like_the_splice_marker_is_sent_as_itself(lookalike: str) -> None:
    # encode() has the JSON encoder write a marker string where a RawJSON goes
    # and swaps the text in; a user's string that encodes to the same bytes
    # must neither be swapped nor shift the raw values along.
    raw = stored_form(["r", 1])
    for message in (
        {"type": "t", "a": lookalike, "payload": raw, "b": [lookalike]},
        {"type": "t", lookalike: raw, "note": {"k": lookalike}},
        {"type": "t", "payload": raw, "more": raw, "a": lookalike},
    ):
        plain = {key: ["r", 1] if value is raw else value for key, value in message.items()}
        assert encode(message) == encode(plain)
        assert json.loads(encode(message)) == plain
