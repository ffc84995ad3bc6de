"""Canonical JSON (extensions spec §3.2): the bytes a node directory signature covers.

Compact (``,`` and ``:`` without spaces), object keys sorted by code point at every depth,
arrays in order, strings escaped exactly as serde_json escapes them (``\\"``, ``\\\\``, ``\\n``,
``\\r``, ``\\t``, ``\\b``, ``\\f``, other code points below U+0020 as ``\\u00xx`` in lowercase hex,
everything else raw UTF-8, ``/`` not escaped), integers in decimal.

Refused with :class:`~registryd.errors.InvalidInput`: floats anywhere (their text form is not
portable), integers serde_json would read as floats (outside ``-2**63 .. 2**64-1``), lone
surrogates, and anything that is not a JSON value (dict with ``str`` keys, list, ``str``,
``int``, ``bool``, ``None``).
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidInput

I64_MIN = -(2**63)
U64_MAX = 2**64 - 1


def _check(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, (bool, str)):
            continue
        if isinstance(item, int):
            if not I64_MIN <= item <= U64_MAX:
                raise InvalidInput("integer out of the i64/u64 range in signed JSON")
        elif isinstance(item, float):
            raise InvalidInput("floats are not allowed in signed JSON")
        elif isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                raise InvalidInput("object keys must be strings in signed JSON")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            raise InvalidInput(f"not a JSON value: {type(item).__name__}")


def canonical_json(value: Any) -> bytes:
    """The canonical JSON bytes of ``value`` (spec §3.2); raises :class:`InvalidInput`."""
    _check(value)
    # json.dumps(ensure_ascii=False) escapes strings exactly as serde_json does (same short
    # escapes, lowercase \u00xx for the other control characters, U+007F and above raw) and
    # sort_keys orders by code point, which is the UTF-8 byte order serde_json's BTreeMap uses.
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        return text.encode("utf-8")
    except RecursionError:
        raise InvalidInput("signed JSON nested too deeply") from None
    except UnicodeEncodeError:
        raise InvalidInput("lone surrogate in signed JSON") from None
