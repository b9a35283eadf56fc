"""The decoder's fast paths give what the full decode gives, or the same error.

The plain ``submit_job`` and ``job_complete`` are read without the decoded
object and its field readers (``jobqueue._codec``); every line they do not
take goes to :func:`decode_request_fully`. These tests generate such lines,
well formed and not, and hold the two to the same request (compared by
``repr``, so ``1`` and ``1.0`` differ, and with the stored form the
server keeps) or the same ``ProtocolError``. A ``submit_jobs`` batch's
plain jobs, built directly, are held to ``SubmitJob.from_wire`` the same way,
and a ``jobs_assigned`` reply's jobs to ``JobAssigned.from_wire``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobqueue._codec import (
    _plain_job_text,
    decode_reply,
    decode_reply_fully,
    decode_request,
    decode_request_fully,
    encode_reply,
    encode_request,
    encode_submit_many,
)
from jobqueue._errors import ProtocolError
from jobqueue._fields import number
from jobqueue._limits import MAX_BATCH, MAX_DEPTH, MAX_NAME_CHARS, MAX_STORED_BYTES
from jobqueue._replies import JobAssigned, JobsAssigned
from jobqueue._requests import JobComplete, RequestJob, SubmitJob, SubmitJobs, _plain_job


def _outcome(decode: Any, line: bytes) -> tuple[object, ...]:
    try:
        request = decode(line)
    except ProtocolError as exc:
        return ("error", exc.code, exc.message)
    stored = getattr(request, "stored_payload", getattr(request, "stored_result", None))
    return ("request", type(request), repr(request), type(stored), repr(stored))


def _same(line: bytes) -> None:
    assert _outcome(decode_request, line) == _outcome(decode_request_fully, line)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)

#: Texts a value's place may hold that no JSON encoder writes.
_odd_values = st.sampled_from(
    [
        "NaN", "-Infinity", "1e400", "-1e400", "1E2", "1.0e2", "-0", "-0.0", "01", "1.", ".5",
        "tru", "nul", "", " 1", "1 ", "[1,]", "{}", "[]", '"a\\u0000b"', '"\\ud800"', '"\t"',
        '"\\"', "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "[" * MAX_DEPTH + "]" * MAX_DEPTH,
        "9" * 5000, '"' + "x" * (MAX_STORED_BYTES + 1) + '"', "\xff", '"\u00e9"', "}", ",",
    ]
)  # fmt: skip


@st.composite
def _value_text(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(_odd_values)
    return json.dumps(
        draw(_values),
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
    )


#: Names and ids: plain ones, and every kind the fast paths must leave alone.
_names = st.one_of(
    st.sampled_from(["noop", "a", "x" * MAX_NAME_CHARS, "x" * (MAX_NAME_CHARS + 1), ""]),
    st.text(max_size=10),
    st.text(alphabet=st.sampled_from('ab"\\\x00\x1f\x7f\u00e9 '), max_size=5),
)


@st.composite
def _name_text(draw: st.DrawFn) -> str:
    name = draw(_names)
    if draw(st.integers(0, 5)) == 0:
        return draw(st.sampled_from(["null", "1", "[]", '"a" ', '"a', "a"]))
    return json.dumps(name, ensure_ascii=draw(st.booleans()))


@st.composite
def _member(draw: st.DrawFn) -> str:
    key = draw(
        st.sampled_from(
            ["attempt", "fetch", "result", "job_id", "type", "payload", "name", "queue", "x"]
        )
    )
    if key == "attempt":
        value = draw(st.sampled_from(["1", "2", "0", "-1", "1.0", "true", "null", '"1"']))
    elif key == "fetch":
        value = draw(
            st.sampled_from(
                [
                    '{"wait":30.0}', "{}", '{"wait":-1}', '{"max":3}', '{"max":0}',
                    '{"queues":["a","b"]}', '{"queues":[]}', "null", "1", "[]",
                ]
            )
        )  # fmt: skip
    elif key == "type":
        value = draw(st.sampled_from(['"job_complete"', '"submit_job"', '"hello"', "1"]))
    else:
        value = draw(_value_text())
    return f'"{key}":{value}'


def _mutated(draw: st.DrawFn, line: bytes) -> bytes:
    """``line`` with now and then a byte changed, inserted or taken out anywhere."""
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(line)))
        byte = bytes([draw(st.integers(0, 255))])
        how = draw(st.sampled_from(["set", "insert", "delete"]))
        if how == "insert":
            line = line[:at] + byte + line[at:]
        else:
            line = line[:at] + (byte if how == "set" else b"") + line[at + 1 :]
    return line


@st.composite
def _lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["submit_job", "job_complete"]))
    first, second = ("name", "payload") if kind == "submit_job" else ("job_id", "result")
    text = (
        f'{{"type":"{kind}","{first}":{draw(_name_text())},"{second}":{draw(_value_text())}'
        + "".join("," + draw(_member()) for _ in range(draw(st.integers(0, 3))))
        + draw(st.sampled_from(["}", "}", "}", " }", "", "}}", "} ", ",}"]))
    )
    return _mutated(draw, text.encode("utf-8", "surrogatepass"))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_lines())
def test_fast_paths_agree_with_the_full_decode(line: bytes) -> None:
    _same(line)


@pytest.mark.parametrize("byte", [*range(0x20), 0x7F])
def test_a_raw_control_character_in_a_name_or_id_is_read_alike(byte: int) -> None:
    # Raw in the line, not escaped: no encoder writes it, so the generated
    # lines above almost never hold one where a fast path reads the text.
    text = b"a" + bytes([byte]) + b"b"
    _same(b'{"type":"submit_job","name":"' + text + b'","payload":null}')
    _same(b'{"type":"job_complete","job_id":"' + text + b'","result":null}')
    _same_reply(b'{"type":"job_submitted","job_id":"' + text + b'"}')


@given(
    name=st.text(min_size=1, max_size=MAX_NAME_CHARS),
    payload=_values,
    job_id=st.text(min_size=1, max_size=20),
    attempt=st.none() | st.integers(1, 10),
    fetch=st.none()
    | st.builds(
        RequestJob,
        wait=st.floats(0, 60),
        queues=st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=3).map(tuple),
        max=st.none() | st.integers(1, 100),
    ),
)
def test_what_the_clients_send_decodes_alike(
    name: str, payload: Any, job_id: str, attempt: int | None, fetch: RequestJob | None
) -> None:
    _same(encode_request(SubmitJob(name, payload))[:-1])
    _same(encode_request(JobComplete(job_id, attempt, payload, fetch))[:-1])


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"submit_job","name":"noop","payload":null}',
        b'{"type":"submit_job","name":"noop","payload":{"a":[1,2.5,"\\u00e9"]}}',
        b'{"type":"job_complete","job_id":"ab-1","result":null,"attempt":1,"fetch":{"wait":30.0}}',
        b'{"type":"job_complete","job_id":"ab-1","result":[1],"attempt":2}',
        b'{"type":"job_complete","job_id":"ab-1","result":"r"}',
    ],
)
def test_plain_lines_decode(line: bytes) -> None:
    _same(line)
    assert _outcome(decode_request, line)[0] == "request"


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"submit_job","name":"noop","payload":NaN}',
        b'{"type":"submit_job","name":"noop","payload":1e400}',
        b'{"type":"submit_job","name":"","payload":null}',
        b'{"type":"submit_job","name":"noop","payload":null,"name":"other"}',
        b'{"type":"job_complete","job_id":"ab-1","result":null,"attempt":0}',
        b'{"type":"job_complete","job_id":"ab-1","result":null,"fetch":{"wait":-1}}',
        b'{"type":"job_complete","job_id":"ab-1","result":null,"result":2}',
        b'{"type":"job_complete","job_id":"ab-1","result":null,}',
        b'{"type":"job_complete","job_id":"ab-1","result":null',
    ],
)
def test_unusual_lines_get_the_full_decodes_answer(line: bytes) -> None:
    _same(line)


# -- submit_jobs: a batch's plain jobs built directly (_requests._plain_job) --------------

_job_values = st.one_of(
    _values,
    _names,
    st.sampled_from(["x" * (MAX_STORED_BYTES + 1), ["x" * MAX_STORED_BYTES], 1.5, True, -3]),
)
_jobs = st.one_of(
    st.dictionaries(
        st.sampled_from(["name", "payload", "queue", "priority", "key", "delay", "type", "x"]),
        _job_values,
        max_size=4,
    ),
    st.fixed_dictionaries({"name": _names}, optional={"payload": _job_values}),
    _job_values,
)


def _batch_outcome(jobs: list[Any], *, generic: bool) -> tuple[object, ...]:
    """``SubmitJobs.from_wire``'s outcome; ``generic``: each job by ``SubmitJob.from_wire``."""
    obj = {"type": "submit_jobs", "jobs": jobs}
    try:
        if not generic:
            batch = SubmitJobs.from_wire(obj).jobs
        else:
            made = []
            for index, job in enumerate(jobs):
                if not isinstance(job, dict):
                    raise ProtocolError(
                        "bad_request", f'"submit_jobs" job {index} is not an object'
                    )
                try:
                    made.append(SubmitJob.from_wire({**job, "type": "submit_jobs"}))
                except ProtocolError as exc:
                    raise ProtocolError(exc.code, f"job {index}: {exc.message}") from None
            batch = tuple(made)
    except ProtocolError as exc:
        return ("error", exc.code, exc.message)
    return tuple((repr(job), type(job.stored_payload), repr(job.stored_payload)) for job in batch)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_jobs, min_size=1, max_size=4))
