"""What the agent does after a failed call (extensions spec §4, after posemesh node-registration).

    403, 409                                  CONFLICT   cool down register_interval_seconds
    408, 429, 5xx, transport/protocol errors  RETRYABLE  min(2**attempt, 60) s x U(0.8, 1.2)
    any other status (other 4xx, 3xx)         SLOW       register_interval_seconds

``attempt`` counts the failures in a row, this one included (1, 2, 3 ...: 2 s, 4 s, 8 s ... 60 s,
as posemesh). After ``max_retry`` failures in a row (unless it is -1) the agent pauses
``register_interval_seconds`` and starts counting again. A ``Retry-After`` header (delay in
seconds or an HTTP-date) wins when it asks for longer, up to :data:`MAX_RETRY_AFTER_SECONDS`
(a registry cannot park a node for days by mistake). CONFLICT and SLOW warnings are logged at
most once per :data:`WARN_EVERY_SECONDS` each; the rest go to the debug level.
"""

from __future__ import annotations

import email.utils
import enum
import random
from collections.abc import Callable
from typing import NamedTuple

MAX_BACKOFF_SECONDS = 60
MAX_RETRY_AFTER_SECONDS = 3600
WARN_EVERY_SECONDS = 180
JITTER = (0.8, 1.2)


class Outcome(enum.Enum):
    """The class of a failed call."""

    CONFLICT = "conflict"
    RETRYABLE = "retryable"
    SLOW = "slow retry"


def classify(status: int | None) -> Outcome:
    """The class of a failure with HTTP ``status`` (None: transport or protocol failure)."""
    if status is None or status in (408, 429) or status >= 500:
        return Outcome.RETRYABLE
    if status in (403, 409):
        return Outcome.CONFLICT
    return Outcome.SLOW


def backoff_seconds(attempt: int, rng: random.Random) -> float:
    """``min(2**attempt, 60) * U(0.8, 1.2)`` seconds for the ``attempt``-th failure in a row."""
    base = min(1 << min(attempt, 6), MAX_BACKOFF_SECONDS)
    return base * rng.uniform(*JITTER)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header as seconds from ``now`` (Unix s), capped at one hour; None when
    absent or unparsable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(int(value))
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        seconds = max(0.0, when.timestamp() - now)
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


class Plan(NamedTuple):
    """What to do after a failure: wait ``delay`` seconds; ``paused`` after ``max_retry``."""

    outcome: Outcome
    delay: float
    paused: bool


def plan(
    outcome: Outcome,
    attempt: int,
    *,
    register_interval: float,
    max_retry: int,
    retry_after: float | None,
    rng: random.Random,
) -> Plan:
    """The wait after the ``attempt``-th failure in a row, of class ``outcome``."""
    paused = max_retry != -1 and attempt >= max_retry
    if paused or outcome is not Outcome.RETRYABLE:
        delay = float(register_interval)
    else:
        delay = backoff_seconds(attempt, rng)
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return Plan(outcome, delay, paused)


class WarnLimiter:
    """Allows one warning per ``every`` seconds per key, on the injected ``clock`` (Unix s)."""

    def __init__(self, clock: Callable[[], float], every: float = WARN_EVERY_SECONDS) -> None:
        self._clock = clock
        self._every = every
        self._last: dict[object, float] = {}

    def allow(self, key: object) -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._every:
            return False
        self._last[key] = now
        return True
