"""The journal's fast encoders write exactly what the generic one writes.

``encode_event`` takes a hand-written path for the events of an ordinary
job's life (``jobqueue._journal.FAST``); the format is defined by the
generic ``pack``. These tests hold each fast path to it byte for byte, for
arbitrary field values (raw ``bytes``, ``None``, unicode and lone
surrogates, floats that are not finite, ints and bools where strings are
expected), and in sequences, since the paths remember the last time they
wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jobqueue import _journal_fast
from jobqueue._events import (
    Assigned,
    Completed,
    Event,
    Forgotten,
    Promoted,
    Released,
    Revived,
    Submitted,
)
from jobqueue._job import FLAT_FIELDS, JobState
from jobqueue._journal import decode_event, encode_event, encode_generic, pack
from jobqueue._journal_fast import FAST
from jobqueue._snapshot import _CAPTURED, _TO_FLAT, JOB_LAYOUT, RecordMemory, _job_record, capture
from jobqueue._state import QueueState

OFFSET = 1_765_051_234.567_891_2  # a wall-clock offset as the server has one

#: Unicode, and what JSON escapes, lone surrogates (which UTF-8 cannot carry) too.
awkward = ["a", "é", "😀", '"', "\\", "\n", "\x00", "\ud800", "\udfff"]
texts = st.one_of(st.text(max_size=12), st.text(alphabet=st.sampled_from(awkward)))
# A few shared values, so that successive events repeat a time (as the jobs
# of one command do), zero of both signs among them; and any float at all.
times = st.one_of(st.sampled_from([0.0, -0.0, 12.5, 81_234.567_890_12, 1e-300, -3.0]), st.floats())
raw = st.sampled_from([b'{"a":1}', b'"\xc3\xa9"', b"[1,2]", b'"\\u0000"', b"x"])
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    texts,
    raw,
    st.just([1, "x"]),
)
offsets = st.one_of(
    st.sampled_from([0.0, -0.0, OFFSET, -5.0, 1.7e9]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just(float("inf")),
)
#: Each kind's fields as the server gives them (what its fast path takes).
usual: dict[type[Any], list[st.SearchStrategy[Any]]] = {
    Submitted: [
        texts,
        texts,
        st.one_of(st.none(), raw),
        st.integers(),
        texts,
        st.integers(),
        st.integers(),
        st.one_of(st.none(), times),
        st.one_of(st.none(), texts),
        times,
    ],
    Assigned: [texts, st.one_of(st.integers(), texts), st.one_of(st.none(), texts), times, times],
    Completed: [texts, st.one_of(st.none(), raw), times],
    **{cls: [texts] for cls in (Forgotten, Promoted, Released, Revived)},
}


@st.composite
def events(draw: st.DrawFn) -> Event:
    """An event of a fast kind, its fields as usual, or one of them anything at all."""
    cls = draw(st.sampled_from(sorted(usual, key=lambda c: c.__name__)))
    fields = [draw(field) for field in usual[cls]]
    if draw(st.booleans()):
        fields[draw(st.integers(0, len(fields) - 1))] = draw(anything)
    event: Event = cls(*fields)
    return event


def outcome(
    encode: Callable[[Event, float], bytes], event: Event, offset: float
) -> tuple[str, Any]:
    """What ``encode(event, offset)`` gives: its bytes, or the type of what it raised."""
    try:
        return ("bytes", encode(event, offset))
    except Exception as exc:  # the generic path's own errors: NaN, bad types
        return ("raises", type(exc))


@settings(max_examples=400, deadline=None)
@given(st.lists(events(), min_size=1, max_size=6), offsets)
def test_the_fast_paths_write_what_the_generic_encoder_writes(
    sequence: list[Event], offset: float
) -> None:
    for event in sequence:
        assert type(event) in FAST
        fast = outcome(encode_event, event, offset)
        assert fast == outcome(encode_generic, event, offset), event


def test_the_server_s_events_take_the_fast_paths() -> None:
    # What the server journals for an ordinary job: held to the fast paths
    # (a path that gave up on them would cost the time it was written to save).
    job = "3f9a2c1b-12345"
    ordinary: list[Event] = [
        Submitted(job, "noop", None, 12345, "default", 0, 5, None, None, 81_234.5),
        Submitted(job, "resize", b'{"i":1}', 12345, "images", 3, 2, 99.5, "k-1", 81_234.5),
        Assigned(job, 17, "worker-1", 81_264.5, 81_234.5),
        Assigned(job, 17, None, 81_264.5, 81_234.5),
        Completed(job, None, 81_235.0),
        Completed(job, b'{"ok":true}', 81_235.0),
        Forgotten(job),
        Promoted(job),
        Released(job),
        Revived(job),
    ]
    for event in ordinary:
        fast = FAST[type(event)](event, OFFSET)
        assert fast is not None, event
        assert fast == encode_generic(event, OFFSET)
        assert decode_event(fast, OFFSET) == event


def test_a_job_s_records_keep_their_bytes() -> None:
    # The format, pinned: a journal written before the fast paths reads the same.
    job = "3f9a2c1b-7"
    assert [
        encode_event(event, 1_700_000_000.0)
        for event in (
            Submitted(job, "noop", b'{"i":1}', 7, "default", 0, 5, None, None, 1000.25),
            Assigned(job, 3, "worker-1", 1030.5, 1000.5),
            Completed(job, None, 1001.0),
            Forgotten(job),
        )
    ] == [
        b'["Submitted",4,"3f9a2c1b-7","noop",null,7,"default",0,5,null,null,1700001000.25]\n'
        b'{"i":1}',
        b'["Assigned",0,"3f9a2c1b-7",3,"worker-1",1700001030.5,1700001000.5]',
        b'["Completed",0,"3f9a2c1b-7",null,1700001001.0]',
        b'["Forgotten",0,"3f9a2c1b-7"]',
    ]


def test_a_remembered_time_is_not_taken_for_an_equal_one_of_another_text() -> None:
    # 0.0 == -0.0 but they are written differently; NaN is written by neither.
    nan = float("nan")
    for at in (0.0, -0.0, 0.0, nan, nan, 5.0, 5.0):
        for event in (
            Submitted("j", "n", None, 1, at=at),
            Assigned("j", 1, None, at, at),
            Completed("j", None, at),
        ):
            fast = outcome(encode_event, event, -0.0)
            assert fast == outcome(encode_generic, event, -0.0), event


# -- snapshot records ------------------------------------------------------------------

finished = [state for state in JobState if state.value in ("completed", "failed", "cancelled")]
#: A snapshot's job, in FLAT_FIELDS order, as the server has one: never run,
#: or finished with a run; then, sometimes, one field anything at all.
never_ran = st.tuples(
    texts, texts, st.one_of(st.none(), raw), st.integers(), texts, st.integers(), st.integers(),
    st.one_of(st.none(), texts), st.sampled_from([JobState.PENDING, JobState.SCHEDULED]),
    st.one_of(st.none(), times), times, st.sampled_from([0, 0, 1]),
    st.one_of(st.none(), st.none(), st.just(7)), st.one_of(st.none(), st.none(), texts),
    st.one_of(st.sampled_from([0.0, -0.0]), times), st.one_of(st.none(), st.none(), times),
    st.none(), st.none(), st.one_of(st.none(), st.none(), raw), st.none(), st.none(),
    st.sampled_from([0, 0, 1]),
)  # fmt: skip
ran = st.tuples(
    texts, texts, st.one_of(st.none(), raw), st.integers(), texts, st.integers(), st.integers(),
    st.one_of(st.none(), texts), st.sampled_from(finished), st.one_of(st.none(), times), times,
    st.integers(0, 5), st.one_of(st.none(), st.integers(), texts), st.one_of(st.none(), texts),
    times, st.one_of(st.none(), times), st.none(), st.one_of(st.none(), raw),
    st.one_of(st.none(), raw), st.none(), times, st.integers(0, 3),
)  # fmt: skip


@st.composite
def jobs(draw: st.DrawFn) -> tuple[Any, ...]:
    fields = list(draw(st.one_of(never_ran, ran)))
    if draw(st.booleans()):
        fields[draw(st.integers(0, len(fields) - 1))] = draw(
            st.one_of(anything, st.sampled_from(list(JobState)), st.just({"type": "E"}))
        )
    return tuple(fields)


class _Text(str):
    """A string that is not a ``str`` (equal to one)."""


def equal_twins(value: Any) -> list[Any]:
    """``value`` and the values equal to it of another type or sign, where there are any."""
    twins = [value]
    if type(value) is int:
        twins.append(float(value))
        if value in (0, 1):
            twins.append(bool(value))
    elif type(value) is float:
        if value == 0:
            twins.append(-value)
        elif value.is_integer():
            twins.append(int(value))
    elif type(value) is bytes:
        twins.append(bytearray(value))
    elif type(value) is str:
        twins.append(_Text(value))
    return twins


@st.composite
def batch_of_jobs(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Jobs as one command leaves them: alike but for id, seq and payload; now and then a
    field equal to the first job's but of another type or sign."""
    first = draw(jobs())
    batch = [first]
    for _ in range(draw(st.integers(1, 5))):
        fields = list(first)
        fields[0], fields[2], fields[3] = (
            draw(texts),
            draw(st.one_of(st.none(), raw)),
            draw(st.integers()),
        )
        if draw(st.booleans()):
            index = draw(st.integers(4, len(fields) - 1))
            fields[index] = draw(st.sampled_from(equal_twins(fields[index])))
        batch.append(tuple(fields))
    return batch