def test_a_batch_s_plain_jobs_are_what_submit_job_reads(jobs: list[Any]) -> None:
    assert _batch_outcome(jobs, generic=False) == _batch_outcome(jobs, generic=True)


@settings(max_examples=200)
@given(_names, _values)
def test_plain_jobs_take_the_quick_path(name: str, payload: Any) -> None:
    jobs: list[Any] = [{"name": name}, {"name": name, "payload": payload}]
    assert _batch_outcome(jobs, generic=False) == _batch_outcome(jobs, generic=True)
    plain = 0 < len(name) <= MAX_NAME_CHARS
    assert (_plain_job(jobs[0]) is not None) == plain


@pytest.mark.parametrize(
    "job",
    [
        {"name": "noop", "payload": "x" * (MAX_STORED_BYTES + 1)},
        {"name": "noop", "payload": "x" * (MAX_STORED_BYTES - 2)},
        {"name": "x" * (MAX_NAME_CHARS + 1)},
        {"name": ""},
        {"name": 3},
        {"payload": 1},
        {"name": "noop", "queue": None},
        {},
        ["noop"],
    ],
)
def test_edge_jobs_of_a_batch_are_what_submit_job_reads(job: Any) -> None:
    jobs = [{"name": "noop"}, job]
    assert _batch_outcome(jobs, generic=False) == _batch_outcome(jobs, generic=True)


