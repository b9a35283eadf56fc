"""Protocol fuzz against a live server.

Random lines, valid and not, sent over real connections: every line gets
exactly one reply of the right kind, and other clients are unaffected.
"""

from __future__ import annotations

import contextlib
import json
import math
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobqueue import Client, serve_queue
from jobqueue._codec import decode_reply
from jobqueue._json import encode
from tests.helpers import depth, stats_when

if TYPE_CHECKING:
    from tests.helpers import RawOpener

LOCALHOST = "127.0.0.1"
#: Every job state (protocol.md §5).
STATES = ("pending", "scheduled", "running", "completed", "failed", "cancelled")


#: A small line limit for the fuzzed server, so oversized lines are cheap to make.
FUZZ_MAX_LINE = 512
#: Which reply types each request type may get, besides an error (protocol.md §4).
REPLIES_FOR: dict[str, frozenset[str]] = {
    "hello": frozenset({"hello"}),
    "submit_job": frozenset({"job_submitted"}),
    "submit_jobs": frozenset({"jobs_submitted"}),
    "request_job": frozenset({"job_assigned", "no_job"}),
    "heartbeat": frozenset({"ok"}),
    "progress": frozenset({"ok"}),
    "job_complete": frozenset({"ok"}),
    "job_failed": frozenset({"ok"}),
    "job_status": frozenset({"job_status"}),
    "wait_job": frozenset({"job_status"}),
    "cancel_job": frozenset({"job_status"}),
    "retry_job": frozenset({"job_status"}),
    "delete_job": frozenset({"ok"}),
    "list_jobs": frozenset({"job_list"}),
    "stats": frozenset({"stats"}),
}
REQUEST_TYPES = tuple(REPLIES_FOR)
#: Errors about the line itself; a well-formed request of a known type never gets them.
LINE_ERRORS = frozenset({"bad_json", "unknown_type", "message_too_large", "incomplete_message"})
MAX_LINES = 12
#: Pending jobs kept in stock, so a fuzzed request_job never blocks waiting for one.
FUZZ_STOCK = 3 * MAX_LINES


@attrs.frozen
class FuzzCase:
    """What one example sends on a fresh connection: ``data``, cut into ``chunks``."""

    data: bytes
    chunk_sizes: list[int]

    def chunks(self) -> list[bytes]:
        out, rest = [], self.data
        sizes = self.chunk_sizes or [len(rest) or 1]
        for index in range(len(rest)):  # bounded: every chunk takes at least a byte
            if not rest:
                break
            size = sizes[index % len(sizes)]
            out.append(rest[:size])
            rest = rest[size:]
        return out


TOO_LARGE = b"<too large>"


