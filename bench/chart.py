"""The results as one PNG: throughput against the floor, ratios to targets, latencies.

Four panels, one group per endpoint and one colour per (storage, mode) (a hue per storage,
dark for http and light for tls); red is used for the targets only:

1. peak requests/s (bars), the floors (``GET /json``, ``POST /echo``) as the first two groups;
2. each endpoint's ratio to its floor (bars), the issue's target as a red line over each bar;
3. p50 (dot) and p99 (diamond, joined to its p50) latency at peak load, linear from 0;
4. p99 latency at half the peak rate (dots), linear from 0, the 10 ms target as a red line
   over each dot held to it.

With several runs (``--runs``) the bars and dots are the medians and each run's figure is a
small black dot. One legend serves the whole figure.

``python -m bench.chart RESULTS.json OUT.png`` redraws the chart of a results file.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: write files only

import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .checks import Check
from .loadgen import LoadResult
from .matrix import Measured
from .report import Row

TARGET = "#d62728"  # red: targets only
# (http, tls) shades per storage: tab20's pairs without its reds
SHADES = {
    "memory": ("#1f77b4", "#aec7e8"),
    "leveldb": ("#2ca02c", "#98df8a"),
    "redis": ("#9467bd", "#c5b0d5"),
}
OTHER_SHADES = ("#8c564b", "#c49c94", "#7f7f7f", "#c7c7c7", "#17becf", "#9edae5")
GROUP_WIDTH = 0.8
Figure = Callable[[Row], float | None]


def _series(rows: Sequence[Row]) -> tuple[list[str], list[tuple[str, str]]]:
    endpoints = list(dict.fromkeys(row.measured.endpoint for row in rows))
    combos = list(dict.fromkeys((row.measured.storage, row.measured.mode) for row in rows))
    return endpoints, combos


def color_of(combo: tuple[str, str], index: int) -> str:
    """The colour of a (storage, mode) series: never the target red."""
    storage, mode = combo
    shades = SHADES.get(storage)
    if shades is None:
        return OTHER_SHADES[index % len(OTHER_SHADES)]
    return shades[0] if mode == "http" else shades[1]


def _positions(
    rows: Sequence[Row], endpoints: list[str], figure: Figure
) -> list[tuple[tuple[str, str], list[tuple[float, Row, float]]]]:
    """Per series: (x, row, value) of every endpoint it has a value for."""
    _, combos = _series(rows)
    table = {row.key: row for row in rows}
    width = GROUP_WIDTH / max(1, len(combos))
    out = []
    for c, (storage, mode) in enumerate(combos):
        points = []
        for e, endpoint in enumerate(endpoints):
            row = table.get((endpoint, storage, mode))
            value = None if row is None else figure(row)
            if row is not None and value is not None:
                points.append((e - GROUP_WIDTH / 2 + width * (c + 0.5), row, value))
        out.append(((storage, mode), points))
    return out


def _runs(ax: Axes, points: list[tuple[float, Row, float]], figure: Figure) -> None:
    """Each run's figure as a small black dot beside the median."""
    for x, row, _ in points:
        values = [v for v in (figure(run) for run in row.runs) if v is not None]
        ax.plot([x] * len(values), values, "o", color="black", markersize=2, zorder=3)


def _bars(ax: Axes, rows: Sequence[Row], endpoints: list[str], figure: Figure) -> None:
    series = _positions(rows, endpoints, figure)
    width = GROUP_WIDTH / max(1, len(series))
    for c, (combo, points) in enumerate(series):
        xs = [x for x, _, _ in points]
        ax.bar(xs, [v for _, _, v in points], width, color=color_of(combo, c))
        _runs(ax, points, figure)
    _axis(ax, endpoints)


def _dots(
    ax: Axes, rows: Sequence[Row], endpoints: list[str], figure: Figure, top: Figure | None = None
) -> None:
    """``figure`` as a dot per series; ``top`` as a diamond joined to it by a line."""
    for c, (combo, points) in enumerate(_positions(rows, endpoints, figure)):
        color = color_of(combo, c)
        for x, row, value in points:
            high = None if top is None else top(row)
            if high is not None:
                ax.plot([x, x], [value, high], color=color, linewidth=1.5, zorder=2)
                ax.plot([x], [high], "D", color=color, markersize=5, zorder=3)
        ax.plot([x for x, _, _ in points], [v for _, _, v in points], "o", color=color, zorder=3)
        _runs(ax, points, figure)
    ax.set_ylim(bottom=0)
    _axis(ax, endpoints)


def _axis(ax: Axes, endpoints: list[str]) -> None:
    ax.set_xticks(range(len(endpoints)), endpoints, rotation=25, ha="right")
    ax.set_xlim(-0.6, len(endpoints) - 0.4)
    ax.grid(axis="y", alpha=0.3)


