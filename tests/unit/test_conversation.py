"""The clients' sans-IO ``Conversation``: replies settle requests by position.

A model of protocol §3.1 holds :meth:`Conversation.receive` (whose usual
reply, the one the oldest request expects, takes a shorter path than the
rest) to the rules: the oldest request pending gets the next reply, an
``error`` reply becomes its :class:`RequestError`, a ``job_cancelled`` notice
is skipped, and a reply of the wrong kind breaks the conversation, failing
every request pending with :class:`ConnectionLost`. The bytes come in any
cuts.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jobqueue._client_core import Conversation, Pending
from jobqueue._errors import ConnectionLost, RequestError
from jobqueue._replies import JobInfo, JobSubmitted, Ok, Reply

#: Lines the server might send, with what each settles a request as: the
#: reply's class, or the error code.
_LINES: dict[str, tuple[bytes, type[Reply] | str | None]] = {
    "submitted": (b'{"type":"job_submitted","job_id":"j-1"}', JobSubmitted),
    "submitted_escaped": (b'{"type":"job_submitted","job_id":"j\\u00e9"}', JobSubmitted),
    "ok": (b'{"type":"ok"}', Ok),
    "info": (
        b'{"type":"job_status","job_id":"j-1","name":"n","state":"pending","attempt":0}',
        JobInfo,
    ),
    "error": (b'{"type":"error","code":"unknown_job","message":"no"}', "unknown_job"),
    "notice": (b'{"type":"job_cancelled","job_id":"j-1","attempt":1}', None),
}

#: Requests by wire type, and the reply class each expects.
_EXPECTS = {"submit_job": JobSubmitted, "delete_job": Ok, "job_status": JobInfo}


@settings(max_examples=300, deadline=None)
@given(
    types=st.lists(st.sampled_from(sorted(_EXPECTS)), min_size=1, max_size=6),
    lines=st.lists(st.sampled_from(sorted(_LINES)), max_size=8),
    cuts=st.lists(st.integers(1, 40), max_size=20),
)
def test_replies_settle_requests_as_the_protocol_says(
    types: list[str], lines: list[str], cuts: list[int]
) -> None:
    conv = Conversation("q:1")
    pendings = [conv.expect(kind) for kind in types]
    data = b"".join(_LINES[name][0] + b"\n" for name in lines)
    settled: list[Pending] = []
    for cut in [*cuts, len(data)]:
        chunk, data = data[:cut], data[cut:]
        if chunk:  # b"" would say the server closed
            settled += conv.receive(chunk)

    # The model: walk the replies over the requests, oldest first.
    expected: list[object] = []
    broken = False
    waiting = list(types)
    for name in lines:
        kind = _LINES[name][1]
        if kind is None:
            continue  # a notice: skipped
        if not waiting:
            broken = True  # an answer nobody asked for
            break
        if isinstance(kind, str) or kind is _EXPECTS[waiting[0]]:
            expected.append(kind)
        else:
            broken = True
            break
        waiting.pop(0)

    outcomes = [pending.outcome for pending in pendings]
    for outcome, want in zip(outcomes, expected, strict=False):
        if isinstance(want, str):
            assert isinstance(outcome, RequestError)
            assert outcome.code == want
        else:
            assert type(outcome) is want
    rest = outcomes[len(expected) :]
    if broken:
        assert conv.broken is not None
        assert all(isinstance(outcome, ConnectionLost) for outcome in rest)
        assert len(settled) == len(pendings)
    else:
        assert conv.broken is None
        assert rest == [None] * len(rest)
        assert len(settled) == len(expected)
        assert conv.outstanding == len(rest)
    assert sorted(map(id, settled)) == sorted(id(p) for p in pendings if p.outcome is not None)