def expected_lines(data: bytes) -> tuple[list[bytes], bool]:
    """The lines the server must answer one each, and whether EOF leaves a partial one.

    The framing rules of docs/protocol.md §2: lines end at ``\\n``, one trailing
    ``\\r`` is dropped, blank lines are skipped, a line over the limit gets one
    ``message_too_large`` (reported as :data:`TOO_LARGE` here), and non-blank
    bytes left at EOF get ``incomplete_message``.
    """
    *complete, tail = data.split(b"\n")
    lines = []
    for raw in complete:
        if len(raw) > FUZZ_MAX_LINE:
            lines.append(TOO_LARGE)
            continue
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if line.strip():
            lines.append(line)
    if len(tail) > FUZZ_MAX_LINE:
        lines.append(TOO_LARGE)  # detected while streaming, before EOF
        return lines, False
    return lines, bool(tail.strip())


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def line_error(line: bytes) -> str | None:
    """The error code a line must get before its fields are even read, if any."""
    if line is TOO_LARGE:
        return "message_too_large"
    try:
        value = json.loads(
            line.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return "bad_json"
    if depth(value) > 64:
        return "bad_json"
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return "bad_request"
    if value["type"] not in REPLIES_FOR:
        return "unknown_type"
    return None


def check_reply(line: bytes, reply: dict[str, Any]) -> None:
    """``reply`` is a valid answer to ``line``, or the right kind of error."""
    # Our own strict reply parser accepts it: every field has the documented type.
    decode_reply(encode(reply))
    if reply["type"] == "error":
        code = reply.get("code")
        assert isinstance(code, str), reply
        assert code.isidentifier(), reply
        assert code == code.lower(), reply
        assert isinstance(reply.get("message"), str), reply
    expected_error = line_error(line)
    if expected_error is not None:
        assert (reply["type"], reply.get("code")) == ("error", expected_error), (line, reply)
        return
    request_type = json.loads(line)["type"]
    if reply["type"] == "error":
        assert reply["code"] not in LINE_ERRORS, (line, reply)
    else:
        assert reply["type"] in REPLIES_FOR[request_type], (line, reply)


def never_blocks(message: dict[str, Any]) -> dict[str, Any]:
    """Drop ``wait`` from a request_job naming queues: the stock is only in ``default``."""
    if message.get("type") == "request_job" and "queues" in message:
        return {key: value for key, value in message.items() if key != "wait"}
    return message


def fuzz_cases(known_ids: list[str]) -> Any:
    """Hypothesis strategy for :class:`FuzzCase`; ``known_ids`` are real, finished jobs."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=10)
    )
    values = st.recursive(
        scalars,
        lambda kids: (
            st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3)
        ),
        max_leaves=6,
    )
    texts = st.text(max_size=10)
    fields = {
        "name": texts | values,
        "job_id": st.sampled_from(known_ids) | st.text(max_size=12) | values,
        "wait": st.floats(-1, 4000) | st.integers(-1, 4000) | values,
        "attempt": st.integers(-1, 4) | values,
        "payload": values,
        "result": values,
        "error": st.fixed_dictionaries({"type": texts}, optional={"message": texts}) | values,
        "queue": texts | values,
        "queues": st.lists(texts, max_size=3) | values,
        "priority": st.integers(-(10**7), 10**7) | values,
        "max_attempts": st.integers(-1, 1001) | values,
        "delay": st.floats(-1, 4e7) | values,
        "run_at": st.floats(0, 4e9) | values,
        "key": texts | values,
        "jobs": st.lists(
            st.dictionaries(st.sampled_from(["name", "payload", "x"]), values), max_size=3
        ),
        "progress": st.floats(allow_nan=False, allow_infinity=False) | values,
        "note": values,
        "state": st.sampled_from(STATES) | texts | values,
        "limit": st.integers(-1, 1001) | values,
    }
    # Mostly well-typed fields, so many requests get past validation...
    names = st.text(min_size=1, max_size=10)
    good_fields = {
        "name": names,
        "job_id": st.sampled_from(known_ids),
        "wait": st.floats(0, 3600) | st.integers(0, 5),
        "attempt": st.integers(1, 3),
        "payload": values,
        "result": values,
        "error": st.fixed_dictionaries({"type": texts}, optional={"message": texts}),
        "queue": st.just("default") | names,
        "queues": st.lists(st.just("default") | names, min_size=1, max_size=3),
        "priority": st.integers(-5, 5),
        "max_attempts": st.integers(1, 5),
        "delay": st.floats(0, 100),
        "key": names,
        "jobs": st.lists(
            st.fixed_dictionaries({"name": names}, optional={"payload": values}), max_size=3
        ),
        "progress": st.floats(0, 1),
        "note": values,
        "state": st.sampled_from(STATES),
        "limit": st.integers(1, 5),
    }
    plausible = st.fixed_dictionaries(
        {"type": st.sampled_from(REQUEST_TYPES)}, optional=good_fields
    )
    # ...and some with any type and any field values at all.
    types = st.sampled_from(REQUEST_TYPES) | st.text(max_size=12) | values
    junk = st.fixed_dictionaries({"type": types}, optional=fields)
    encoded = st.builds(
        lambda message, ascii_only: json.dumps(message, ensure_ascii=ascii_only).encode(),
        (plausible | plausible | junk).map(never_blocks),
        st.booleans(),
    )
    tricky = st.sampled_from(
        [
            b"1e400",
            b'{"type":"submit_job","name":"x","payload":1e400}',
            b'{"type":"submit_job","name":"x","payload":NaN}',
            b'{"type":"request_job","wait":Infinity}',
            b'{"type":"submit_job","name":"x","payload":' + b"9" * 4400 + b"}",
            b"[" * 70 + b"]" * 70,
            b'{"type":"hello","name":"' + b"[" * 100 + b'"}',
            b'{"type":"hello"',
            b'{"type":"stats"}\r',
            b"\xff\xfe",
            b'{"type":"hello","name":"\xc3"}',
            b'{"type":"job_status","job_id":"\\ud800"}',
            b'{"type":"stats","type":"hello"}',
            b" \t\x0b\x0c",
            b"\r",
        ]
    )
    oversized = st.builds(
        lambda n, filler: b'{"type":"hello","name":"' + filler * n + b'"}',
        st.integers(FUZZ_MAX_LINE - 30, FUZZ_MAX_LINE + 30),
        st.sampled_from([b"n", b" ", b"\r"]),
    )
    # Requests (mostly well-formed) weigh most: they reach the queue's rules.
    pieces = st.lists(
        st.one_of(
            encoded,
            encoded,
            encoded,
            encoded,
            values.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=40),
            tricky | oversized,
        ),
        min_size=1,
        max_size=MAX_LINES,
    )
    separators = st.lists(st.sampled_from([b"\n", b"\r\n", b"\n\n"]), min_size=MAX_LINES)
    tails = st.just(b"") | st.binary(max_size=12) | encoded.map(lambda b: b[:-3])
    return st.builds(
        lambda ps, seps, tail, sizes: FuzzCase(
            b"".join(p + sep for p, sep in zip(ps, seps, strict=False)) + tail, sizes
        ),
        pieces,
        separators,
        tails,
        st.lists(st.integers(1, 64), max_size=8),
    )


async def run_fuzz_case(address: tuple[str, int], case: FuzzCase) -> None:
    """Send ``case`` on a fresh connection, half-close it, and check every reply.

    Nothing a fuzzed line asks for can block (see ``FUZZ_STOCK``), so the server
    answers every line before it acts on the end of stream: what arrives before
    it closes must be exactly one reply per line, in order, plus
    ``incomplete_message`` if a partial line was left over.
    """
    lines, partial_tail = expected_lines(case.data)
    received = b""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(*address)
        async with stream, trio.open_nursery() as nursery:

            async def send_all() -> None:
                for chunk in case.chunks():
                    await stream.send_all(chunk)
                await stream.send_eof()

            nursery.start_soon(send_all)
            while data := await stream.receive_some(65536):
                received += data
    *reply_lines, unterminated = received.split(b"\n")
    assert unterminated == b"", f"a reply was cut short: {unterminated!r}"
    messages = [json.loads(line) for line in reply_lines]
    # A job_cancelled notice is not a reply (protocol.md §3.3): set it aside.
    replies = [m for m in messages if m["type"] != "job_cancelled"]
    for notice in messages:
        if notice["type"] == "job_cancelled":
            assert notice.keys() == {"type", "job_id", "attempt"}, notice
    expected_count = len(lines) + partial_tail
    assert len(replies) == expected_count, (
        f"{len(replies)} replies to {len(lines)} lines "
        f"{'and a partial one ' if partial_tail else ''}in {case.data!r}: {replies}"
    )
    for line, reply in zip(lines, replies, strict=False):
        check_reply(line, reply)
    if partial_tail:
        assert (replies[-1]["type"], replies[-1].get("code")) == ("error", "incomplete_message")


async def test_protocol_fuzz_one_reply_per_line_and_others_unaffected(
    raw_connection: RawOpener,
) -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            partial(serve_queue, 0, host=LOCALHOST, max_line_bytes=FUZZ_MAX_LINE)
        )
        async with (
            Client.connect(*address, name="well-behaved") as good,
            raw_connection(address) as fake_worker,
        ):
            # Real, finished jobs for fuzzed job_ids to name (a wait_job on them
            # answers at once), then a stock of pending jobs so that a fuzzed
            # request_job is always answered at once too.
            finished = [await good.submit("done") for _ in range(3)]
            for job_id in finished:
                assert (await fake_worker.request({"type": "request_job"}))["job_id"] == job_id
                await fake_worker.request({"type": "job_complete", "job_id": job_id})
            baseline = (await good.stats()).connections
            probes: list[str] = []

            async def one_example(case: FuzzCase) -> None:
                with trio.fail_after(5):
                    # Jobs a fuzzed connection took came back when it closed
                    # (spending an attempt: hence the big budget), and any it
                    # finished or cancelled are replaced.
                    pending = (await good.stats()).jobs["pending"]
                    for _ in range(FUZZ_STOCK - pending):
                        await good.submit("stock", max_attempts=1000)
                await run_fuzz_case(address, case)
                with trio.fail_after(5):
                    # The fuzzed connection is gone; the good one works as ever.
                    await stats_when(good, lambda s: s.connections == baseline)
                    probe = await good.submit("probe", len(probes), priority=-1)
                    info = await good.status(probe)
                assert (info.job_id, info.name, info.state) == (probe, "probe", "pending")
                probes.append(probe)

            @settings(
                max_examples=30,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=fuzz_cases([*finished, "nope", "00000000-1"]))
            def fuzz_property(case: FuzzCase) -> None:
                trio.from_thread.run(one_example, case)

            # Hypothesis drives from a thread; every example runs back in this
            # trio run, against the one server and the one good connection.
            await trio.to_thread.run_sync(fuzz_property)
            assert len(probes) >= 30
        nursery.cancel_scope.cancel()


async def test_protocol_fuzz_before_the_token_changes_nothing() -> None:
    # With a token, whatever a stranger sends gets at most one error line and
    # a closed connection: nothing reaches the queue.
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            partial(serve_queue, 0, host=LOCALHOST, max_line_bytes=FUZZ_MAX_LINE, token="t0ken")
        )
        async with Client.connect(*address, name="well-behaved", token="t0ken") as good:
            job_id = await good.submit("done")
            before = await good.stats()

            async def one_example(case: FuzzCase) -> None:
                received = b""
                with trio.fail_after(5):
                    stream = await trio.open_tcp_stream(*address)
                    async with stream:
                        with contextlib.suppress(trio.BrokenResourceError):
                            for chunk in case.chunks():
                                await stream.send_all(chunk)
                            await stream.send_eof()
                        with contextlib.suppress(trio.BrokenResourceError):
                            while data := await stream.receive_some(65536):
                                received += data
                replies = [json.loads(line) for line in received.splitlines()]
                assert len(replies) <= 1, replies
                if replies:
                    assert replies[0]["type"] == "error", replies
                    assert replies[0]["code"] in LINE_ERRORS | {"unauthorized", "bad_request"}
                with trio.fail_after(5):
                    await stats_when(good, lambda s: s.connections == before.connections)
                    after = await good.stats()
                assert (after.totals, after.jobs) == (before.totals, before.jobs)
                assert (await good.status(job_id)).state == "pending"

            @settings(
                max_examples=30,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=fuzz_cases([job_id, "nope"]))
            def fuzz_property(case: FuzzCase) -> None:
                trio.from_thread.run(one_example, case)

            await trio.to_thread.run_sync(fuzz_property)
        nursery.cancel_scope.cancel()
