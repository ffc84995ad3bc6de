"""Results: endpoint rows held against their floor and targets, the printed table, the JSON file.

Each endpoint's peak requests/s is divided by the floor measured beside it (same storage and
mode run, same Hypercorn settings): POST endpoints by ``POST /echo``, ``check_user`` by
``GET /json``. Targets (issue 5): resolve >= 0.85 x floor, check_user >= 0.9 x, register on
LevelDB >= 0.6 x; every endpoint's p99 at half its peak rate < 10 ms. A row with any error
(non-2xx answer, socket error, timeout) fails: its figures measured something else.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .checks import Check
from .cpu import BUSY_CORES
from .matrix import FLOOR_ENDPOINTS, Measured
from .settings import (
    CHECK_USER_VS_FLOOR,
    P99_AT_HALF_PEAK_MS,
    REGISTER_LEVELDB_VS_FLOOR,
    RESOLVE_VS_FLOOR,
)

GET_ENDPOINTS = ("check_user", "floor_get")


def floor_of(endpoint: str) -> str:
    return "floor_get" if endpoint in GET_ENDPOINTS else "floor_post"


def target_ratio(endpoint: str, storage: str) -> float | None:
    """The issue's throughput target for ``endpoint`` as a multiple of its floor, if any."""
    if endpoint.startswith("resolve") or endpoint == "presence_resolve":
        return RESOLVE_VS_FLOOR
    if endpoint == "check_user":
        return CHECK_USER_VS_FLOOR
    if endpoint == "register" and storage == "leveldb":
        return REGISTER_LEVELDB_VS_FLOOR
    return None


@dataclass(frozen=True)
class Row:
    """One endpoint on one (storage, mode), with its floor; ``ratio`` is None for floor rows."""

    measured: Measured
    floor_rps: float | None

    @property
    def is_floor(self) -> bool:
        return self.measured.endpoint in FLOOR_ENDPOINTS

    @property
    def ratio(self) -> float | None:
        if self.is_floor or not self.floor_rps:
            return None
        return self.measured.peak.rps / self.floor_rps

    @property
    def target(self) -> float | None:
        return None if self.is_floor else target_ratio(self.measured.endpoint, self.storage)

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
        ratio, target = self.ratio, self.target
        if target is not None and (ratio is None or ratio < target):
            out.append("ratio")
        if self.measured.half.p99_ms >= P99_AT_HALF_PEAK_MS:
            out.append("p99")
        if self.errors:
            out.append(f"errors: {self.errors}")
        return out

    @property
    def result(self) -> str:
        if self.is_floor:
            return "floor" if not self.errors else f"floor, errors: {self.errors}"
        failures = self.failures()
        return "PASS" if not failures else "FAIL (" + ", ".join(failures) + ")"

    @property
    def targets(self) -> int:
        """How many of the issue's targets this row is held to."""
        if self.is_floor:
            return 0
        return 1 + (self.target is not None)

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
                "target_p99_at_half_peak_ms": None if self.is_floor else P99_AT_HALF_PEAK_MS,
                "pass": None if self.is_floor else not self.failures(),
                "failures": self.failures(),
            }
        )
        return out


def rows_of(measured: Sequence[Measured]) -> list[Row]:
    """Each measurement with the floor measured beside it."""
    floors = {
        (m.storage, m.mode, m.endpoint): m.peak.rps
        for m in measured
        if m.endpoint in FLOOR_ENDPOINTS
    }
    return [Row(m, floors.get((m.storage, m.mode, floor_of(m.endpoint)))) for m in measured]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def endpoint_table(table_rows: Sequence[Row]) -> str:
    header = (
        f"{'endpoint':<13} {'storage':<8} {'mode':<5} {'rps':>7} {'p50 ms':>7} {'p99 ms':>7} "
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
            f"{m.endpoint:<13} {m.storage:<8} {m.mode:<5} {m.peak.rps:>7.0f} "
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
