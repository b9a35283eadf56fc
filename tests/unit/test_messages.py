"""The messages: decoding requests and replies, checking their fields, round trips.

Each request line is first fed to a LineDecoder twice, once whole and once one
byte at a time (``decode_line``), so framing and decoding are checked together.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, get_args

import pytest

from jobqueue._codec import decode_reply, decode_request
from jobqueue._coordinator import Coordinator
from jobqueue._errors import ProtocolError
from jobqueue._json import decode_object, encode
from jobqueue._limits import (
    ENVELOPE_BYTES,
    JOB_STATES,
    MAX_ATTEMPTS,
    MAX_DELAY_SECONDS,
    MAX_DEPTH,
    MAX_FETCH,
    MAX_LINE_BYTES,
    MAX_NAME_CHARS,
    MAX_NOTE_BYTES,
    MAX_PRIORITY,
    MAX_QUEUES,
)
from jobqueue._replies import (
    ErrorReply,
    JobAssigned,
    JobCancelledNotice,
    JobInfo,
    JobList,
    JobsAssigned,
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
    Heartbeat,
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
from tests.helpers import REQUESTS, decode_line, request_error, same

if TYPE_CHECKING:
    pass

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
    JobAssigned("1", "n", None, attempt=3, lease_timeout=0.5, attempts_spent=2, last_attempt=True),
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
    Stats(
        jobs={"pending": 0},
        totals={"submitted": 0},
        connections=1,
        waiting_workers=0,
        workers=[],
        journal={
            "fsync": "always",
            "bytes": 12,
            "compactions": 0,
            "failing": True,
            "error": "[Errno 28] No space left on device",
        },
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
        # More digits than a float holds: was OverflowError, which stopped the server.
        ({"delay": 10**400}, '"delay" must be a finite number, not an integer past 1.8e308'),
        ({"run_at": -(10**400)}, '"run_at" must be a finite number, not an integer past'),
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
        ([], '"submit_jobs" field "jobs" holds no job'),
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


# -- ack and fetch: the fetch and max fields, jobs_assigned ----------------------


@pytest.mark.parametrize(
    "message",
    [
        RequestJob(max=1),
        RequestJob(wait=2.0, queues=("a", "b"), max=MAX_FETCH),
        JobComplete("j-1", 1, {"r": 1}, RequestJob()),
        JobComplete("j-1", None, None, RequestJob(wait=30.0, queues=("q",), max=8)),
        JobFailed("j-1", "ValueError", "boom", 2, RequestJob(max=3)),
    ],
)
def test_new_request_fields_round_trip(message: Any) -> None:
    assert decode_request(encode(message.to_wire()).rstrip(b"\n")) == message


def test_fetch_is_left_off_the_wire_when_not_asked() -> None:
    assert "fetch" not in JobComplete("j-1").to_wire()
    assert "fetch" not in JobFailed("j-1", "E", "m").to_wire()
    assert "max" not in RequestJob().to_wire()
    assert JobComplete("j-1", fetch=RequestJob()).to_wire()["fetch"] == {}


@pytest.mark.parametrize(
    ("line", "where"),
    [
        (b'{"type":"request_job","max":0}', '"max" must be from 1 to 1000'),
        (b'{"type":"request_job","max":1001}', '"max" must be from 1 to 1000'),
        (b'{"type":"request_job","max":"2"}', '"max" must be an integer'),
        (b'{"type":"job_complete","job_id":"j","fetch":true}', '"fetch" must be an object'),
        (b'{"type":"job_complete","job_id":"j","fetch":{"wait":-1}}', "in fetch: "),
        (b'{"type":"job_failed","job_id":"j","error":{"type":"E"},"fetch":{"max":0}}', "in fetch"),
        (b'{"type":"job_complete","job_id":"j","fetch":{"queues":[]}}', "in fetch"),
    ],
)
def test_bad_new_fields_are_bad_requests(line: bytes, where: str) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        decode_request(line)
    assert excinfo.value.code == "bad_request"
    assert where in excinfo.value.message


def test_jobs_assigned_round_trip_and_shares_its_lease_timeout() -> None:
    reply = JobsAssigned(
        (JobAssigned("a", "n", {"x": 1}, 1, 30.0), JobAssigned("b", "m", None, 2, 30.0)), 30.0
    )
    wire = reply.to_wire()
    assert wire["jobs"][1] == {"job_id": "b", "name": "m", "payload": None, "attempt": 2}
    assert decode_reply(encode(wire).rstrip(b"\n")) == reply
    with pytest.raises(ProtocolError):
        decode_reply(b'{"type":"jobs_assigned","jobs":[],"lease_timeout":30}')
