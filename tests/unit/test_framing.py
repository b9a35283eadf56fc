"""Framing: LineDecoder splits bytes into lines, whatever the chunking.

Every byte stream is fed to a LineDecoder twice, once whole and once one byte
at a time, and both feeds must produce the same lines and the same errors.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue._errors import ProtocolError
from jobqueue._framing import EOF, NEED_DATA, LineDecoder
from jobqueue._limits import (
    MAX_LINE_BYTES,
)
from tests.helpers import feed, feed_both

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


def _events(decoder: LineDecoder, chunks: list[bytes]) -> list[object]:
    """Feed ``chunks`` then EOF; every line, error code and the end, in order."""
    events: list[object] = []

    def pull() -> bool:
        while True:
            try:
                line = decoder.next_line()
            except ProtocolError as exc:
                events.append(exc.code)
                continue
            if line is NEED_DATA:
                return False
            if line is EOF:
                events.append("EOF")
                return True
            events.append(line)

    for chunk in [*chunks, b""]:
        decoder.receive_data(chunk)
        if pull():
            break
    return events


_stream_lines = st.lists(
    st.sampled_from([b"", b"\r", b" ", b"a", b"ab\r", b"abcdefgh", b"abcdefghijk", b"\r\r"]),
    max_size=8,
)


@given(lines=_stream_lines, tail=st.sampled_from([b"", b"x", b"abcdefghijk"]), data=st.data())
def test_lines_do_not_depend_on_how_the_stream_is_cut(
    lines: list[bytes], tail: bytes, data: st.DataObject
) -> None:
    """One line per read (the whole-line fast path), random cuts and single bytes agree."""
    stream = b"".join(line + b"\n" for line in lines) + tail
    per_line = [line + b"\n" for line in lines] + ([tail] if tail else [])
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    random_cut = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    random_cut = [chunk for chunk in random_cut if chunk]
    bytewise = [stream[i : i + 1] for i in range(len(stream))]
    expected = _events(LineDecoder(max_line=8), bytewise)
    assert _events(LineDecoder(max_line=8), per_line) == expected
    assert _events(LineDecoder(max_line=8), random_cut) == expected
