"""JSON as the wire carries it: encode, the stored-value limit, depth, raw JSON text.

Payloads and results are kept as the JSON text they arrived as; these tests
check that text is exactly what an encode of the value would give.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jobqueue._codec import decode_reply, decode_request, encode_request
from jobqueue._errors import ProtocolError
from jobqueue._framing import LineDecoder
from jobqueue._json import (
    decode_object,
    encode,
    encode_field,
    encode_stored,
    encode_value,
    stored_form,
)
from jobqueue._limits import (
    ENVELOPE_BYTES,
    MAX_DEPTH,
    MAX_LINE_BYTES,
    MAX_NAME_CHARS,
    MAX_STORED_BYTES,
)
from jobqueue._replies import (
    ErrorReply,
    JobAssigned,
    JobInfo,
)
from jobqueue._requests import (
    JobComplete,
    SubmitJob,
    SubmitJobs,
)
from tests.helpers import any_text, decode_line, depth, json_values, request_error, same

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
    assert (type(stored) is bytes) == isinstance(value, (str, list, dict))
    for wire in (
        JobAssigned("1", "n", value, 1, 30.0).to_wire(),
        JobInfo("1", "n", "completed", 1, result=value).to_wire(),
    ):
        spliced = {key: stored if item is value else item for key, item in wire.items()}
        assert encode_stored(spliced) == encode(wire)
    reply = decode_reply(encode_stored(JobAssigned("1", "n", stored, 1, 30.0).to_wire())[:-1])
    assert isinstance(reply, JobAssigned)
    assert same(reply.payload, json.loads(encode({"v": value}))["v"])


def test_decoding_keeps_the_stored_form_that_the_size_check_encoded() -> None:
    line = b'{"type":"submit_job","name":"x","payload":{"k":[1e15,"\\ud800","\xc3\xa9"]}}'
    request = decode_line(line)
    assert isinstance(request, SubmitJob)
    assert request.payload == {"k": [1e15, "\ud800", "é"]}
    assert request.stored_payload == '{"k":[1000000000000000.0,"\\ud800","é"]}'.encode()
    # Not part of equality: a request built in Python is the same request.
    assert request == SubmitJob("x", {"k": [1e15, "\ud800", "é"]})
    complete = decode_line(b'{"type":"job_complete","job_id":"1","result":"r"}')
    assert isinstance(complete, JobComplete)
    assert (complete.result, complete.stored_result) == ("r", b'"r"')
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
    assert encode_stored(message) == encode(expected)


def test_only_the_servers_encoding_splices_bytes_a_requests_refuses_them() -> None:
    # The server keeps payloads and results as plain bytes of JSON text; a
    # client's request holds a caller's values, where bytes are a mistake.
    raw = stored_form("s")
    assert (
        encode_stored({"type": "t", "v": [raw, {"w": raw}]})
        == b'{"type":"t","v":["s",{"w":"s"}]}\n'
    )
    with pytest.raises(TypeError, match="bytes is not JSON serializable"):
        encode({"type": "t", "v": raw})
    with pytest.raises(TypeError, match="bytes is not JSON serializable"):
        encode({"type": "t", "v": [1, {"w": raw}]})
    for request in (
        SubmitJob("x", raw),  # the fast path
        SubmitJob("x", [raw], queue="q"),  # the general one
        JobComplete("j", 1, {"r": raw}),
    ):
        with pytest.raises(TypeError, match="bytes is not JSON serializable"):
            encode_request(request)
    # Only exactly bytes is raw JSON, even on the server.
    for other in (bytearray(b'"s"'), memoryview(b'"s"'), type("Sub", (bytes,), {})(b'"s"')):
        with pytest.raises(TypeError, match="not JSON serializable"):
            encode_stored({"type": "t", "v": other})
        with pytest.raises(TypeError, match="not JSON serializable"):
            encode_stored({"type": "t", "w": raw, "v": [other]})
    with pytest.raises(TypeError):
        encode_stored({"type": "t", "w": raw, "v": [stored_form(1.5), object()]})
    with pytest.raises(ValueError, match="not JSON compliant"):
        stored_form([float("nan")])


@settings(max_examples=200, deadline=None)
@given(value=json_values(any_text))
def test_fuzz_stored_values_encode_exactly_as_the_values(value: Any) -> None:
    assume(depth(value) < MAX_DEPTH)
    wire = JobAssigned("1", "n", value, 1, 30.0).to_wire()
    line = encode_stored({**wire, "payload": stored_form(value)})
    assert line == encode(wire)
    decoded = decode_reply(line[:-1])
    assert isinstance(decoded, JobAssigned)
    assert same(decoded.payload, json.loads(line)["payload"])


@pytest.mark.parametrize(
    "lookalike",
    ["\x00jobqueue:raw\x00", 'x"\x00jobqueue:raw\x00', "\x00jobqueue:raw\x00 and more"],
)
def test_a_string_that_looks_like_the_splice_marker_is_sent_as_itself(lookalike: str) -> None:
    # encode_stored() has the JSON encoder write a marker string where raw JSON goes
    # and swaps the text in; a user's string that encodes to the same bytes
    # must neither be swapped nor shift the raw values along.
    raw = stored_form(["r", 1])
    for message in (
        {"type": "t", "a": lookalike, "payload": raw, "b": [lookalike]},
        {"type": "t", lookalike: raw, "note": {"k": lookalike}},
        {"type": "t", "payload": raw, "more": raw, "a": lookalike},
    ):
        plain = {key: ["r", 1] if value is raw else value for key, value in message.items()}
        assert encode_stored(message) == encode(plain)
        assert json.loads(encode_stored(message)) == plain


@given(
    st.one_of(
        st.text(),
        st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
        st.integers(),
        st.booleans(),
        st.none(),
        st.floats(allow_nan=False, allow_infinity=False),
    )
)
def test_encode_field_is_encode_value(value: Any) -> None:
    assert encode_field(value) == encode_value(value)


def test_encode_field_of_odd_strings_and_int_kinds() -> None:
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    for value in [
        'a "quoted"\\ name\n',
        "\x00\x1f\u2028",
        "caf\u00e9 \ud800",
        10**30,
        -1,
        Level.HIGH,
    ]:
        assert encode_field(value) == encode_value(value)
