"""Prometheus metrics (issue 14): the families, in a registry that the
:class:`~registryd.runtime.Runtime` owns (never ``prometheus_client``'s global one, so several
apps in one process never collide).

Families (README "Metrics" has the operator's table); every label value comes from a fixed set
written in this package or the route table — never a handle, a username, a client address, a
key or a token:

========================================================  =========  ===========================
name                                                      type       labels
========================================================  =========  ===========================
registryd_http_requests_total                             counter    method, route (template),
                                                                     status
registryd_http_request_duration_seconds                   histogram  method, route
registryd_rate_limit_refusals_total                       counter    bucket
registryd_rate_limit_bans_total                           counter    bucket
registryd_pow_challenges_issued_total                     counter    -
registryd_pow_proofs_total                                counter    outcome (accepted, refused)
registryd_storage_operation_duration_seconds              histogram  operation
registryd_storage_errors_total                            counter    operation
registryd_gc_duration_seconds                             histogram  task (presence, spent_nonces)
registryd_gc_removed_total                                counter    task
registryd_directory_probes_total                          counter    outcome (up, down, refused)
registryd_directory_probe_duration_seconds                histogram  - (answered probes)
registryd_keyring_keys / _active_key_age_seconds /        gauge      state / - / -
_active_key_expires_in_seconds (:mod:`.state`)
registryd_directory_nodes (:mod:`.state`)                 gauge      status
process_* (``prometheus_client``'s ProcessCollector)      various    -
========================================================  =========  ===========================

Recording is always on (the endpoint is what ``[metrics] address`` switches on), so there is one
code path, tested everywhere. Request children are looked up once per label set and cached:
``prometheus_client``'s ``labels()`` takes a lock and builds a key on every call. The latency
histogram has no status label: with it, a scrape of 20 routes x 4 statuses rendered 1,440
lines in ~28 ms of event loop (``python -m bench.metrics_overhead``); per status, the counter
says how many and the histogram per route how long. ``*_created`` series are switched off
(process-wide): they double the lines of a scrape and Prometheus's text format does not use them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.registry import Collector

from .multiproc import ENV, exposition_registry

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Histogram bucket upper bounds, in seconds (0.5 ms to 10 s)."""

GC_TASKS = ("presence", "spent_nonces")
PROBE_OUTCOMES = ("up", "down", "refused")


class Metrics:
    """The registry's metric families in ``self.registry`` (a fresh :class:`CollectorRegistry`).

    The recording methods take seconds (``float``) and label values from fixed sets. Scrape-time
    gauges are added with :meth:`watch` (:class:`~registryd.metrics.state.StateCollector`).
    With ``PROMETHEUS_MULTIPROC_DIR`` set (:mod:`.multiproc`), counts go to that directory and
    :meth:`exposition` sums every process's.
    """

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = r = CollectorRegistry()
        self._live: list[Collector] = []
        self.requests = Counter(
            "registryd_http_requests",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "registryd_http_request_duration_seconds",
            "HTTP requests by route template: time from the request's start to the end of its "
            "answer.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "registryd_rate_limit_refusals",
            "Requests refused with 429, by the bucket that refused (banned: a client under a ban).",
            ["bucket"],
            registry=r,
        )
        self.bans = Counter(
            "registryd_rate_limit_bans",
            "Bans started, by the bucket that ran dry.",
            ["bucket"],
            registry=r,
        )
        self.pow_issued = Counter(
            "registryd_pow_challenges_issued", "Proof-of-work challenges issued.", registry=r
        )
        self.pow_proofs = Counter(
            "registryd_pow_proofs",
            "Proofs of work checked on /resolve and /check_user, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.storage_seconds = Histogram(
            "registryd_storage_operation_duration_seconds",
            "Storage operations (sealing included), by operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.storage_errors = Counter(
            "registryd_storage_errors",
            "Storage operations that raised StorageError.",
            ["operation"],
            registry=r,
        )
        self.gc_seconds = Histogram(
            "registryd_gc_duration_seconds",
            "Garbage-collection passes (expired presences; spent node directory nonces).",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gc_removed = Counter(
            "registryd_gc_removed", "Entries removed by garbage collection.", ["task"], registry=r
        )
        self.probes = Counter(
            "registryd_directory_probes",
            "Node directory health probes, by outcome (refused: by the address policy).",
            ["outcome"],
            registry=r,
        )
        self.probe_seconds = Histogram(
            "registryd_directory_probe_duration_seconds",
            "Answered node directory probes: time to the response headers.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        if ENV not in os.environ:  # per process; a multiprocess scrape would mix them up
            ProcessCollector(registry=r)
        for task in GC_TASKS:  # every series exists from the start, at 0
            self.gc_removed.labels(task)
        for outcome in PROBE_OUTCOMES:
            self.probes.labels(outcome)
        for outcome in ("accepted", "refused"):
            self.pow_proofs.labels(outcome)
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request: ``method`` and ``route`` from fixed sets (:mod:`.http`). (A
        labelled child is a Counter or Histogram itself.)"""
        children = self._children.get((method, route, status))
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.request_seconds.labels(method, route),
            )
            self._children[method, route, status] = children
        children[0].inc()
        children[1].observe(seconds)

    def rate_limited(self, bucket: str, ban_started: bool) -> None:
        """A 429 from ``bucket`` (``global``, an endpoint bucket, or ``banned``)."""
        self.refusals.labels(bucket).inc()
        if ban_started:
            self.bans.labels(bucket).inc()

    def gc(self, task: str, seconds: float, removed: int) -> None:
        """One pass of GC ``task`` (:data:`GC_TASKS`)."""
        self.gc_seconds.labels(task).observe(seconds)
        self.gc_removed.labels(task).inc(removed)

    def probed(self, outcome: str, seconds: float | None) -> None:
        """One directory probe (:data:`PROBE_OUTCOMES`); ``seconds`` when it was answered."""
        self.probes.labels(outcome).inc()
        if seconds is not None:
            self.probe_seconds.observe(seconds)

    def watch(self, collector: Collector) -> None:
        """Add a scrape-time collector (gauges read from the running state)."""
        self.registry.register(collector)
        self._live.append(collector)

    def exposition(self) -> CollectorRegistry:
        """The registry a scrape reads: this one, or in multiprocess mode every process's
        counts (:func:`.multiproc.exposition_registry`) and this process's scrape-time gauges."""
        directory = os.environ.get(ENV)
        if directory is None:
            return self.registry
        return exposition_registry(directory, self._live)