#: A job in FLAT_FIELDS order as capture() copies it.
captured = itemgetter(*(FLAT_FIELDS.index(name) for name in _CAPTURED))


def generic_record(flat: tuple[Any, ...], offset: float) -> bytes:
    values = list(flat)
    values[FLAT_FIELDS.index("state")] = values[FLAT_FIELDS.index("state")].value
    return pack(JOB_LAYOUT, values, offset)


def check_snapshot_records(sequence: list[tuple[Any, ...]], offset: float) -> None:
    """The fast path, one memory for all of ``sequence``, writes what ``pack`` writes."""
    memory = RecordMemory()
    for flat in sequence:
        try:
            fast = _job_record(captured(flat), offset, memory)
        except Exception as exc:  # pragma: no cover  (a failure's report)
            raise AssertionError(f"the fast path raised {exc!r} for {flat}") from exc
        if fast is not None:
            assert fast == generic_record(flat, offset), flat


@settings(max_examples=400, deadline=None)
@given(st.lists(jobs(), min_size=1, max_size=6), offsets)
def test_the_snapshot_fast_path_writes_what_pack_writes(
    sequence: list[tuple[Any, ...]], offset: float
) -> None:
    check_snapshot_records(sequence, offset)


@settings(max_examples=400, deadline=None)
@given(batch_of_jobs(), offsets)
def test_a_batch_s_shared_text_is_taken_only_for_what_writes_it(
    batch: list[tuple[Any, ...]], offset: float
) -> None:
    check_snapshot_records(batch, offset)


