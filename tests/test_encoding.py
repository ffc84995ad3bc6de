"""Hex and base64 exactly as the reference decodes them (spec 1 "Hex rules", 4.1)."""

from __future__ import annotations

import base64
import re

import pytest

from registryd.encoding import decode_b64, decode_hex, encode_b64
from registryd.errors import InvalidInput

RAW = bytes.fromhex("00ff10ab7f80c3de")  # 8 bytes, e.g. a kid
LOWER = RAW.hex()


# --- hex -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [LOWER, LOWER.upper(), "00Ff10aB7F80c3dE"])
def test_hex_accepts_upper_lower_and_mixed_case(value: str) -> None:
    assert decode_hex(value, 8, "kid") == RAW


def test_hex_of_32_bytes() -> None:
    value = bytes(range(32)).hex()
    assert decode_hex(value, 32, "handle") == bytes(range(32))


@pytest.mark.parametrize(
    "value",
    [
        LOWER[:-1],  # odd length
        LOWER + "0",  # odd length
        "0x" + LOWER[2:],  # prefix, right total length
        "0x" + LOWER,  # prefix
        " " + LOWER[1:],  # whitespace, right total length
        LOWER[:-1] + "\n",
        LOWER[:8] + " " + LOWER[9:],
        LOWER[:-1] + "\t",
        "zz" + LOWER[2:],  # non-hex
        "gg" + LOWER[2:],
        LOWER[:-2] + "-1",
        LOWER[:-1] + "\u0661",  # ARABIC-INDIC DIGIT ONE: a digit, but not hex
        LOWER[:-2] + "\uff10\uff10",  # FULLWIDTH DIGIT ZERO
        LOWER[:-2],  # 7 bytes
        LOWER + "00",  # 9 bytes
        "",
    ],
)
def test_hex_rejects(value: str) -> None:
    with pytest.raises(InvalidInput, match=r"^invalid input: kid$"):
        decode_hex(value, 8, "kid")


@pytest.mark.parametrize("value", [None, 0, RAW, LOWER.encode(), [LOWER]])
def test_hex_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidInput):
        decode_hex(value, 8, "kid")


def test_hex_error_names_the_field_and_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=re.escape("invalid input: envelope.sender_pubkey")):
        decode_hex("xx", 32, "envelope.sender_pubkey")


# --- base64 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        ("", b""),
        ("QQ==", b"A"),
        ("QQ", b"A"),
        ("QUI=", b"AB"),
        ("QUI", b"AB"),
        ("QUJD", b"ABC"),
        ("+/+/", bytes([0xFB, 0xFF, 0xBF])),  # standard alphabet
        ("AAEC/w==", bytes([0, 1, 2, 255])),
        ("AAEC/w", bytes([0, 1, 2, 255])),
    ],
)
def test_base64_accepts_padded_and_unpadded(value: str, raw: bytes) -> None:
    assert decode_b64(value, "ciphertext") == raw


@pytest.mark.parametrize("length", range(0, 40))
def test_base64_round_trip_every_tail_length(length: int) -> None:
    raw = bytes((i * 37 + 11) % 256 for i in range(length))
    padded = encode_b64(raw)
    assert padded == base64.b64encode(raw).decode()  # standard alphabet, '=' padded
    assert len(padded) % 4 == 0
    assert decode_b64(padded, "ciphertext") == raw
    assert decode_b64(padded.rstrip("="), "ciphertext") == raw


@pytest.mark.parametrize(
    "value",
    [
        "QR==",  # non-canonical trailing bits (b"A" is QQ==)
        "QR",
        "QUJ=",  # b"AB" is QUI=
        "QUJ",
        "AAEC/x==",
        "-_-_",  # url-safe alphabet
        "AAEC_w==",
        "AAEC-w",
        "QQ!=",  # bad alphabet
        "Q Q==",  # whitespace
        "QQ==\n",
        " QQ==",
        "QUJDRA=\u00e9",
        "\u00c0QI=",  # non-ASCII
        "QQ=",  # incomplete padding
        "QQ===",  # too much padding
        "QUJD=",  # padding after a full quantum
        "QUJD====",
        "=",
        "==",
        "====",
        "QQ==QQ==",  # padding in the middle
        "Q=Q=",
        "QUJDR",  # 5 chars: one char left over can never be valid
        "Q",
    ],
)
def test_base64_rejects(value: str) -> None:
    with pytest.raises(InvalidInput, match=r"^invalid input: ciphertext$"):
        decode_b64(value, "ciphertext")


@pytest.mark.parametrize("value", [None, 1, b"QQ==", ["QQ=="]])
def test_base64_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidInput):
        decode_b64(value, "ciphertext")