# -- submit_many's line: plain jobs written directly (_codec.encode_submit_many) -----------

_odd_payloads = st.sampled_from(
    ["\ud800x", float("nan"), float("inf"), {1: "a", None: 2}, {(1,): 2}, {"a": {1}}, object()]
)
_batch_jobs = st.one_of(
    _jobs, st.fixed_dictionaries({"name": _names}, optional={"payload": _odd_payloads})
)


def _line_outcome(encode_batch: Any, jobs: list[Any]) -> tuple[object, ...]:
    try:
        return ("line", encode_batch(jobs))
    except ProtocolError as exc:
        return ("refused", exc.code, exc.message)
    except (ValueError, TypeError) as exc:
        return ("raised", type(exc), str(exc))


def _submit_jobs_line(jobs: list[Any]) -> bytes:
    return encode_request(SubmitJobs.from_wire({"type": "submit_jobs", "jobs": jobs}))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_batch_jobs, max_size=4))
def test_submit_many_s_line_is_what_the_request_encodes_to(jobs: list[Any]) -> None:
    assert _line_outcome(encode_submit_many, jobs) == _line_outcome(_submit_jobs_line, jobs)


@pytest.mark.parametrize(
    "payload",
    [
        "\u00e9" * (MAX_STORED_BYTES // 2),  # within the limit in characters, not in bytes
        "x" * (MAX_STORED_BYTES - 2),  # past the quick bound (6 bytes a character), yet within
        "x" * (MAX_STORED_BYTES - 1),
        ["\ud800"] * (MAX_STORED_BYTES // 8),  # escaped: 6 bytes a character
        (1, 2),
    ],
)
def test_submit_many_s_line_for_edge_payloads(payload: Any) -> None:
    jobs: list[Any] = [{"name": "n"}, {"name": "n", "payload": payload}]
    assert _line_outcome(encode_submit_many, jobs) == _line_outcome(_submit_jobs_line, jobs)


@settings(max_examples=100)
@given(_names, _values)
def test_plain_jobs_are_written_directly(name: str, payload: Any) -> None:
    jobs: list[Any] = [{"name": name}, {"name": name, "payload": payload}]
    plain = 0 < len(name) <= MAX_NAME_CHARS
    assert all(_plain_job_text(job) is not None for job in jobs) == plain
    assert _line_outcome(encode_submit_many, jobs) == _line_outcome(_submit_jobs_line, jobs)


def test_submit_many_s_line_for_a_batch_past_its_limit() -> None:
    jobs: list[Any] = [{"name": "n"}] * (MAX_BATCH + 1)
    assert _line_outcome(encode_submit_many, jobs) == _line_outcome(_submit_jobs_line, jobs)
    assert _line_outcome(encode_submit_many, jobs[:-1]) == _line_outcome(
        _submit_jobs_line, jobs[:-1]
    )


# -- jobs_assigned: each job read directly (_replies._plain_assigned) ----------------------

_assigned_values = st.one_of(
    _job_values, st.integers(), st.booleans(), st.sampled_from([1, 2, 0, -1, 1.0, "1", True])
)
_assigned_jobs = st.one_of(
    st.fixed_dictionaries(
        {"job_id": _names, "name": _names, "attempt": _assigned_values},
        optional={"payload": _job_values, "type": _job_values, "lease_timeout": _job_values},
    ),
    st.dictionaries(
        st.sampled_from(["job_id", "name", "payload", "attempt", "lease_timeout", "x"]),
        _assigned_values,
        max_size=5,
    ),
)


def _assigned_outcome(jobs: list[Any], lease_timeout: Any, *, generic: bool) -> tuple[object, ...]:
    """``JobsAssigned.from_wire``'s outcome; ``generic``: each job by ``JobAssigned.from_wire``."""
    obj = {"type": "jobs_assigned", "jobs": jobs, "lease_timeout": lease_timeout}
    try:
        if not generic:
            return ("reply", repr(JobsAssigned.from_wire(obj)))
        timeout = number(obj, "lease_timeout")
        made = tuple(
            JobAssigned.from_wire({**job, "type": "jobs_assigned", "lease_timeout": timeout})
            for job in jobs
        )
        return ("reply", repr(JobsAssigned(made, timeout)))
    except ProtocolError as exc:
        return ("error", exc.code, exc.message)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_assigned_jobs, min_size=1, max_size=4),
    st.sampled_from([30.0, 30, 0.5, True, "30", None, float("inf")]),
)
def test_assigned_jobs_read_directly_are_what_job_assigned_reads(
    jobs: list[Any], lease_timeout: Any
) -> None:
    assert _assigned_outcome(jobs, lease_timeout, generic=False) == _assigned_outcome(
        jobs, lease_timeout, generic=True
    )


