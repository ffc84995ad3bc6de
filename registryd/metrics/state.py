"""Gauges read from the running state at scrape time: the envelope key ring and the node
directory. Nothing is kept between scrapes, so a reload or a rotation shows at the next one.

- ``registryd_keyring_keys{state}``: keys by :meth:`~registryd.keyring.EnvelopeKey.state`
  (``active``, ``pending``, ``grace``, ``inactive``, ``retired``, ``expired``; every state
  present, 0 included). Keys in grace are ``state="grace"``; no active key (degraded) is
  ``state="active"`` at 0.
- ``registryd_keyring_active_key_age_seconds``: since the active key's ``not_before`` (else its
  ``created`` time); no sample without an active key or for an inline key (which has neither).
- ``registryd_keyring_active_key_expires_in_seconds``: until the active key's ``not_after``; no
  sample when it has none.
- ``registryd_directory_nodes{status}``: ``online``, ``unknown``, ``offline``; counted over the
  directory's in-memory listing (10,000 nodes: ~1 ms a scrape).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..errors import KeyUnavailable
from ..keyring import KeyRing

KEY_STATES = ("active", "pending", "grace", "inactive", "retired", "expired")
NODE_STATUSES = ("online", "unknown", "offline")


class StateCollector(Collector):
    """Collects the gauges above from ``keyring()`` at ``clock()`` (Unix ms) and the directory's
    ``nodes()`` (counts by status)."""

    def __init__(
        self,
        keyring: Callable[[], KeyRing],
        clock: Callable[[], int],
        nodes: Callable[[], Mapping[str, int]],
    ) -> None:
        self._keyring = keyring
        self._clock = clock
        self._nodes = nodes

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(_families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock()
        ring = self._keyring()
        keys, age, expires, nodes = _families()
        states = Counter(key.state(now) for key in ring.keys)
        for state in KEY_STATES:
            keys.add_metric([state], states[state])
        try:
            active = ring.active(now)
        except KeyUnavailable:
            active = None
        if active is not None:
            started = (
                active.not_before_ms if active.not_before_ms is not None else active.created_ms
            )
            if started is not None:
                age.add_metric([], max(0, now - started) / 1000)
            if active.not_after_ms is not None:
                expires.add_metric([], (active.not_after_ms - now) / 1000)
        counted = self._nodes()
        for status in NODE_STATUSES:
            nodes.add_metric([status], counted.get(status, 0))
        yield from (keys, age, expires, nodes)


def _families() -> tuple[GaugeMetricFamily, ...]:
    return (
        GaugeMetricFamily(
            "registryd_keyring_keys",
            "Envelope keys by state (grace: rotated out, still opening registrations).",
            labels=["state"],
        ),
        GaugeMetricFamily(
            "registryd_keyring_active_key_age_seconds",
            "Seconds since the active envelope key's not_before (else its creation).",
        ),
        GaugeMetricFamily(
            "registryd_keyring_active_key_expires_in_seconds",
            "Seconds until the active envelope key's not_after.",
        ),
        GaugeMetricFamily(
            "registryd_directory_nodes", "Node directory entries by status.", labels=["status"]
        ),
    )
