"""Canonical JSON (extensions spec §3.2): vectors written by hand from serde_json's output rules."""

from __future__ import annotations

import datetime as dt

import pytest

from registryd import wire
from registryd.canonical import MAX_DEPTH, canonical_json
from registryd.errors import InvalidInput


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The seven short escapes, as serde_json writes them.
        ('"\\\n\r\t\b\f', rb'"\"\\\n\r\t\b\f"'),
        # Every other code point below U+0020: \u00xx with lowercase hex.
        ("\x00\x01\x0b\x0e\x1a\x1f", rb'"\u0000\u0001\u000b\u000e\u001a\u001f"'),
        # U+007F, non-ASCII, U+2028 and "/" are raw.
        ("\x7f", b'"\x7f"'),
        ("caf\u00e9 \u2028 \U0001f600", b'"caf\xc3\xa9 \xe2\x80\xa8 \xf0\x9f\x98\x80"'),
        ("a/b", b'"a/b"'),
        ("", b'""'),
        # Scalars.
        (0, b"0"),
        (-1, b"-1"),
        (2**64 - 1, b"18446744073709551615"),
        (-(2**63), b"-9223372036854775808"),
        (True, b"true"),
        (False, b"false"),
        (None, b"null"),
        ({}, b"{}"),
        ([], b"[]"),
        ((1, "x"), b'[1,"x"]'),
    ],
)
def test_scalars_and_escapes(value: object, expected: bytes) -> None:
    assert canonical_json(value) == expected


def test_compact_with_keys_sorted_at_every_depth_and_arrays_in_order() -> None:
    value = {"b": 1, "a": [3, 1, {"d": None, "c": True}], "c": {"z": {"y": 1, "x": 2}}}
    assert canonical_json(value) == b'{"a":[3,1,{"c":true,"d":null}],"b":1,"c":{"z":{"x":2,"y":1}}}'


def test_non_ascii_keys_sort_by_code_point() -> None:
    value = {"\u00e9": 1, "z": 2, "Z": 3, "a": 4, "\u00e0": 5}
    assert canonical_json(value) == b'{"Z":3,"a":4,"z":2,"\xc3\xa0":5,"\xc3\xa9":1}'


def test_an_astral_key_sorts_after_a_high_bmp_key_by_code_point_not_utf16() -> None:
    keys = ["\U0001f600", "\uff5a"]  # U+1F600 (UTF-16 D83D DE00) and U+FF5A
    assert sorted(keys, key=lambda k: k.encode("utf-16-be")) == keys  # UTF-16 would put 😀 first
    value = {"\U0001f600": 1, "\uff5a": 2}
    assert canonical_json(value) == b'{"\xef\xbd\x9a":2,"\xf0\x9f\x98\x80":1}'


def test_a_node_payload() -> None:
    payload = {
        "protocol_version": "1.0",
        "name": "Node \u00e9\u00e9n",
        "host": "node1.example.net",
        "api_base_url": "https://node1.example.net/api",
        "features": {"regions": ["eu", "us"], "max_peers": 64, "relay": True},
        "contact_email": "ops@example.net",
    }
    assert canonical_json(payload) == (
        b'{"api_base_url":"https://node1.example.net/api","contact_email":"ops@example.net",'
        b'"features":{"max_peers":64,"regions":["eu","us"],"relay":true},'
        b'"host":"node1.example.net","name":"Node \xc3\xa9\xc3\xa9n","protocol_version":"1.0"}'
    )


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (1.0, "payload: floats"),
        (float("nan"), "payload: floats"),
        (float("inf"), "payload: floats"),
        ({"a": [{"b": 0.5}]}, "payload.a[0].b: floats"),
        ([1, 2, -0.0], "payload[2]: floats"),
        (2**64, "payload: integer outside"),
        (-(2**63) - 1, "payload: integer outside"),
        ("\ud800", "payload: not valid Unicode"),
        ({"\udc00": 1}, "payload (a key): not valid Unicode"),
        ({1: "a"}, "payload: object keys must be strings"),
        (b"bytes", "payload: bytes has no JSON form"),
        ({"when": dt.datetime(2026, 1, 1)}, "payload.when: datetime has no JSON form"),
        ({1, 2}, "payload: set has no JSON form"),
    ],
)
def test_values_without_a_portable_form_are_refused(value: object, where: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        canonical_json(value)
    assert str(raised.value).startswith(f"invalid input: {where}")


def test_depth_is_bounded() -> None:
    ok: object = 1
    for _ in range(MAX_DEPTH):
        ok = [ok]
    assert canonical_json(ok) == b"[" * MAX_DEPTH + b"1" + b"]" * MAX_DEPTH
    with pytest.raises(InvalidInput, match="nested deeper"):
        canonical_json([ok])


def test_canonical_of_parsed_payload_ignores_input_spacing_and_order() -> None:
    raw = b'{ "name" : "n\\u0153ud",\n "features": {"b": [1, 2], "a": {"y": null, "x": "\\/"}} }'
    assert canonical_json(wire.loads(raw)) == (
        '{"features":{"a":{"x":"/","y":null},"b":[1,2]},"name":"nœud"}'.encode()
    )


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