def _targets(ax: Axes, rows: Sequence[Row], endpoints: list[str], target: Figure) -> None:
    """A red line over each bar or dot at its own target (resolve's differs by storage)."""
    series = _positions(rows, endpoints, target)
    half = GROUP_WIDTH / max(1, len(series)) / 2
    for _, points in series:
        for x, _, value in points:
            ax.plot([x - half, x + half], [value, value], color=TARGET, linewidth=2, zorder=4)


def _legend(rows: Sequence[Row]) -> list[Artist]:
    _, combos = _series(rows)
    handles: list[Artist] = [
        Patch(color=color_of(combo, c), label=f"{combo[0]}/{combo[1]}")
        for c, combo in enumerate(combos)
    ]
    handles.append(Line2D([], [], color=TARGET, linewidth=1.5, label="target"))
    handles.append(Line2D([], [], color="gray", marker="o", linestyle="", label="p50 / p99 at ½"))
    handles.append(Line2D([], [], color="gray", marker="D", linestyle="", label="p99 at peak"))
    if any(row.runs for row in rows):
        label = "each run (bars, dots: median)"
        handles.append(
            Line2D([], [], color="black", marker="o", markersize=2, linestyle="", label=label)
        )
    return handles


def title_of(stamp: str, identities: int, runs: int, cpus: int | None = None) -> str:
    """The chart's first title line."""
    cpu = f", {cpus} CPUs" if cpus else ""
    median = f", median of {runs} runs" if runs > 1 else ""
    return f"registryd bench {stamp}: N={identities:,}, one worker{cpu}{median}"


def draw(rows: Sequence[Row], checks: Sequence[Check], out: Path, title: str) -> Path:
    """Draw the four panels for ``rows`` into ``out`` (PNG); returns ``out``."""
    endpoints, _ = _series(rows)
    services = [e for e in endpoints if not e.startswith("floor")]
    fig, axes = plt.subplots(2, 2, figsize=(16, 10.5))
    (throughput, ratio), (latency, half) = axes

    _bars(throughput, rows, endpoints, lambda r: r.measured.peak.rps)
    throughput.set_title("Peak throughput (wrk); floors: bare Starlette echo, same Hypercorn")
    throughput.set_ylabel("requests/s")

    _bars(ratio, rows, services, lambda r: r.ratio)
    ratio.set_title("Throughput / floor (POST: /echo; check_user, nodes: GET /json)")
    ratio.set_ylabel("x floor")
    _targets(ratio, rows, services, lambda r: r.target)
    ratio.axhline(1.0, color="gray", linewidth=0.8, linestyle=":")

    p50, p99 = (lambda r: r.measured.peak.p50_ms), (lambda r: r.measured.peak.p99_ms)
    _dots(latency, rows, endpoints, p50, p99)
    latency.set_title("Latency at peak load (wrk): p50 (dot), p99 (diamond)")
    latency.set_ylabel("ms")

    _dots(half, rows, endpoints, lambda r: r.measured.half.p99_ms)
    _targets(half, rows, endpoints, lambda r: r.target_p99_ms)
    half.set_title("p99 latency at half the peak rate (target < 10 ms where held)")
    half.set_ylabel("ms")

    notes = "; ".join(
        f"{c.name} {c.value:.3g} {c.unit} (target {c.target}: {'pass' if c.passed else 'FAIL'})"
        for c in checks
        if c.passed is not None
    )
    fig.suptitle("\n".join([title, *textwrap.wrap(notes, 150)]), fontsize=10)
    handles = _legend(rows)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _row(data: dict[str, Any]) -> Row:
    measured = Measured(
        data["endpoint"],
        data["storage"],
        data["mode"],
        LoadResult(**data["peak"]),
        LoadResult(**data["half_peak"]),
    )
    runs = tuple(_row(run) for run in data.get("runs", ()))
    # the targets the file was judged by (an older run's may differ from today's)
    target, p99 = data.get("target_ratio"), data.get("target_p99_at_half_peak_ms")
    return Row(measured, data["floor_rps"], data["ratio_to_floor"], target, p99, runs)


def from_json(document: dict[str, Any]) -> tuple[list[Row], list[Check]]:
    """The rows (medians, with their runs) and checks of a results file written by
    ``python -m bench``."""
    checks = [
        Check(
            c["name"], c["description"], c["value"], c["unit"], c["target"], c["pass"], c["details"]
        )
        for c in document["checks"]
    ]
    return [_row(row) for row in document["endpoints"]], checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Redraw the chart of a bench results file.")
    parser.add_argument("results", type=Path, help="a bench/results/*.json file")
    parser.add_argument("out", type=Path, help="the PNG to write")
    args = parser.parse_args(argv)
    document = json.loads(args.results.read_text())
    table_rows, checks = from_json(document)
    settings = document["settings"]
    cpus = document.get("environment", {}).get("cpus")
    title = title_of(document["started_utc"], settings["identities"], settings.get("runs", 1), cpus)
    draw(table_rows, checks, args.out, title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