def test_a_batch_s_jobs_share_the_text_of_their_common_fields() -> None:
    state = QueueState(id_prefix="3f9a2c1b-")
    jobs = [state.submit("noop", None, 81_234.5)[0] for _ in range(3)]
    for job in jobs:
        assert state.assign(7, 81_235.0, "worker-1") is job
    for job in jobs:
        state.complete(job.id, 7, 1, None, 81_236.0)
    memory = RecordMemory()
    fields_at = list(capture(state).fields())
    records = [_job_record(fields, OFFSET, memory) for fields in fields_at]
    rest = memory.rest
    assert rest is not None
    assert records == [generic_record(_TO_FLAT(fields), OFFSET) for fields in fields_at]
    assert _job_record(next(capture(state).fields()), OFFSET, memory) == records[0]
    assert memory.rest is rest  # taken, not written again


def test_a_snapshot_s_usual_jobs_take_the_fast_path() -> None:
    state = QueueState(id_prefix="3f9a2c1b-")
    now = 81_234.5
    for index in range(4):
        payload = b'{"i":1}' if index % 2 else None
        job, _ = state.submit("noop", payload, now, key=f"k{index}" if index == 3 else None)
        if index < 2:
            assert state.assign(7, now, "worker-1") is job
            state.complete(job.id, 7, 1, b"[1]" if index else None, now)
        now += 1.25
    memory = RecordMemory()
    jobs = list(capture(state).fields())
    assert len(jobs) == 4
    for fields in jobs:
        fast = _job_record(fields, OFFSET, memory)
        assert fast is not None, fields
        assert fast == generic_record(_TO_FLAT(fields), OFFSET)


