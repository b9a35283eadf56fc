"""The codec: one line to a typed message and back, with fast paths for the commonest.

:func:`decode_request` and :func:`decode_reply` look a line's ``type`` up in
a table of message classes; :func:`encode_request` writes any request as
``encode(message.to_wire())`` would, and :func:`encode_reply` any reply as
``encode_stored(reply.to_wire())`` would: a reply carries payloads and
results as the server stores them, raw JSON in ``bytes``, while a request
carries a caller's values, where ``bytes`` are refused. A new wire message is
one class in :mod:`jobqueue._requests` or :mod:`jobqueue._replies` and one
entry in a table here.

Every job costs a ``submit_job`` and a ``job_submitted``, a ``job_assigned``
and a ``job_complete`` and its ``ok``, so those are written (and the two
replies read) as text around JSON-encoded values, byte for byte what the
general path gives: the tests hold each fast path to that.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from ._errors import UNKNOWN_TYPE, ProtocolError
from ._fields import integer, number, optional_attempt
from ._json import (
    REPLY_DEPTH,
    decode_object,
    encode,
    encode_field,
    encode_spliced,
    encode_stored,
    encode_str,
    encode_value,
    scan_value,
    stored_form,
    utf8,
)
from ._limits import MAX_BATCH, MAX_DEPTH, MAX_NAME_CHARS, MAX_STORED_BYTES
from ._replies import (
    OK,
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
    build_assigned,
    build_submitted,
)
from ._requests import (
    PLAIN_JOB_KEYS,
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
    ReleaseJob,
    Request,
    RequestJob,
    RetryJob,
    SubmitJob,
    SubmitJobs,
    WaitJob,
    build_plain_submit,
    build_report,
    fetch_of,
)
from ._schedule_wire import (
    AddSchedule,
    ListSchedules,
    RemoveSchedule,
    ScheduleInfo,
    ScheduleList,
)

_REQUESTS: dict[str, Callable[[dict[str, Any]], Request]] = {
    cls.TYPE: cls.from_wire
    for cls in (
        Hello, SubmitJob, SubmitJobs, RequestJob, JobComplete, JobFailed, Heartbeat, Progress,
        GetStatus, WaitJob, GetStats, CancelJob, RetryJob, DeleteJob, ListJobs, ReleaseJob,
        AddSchedule, ListSchedules, RemoveSchedule,
    )
}  # fmt: skip

_REPLIES: dict[str, Callable[[dict[str, Any]], Reply]] = {
    cls.TYPE: cls.from_wire
    for cls in (
        Welcome, JobSubmitted, JobsSubmitted, JobAssigned, JobsAssigned, NoJob, Ok, JobInfo,
        JobList, Stats, ErrorReply, JobCancelledNotice, ScheduleInfo, ScheduleList,
    )
}  # fmt: skip


def decode_request(line: bytes) -> Request:
    """Decode one line into a request message, the commonest two read directly.

    A ``submit_job`` with a name and a payload only, and a ``job_complete``,
    written as :func:`encode_request` writes them, are built without the
    decoded object and its field readers: only their values go through the
    JSON scanner. Anything else, or anything those readers would refuse,
    goes through :func:`decode_request_fully`, which words every error; the
    tests hold the fast paths to the same results.

    Raises:
        ProtocolError: ``bad_json``, ``bad_request`` or ``unknown_type``.
    """
    # Heads compared as slices: bytes.startswith takes its arguments as a
    # tuple (METH_VARARGS), about 900 instructions a call under callgrind, a
    # slice and a compare about a third of that; every line comes this way.
    if line[:_SUBMIT_LEN] == _SUBMIT_HEAD:
        request: Request | None = _plain_submit(line)
    elif line[:_COMPLETE_LEN] == _COMPLETE_HEAD:
        request = _plain_complete(line)
    else:
        request = None
    return decode_request_fully(line) if request is None else request


def decode_request_fully(line: bytes) -> Request:
    """:func:`decode_request` without its fast paths: the decoded object, checked field by field.

    Raises:
        ProtocolError: ``bad_json``, ``bad_request`` or ``unknown_type``.
    """
    obj = decode_object(line)
    from_wire = _REQUESTS.get(obj["type"])
    if from_wire is None:
        known = ", ".join(sorted(_REQUESTS))
        raise ProtocolError(
            UNKNOWN_TYPE, f"unknown message type {obj['type']!r}; expected one of: {known}"
        )
    return from_wire(obj)


_SUBMIT_HEAD = b'{"type":"submit_job","name":"'
#: Bytes looked for in a line as ints: ``b"\\" in raw`` takes the buffer
#: protocol's path (about 2,000 instructions under callgrind), an int a memchr.
_BACKSLASH, _QUOTE = ord("\\"), ord('"')
_PAYLOAD_KEY = b'","payload":'
_COMPLETE_HEAD = b'{"type":"job_complete","job_id":"'
_SUBMIT_LEN, _COMPLETE_LEN = len(_SUBMIT_HEAD), len(_COMPLETE_HEAD)
_RESULT_KEY = b'","result":'
_RESULT_LEN = len(_RESULT_KEY)
_PAYLOAD_LEN = len(_PAYLOAD_KEY)
#: What follows a report's result (``,"attempt":1,"fetch":{...}}``), read:
#: a worker sends the same few. Cleared when full, so any number is fine.
_REPORT_TAILS: dict[str, tuple[int | None, RequestJob | None]] = {}
#: The same for a report whose result is null, by all of the line after its
#: id (``","result":null,"attempt":1}``): the attempt and fetch it read to.
_NULL_REPORTS: dict[bytes, tuple[int | None, RequestJob | None]] = {}


def _plain_text(raw: bytes) -> str | None:
    """``raw``, the bytes between a string's quotes, as the string, if it needs no decoding.

    Printable ASCII with no backslash reads as itself; anything else (an
    escape, a control character, non-ASCII text) is left to the full decode.
    """
    if raw and raw.isascii() and _BACKSLASH not in raw:
        text = raw.decode("ascii")
        if text.isprintable():
            return text
    return None


def _value_then(line: bytes, start: int) -> tuple[Any, str] | None:
    """The JSON value at ``line[start:]`` and the text after it, if it reads cleanly.

    ``None`` for anything the full decode must look at: not UTF-8, nesting
    that needs the depth check, or no valid value there (the scanner's own
    errors, ``NaN``, a number out of range, an over-long integer).
    """
    if line.count(b"[") + line.count(b"{") > MAX_DEPTH:
        return None
    try:
        text = line[start:].decode("utf-8")
        value, end = scan_value(text, 0)
    except Exception:
        return None
    return value, text[end:]


def _plain_submit(line: bytes) -> SubmitJob | None:
    """``{"type":"submit_job","name":NAME,"payload":VALUE}`` built directly, else ``None``."""
    name_end = line.find(b'"', _SUBMIT_LEN)
    if name_end < 0 or line[name_end : name_end + _PAYLOAD_LEN] != _PAYLOAD_KEY:
        return None
    name = _plain_text(line[_SUBMIT_LEN:name_end])
    if name is None or len(name) > MAX_NAME_CHARS:
        return None
    read = _value_then(line, name_end + len(_PAYLOAD_KEY))
    if read is None or read[1] != "}":
        return None
    payload = read[0]
    stored = stored_form(payload)
    if type(stored) is bytes and len(stored) > MAX_STORED_BYTES:
        return None
    return build_plain_submit(name, payload, stored)


def _plain_complete(line: bytes) -> JobComplete | None:
    """A ``job_complete`` with ``job_id`` and ``result`` first, built directly, else ``None``."""
    id_end = line.find(b'"', _COMPLETE_LEN)
    # _plain_text written out: every job's report comes this way.
    raw = line[_COMPLETE_LEN:id_end]
    if not raw or not raw.isascii() or _BACKSLASH in raw:
        return None
    job_id = raw.decode("ascii")
    if not job_id.isprintable():
        return None
    # A null result's report reads the same after its id every time: the
    # rest of the line is looked up, not scanned. (The id, a plain string,
    # adds no nesting, so the rest read once is within the depth limit.) A
    # rest is remembered only once read, so one found starts with the result.
    rest = line[id_end:]
    known = _NULL_REPORTS.get(rest)
    if known is not None:
        return build_report(job_id, known[0], None, known[1], None)
    if rest[:_RESULT_LEN] != _RESULT_KEY:
        return None
    read = _value_then(line, id_end + len(_RESULT_KEY))
    if read is None:
        return None
    result, tail = read
    stored = stored_form(result)
    if type(stored) is bytes and len(stored) > MAX_STORED_BYTES:
        return None
    options = _REPORT_TAILS.get(tail)
    if options is None:
        options = _report_tail(tail)
        if options is None:
            return None
    if result is None:
        if len(_NULL_REPORTS) >= 64:
            _NULL_REPORTS.clear()
        _NULL_REPORTS[rest] = options
    return build_report(job_id, options[0], result, options[1], stored)


def _report_tail(tail: str) -> tuple[int | None, RequestJob | None] | None:
    """The ``attempt`` and ``fetch`` of a report's ``tail``, remembered; ``None`` if not plain.

    Plain: ``}``, or ``,"...`` members that are only ``attempt`` and
    ``fetch`` and read without error. Other members (unknown ones, which the
    full decode ignores, or ``result`` again) go to the full decode.
    """
    if tail == "}":
        members: Any = {}
    elif tail.startswith(',"'):
        try:
            members, end = scan_value("{" + tail[1:], 0)
        except Exception:
            return None
        if end != len(tail) or not members.keys() <= {"attempt", "fetch"}:
            return None
    else:
        return None
    obj = {"type": JobComplete.TYPE, **members}
    try:
        options = optional_attempt(obj), fetch_of(obj)
    except ProtocolError:
        return None
    if len(_REPORT_TAILS) >= 64:
        _REPORT_TAILS.clear()
    _REPORT_TAILS[tail] = options
    return options


#: The ``fetch`` member of a report, by request: a worker sends the same one
#: with every report. Cleared when full, so any number of them is fine.
_FETCH_TEXTS: dict[RequestJob, str] = {}
#: The last fetch and its text. A worker's slots share one fetch object, and
#: checking for it costs far less than hashing it (a call into attrs' code).
_last_fetch: tuple[RequestJob | None, str] = (None, "")


def _fetch_text(fetch: RequestJob) -> str:
    global _last_fetch
    last, text = _last_fetch  # one tuple: threads never see half an update
    if last is fetch:
        return text
    found = _FETCH_TEXTS.get(fetch)
    if found is None:
        if len(_FETCH_TEXTS) >= 64:
            _FETCH_TEXTS.clear()
        wire = fetch.to_wire()
        del wire["type"]
        found = _FETCH_TEXTS[fetch] = f',"fetch":{encode_value(wire)}'
    _last_fetch = (fetch, found)
    return found


def encode_request(message: Request) -> bytes:
    """``encode(message.to_wire())``, byte for byte, with the commonest requests built directly.

    A producer sends a ``submit_job`` and a worker a ``job_complete`` for
    every job; a plain submit (no options) and a completion are written as
    text, and only their values go through the JSON encoder.

    Raises:
        ValueError, TypeError: as for :func:`encode`.
    """
    cls = type(message)
    if cls is SubmitJob:
        assert isinstance(message, SubmitJob)
        if (
            message.queue != "default"
            or message.priority
            or message.max_attempts is not None
            or message.delay
            or message.run_at is not None
            or message.key is not None
        ):
            return encode(message.to_wire())
        return _plain_submit_line(message.name, message.payload)
    elif cls is JobComplete:
        assert isinstance(message, JobComplete)
        result = "null" if message.result is None else encode_value(message.result)
        text = f'{{"type":"job_complete","job_id":{encode_field(message.job_id)},"result":{result}'
        if message.attempt is not None:
            text += f',"attempt":{encode_field(message.attempt)}'
        if message.fetch is not None:
            text += _fetch_text(message.fetch)
        text += "}\n"
    else:
        return encode(message.to_wire())
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return utf8(text)


def encode_submit(
    name: str,
    payload: Any,
    queue: str = "default",
    priority: int = 0,
    max_attempts: int | None = None,
    delay: float = 0.0,
    run_at: float | None = None,
    key: str | None = None,
) -> bytes:
    """``encode_request(SubmitJob(...))`` of these fields, without building the ``SubmitJob``.

    The trio ``Client``'s ``submit`` sends this for every job: a frozen
    ``SubmitJob`` costs about 10,000 instructions to build (attrs sets its
    nine fields one call each), more than its encoding. A plain submit (no
    options) is written as text; any other goes through ``to_wire``.

    Raises:
        ValueError, TypeError: as for :func:`encode`.
    """
    if (
        queue != "default"
        or priority
        or max_attempts is not None
        or delay
        or run_at is not None
        or key is not None
    ):
        request = SubmitJob(name, payload, queue, priority, max_attempts, delay, run_at, key)
        return encode(request.to_wire())
    return _plain_submit_line(name, payload)


def _plain_submit_line(name: str, payload: Any) -> bytes:
    """A submit with no options, as text: only the name and payload go through the encoder."""
    encoded = "null" if payload is None else encode_value(payload)
    text = f'{{"type":"submit_job","name":{encode_field(name)},"payload":{encoded}}}\n'
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return utf8(text)


def encode_submit_many(jobs: list[dict[str, Any]]) -> bytes:
    """``encode_request(SubmitJobs.from_wire(...))`` of ``jobs``, building no ``SubmitJob``.

    The trio ``Client``'s ``submit_many`` sends this: a job with only a
    ``name`` and a ``payload`` (as most are) is checked as
    ``SubmitJobs.from_wire`` checks it and written as text, where the
    general path builds a frozen ``SubmitJob`` for it, then its wire dict,
    then encodes that. A batch holding any other job, or one the checks
    would refuse, goes the general way, which words every error; a test
    holds the two to the same bytes and the same errors.

    Raises:
        ProtocolError: as for ``SubmitJobs.from_wire``.
        ValueError, TypeError: as for :func:`encode`.
    """
    if jobs and len(jobs) <= MAX_BATCH:
        parts = []
        for job in jobs:
            part = _plain_job_text(job)
            if part is None:
                break
            parts.append(part)
        else:
            text = f'{{"type":"submit_jobs","jobs":[{",".join(parts)}]}}\n'
            try:
                return text.encode("utf-8")
            except UnicodeEncodeError:
                return utf8(text)
    return encode_request(SubmitJobs.from_wire({"type": "submit_jobs", "jobs": jobs}))


def _plain_job_text(job: Any) -> str | None:
    """A batch's job with only a valid ``name`` and ``payload`` as JSON text, else ``None``.

    Accepts what ``_requests._plain_job`` accepts, no more: the same keys,
    the same name checks, the same limit on a stored payload's size.
    """
    if type(job) is not dict or not job.keys() <= PLAIN_JOB_KEYS:
        return None
    name = job.get("name")
    if type(name) is not str or not name or len(name) > MAX_NAME_CHARS:
        return None
    payload = job.get("payload")
    if payload is None:
        return f'{{"name":{encode_str(name)},"payload":null}}'
    try:
        encoded = encode_value(payload)
    except (ValueError, TypeError):  # the general path raises it, from the same encoder
        return None
    # The stored form is this text in UTF-8: at most 6 bytes a character (a
    # lone surrogate's escape), so most payloads need no encoding to check.
    if (
        isinstance(payload, (str, list, dict))
        and len(encoded) * 6 > MAX_STORED_BYTES
        and len(utf8(encoded)) > MAX_STORED_BYTES
    ):
        return None
    return f'{{"name":{encode_str(name)},"payload":{encoded}}}'


def _number(value: float) -> str:
    """``encode_value(value)`` for a number: a finite float is its repr, as the encoder has it."""
    if type(value) is float and math.isfinite(value):
        return repr(value)
    return encode_value(value)


def _payload(payload: Any) -> bytes:
    """A payload as the encoder writes it; stored raw JSON goes in as it is."""
    return b"null" if payload is None else encode_spliced(payload)


_OK = OK
_OK_LINE = encode_stored(_OK.to_wire())[:-1]
_OK_REPLY = _OK_LINE + b"\n"


def encode_reply(reply: Reply) -> bytes:
    """``encode_stored(reply.to_wire())``, byte for byte, with the commonest replies built directly.

    A server sends ``job_submitted`` and ``job_assigned`` (or a share of a
    ``jobs_assigned``) for every job; building them as text skips the dict
    and the encoder's walk over it (only an unusual name or id, and a payload
    not stored as raw JSON, go through the JSON encoder).

    Raises:
        ValueError, TypeError: as for :func:`encode`.
    """
    if reply is _OK:  # a report that fetched nothing: most of a batch's replies
        return _OK_REPLY
    cls = type(reply)
    if cls is JobSubmitted:
        assert isinstance(reply, JobSubmitted)
        if not reply.duplicate:
            text = f'{{"type":"job_submitted","job_id":{encode_field(reply.job_id)}}}\n'
        else:
            return encode_stored(reply.to_wire())
    elif cls is JobAssigned:
        assert isinstance(reply, JobAssigned)
        if reply.attempts_spent is not None or reply.last_attempt:  # rare (see assigned_job)
            return encode_stored(reply.to_wire())
        head = (
            f'{{"type":"job_assigned","job_id":{encode_field(reply.job_id)},'
            f'"name":{encode_field(reply.name)},"payload":'
        )
        tail = f',"attempt":{int(reply.attempt)},"lease_timeout":{_number(reply.lease_timeout)}}}\n'
        return utf8(head) + _payload(reply.payload) + utf8(tail)
    elif cls is JobsAssigned:
        # A worker with prefetch gets up to MAX_FETCH jobs in one of these.
        assert isinstance(reply, JobsAssigned)
        # The text from one stored payload (raw JSON, bytes) to the next is
        # built as one str and encoded once; a null payload is part of it.
        # Ids and names are nearly always a str, whose JSON the encoder's
        # string function gives directly (encode_field for anything else).
        parts: list[bytes] = []
        text = '{"type":"jobs_assigned","jobs":['
        for job in reply.jobs:
            job_id, name, payload = job.job_id, job.name, job.payload
            text += (
                f'{{"job_id":{encode_str(job_id) if type(job_id) is str else encode_field(job_id)},'
                f'"name":{encode_str(name) if type(name) is str else encode_field(name)},"payload":'
            )
            if payload is None:
                text += "null"
            else:
                try:
                    parts.append(text.encode("utf-8"))
                except UnicodeEncodeError:
                    parts.append(utf8(text))
                parts.append(payload if type(payload) is bytes else encode_spliced(payload))
                text = ""
            if job.attempts_spent is None and not job.last_attempt:
                text += f',"attempt":{int(job.attempt)}}},'
            else:  # rare (see assigned_job)
                text += f',"attempt":{int(job.attempt)}'
                if job.attempts_spent is not None:
                    text += f',"attempts_spent":{int(job.attempts_spent)}'
                text += ',"last_attempt":true},' if job.last_attempt else "},"
        if reply.jobs:
            text = text[:-1]  # the last entry's comma
        parts.append(utf8(f'{text}],"lease_timeout":{_number(reply.lease_timeout)}}}\n'))
        return b"".join(parts)
    elif cls is Ok and reply == _OK:
        return _OK_REPLY
    else:
        return encode_stored(reply.to_wire())
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return utf8(text)


#: A ``job_submitted`` as :func:`encode_reply` writes it with an id the fast
#: path reads as is: printable ASCII, no quote or backslash, not empty. (One
#: match does what a test of the head, the tail and the id's bytes did in
#: five calls: ``b'"' in id`` alone costs 2,200 instructions, as bytes' ``in``
#: first tries its operand as an int and clears the TypeError.)
_plain_submitted = re.compile(rb'\{"type":"job_submitted","job_id":"([ !#-\[\]-~]+)"\}').fullmatch


#: The head of a ``job_assigned`` as :func:`encode_reply` writes it, up to its
#: payload, with an id and a name the fast path reads as is.
_plain_assigned_head = re.compile(
    rb'\{"type":"job_assigned","job_id":"([ !#-\[\]-~]+)","name":"([ !#-\[\]-~]+)","payload":'
).match
#: What follows a ``job_assigned``'s payload (``,"attempt":1,"lease_timeout":30.0}``),
#: read: a server sends the same few. Cleared when full, so any number is fine.
_ASSIGNED_TAILS: dict[str, tuple[int, float]] = {}


def _plain_job_assigned(line: bytes) -> JobAssigned | None:
    """A ``job_assigned`` as :func:`encode_reply` writes it, built directly, else ``None``.

    A worker that takes one job per request reads one for every job, and the
    full decode (the decoded object, then a reader per field) cost 38,600
    instructions of a worker's 238,000 per job. Only the payload goes
    through the JSON scanner; the id and name are plain text, and the rest
    is one of a few tails, looked up. Anything else goes to
    :func:`decode_reply_fully`; a test holds the two to the same reply.
    """
    head = _plain_assigned_head(line)
    if head is None:
        return None
    read = _value_then(line, head.end())
    if read is None:
        return None
    payload, tail = read
    options = _ASSIGNED_TAILS.get(tail)
    if options is None:
        options = _assigned_tail(tail)
        if options is None:
            return None
    job_id, name = head[1].decode("ascii"), head[2].decode("ascii")
    return build_assigned(job_id, name, payload, options[0], options[1])


#: The head of a ``jobs_assigned`` of one job as :func:`encode_reply` writes it, up to
#: its payload (its id and name as for ``job_assigned``).
_plain_one_job_head = re.compile(
    rb'\{"type":"jobs_assigned","jobs":\[\{"job_id":"([ !#-\[\]-~]+)","name":"([ !#-\[\]-~]+)",'
    rb'"payload":'
).match
#: What follows the payload of a one-job ``jobs_assigned``, read, as ``_ASSIGNED_TAILS``.
_ONE_JOB_TAILS: dict[str, tuple[int, float]] = {}


def _plain_one_job_assigned(line: bytes) -> JobsAssigned | None:
    """A ``jobs_assigned`` of one job as :func:`encode_reply` writes it, built directly.

    A worker with ``prefetch="auto"`` on a shallow queue asks for two jobs
    and gets one, every job: the full decode cost it 4.7 µs a line, this
    3.1, and the same job as a ``job_assigned`` 2.3 (``timeit``). The one job's tail
    (``,"attempt":1}],"lease_timeout":30.0}``) is the ``job_assigned`` tail
    with the array closed before ``lease_timeout``, and is read as that.
    Anything else (more jobs, other members) goes to
    :func:`decode_reply_fully`; a test holds the two to the same reply.
    """
    head = _plain_one_job_head(line)
    # (A batch of several is for the full decode: counted before its payload is read.)
    if head is None or line.count(b'"job_id":') != 1:
        return None
    read = _value_then(line, head.end())
    if read is None:
        return None
    payload, tail = read
    options = _ONE_JOB_TAILS.get(tail)
    if options is None:
        closed = tail.split('}],"lease_timeout":')
        if len(closed) != 2 or not tail.startswith(',"attempt":') or "{" in tail:
            return None
        options = _assigned_tail(f'{closed[0]},"lease_timeout":{closed[1]}')
        if options is None:
            return None
        if len(_ONE_JOB_TAILS) >= 64:
            _ONE_JOB_TAILS.clear()
        _ONE_JOB_TAILS[tail] = options
    attempt, lease_timeout = options
    job_id, name = head[1].decode("ascii"), head[2].decode("ascii")
    job = build_assigned(job_id, name, payload, attempt, lease_timeout)
    return JobsAssigned((job,), lease_timeout)


def _assigned_tail(tail: str) -> tuple[int, float] | None:
    """The ``attempt`` and ``lease_timeout`` of a ``job_assigned``'s ``tail``, remembered.

    ``None`` unless the tail is ``,"...}`` with exactly those two members,
    read without error (others, or the head's again, go to the full decode).
    """
    if not tail.startswith(',"'):
        return None
    try:
        members, end = scan_value("{" + tail[1:], 0)
    except Exception:
        return None
    if end != len(tail) or members.keys() != {"attempt", "lease_timeout"}:
        return None
    obj = {"type": JobAssigned.TYPE, **members}
    try:
        options = integer(obj, "attempt"), number(obj, "lease_timeout")
    except ProtocolError:
        return None
    if len(_ASSIGNED_TAILS) >= 64:
        _ASSIGNED_TAILS.clear()
    _ASSIGNED_TAILS[tail] = options
    return options


def decode_reply(line: bytes) -> Reply:
    """Decode one line from the server into a reply message.

    Raises:
        ProtocolError: if the line is not a reply this package knows.
    """
    if line == _OK_LINE:
        return _OK  # the commonest reply by far for a worker
    # The commonest for a producer: its id is read as is.
    submitted = _plain_submitted(line)
    if submitted is not None:
        return build_submitted(submitted[1].decode("ascii"), False)
    assigned = _plain_job_assigned(line)
    if assigned is not None:
        return assigned
    batch = _plain_one_job_assigned(line)
    return decode_reply_fully(line) if batch is None else batch


def decode_reply_fully(line: bytes) -> Reply:
    """:func:`decode_reply` without its fast paths: the decoded object, checked field by field.

    Raises:
        ProtocolError: if the line is not a reply this package knows.
    """
    obj = decode_object(line, REPLY_DEPTH)
    from_wire = _REPLIES.get(obj["type"])
    if from_wire is None:
        raise ProtocolError(UNKNOWN_TYPE, f"unexpected reply type {obj['type']!r}")
    return from_wire(obj)
