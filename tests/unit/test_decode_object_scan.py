"""``decode_object``'s direct scan of a plain line refuses exactly what the full decode refuses."""

from __future__ import annotations

import pytest

from jobqueue._errors import BAD_JSON, BAD_REQUEST, ProtocolError
from jobqueue._json import decode_object


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"type":"x","a":[1,2.5,{"b":null}]}', {"type": "x", "a": [1, 2.5, {"b": None}]}),
        (b' {"type":"x"} ', {"type": "x"}),
        (b'{"type":"x"}  ', {"type": "x"}),
    ],
)
def test_objects_decode(line: bytes, expected: object) -> None:
    assert decode_object(line) == expected


@pytest.mark.parametrize(
    ("line", "code", "words"),
    [
        (b'{"type":"x"}{"type":"y"}', BAD_JSON, "Extra data"),
        (b'{"type":"x"', BAD_JSON, "column"),
        (b'{"type":"x","a":NaN}', BAD_JSON, "NaN is not valid JSON"),
        (b'{"type":"x","a":1e400}', BAD_JSON, "out of range"),
        (b'{"type":1}', BAD_REQUEST, 'string field "type"'),
        (b'{"kind":"x"}', BAD_REQUEST, 'string field "type"'),
        (b"[1]", BAD_REQUEST, "not an array"),
    ],
)
def test_refusals_are_those_of_the_full_decode(line: bytes, code: str, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_object(line)
    assert info.value.code == code
    assert words in info.value.message
