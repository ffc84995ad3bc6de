"""The load generators: ``wrk`` for peak throughput, ``hey -q`` for a constant request rate.

- :func:`wrk_peak`: ``wrk`` with ``bench/requests.lua`` replaying a request file over a fixed
  number of keep-alive connections as fast as the server answers (closed loop): requests per
  second and p50/p90/p99 latency from wrk's own histogram.
- :func:`hey_rate`: ``hey -c W -q Q`` sends one request repeatedly at a constant total rate
  ``W x Q``; latency percentiles from its per-request output (0.1 ms resolution). ``hey``
  cannot vary the body, so it suits every endpoint whose repeats are still the same work.
- :func:`wrk_paced`: ``wrk`` with a per-connection pause (``BENCH_WRK_PACE_MS``) for a roughly
  constant rate with a different request each time; used for ``/register``, where ``hey``'s
  repeated body would measure the 409 path instead of a durable registration.

Each run is a subprocess bounded by its duration plus a margin, killed if it overruns (and on any
error, by ``subprocess.run``). Both tools skip TLS certificate verification (load tools only).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

from .cpu import BUSY_CORES, ForeignCpu
from .workload import RequestFile

LUA_SCRIPT = Path(__file__).with_name("requests.lua")
MARGIN_S = 30.0
HEY_WORKER_QPS = 250
HEY_MAX_WORKERS = 64
PACE_MS = 20
RETRY_PAUSE_S = 3.0  # per-connection interval of a paced run: large against the service time


class LoadError(RuntimeError):
    """A load generator failed or printed nothing usable."""


@dataclass(frozen=True)
class LoadResult:
    """One load run: ``rps`` achieved; latencies in ms; ``errors`` counts non-2xx answers,
    socket errors and timeouts; ``foreign_cpu`` is how many cores other work on the machine
    kept busy meanwhile (:mod:`bench.cpu`): well above 0, the figures are low; ``server_cpu_s``
    is the CPU time (user + system, s) the server's processes spent during the run, when
    measured (:func:`bench.compare.abba` with ``pids``)."""

    tool: str
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    connections: int
    target_rps: float | None = None
    foreign_cpu: float = 0.0
    server_cpu_s: float | None = None

    @property
    def cpu_us_per_request(self) -> float | None:
        """The server's CPU time per completed request, in µs (None if not measured)."""
        if self.server_cpu_s is None or self.requests <= 0:
            return None
        return self.server_cpu_s * 1e6 / self.requests

    def to_json(self) -> dict[str, object]:
        return {key: _rounded(value) for key, value in asdict(self).items()}


def _rounded(value: object) -> object:
    return round(value, 3) if isinstance(value, float) else value


