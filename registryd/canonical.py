"""Canonical JSON of a signed payload (extensions spec §3.2): the bytes both sides sign and verify.

``canonical_json(value)`` is compact JSON (``,`` and ``:`` with no spaces), object keys sorted by
code point at every depth, arrays in order, integers in decimal, and strings escaped exactly as
serde_json escapes them: ``\\"``, ``\\\\``, ``\\n``, ``\\r``, ``\\t``, ``\\b``, ``\\f``, every other
code point below U+0020 as ``\\u00xx`` (lowercase hex), everything else (U+007F, non-ASCII, ``/``)
raw UTF-8.

The text is produced by the standard library's ``json.dumps(ensure_ascii=False, sort_keys=True,
separators=(",", ":"))``, whose escaping is exactly serde_json's (both escape the same set with
the same short forms and lowercase ``\\u00xx``), and whose ``sort_keys`` compares ``str`` by code
point (not by UTF-16 unit, which orders astral characters differently). What ``json`` does not do
is refuse what has no portable text form, so :func:`canonical_json` first checks the value:

- a float anywhere (``1.0``, NaN, infinities): its text differs between implementations;
- an integer outside serde_json's i64/u64 range (-2**63 .. 2**64-1), which serde_json would read
  as a float;
- a string (value or key) that is not valid Unicode (a lone surrogate), a non-string object key,
  or any other type (bytes, datetimes from TOML, sets ...);
- nesting deeper than :data:`MAX_DEPTH` levels.

Each is an :class:`~registryd.errors.InvalidInput` (a ``ValueError``; 400 in the registry) whose
detail names the offending location, e.g. ``payload.features.ratio: floats are not allowed``.
"""

from __future__ import annotations

import json

from .errors import InvalidInput

MAX_DEPTH = 64
I64_MIN = -(2**63)
U64_MAX = 2**64 - 1


def canonical_json(value: object, *, where: str = "payload") -> bytes:
    """The canonical JSON bytes (UTF-8) of ``value`` — dicts with ``str`` keys, lists or tuples,
    ``str``, ``int``, ``bool`` and ``None`` — per §3.2.

    ``where`` names the value in error details. Raises :class:`InvalidInput` as described in the
    module docstring; nothing is encoded when it does.
    """
    _check(value, where, 0)
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text.encode("utf-8")


def _check(value: object, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not I64_MIN <= value <= U64_MAX:
            raise InvalidInput(f"{where}: integer outside the 64-bit range")
        return
    if isinstance(value, float):
        raise InvalidInput(f"{where}: floats are not allowed (their text form is not portable)")
    if isinstance(value, str):
        _check_text(value, where)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{where}: object keys must be strings")
            _check_text(key, f"{where} (a key)")
            _check(item, f"{where}.{key[:64]}", depth + 1)
        return
    raise InvalidInput(f"{where}: {type(value).__name__} has no JSON form here")


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{where}: not valid Unicode (lone surrogate)") from None
