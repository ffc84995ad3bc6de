"""Results: endpoint rows held against their floor and targets, the printed table, the JSON file.

Each endpoint's peak requests/s is divided by the floor measured beside it (same storage and
mode run, same Hypercorn settings): POST endpoints by ``POST /echo``, GET endpoints
(``check_user``, ``nodes``) by ``GET /json``. Targets: :mod:`bench.checks` (issue 15). A row
with any error (non-2xx answer, socket error, timeout) fails: its figures measured something
else.

With several runs of the matrix (``--runs``) each cell is the median over the runs: the ratio
is the median of each run's ratio to that run's floor, every other figure the median of the
runs' figures, errors the sum; :attr:`Row.runs` keeps every run's row.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .checks import Check, target_p99_ms, target_ratio
from .cpu import BUSY_CORES
from .loadgen import LoadResult
from .matrix import FLOOR_ENDPOINTS, Measured

GET_ENDPOINTS = ("check_user", "nodes", "floor_get")


def floor_of(endpoint: str) -> str:
    return "floor_get" if endpoint in GET_ENDPOINTS else "floor_post"


@dataclass(frozen=True)
class Row:
    """One endpoint on one (storage, mode), with its floor's peak rps and its ``ratio`` to it
    (None for floor rows), and the targets it is held to (None: none; see
    :func:`targeted`); a median row also holds the ``runs`` it was taken from."""

    measured: Measured
    floor_rps: float | None
    ratio: float | None
    target: float | None = None
    target_p99_ms: float | None = None
    runs: tuple[Row, ...] = ()

    @classmethod
    def targeted(cls, measured: Measured, floor_rps: float | None, ratio: float | None) -> Row:
        """A row held to today's targets (:mod:`bench.checks`); floors are held to none."""
        endpoint = measured.endpoint
        if endpoint in FLOOR_ENDPOINTS:
            return cls(measured, floor_rps, ratio)
        target = target_ratio(endpoint, measured.storage)
        return cls(measured, floor_rps, ratio, target, target_p99_ms(endpoint))

    @property
    def key(self) -> tuple[str, str, str]:
        m = self.measured
        return m.endpoint, m.storage, m.mode

    @property
    def is_floor(self) -> bool:
        return self.measured.endpoint in FLOOR_ENDPOINTS

    @property
    def storage(self) -> str:
        return self.measured.storage

    @property
    def errors(self) -> int:
        return self.measured.peak.errors + self.measured.half.errors

    def failures(self) -> list[str]:
        """Why this row misses a target (empty if it meets them all, or is a floor)."""
        if self.is_floor:
            return [f"errors: {self.errors}"] if self.errors else []
        out = []
        ratio, target, p99 = self.ratio, self.target, self.target_p99_ms
        if target is not None and (ratio is None or ratio < target):
            out.append("ratio")
        if p99 is not None and self.measured.half.p99_ms >= p99:
            out.append("p99")
        if self.errors:
            out.append(f"errors: {self.errors}")
        return out

    @property
    def result(self) -> str:
        if self.is_floor:
            return "floor" if not self.errors else f"floor, errors: {self.errors}"
        failures = self.failures()
        if not failures and not self.targets:
            return "report only"
        return "PASS" if not failures else "FAIL (" + ", ".join(failures) + ")"

    @property
    def targets(self) -> int:
        """How many of the issues' targets this row is held to."""
        if self.is_floor:
            return 0
        return (self.target is not None) + (self.target_p99_ms is not None)

    @property
    def met(self) -> int:
        if self.is_floor:
            return 0
        failures = self.failures()
        if any(f.startswith("errors") for f in failures):
            return 0
        return self.targets - len(failures)

    def to_json(self) -> dict[str, object]:
        out = self.measured.to_json()
        ratio = self.ratio
        out.update(
            {
                "floor_rps": None if self.floor_rps is None else round(self.floor_rps, 1),
                "ratio_to_floor": None if ratio is None else round(ratio, 4),
                "target_ratio": self.target,
                "target_p99_at_half_peak_ms": self.target_p99_ms,
                "pass": None if self.is_floor or not self.targets else not self.failures(),
                "failures": self.failures(),
            }
        )
        if self.runs:
            out["runs"] = [run.to_json() for run in self.runs]
        return out