def _run(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - argv built here from our own arguments
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"{argv[0]} ran past {timeout:.0f} s and was killed") from exc
    if done.returncode != 0:
        raise LoadError(f"{argv[0]} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def _wrk(
    url: str,
    requests: RequestFile,
    *,
    duration_s: float,
    connections: int,
    threads: int,
    pace_ms: int = 0,
) -> LoadResult:
    threads = max(1, min(threads, connections))
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(requests.file),
        str(threads),
    ]
    env = {**os.environ, "BENCH_WRK_PACE_MS": str(pace_ms) if pace_ms else ""}
    others = ForeignCpu()
    out = _run(argv, duration_s + MARGIN_S, env)
    foreign = others.cores()
    found = re.search(r"^BENCH_JSON (\{.*\})$", out, re.MULTILINE)
    if not found:
        raise LoadError(f"wrk printed no BENCH_JSON line:\n{out[-2000:]}")
    data = json.loads(found.group(1))
    duration = data["duration_us"] / 1e6
    errors = sum(
        data[key]
        for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return LoadResult(
        tool="wrk-paced" if pace_ms else "wrk",
        requests=data["requests"],
        duration_s=duration,
        rps=data["requests"] / duration if duration else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=errors,
        connections=connections,
        foreign_cpu=foreign,
    )


class Retries:
    """Repeats of runs during which other work kept the machine busy (:data:`BUSY_CORES` or
    more): at most ``per_run`` for one run and ``total`` over the whole benchmark, so a machine
    that stays busy costs bounded time (its runs are then flagged in the table)."""

    def __init__(self, per_run: int, total: int, log: Callable[[str], None] | None = None):
        self.per_run = per_run
        self.left = total
        self.log = log

    def least_disturbed(self, run: Callable[[], LoadResult]) -> LoadResult:
        """``run()``, repeated while it was disturbed and repeats are left; keeps the least
        disturbed result."""
        best = run()
        for _ in range(self.per_run):
            if best.foreign_cpu < BUSY_CORES or self.left <= 0:
                break
            self.left -= 1
            if self.log is not None:
                self.log(f"other work kept {best.foreign_cpu:.2f} cores busy: run again")
            time.sleep(RETRY_PAUSE_S)
            again = run()
            if again.foreign_cpu < best.foreign_cpu:
                best = again
        return best


def wrk_peak(
    url: str, requests: RequestFile, *, duration_s: float, connections: int, threads: int
) -> LoadResult:
    """Peak throughput: ``connections`` keep-alive connections, each sending its next request
    as soon as the previous answer arrives."""
    return _wrk(url, requests, duration_s=duration_s, connections=connections, threads=threads)


def wrk_paced(url: str, requests: RequestFile, *, rate: float, duration_s: float) -> LoadResult:
    """About ``rate`` requests/s: connections that each pause :data:`PACE_MS` before every
    request (so the achieved rate is a little below ``rate``: the pause plus the latency)."""
    connections = max(1, round(rate * PACE_MS / 1000))
    pace = PACE_MS if connections > 1 else max(1, round(1000 / max(rate, 1e-3)))
    result = _wrk(
        url, requests, duration_s=duration_s, connections=connections, threads=1, pace_ms=pace
    )
    return _with_target(result, rate)


def _with_target(result: LoadResult, rate: float) -> LoadResult:
    return replace(result, target_rps=rate)


def hey_workers(rate: float) -> tuple[int, float]:
    """(workers, QPS per worker) for a total of ``rate``: at most :data:`HEY_WORKER_QPS` per
    worker, so each worker's pause between requests (4 ms or more) stays large against the
    latency and ticks are not skipped; at least 2 workers, at most 64."""
    workers = max(2, min(HEY_MAX_WORKERS, math.ceil(rate / HEY_WORKER_QPS)))
    return workers, rate / workers


def hey_rate(
    url: str, requests: RequestFile, *, rate: float, duration_s: float, work_dir: Path
) -> LoadResult:
    """``requests``' first request, repeated at a constant total ``rate`` for ``duration_s``:
    ``hey -c W -q rate/W`` (see :func:`hey_workers`).

    hey's workers tick in step, so requests arrive in bursts of W at once; the queueing inside
    a burst (up to W - 1 service times) is counted in the latency, which makes these p99s a
    little pessimistic. Per-request latencies come from ``-o csv`` (0.1 ms resolution).
    """
    workers, qps = hey_workers(rate)
    seconds = max(1, round(duration_s))
    argv = ["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", f"{qps:.3f}", "-t", "10"]
    argv += ["-o", "csv", "-m", requests.method, "-disable-compression"]
    body_file = requests.body_file()
    if body_file is not None:
        argv += ["-T", "application/json", "-D", str(body_file)]
    argv.append(url + requests.path)
    others = ForeignCpu()
    rows = parse_hey_csv(_run(argv, seconds + MARGIN_S))
    result = hey_result(rows, seconds, workers, rate)
    return replace(result, foreign_cpu=others.cores())


class HeyRow(NamedTuple):
    """One answered request: response time and offset from hey's start (s), HTTP status."""

    latency_s: float
    status: int
    offset_s: float


def parse_hey_csv(text: str) -> list[HeyRow]:
    """Every answered request in ``hey -o csv`` output (hey leaves out requests that got no
    answer; they show as a lower achieved rate)."""
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split(",")
        if len(fields) >= 8 and fields[6].isdigit():
            rows.append(HeyRow(float(fields[0]), int(fields[6]), float(fields[7])))
    return rows


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def hey_result(rows: list[HeyRow], seconds: float, processes: int, rate: float) -> LoadResult:
    if not rows:
        raise LoadError("hey got no answer")
    latencies = sorted(row.latency_s * 1000 for row in rows)
    return LoadResult(
        tool="hey",
        requests=len(rows),
        duration_s=seconds,
        rps=len(rows) / seconds,
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1],
        errors=sum(1 for row in rows if not 200 <= row.status < 300),
        connections=processes,
        target_rps=rate,
    )
