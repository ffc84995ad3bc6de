"""Times: the clock (:func:`now_ms`), and durations and times as operators type them.

``DURATION`` is a whole number with an optional unit: ``90s``, ``15m``, ``2h``, ``7d``; a bare
number is seconds. ``WHEN`` is a time: a ``DURATION`` with a unit or a leading ``+`` (``7d``,
``+3600``) is that long from now; a bare integer is Unix milliseconds; anything else is ISO-8601
(``2026-01-01T00:00:00Z``; no zone means UTC). Bad input raises :class:`ValueError` with a
message fit for the operator.
"""

from __future__ import annotations

import datetime as dt
import re
import time

UNITS_MS = {"": 1000, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"(\+?)(\d+)([smhd]?)")


def now_ms() -> int:
    """The wall clock in Unix milliseconds (the daemon's default clock)."""
    return time.time_ns() // 1_000_000


def parse_duration(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"7d"`` or a bare number of seconds, in milliseconds."""
    m = _DURATION.fullmatch(text.strip())
    if not m or m[1]:
        raise ValueError(f"expected a duration like 90s, 15m, 2h, 7d: {text!r}")
    return int(m[2]) * UNITS_MS[m[3]]


def parse_when(text: str, now_ms: int) -> int:
    """A time in Unix ms: ``7d`` / ``+3600`` from ``now_ms``, a bare integer (Unix ms), or
    ISO-8601 (UTC when no zone is given)."""
    text = text.strip()
    m = _DURATION.fullmatch(text)
    if m and (m[1] or m[3]):
        return now_ms + int(m[2]) * UNITS_MS[m[3]]
    if m:
        return int(m[2])
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected a time (7d, +3600, Unix ms or ISO-8601): {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def iso(ms: int | None) -> str:
    """Unix ``ms`` as ``2026-01-01T00:00:00Z`` (UTC, whole seconds); ``-`` for None."""
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