def test_a_snapshot_never_takes_a_remembered_time_for_zero_of_the_other_sign() -> None:
    memory = RecordMemory()
    for at in (0.0, -0.0, 0.0, float("nan"), float("nan"), 5.0, 5.0):
        head: tuple[Any, ...] = ("j", "n", None, 1, "q", 0, 5, None, JobState.COMPLETED, at, at)
        flat = (*head, 1, 7, "w", at, at, None, None, None, None, at, 0)
        fast = _job_record(captured(flat), -0.0, memory)
        assert fast is None or fast == generic_record(flat, -0.0), flat


# -- a command's events ------------------------------------------------------------------

#: Where each kind's fields that its jobs do not share are: id, payload, seq.
_OWN_EVENT_FIELDS = {Submitted: (0, 2, 3), Assigned: (0,)}
#: Where each kind's times are (shifted to zero, the one equal value of another text).
_EVENT_TIMES = {Submitted: (7, 9), Assigned: (3, 4)}
zeros = st.sampled_from([0.0, -0.0])


@st.composite
def batch_of_events(draw: st.DrawFn) -> tuple[list[Event], list[float]]:
    """Events as one command applies them (a ``submit_many``, a ``jobs_assigned``): alike
    but for their own fields; now and then a field, or the offset, equal to the first's but
    of another type or sign. Returns the events and each one's offset."""
    cls = draw(st.sampled_from([Submitted, Assigned]))
    first = [draw(field) for field in usual[cls]]
    offset = draw(offsets)
    own, at = _OWN_EVENT_FIELDS[cls], _EVENT_TIMES[cls]
    if draw(st.booleans()):  # times that are zero once shifted
        offset = draw(zeros)
        for index in at:
            first[index] = draw(zeros)
    batch: list[Event] = [cls(*first)]
    shifts = [offset]
    shared = [index for index in range(len(first)) if index not in own]
    for _ in range(draw(st.integers(1, 5))):
        fields = list(first)
        for index in own:
            fields[index] = draw(usual[cls][index])
        if draw(st.booleans()):
            index = draw(st.one_of(st.sampled_from(at), st.sampled_from(shared)))
            fields[index] = draw(st.sampled_from(equal_twins(fields[index])))
        batch.append(cls(*fields))
        shifts.append(draw(st.sampled_from(equal_twins(offset))))
    return batch, shifts


@settings(max_examples=150, deadline=None)
@given(batch_of_events())
def test_a_command_s_shared_text_is_taken_only_for_what_writes_it(
    batch: tuple[list[Event], list[float]],
) -> None:
    for event, offset in zip(*batch, strict=True):
        fast = outcome(encode_event, event, offset)
        assert fast == outcome(encode_generic, event, offset), (event, offset)


def test_a_command_s_events_share_the_text_of_their_common_fields() -> None:
    # Held to the memory, so that a path that stopped taking it is noticed.
    submitted = [
        Submitted(f"j-{seq}", "noop", None, seq, "default", 0, 5, None, None, 81_234.5)
        for seq in (1, 2)
    ]
    assigned = [Assigned(f"j-{seq}", 7, "worker-1", 81_264.5, 81_234.5) for seq in (1, 2)]
    for events, memory in (
        (submitted, _journal_fast._SUBMITTED_SHARED),
        (assigned, _journal_fast._ASSIGNED_SHARED),
    ):
        first = encode_event(events[0], OFFSET)
        kept = memory[0]
        assert kept[0], "the first event's shared text is kept"
        second = encode_event(events[1], OFFSET)
        assert memory[0] is kept  # taken, not written again
        assert [first, second] == [encode_generic(event, OFFSET) for event in events]