def rows_of(measured: Sequence[Measured]) -> list[Row]:
    """Each measurement of one run with the floor measured beside it."""
    floors = {
        (m.storage, m.mode, m.endpoint): m.peak.rps
        for m in measured
        if m.endpoint in FLOOR_ENDPOINTS
    }
    rows = []
    for m in measured:
        floor = floors.get((m.storage, m.mode, floor_of(m.endpoint)))
        is_floor = m.endpoint in FLOOR_ENDPOINTS
        ratio = None if is_floor or not floor else m.peak.rps / floor
        rows.append(Row.targeted(m, floor, ratio))
    return rows


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def median_load(results: Sequence[LoadResult]) -> LoadResult:
    """The per-figure median of ``results``; ``errors`` is their sum and ``foreign_cpu`` their
    maximum (a cell is as suspect as its most disturbed run)."""

    def med(name: str) -> float:
        return float(statistics.median(getattr(r, name) for r in results))

    targets = [r.target_rps for r in results if r.target_rps is not None]
    return LoadResult(
        tool=results[0].tool,
        requests=round(med("requests")),
        duration_s=med("duration_s"),
        rps=med("rps"),
        p50_ms=med("p50_ms"),
        p90_ms=med("p90_ms"),
        p99_ms=med("p99_ms"),
        max_ms=med("max_ms"),
        errors=sum(r.errors for r in results),
        connections=round(med("connections")),
        target_rps=statistics.median(targets) if targets else None,
        foreign_cpu=max(r.foreign_cpu for r in results),
    )


def medians(runs: Sequence[Sequence[Row]]) -> list[Row]:
    """One row per cell (endpoint, storage, mode) over ``runs`` (each run's rows, in order):
    median figures and median ratio, with every run's row kept. A single run is returned
    as it is."""
    if len(runs) == 1:
        return list(runs[0])
    cells: dict[tuple[str, str, str], list[Row]] = {}
    for rows in runs:
        for row in rows:
            cells.setdefault(row.key, []).append(row)
    out = []
    for cell in cells.values():
        first = cell[0].measured
        measured = replace(
            first,
            peak=median_load([r.measured.peak for r in cell]),
            half=median_load([r.measured.half for r in cell]),
        )
        floor = _median([r.floor_rps for r in cell])
        ratio = _median([r.ratio for r in cell])
        out.append(
            replace(cell[0], measured=measured, floor_rps=floor, ratio=ratio, runs=tuple(cell))
        )
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def endpoint_table(table_rows: Sequence[Row]) -> str:
    header = (
        f"{'endpoint':<16} {'storage':<8} {'mode':<5} {'rps':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'x floor':>7} {'target':>6} {'½-peak rps':>10} {'p99@½ ms':>9} {'other CPU':>9}  result"
    )
    lines = [header, "-" * len(header)]
    busy = False
    for row in table_rows:
        m = row.measured
        foreign = m.peak.foreign_cpu
        mark = "*" if foreign >= BUSY_CORES else " "
        busy = busy or foreign >= BUSY_CORES
        lines.append(
            f"{m.endpoint:<16} {m.storage:<8} {m.mode:<5} {m.peak.rps:>7.0f} "
            f"{m.peak.p50_ms:>7.2f} {m.peak.p99_ms:>7.2f} {_fmt(row.ratio, '.2f'):>7} "
            f"{_fmt(row.target, '.2f'):>6} {m.half.rps:>10.0f} {m.half.p99_ms:>9.2f} "
            f"{foreign:>8.2f}{mark}  {row.result}"
        )
    if busy:
        lines.append(
            f"* other processes kept >= {BUSY_CORES} core busy during the peak run: "
            "its figures are skewed low"
        )
    return "\n".join(lines)


def checks_table(checks: Sequence[Check]) -> str:
    header = f"{'scenario':<28} {'value':>12} {'target':>10}  {'result':<6}  what"
    lines = [header, "-" * len(header)]
    for check in checks:
        result = "-" if check.passed is None else ("PASS" if check.passed else "FAIL")
        value = f"{check.value:.3f} {check.unit}" if check.unit == "x" else f"{check.value:.1f} "
        if check.unit != "x":
            value += check.unit
        lines.append(
            f"{check.name:<28} {value:>12} {check.target:>10}  {result:<6}  {check.description}"
        )
    return "\n".join(lines)


def tally(table_rows: Sequence[Row], checks: Sequence[Check]) -> tuple[int, int]:
    """(targets met, targets checked) over every row and check."""
    targets = sum(row.targets for row in table_rows) + sum(
        1 for check in checks if check.passed is not None
    )
    met = sum(row.met for row in table_rows) + sum(1 for check in checks if check.passed)
    return met, targets


def write_json(document: dict[str, object], out_dir: Path, stamp: str) -> Path:
    """Write ``document`` to ``out_dir/<stamp>.json`` and ``out_dir/latest.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2) + "\n"
    path = out_dir / f"{stamp}.json"
    path.write_text(text)
    (out_dir / "latest.json").write_text(text)
    return path
