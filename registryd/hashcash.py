"""Hashcash as spec 4.7 defines it: the client solves, the daemon checks (``abuse/pow.py``).

``x-enigma-pow: <challenge>:<solution>`` holds when ``SHA-256(ascii(challenge) ||
utf8(solution))`` starts with ``difficulty`` zero bits (:func:`leading_zero_bits_ok`).
:func:`solve` is the reference solver.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from typing import TypedDict

HEADER = "x-enigma-pow"
_SUFFIXES = tuple(b"%02x" % low for low in range(256))


class Challenge(TypedDict):
    """The ``GET /pow/challenge`` answer (spec 4.5, 4.7)."""

    challenge: str
    difficulty: int
    expires_ms: int


class SolveCancelled(Exception):
    """:func:`solve` was stopped through its ``stop`` event."""


def leading_zero_bits_ok(digest: bytes, difficulty: int) -> bool:
    """Spec 4.7: the first ``difficulty // 8`` bytes are zero and, when ``r = difficulty % 8``
    is not 0, the next byte has at least ``r`` leading zero bits."""
    full, rest = divmod(difficulty, 8)
    if difficulty < 0 or len(digest) * 8 < difficulty or any(digest[:full]):
        return False
    return rest == 0 or digest[full] >> (8 - rest) == 0


def solve(challenge: str, difficulty: int, *, stop: threading.Event | None = None) -> str:
    """The smallest counter, in lowercase hex, that solves ``challenge`` (the reference solver).

    Expected work is ``2**difficulty`` SHA-256 computations (~2 M/s in CPython). ``stop``, when
    set from another thread, makes it raise :class:`SolveCancelled` within ~65 000 hashes.
    """
    if not 0 <= difficulty <= 256:
        raise ValueError("difficulty must be 0..256 bits")
    if difficulty == 0:
        return "0"
    prefix = hashlib.sha256(challenge.encode("utf-8"))
    bound = (1 << (256 - difficulty)).to_bytes(32, "big")  # digest < bound: enough zero bits
    for counter in range(256):  # "0" .. "ff"
        attempt = prefix.copy()
        attempt.update(b"%x" % counter)
        if attempt.digest() < bound:
            return f"{counter:x}"
    for high in itertools.count(1):  # counter = high * 256 + low, in hex: f"{high:x}{low:02x}"
        if stop is not None and not high & 0xFF and stop.is_set():
            raise SolveCancelled()
        base = prefix.copy()
        base.update(b"%x" % high)
        copy = base.copy
        for low, suffix in enumerate(_SUFFIXES):
            attempt = copy()
            attempt.update(suffix)
            if attempt.digest() < bound:
                return f"{high:x}{low:02x}"
    raise AssertionError("unreachable")  # pragma: no cover