@pytest.mark.parametrize(
    "job",
    [
        {"job_id": "a1", "name": "noop", "payload": None, "attempt": 1},
        {"job_id": "a1", "name": "noop", "attempt": True},
        {"job_id": "a1", "name": "noop", "attempt": 1.0},
        {"job_id": "", "name": "noop", "attempt": 1},
        {"job_id": "a1", "name": "", "attempt": 1},
        {"job_id": 1, "name": "noop", "attempt": 1},
        {"job_id": "a1", "name": "noop"},
    ],
)
def test_edge_assigned_jobs_are_what_job_assigned_reads(job: dict[str, Any]) -> None:
    jobs = [{"job_id": "a0", "name": "noop", "payload": [1], "attempt": 2}, job]
    assert _assigned_outcome(jobs, 30.0, generic=False) == _assigned_outcome(
        jobs, 30.0, generic=True
    )


# -- a null result's report, looked up by the rest of its line ----------------------------


@pytest.mark.parametrize(
    "rest",
    [
        b'","result":null,"attempt":1}',
        b'","result":null,"attempt":1,"fetch":{"queues":["default"],"max":64}}',
        b'","result":null}',
        b'","result":null,"attempt":0}',
        b'","result":null,"attempt":1,"x":1}',
        b'","result":1,"attempt":1}',
        b'","result":"null","attempt":1}',
        b'","result":null ,"attempt":1}',
    ],
)
def test_a_null_report_read_again_is_what_the_full_decode_reads(rest: bytes) -> None:
    # The first line fills the lookup; the others, with other ids, use it
    # (an id of brackets adds no nesting: the full decode takes it too).
    ids = [b"j-1", b"j-2", b"[" * MAX_DEPTH, b"{" * (MAX_DEPTH - 2), b"a[b"]
    for job_id in ids * 2:
        _same(b'{"type":"job_complete","job_id":"' + job_id + rest)


