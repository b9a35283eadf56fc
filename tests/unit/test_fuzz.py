"""Fuzzing the sans-IO codec: random bytes, random requests, random payloads.

Only protocol errors may come out of the decoder, whatever it is fed, and
everything that decodes encodes back to the same message.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jobqueue._codec import (
    decode_reply,
    decode_reply_fully,
    decode_request,
    encode_reply,
    encode_request,
    encode_submit,
)
from jobqueue._errors import ProtocolError
from jobqueue._json import encode, encode_stored, stored_form
from jobqueue._limits import (
    JOB_STATES,
    MAX_DEPTH,
    MAX_LINE_BYTES,
)
from jobqueue._replies import (
    JobAssigned,
    JobsAssigned,
    JobSubmitted,
    NoJob,
    Ok,
    Reply,
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
from tests.helpers import REQUESTS, any_text, bytewise, depth, feed, json_values, plain_text, same

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
    spent=st.integers(1, 1000),
)
def test_encode_reply_matches_the_generic_encoding(
    payload: Any, name: str, job_id: str, attempt: int, lease: float, duplicate: bool, spent: int
) -> None:
    """The server's direct encoding of its hot replies is byte for byte ``encode_stored``'s."""
    replies: list[Reply] = [
        JobAssigned(job_id, name, payload, attempt, lease),
        # As the server holds it: stored as raw JSON text (and the same bytes out).
        JobAssigned(job_id, name, stored_form(payload), attempt, lease),
        # A run after a give-back or a revive, and a last run (rare: the generic path).
        JobAssigned(job_id, name, stored_form(payload), attempt, lease, spent),
        JobAssigned(job_id, name, stored_form(payload), attempt, lease, None, True),
        JobAssigned(job_id, name, stored_form(payload), attempt, lease, spent, True),
        JobSubmitted(job_id, duplicate=duplicate),
        JobsAssigned(
            (
                JobAssigned(job_id, name, payload, attempt, lease),
                JobAssigned(name, job_id, stored_form(payload), attempt, lease),
            ),
            lease,
        ),
        JobsAssigned((JobAssigned(job_id, name, None, attempt, lease),), lease),
        # Null, raw and unstored payloads in every order, as one text runs
        # from one raw payload to the next.
        JobsAssigned(
            (
                JobAssigned(job_id, name, None, attempt, lease),
                JobAssigned(name, job_id, stored_form(payload), attempt + 1, lease),
                JobAssigned(job_id, job_id, None, attempt, lease),
                JobAssigned(name, name, payload, 1, lease),
                JobAssigned(job_id, name, None, attempt, lease, spent),
                JobAssigned(name, job_id, stored_form(payload), attempt, lease, spent),
                JobAssigned(job_id, name, None, attempt, lease, None, True),
                JobAssigned(name, job_id, stored_form(payload), attempt, lease, spent, True),
                JobAssigned(job_id, name, None, attempt, lease),
            ),
            lease,
        ),
        JobsAssigned((), lease),
        Ok(),
        Ok(lease_timeout=lease),
        NoJob(),
    ]
    for reply in replies:
        assert encode_reply(reply) == encode_stored(reply.to_wire())
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


@settings(max_examples=300, deadline=None)
@given(
    value=json_values(any_text),
    name=any_text,
    queue=st.sampled_from(["default", "other"]),
    priority=st.sampled_from([0, -2, 3]),
    max_attempts=st.none() | st.integers(1, 5),
    delay=st.sampled_from([0.0, 0, 1.5]),
    run_at=st.none() | st.floats(0, 2e9),
    key=st.none() | any_text,
)
def test_encode_submit_matches_the_generic_encoding(
    value: Any,
    name: str,
    queue: str,
    priority: int,
    max_attempts: int | None,
    delay: float,
    run_at: float | None,
    key: str | None,
) -> None:
    """``Client.submit``'s encoding, with no ``SubmitJob`` built, is byte for byte ``encode``'s."""
    options = (queue, priority, max_attempts, delay, run_at, key)
    request = SubmitJob(name, value, queue, priority, max_attempts, delay, run_at, key)
    assert encode_submit(name, value, *options) == encode(request.to_wire())
    assert encode_submit(name, value) == encode(SubmitJob(name, value).to_wire())


def test_encode_submit_refuses_what_encode_refuses() -> None:
    for payload, error in ((float("nan"), ValueError), (object(), TypeError)):
        for options in ((), ("other",)):
            with pytest.raises(error):
                encode(SubmitJob("n", payload, *options).to_wire())
            with pytest.raises(error):
                encode_submit("n", payload, *options)


@pytest.mark.parametrize(
    "job_id", ["5f3a-1", "x", "é", "a b", "tab\tin", 'q"uote', "back\\slash", "\ud800"]
)
def test_decode_reply_reads_job_submitted_ids_exactly(job_id: str) -> None:
    for reply in (JobSubmitted(job_id), JobSubmitted(job_id, duplicate=True)):
        assert decode_reply(encode_reply(reply)[:-1]) == reply


def _decoded(decode: Any, line: bytes) -> Reply | str:
    """What ``decode`` makes of ``line``: the reply, or the refusal's code."""
    try:
        return decode(line)  # type: ignore[no-any-return]
    except ProtocolError as exc:
        return exc.code


@settings(max_examples=400, deadline=None)
@given(
    job_id=st.one_of(
        st.text(),
        st.text(st.characters(min_codepoint=0, max_codepoint=127)),
        st.binary().map(lambda raw: raw.decode("latin-1")),
    ),
    raw=st.binary(max_size=12),
    tail=st.sampled_from([b'"}', b'"', b"}", b'","duplicate":true}', b'"} ', b'"}}']),
)
def test_decode_reply_job_submitted_fast_path_matches_the_generic_path(
    job_id: str, raw: bytes, tail: bytes
) -> None:
    """Every line the ``job_submitted`` fast path might take reads as the full decode reads it."""
    head = b'{"type":"job_submitted","job_id":"'
    for line in (
        head + job_id.encode("utf-8", "surrogatepass") + tail,
        head + raw + tail,
        encode_reply(JobSubmitted(job_id or "x"))[:-1],
    ):
        assert _decoded(decode_reply, line) == _decoded(decode_reply_fully, line)


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
