"""The codec: one line to a typed message and back, with fast paths for the commonest.

:func:`decode_request` and :func:`decode_reply` look a line's ``type`` up in
a table of message classes; :func:`encode_request` and :func:`encode_reply`
write any message as ``encode(message.to_wire())`` would. A new wire message
is one class in :mod:`jobqueue._requests` or :mod:`jobqueue._replies` and one
entry in a table here.

Every job costs a ``submit_job`` and a ``job_submitted``, a ``job_assigned``
and a ``job_complete`` and its ``ok``, so those are written (and the two
replies read) as text around JSON-encoded values, byte for byte what the
general path gives: the tests hold each fast path to that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._errors import UNKNOWN_TYPE, ProtocolError
from ._json import decode_object, encode, encode_field, encode_spliced, encode_value, utf8
from ._replies import (
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
from ._requests import (
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
    """Decode one line into a request message.

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
        payload = "null" if message.payload is None else encode_value(message.payload)
        text = f'{{"type":"submit_job","name":{encode_field(message.name)},"payload":{payload}}}\n'
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


_OK = Ok()
_OK_LINE = encode(_OK.to_wire())[:-1]


def encode_reply(reply: Reply) -> bytes:
    """``encode(reply.to_wire())``, byte for byte, with the commonest replies built directly.

    A server sends ``job_submitted`` and ``job_assigned`` for every job;
    building them as text skips the dict and the encoder's walk over it
    (only the name, id and payload go through the JSON encoder).

    Raises:
        ValueError, TypeError: as for :func:`encode`.
    """
    cls = type(reply)
    if cls is JobSubmitted:
        assert isinstance(reply, JobSubmitted)
        if not reply.duplicate:
            text = f'{{"type":"job_submitted","job_id":{encode_value(reply.job_id)}}}\n'
        else:
            return encode(reply.to_wire())
    elif cls is JobAssigned:
        assert isinstance(reply, JobAssigned)
        # The payload is usually stored as RawJSON: its bytes go in as they are.
        head = (
            f'{{"type":"job_assigned","job_id":{encode_value(reply.job_id)},'
            f'"name":{encode_value(reply.name)},"payload":'
        )
        tail = (
            f',"attempt":{int(reply.attempt)},'
            f'"lease_timeout":{encode_value(reply.lease_timeout)}}}\n'
        )
        return utf8(head) + encode_spliced(reply.payload) + utf8(tail)
    elif cls is Ok and reply == _OK:
        return _OK_LINE + b"\n"
    else:
        return encode(reply.to_wire())
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return utf8(text)


_SUBMITTED_HEAD = b'{"type":"job_submitted","job_id":"'


def decode_reply(line: bytes) -> Reply:
    """Decode one line from the server into a reply message.

    Raises:
        ProtocolError: if the line is not a reply this package knows.
    """
    if line == _OK_LINE:
        return _OK  # the commonest reply by far for a worker
    if line.startswith(_SUBMITTED_HEAD) and line.endswith(b'"}'):
        # The commonest for a producer, exactly as encode_reply writes it:
        # an id of printable ASCII with no quote or escape is read as is.
        job_id = line[len(_SUBMITTED_HEAD) : -2]
        if job_id.isascii() and b'"' not in job_id and b"\\" not in job_id:
            text = job_id.decode("ascii")
            if text.isprintable() and text:
                return JobSubmitted(text)
    obj = decode_object(line)
    from_wire = _REPLIES.get(obj["type"])
    if from_wire is None:
        raise ProtocolError(UNKNOWN_TYPE, f"unexpected reply type {obj['type']!r}")
    return from_wire(obj)
