"""Failure classes and waits (extensions spec §4), as pure functions."""

from __future__ import annotations

import email.utils
import random

import pytest

from registryd.node import backoff
from registryd.node.backoff import (
    Outcome,
    Plan,
    WarnLimiter,
    backoff_seconds,
    classify,
    retry_after_seconds,
)

NOW = 1_750_000_000.0


class Edge(random.Random):
    """A generator pinned to one end of every range."""

    def __init__(self, high: bool) -> None:
        super().__init__()
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (None, Outcome.RETRYABLE),
        (408, Outcome.RETRYABLE),
        (429, Outcome.RETRYABLE),
        (500, Outcome.RETRYABLE),
        (502, Outcome.RETRYABLE),
        (503, Outcome.RETRYABLE),
        (504, Outcome.RETRYABLE),
        (599, Outcome.RETRYABLE),
        (403, Outcome.CONFLICT),
        (409, Outcome.CONFLICT),
        (400, Outcome.SLOW),
        (401, Outcome.SLOW),
        (404, Outcome.SLOW),
        (410, Outcome.SLOW),
        (451, Outcome.SLOW),
        (301, Outcome.SLOW),
    ],
)
def test_classification(status: int | None, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_backoff_doubles_to_a_minute_within_the_jitter_band() -> None:
    low, high = Edge(high=False), Edge(high=True)
    bases = [2, 4, 8, 16, 32, 60, 60, 60]
    assert [backoff_seconds(n, low) for n in range(1, 9)] == [0.8 * b for b in bases]
    assert [backoff_seconds(n, high) for n in range(1, 9)] == [1.2 * b for b in bases]
    assert backoff_seconds(10_000, high) == 72.0  # no overflow for a very long storm


def test_plan() -> None:
    rng = Edge(high=True)

    def plan(outcome: Outcome, attempt: int, max_retry: int, retry_after: float | None) -> Plan:
        return backoff.plan(
            outcome,
            attempt,
            register_interval=120,
            max_retry=max_retry,
            retry_after=retry_after,
            rng=rng,
        )

    assert plan(Outcome.RETRYABLE, 3, max_retry=-1, retry_after=None) == (
        Outcome.RETRYABLE,
        9.6,
        False,
    )
    assert plan(Outcome.CONFLICT, 3, max_retry=-1, retry_after=None).delay == 120
    assert plan(Outcome.SLOW, 1, max_retry=-1, retry_after=None).delay == 120
    paused = plan(Outcome.RETRYABLE, 5, max_retry=5, retry_after=None)
    assert paused.paused and paused.delay == 120
    assert not plan(Outcome.RETRYABLE, 4, max_retry=5, retry_after=None).paused
    assert plan(Outcome.RETRYABLE, 1, max_retry=-1, retry_after=30.0).delay == 30.0
    assert plan(Outcome.RETRYABLE, 4, max_retry=-1, retry_after=3.0).delay == 19.2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("86400", 3600.0),  # capped at an hour
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        (email.utils.formatdate(NOW - 90, usegmt=True), 0.0),  # in the past
        ("Wed, 21 Oct 2015 07:28:00 -0000", None),  # no zone: not an HTTP-date
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


def test_warn_limiter_allows_one_per_period_per_key() -> None:
    now = [0.0]
    limiter = WarnLimiter(lambda: now[0], every=180)
    seen = []
    for t in (0, 100, 179.9, 180, 200, 360):
        now[0] = t
        seen.append((limiter.allow("conflict"), limiter.allow("slow") if t == 100 else None))
    assert seen == [
        (True, None),
        (False, True),  # another key has its own period
        (False, None),
        (True, None),
        (False, None),
        (True, None),
    ]
