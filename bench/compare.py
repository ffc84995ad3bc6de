"""Throughput of two servers compared fairly: A B B A peak runs on both, running side by side.

Both servers are up at once (an idle asyncio server costs nothing), so the comparison needs no
restart between sides, and the A B B A order cancels a linear drift of the machine's speed.
"""

from __future__ import annotations

import statistics

from . import loadgen
from .loadgen import LoadResult, Retries
from .settings import Settings
from .workload import RequestFile


def abba(
    a: tuple[str, RequestFile], b: tuple[str, RequestFile], settings: Settings, retries: Retries
) -> tuple[list[LoadResult], list[LoadResult]]:
    """Warm up both, then peak runs in the order A, B, B, A (each repeated while the machine
    was busy with other work, see :class:`bench.loadgen.Retries`); returns (A's runs,
    B's runs)."""
    runs: dict[str, list[LoadResult]] = {"a": [], "b": []}
    sides = {"a": a, "b": b}
    for side in ("a", "b") if settings.warmup_s > 0 else ():
        url, requests = sides[side]
        loadgen.wrk_peak(
            url,
            requests,
            duration_s=settings.warmup_s,
            connections=settings.connections,
            threads=settings.threads,
        )
    for side in ("a", "b", "b", "a"):
        url, requests = sides[side]

        def peak_run(url: str = url, requests: RequestFile = requests) -> LoadResult:
            return loadgen.wrk_peak(
                url,
                requests,
                duration_s=settings.duration_s,
                connections=settings.connections,
                threads=settings.threads,
            )

        runs[side].append(retries.least_disturbed(peak_run))
    return runs["a"], runs["b"]


def mean_rps(runs: list[LoadResult]) -> float:
    return statistics.fmean(run.rps for run in runs)