# -- job_assigned: read directly (_codec._plain_job_assigned) ---------------------------


def _reply_outcome(decode: Any, line: bytes) -> tuple[object, ...]:
    try:
        reply = decode(line)
    except ProtocolError as exc:
        return ("error", exc.code, exc.message)
    return ("reply", type(reply), repr(reply))


def _same_reply(line: bytes) -> None:
    assert _reply_outcome(decode_reply, line) == _reply_outcome(decode_reply_fully, line)


@st.composite
def _assigned_member(draw: st.DrawFn) -> str:
    key = draw(
        st.sampled_from(["attempt", "lease_timeout", "payload", "job_id", "name", "type", "x"])
    )
    if key == "attempt":
        value = draw(st.sampled_from(["1", "2", "0", "-1", "1.0", "true", "null", '"1"']))
    elif key == "lease_timeout":
        value = draw(st.sampled_from(["30.0", "30", "0.5", "1e400", "true", "null", '"30"', "-1"]))
    elif key == "type":
        value = draw(st.sampled_from(['"job_assigned"', '"ok"', "1"]))
    elif key in ("job_id", "name"):
        value = draw(_name_text())
    else:
        value = draw(_value_text())
    return f'"{key}":{value}'


@st.composite
def _assigned_lines(draw: st.DrawFn) -> bytes:
    members = draw(
        st.sampled_from(
            [
                ["attempt", "lease_timeout"],
                ["lease_timeout", "attempt"],
                ["attempt"],
                ["attempt", "lease_timeout", "x"],
                ["attempt", "lease_timeout", "attempts_spent"],
                ["attempt", "lease_timeout", "last_attempt"],
                ["attempt", "lease_timeout", "attempts_spent", "last_attempt"],
                ["attempt", "attempt", "lease_timeout"],
            ]
        )
    )
    tail = "".join(
        "," + (draw(_assigned_member()) if draw(st.integers(0, 3)) == 0 else _usual(key, draw))
        for key in members
    )
    text = (
        f'{{"type":"job_assigned","job_id":{draw(_name_text())},"name":{draw(_name_text())},'
        f'"payload":{draw(_value_text())}{tail}'
        + draw(st.sampled_from(["}", "}", "}", " }", "", "}}", "} ", ",}"]))
    )
    return _mutated(draw, text.encode("utf-8", "surrogatepass"))


