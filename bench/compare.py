"""Throughput of two servers compared fairly: A B B A peak runs on both, running side by side.

Both servers are up at once (an idle asyncio server costs nothing), so the comparison needs no
restart between sides, and the A B B A order cancels a linear drift of the machine's speed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import replace

from . import loadgen
from .checks import Check, at_least
from .cpu import TICKS_PER_S, tree_ticks
from .loadgen import LoadResult, Retries
from .settings import Settings
from .workload import RequestFile


def abba(
    a: tuple[str, RequestFile],
    b: tuple[str, RequestFile],
    settings: Settings,
    retries: Retries,
    pids: tuple[int, int] | None = None,
) -> tuple[list[LoadResult], list[LoadResult]]:
    """Warm up both, then peak runs in the order A, B, B, A (each repeated while the machine
    was busy with other work, see :class:`bench.loadgen.Retries`); returns (A's runs,
    B's runs). With ``pids`` (A's server, B's server), each run's ``server_cpu_s`` is the CPU
    time that server's process tree spent during it (``/proc``, clock ticks of 10 ms)."""
    runs: dict[str, list[LoadResult]] = {"a": [], "b": []}
    sides = {"a": a, "b": b}
    pid_of = {"a": pids[0], "b": pids[1]} if pids is not None else {}
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

        def peak_run(
            url: str = url, requests: RequestFile = requests, pid: int | None = pid_of.get(side)
        ) -> LoadResult:
            def run() -> LoadResult:
                return loadgen.wrk_peak(
                    url,
                    requests,
                    duration_s=settings.duration_s,
                    connections=settings.connections,
                    threads=settings.threads,
                )

            return run() if pid is None else with_server_cpu(pid, run)

        runs[side].append(retries.least_disturbed(peak_run))
    return runs["a"], runs["b"]


def with_server_cpu(pid: int, run: Callable[[], LoadResult]) -> LoadResult:
    """``run()``'s result with ``server_cpu_s``: the CPU time the process tree of ``pid`` spent
    meanwhile (``/proc``, clock ticks of 10 ms)."""
    ticks = tree_ticks(pid)
    result = run()
    return replace(result, server_cpu_s=(tree_ticks(pid) - ticks) / TICKS_PER_S)


def mean_rps(runs: list[LoadResult]) -> float:
    return statistics.fmean(run.rps for run in runs)


def cpu_us_per_request(runs: list[LoadResult]) -> float:
    """The server's CPU time per request over ``runs`` (total CPU / total requests), in µs;
    the runs must have been measured with ``pids`` (:func:`abba`)."""
    cpu = sum(run.server_cpu_s or 0.0 for run in runs)
    return cpu * 1e6 / max(1, sum(run.requests for run in runs))


def ratio_check(
    name: str,
    description: str,
    labels: tuple[str, str],
    runs: tuple[list[LoadResult], list[LoadResult]],
    minimum: float | None,
) -> Check:
    """A :class:`Check` that mean rps of ``runs[1]`` / ``runs[0]`` is at least ``minimum``
    (None: a figure without a target); ``labels`` name the two sides in the details
    (``rps_<label>``, ``runs_<label>``)."""
    base, other = runs
    ratio = mean_rps(other) / mean_rps(base)
    errors = sum(run.errors for run in base + other)
    details: dict[str, object] = {"errors": errors}
    for label, side in zip(labels, runs, strict=True):
        details[f"rps_{label}"] = round(mean_rps(side), 1)
        details[f"runs_{label}"] = [run.to_json() for run in side]
    return Check(
        name=name,
        description=description,
        value=ratio,
        unit="x",
        target="-" if minimum is None else f">= {minimum}",
        passed=None if minimum is None else at_least(ratio, minimum) and errors == 0,
        details=details,
    )
