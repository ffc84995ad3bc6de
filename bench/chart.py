"""The results as one PNG: throughput against the floor, ratios to targets, latencies.

Four panels, one group of bars per endpoint and one bar per (storage, mode):

1. peak requests/s, the floors (``GET /json``, ``POST /echo``) as the first two groups;
2. each endpoint's ratio to its floor, with the issue's target marked;
3. p50 (bar) and p99 (whisker) latency at peak load;
4. p99 latency at half the peak rate, with the 10 ms target.

``python -m bench.chart RESULTS.json OUT.png`` redraws the chart of a results file.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: write files only

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import ScalarFormatter

from .checks import Check
from .loadgen import LoadResult
from .matrix import Measured
from .report import Row, rows_of
from .settings import P99_AT_HALF_PEAK_MS

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _series(rows: Sequence[Row]) -> tuple[list[str], list[tuple[str, str]]]:
    endpoints = list(dict.fromkeys(row.measured.endpoint for row in rows))
    combos = list(dict.fromkeys((row.measured.storage, row.measured.mode) for row in rows))
    return endpoints, combos


def _lookup(rows: Sequence[Row]) -> dict[tuple[str, str, str], Row]:
    return {(r.measured.endpoint, r.measured.storage, r.measured.mode): r for r in rows}


def _bars(
    ax: Axes,
    rows: Sequence[Row],
    endpoints: list[str],
    value: str,
    *,
    whisker: str | None = None,
) -> None:
    _, combos = _series(rows)
    table = _lookup(rows)
    width = 0.8 / max(1, len(combos))
    for c, (storage, mode) in enumerate(combos):
        xs, ys, tops = [], [], []
        for e, endpoint in enumerate(endpoints):
            row = table.get((endpoint, storage, mode))
            figure = None if row is None else _value(row, value)
            if row is None or figure is None:
                continue
            xs.append(e - 0.4 + width * (c + 0.5))
            ys.append(figure)
            tops.append(_value(row, whisker) if whisker else None)
        color = COLORS[c % len(COLORS)]
        ax.bar(xs, ys, width, label=f"{storage}/{mode}", color=color)
        if whisker:
            for x, y, top in zip(xs, ys, tops, strict=True):
                if top is not None:
                    ax.plot([x, x], [y, top], color="black", linewidth=1)
                    ax.plot([x - width / 4, x + width / 4], [top, top], color="black", linewidth=1)
    ax.set_xticks(range(len(endpoints)), endpoints, rotation=15)
    ax.grid(axis="y", alpha=0.3)


def _value(row: Row, name: str) -> float | None:
    m = row.measured
    values: dict[str, float | None] = {
        "rps": m.peak.rps,
        "ratio": row.ratio,
        "p50": m.peak.p50_ms,
        "p99": m.peak.p99_ms,
        "half_p99": m.half.p99_ms,
    }
    return values[name]


def draw(rows: Sequence[Row], checks: Sequence[Check], out: Path, title: str) -> Path:
    """Draw the four panels for ``rows`` into ``out`` (PNG); returns ``out``."""
    endpoints, _ = _series(rows)
    services = [e for e in endpoints if not e.startswith("floor")]
    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    (throughput, ratio), (latency, half) = axes

    _bars(throughput, rows, endpoints, "rps")
    throughput.set_title("Peak throughput (wrk); floors: bare Starlette echo, same Hypercorn")
    throughput.set_ylabel("requests/s")
    throughput.legend(fontsize=8)

    _bars(ratio, rows, services, "ratio")
    ratio.set_title("Throughput / floor (POST: /echo, check_user: GET /json); red: target")
    ratio.set_ylabel("x floor")
    table = _lookup(rows)
    for e, endpoint in enumerate(services):
        targets = {row.target for key, row in table.items() if key[0] == endpoint} - {None}
        for target in targets:
            if target is not None:
                ratio.plot([e - 0.45, e + 0.45], [target, target], color="red", linewidth=1.5)
    ratio.axhline(1.0, color="gray", linewidth=0.8, linestyle=":")

    _bars(latency, rows, endpoints, "p50", whisker="p99")
    latency.set_title("Latency at peak load (wrk): p50 (bar), p99 (whisker)")
    latency.set_ylabel("ms (log scale)")
    latency.set_yscale("log")
    latency.yaxis.set_major_formatter(ScalarFormatter())
    latency.yaxis.set_minor_formatter(ScalarFormatter())

    _bars(half, rows, endpoints, "half_p99")
    half.axhline(P99_AT_HALF_PEAK_MS, color="red", linewidth=1.5)
    half.set_title(f"p99 latency at half the peak rate (target < {P99_AT_HALF_PEAK_MS:g} ms)")
    half.set_ylabel("ms")

    notes = "; ".join(
        f"{c.name} {c.value:.3g} {c.unit} (target {c.target}: {'pass' if c.passed else 'FAIL'})"
        for c in checks
        if c.passed is not None
    )
    fig.suptitle("\n".join([title, *textwrap.wrap(notes, 150)]), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def from_json(document: dict[str, Any]) -> tuple[list[Row], list[Check]]:
    """The rows and checks of a results file written by ``python -m bench``."""
    measured = []
    for row in document["endpoints"]:
        measured.append(
            Measured(
                row["endpoint"],
                row["storage"],
                row["mode"],
                LoadResult(**row["peak"]),
                LoadResult(**row["half_peak"]),
            )
        )
    checks = [
        Check(
            c["name"], c["description"], c["value"], c["unit"], c["target"], c["pass"], c["details"]
        )
        for c in document["checks"]
    ]
    return rows_of(measured), checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Redraw the chart of a bench results file.")
    parser.add_argument("results", type=Path, help="a bench/results/*.json file")
    parser.add_argument("out", type=Path, help="the PNG to write")
    args = parser.parse_args(argv)
    document = json.loads(args.results.read_text())
    table_rows, checks = from_json(document)
    settings = document["settings"]
    title = f"registryd bench {document['started_utc']}: N={settings['identities']:,}, one worker"
    draw(table_rows, checks, args.out, title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
