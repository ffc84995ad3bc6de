"""Canonical JSON (extensions spec §3.2) against serde_json's byte output rules, written out by
hand from serde_json's serializer (compact, BTreeMap key order, its escape table)."""

from __future__ import annotations

from typing import Any

import pytest

from registryd import wire
from registryd.canonical import canonical_json
from registryd.errors import InvalidInput


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, b"{}"),
        ([], b"[]"),
        (None, b"null"),
        (True, b"true"),
        (0, b"0"),
        (-5, b"-5"),
        (2**64 - 1, b"18446744073709551615"),  # u64::MAX
        (-(2**63), b"-9223372036854775808"),  # i64::MIN
        ({"b": 1, "a": [True, False, None]}, b'{"a":[true,false,null],"b":1}'),
        # nested objects sorted at every depth; arrays keep their order
        (
            {"z": {"y": [3, 1, {"d": 1, "c": 2}], "x": {}}, "a": ""},
            b'{"a":"","z":{"x":{},"y":[3,1,{"c":2,"d":1}]}}',
        ),
        # serde_json's escape table: short escapes, \u00xx lowercase, DEL and "/" raw
        ('"\\\n\r\t\b\f', b'"\\"\\\\\\n\\r\\t\\b\\f"'),
        ("\x00\x01\x1a\x1f", b'"\\u0000\\u0001\\u001a\\u001f"'),
        ("\x7f/<>&'", b'"\x7f/<>&\'"'),
        # non-ASCII is raw UTF-8, including U+2028/2029, which JavaScript serialisers escape
        ("nœud 東京 😀 \u2028\u2029", '"nœud 東京 😀 \u2028\u2029"'.encode()),
        # keys by code point (= UTF-8 byte order), not UTF-16 order: U+FFFF before U+1F600
        (
            {"😀": 1, "\uffff": 2, "é": 3, "z": 4, "Z": 5, "a": 6},
            '{"Z":5,"a":6,"z":4,"é":3,"\uffff":2,"😀":1}'.encode(),
        ),
        ({"k\n": "v"}, b'{"k\\n":"v"}'),
    ],
)
def test_canonical_bytes(value: Any, expected: bytes) -> None:
    assert canonical_json(value) == expected


def test_canonical_of_parsed_payload_ignores_input_spacing_and_order() -> None:
    raw = b'{ "name" : "n\\u0153ud",\n "features": {"b": [1, 2], "a": {"y": null, "x": "\\/"}} }'
    assert canonical_json(wire.loads(raw)) == (
        '{"features":{"a":{"x":"/","y":null},"b":[1,2]},"name":"nœud"}'.encode()
    )


@pytest.mark.parametrize(
    "value",
    [
        1.0,
        0.5,
        {"a": 1.5},
        {"a": {"b": [1, 2, {"c": -0.0}]}},
        [float("inf")],
        2**64,  # serde_json reads these as floats
        -(2**63) - 1,
        {"a": b"bytes"},
        (1, 2),
        {1: "non-string key"},
        {"a": {1, 2}},
        "lone \ud800 surrogate",
        {"a": object()},
    ],
)
def test_refused_values(value: Any) -> None:
    with pytest.raises(InvalidInput):
        canonical_json(value)


@pytest.mark.parametrize(
    "raw", [b"-0", b'{"a": -0}', b"18446744073709551616", b"-9223372036854775809", b"[1e3]"]
)
def test_wire_decoding_refuses_what_serde_json_reads_as_floats(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        canonical_json(wire.loads(raw))


def test_wire_decoding_keeps_integers_serde_json_keeps() -> None:
    assert wire.loads(b"[0, -1, 18446744073709551615, -9223372036854775808]") == [
        0,
        -1,
        2**64 - 1,
        -(2**63),
    ]