def _usual(key: str, draw: st.DrawFn) -> str:
    """``key`` as the server writes it, but for an odd value now and then."""
    if key == "attempt":
        return f'"attempt":{draw(st.integers(1, 20))}'
    if key == "lease_timeout":
        return f'"lease_timeout":{draw(st.sampled_from(["30.0", "0.5", "120.0"]))}'
    if key == "attempts_spent":
        return f'"attempts_spent":{draw(st.integers(1, 20))}'
    if key == "last_attempt":
        return f'"last_attempt":{draw(st.sampled_from(["true", "false"]))}'
    return draw(_assigned_member())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_assigned_lines())
def test_job_assigned_fast_path_agrees_with_the_full_decode(line: bytes) -> None:
    _same_reply(line)


@given(
    job_id=st.text(min_size=1, max_size=20),
    name=st.text(min_size=1, max_size=MAX_NAME_CHARS),
    payload=_values,
    attempt=st.integers(1, 100),
    lease_timeout=st.floats(0.1, 3600),
    spent=st.none() | st.integers(1, 100),
    last=st.booleans(),
)
def test_what_the_server_assigns_decodes_alike(
    job_id: str,
    name: str,
    payload: Any,
    attempt: int,
    lease_timeout: float,
    spent: int | None,
    last: bool,
) -> None:
    # One job as job_assigned, and as a jobs_assigned of one, two or three
    # (the three: the job between two without attempts_spent or last_attempt).
    job = JobAssigned(job_id, name, payload, attempt, lease_timeout, spent, last)
    plain = JobAssigned(job_id, name, payload, attempt, lease_timeout)
    replies: list[JobAssigned | JobsAssigned] = [job]
    replies += [JobsAssigned((job,) * count, lease_timeout) for count in (1, 2)]
    replies.append(JobsAssigned((plain, job, plain), lease_timeout))
    for sent in replies:
        line = encode_reply(sent)[:-1]
        _same_reply(line)
        assert decode_reply(line) == sent


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"job_assigned","job_id":"a1","name":"noop","payload":null,"attempt":1,"lease_timeout":30.0}',
        b'{"type":"job_assigned","job_id":"a1","name":"noop","payload":[1,{"b":2}],"attempt":3,"lease_timeout":30}',
        b'{"type":"job_assigned","job_id":"a1","name":"noop","payload":NaN,"attempt":1,"lease_timeout":30.0}',
        b'{"type":"job_assigned","job_id":"a1","name":"noop","payload":1,"attempt":true,"lease_timeout":30.0}',
        b'{"type":"job_assigned","job_id":"a1","name":"noop","payload":1,"attempt":1,"lease_timeout":1e400}',
        b'{"type":"job_assigned","job_id":"a1","name":"noop","payload":1,"attempt":1,"lease_timeout":30.0,"payload":2}',
        b'{"type":"job_assigned","job_id":"a1","name":"noop","payload":1,"attempt":1}',
        b'{"type":"job_assigned","job_id":"a1","name":"noop","payload":1,"attempt":2,"lease_timeout":30.0,"attempts_spent":1}',
        b'{"type":"job_assigned","job_id":"a1","name":"noop","payload":1,"attempt":2,"lease_timeout":30.0,"attempts_spent":0}',
        b'{"type":"job_assigned","job_id":"a1","name":"noop","payload":1,"attempt":5,"lease_timeout":30.0,"last_attempt":true}',
        b'{"type":"job_assigned","job_id":"a1","name":"noop","payload":1,"attempt":1,"lease_timeout":30.0,"last_attempt":1}',
        b'{"type":"job_assigned","job_id":"a1","name":"noop","payload":1,"attempt":1,"lease_timeout":30.0',
    ],
)
def test_job_assigned_lines_decode_as_the_full_decode_does(line: bytes) -> None:
    _same_reply(line)


