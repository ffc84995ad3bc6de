"""Hex and base64 exactly as the reference decodes them (spec 1 "Hex rules", 4.1).

Hex input: upper, lower or mixed case; no ``0x``, no whitespace, even length, exact byte length.
Hex output: lowercase. Base64: standard alphabet, ``=`` padded on output, padded or unpadded on
input, canonical trailing bits only (as base64 0.22 requires).
"""

from __future__ import annotations

import base64
import binascii
import re

from .errors import InvalidInput

_HEX = re.compile(r"[0-9a-fA-F]*")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def decode_hex(value: object, length: int, field: str) -> bytes:
    """Decode ``value`` (a str of ``2 * length`` hex chars) to ``length`` bytes.

    Raises :class:`InvalidInput` naming ``field`` on any other input.
    """
    if not isinstance(value, str) or len(value) != 2 * length or not _HEX.fullmatch(value):
        raise InvalidInput(field)
    return bytes.fromhex(value)


def decode_b64(value: object, field: str) -> bytes:
    """Decode standard base64, padded or not; raises :class:`InvalidInput` naming ``field``."""
    if not isinstance(value, str) or not value.isascii() or not _B64.fullmatch(value):
        raise InvalidInput(field)
    body = value.rstrip("=")
    if len(body) % 4 == 1 or (value != body and len(value) % 4):
        raise InvalidInput(field)
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error as exc:
        raise InvalidInput(field) from exc
    if encode_b64(raw).rstrip("=") != body:  # non-canonical trailing bits
        raise InvalidInput(field)
    return raw


def encode_b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