# -- a jobs_assigned of one job: read directly (_codec._plain_one_job_assigned) --------------


@st.composite
def _one_job_lines(draw: st.DrawFn) -> bytes:
    attempt = _usual("attempt", draw) if draw(st.integers(0, 3)) else draw(_assigned_member())
    lease = _usual("lease_timeout", draw) if draw(st.integers(0, 3)) else draw(_assigned_member())
    job = (
        f'{{"job_id":{draw(_name_text())},"name":{draw(_name_text())},'
        f'"payload":{draw(_value_text())},{attempt}}}'
    )
    jobs = [job] * draw(st.sampled_from([1, 1, 1, 2]))
    extra = draw(st.sampled_from(["", "", "", ',"x":1']))
    text = f'{{"type":"jobs_assigned","jobs":[{",".join(jobs)}],{lease}{extra}' + draw(
        st.sampled_from(["}", "}", "}", " }", "", "}}", "} ", ",}"])
    )
    return _mutated(draw, text.encode("utf-8", "surrogatepass"))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_one_job_lines())
def test_one_job_jobs_assigned_fast_path_agrees_with_the_full_decode(line: bytes) -> None:
    _same_reply(line)


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"jobs_assigned","jobs":[{"job_id":"a1","name":"noop","payload":null,"attempt":1}],"lease_timeout":30.0}',
        b'{"type":"jobs_assigned","jobs":[{"job_id":"a1","name":"noop","payload":{"k":[1]},"attempt":2}],"lease_timeout":30}',
        b'{"type":"jobs_assigned","jobs":[{"job_id":"a1","name":"noop","payload":1,"attempt":1}],"lease_timeout":30.0,"x":1}',
        b'{"type":"jobs_assigned","jobs":[{"job_id":"a1","name":"noop","payload":1,"attempt":1,"x":2}],"lease_timeout":30.0}',
        b'{"type":"jobs_assigned","jobs":[{"job_id":"a1","name":"noop","payload":1,"attempt":3,"attempts_spent":2}],"lease_timeout":30.0}',
        b'{"type":"jobs_assigned","jobs":[{"job_id":"a1","name":"noop","payload":1,"attempt":1,"last_attempt":true}],"lease_timeout":30.0}',
        b'{"type":"jobs_assigned","jobs":[{"job_id":"a1","name":"noop","payload":1,"attempt":"}],\\"lease_timeout\\":1"}],"lease_timeout":30.0}',
        b'{"type":"jobs_assigned","jobs":[{"job_id":"a1","name":"noop","payload":1,"attempt":1}],"lease_timeout":true}',
        b'{"type":"jobs_assigned","jobs":[{"job_id":"a1","name":"noop","payload":1,"attempt":0}],"lease_timeout":30.0}',
        b'{"type":"jobs_assigned","jobs":[{"job_id":"a1","name":"noop","payload":1,"attempt":1}],"lease_timeout":30.0',
        b'{"type":"jobs_assigned","jobs":[{"job_id":"a","name":"n","payload":"\\"job_id\\":","attempt":1}],"lease_timeout":30.0}',
    ],
)
def test_one_job_jobs_assigned_lines_decode_as_the_full_decode_does(line: bytes) -> None:
    _same_reply(line)
