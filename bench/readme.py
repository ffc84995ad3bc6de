"""The README's Performance tables from one results file: ``python -m bench.readme RESULTS.json``.

Prints Markdown: one table of endpoints (rows) by storage and mode (columns), each cell the peak
requests/s, its ratio to that run's floor and the p99 latency at half the peak rate, a cell
short of its target in bold; then the scenario checks. With ``--runs N`` results each figure is
the median over the runs (:func:`bench.report.medians`), as the results file holds it. The
README's tables are pasted from this output, so they always come from one whole run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TIMES = "\u00d7"  # the multiplication sign of the ratios


def _cell(row: dict[str, Any]) -> str:
    rps = f"{row['peak']['rps']:.0f}"
    ratio = row["ratio_to_floor"]
    text = rps if ratio is None else f"{rps} ({ratio:.2f}{TIMES})"
    text += f" · {row['half_peak']['p99_ms']:.1f} ms"
    return f"**{text}**" if row["pass"] is False else text


def _target(rows: list[dict[str, Any]]) -> str:
    ratios = sorted({r["target_ratio"] for r in rows if r["target_ratio"] is not None})
    p99s = sorted({r["target_p99_at_half_peak_ms"] for r in rows if r["pass"] is not None} - {None})
    parts = ["/".join(f"≥ {t:.2f}{TIMES}" for t in ratios)] if ratios else []
    if p99s:
        parts.append(f"p99 < {p99s[0]:g} ms")
    return ", ".join(parts) or ("floor" if rows[0]["endpoint"].startswith("floor") else "—")


def endpoint_table(doc: dict[str, Any]) -> str:
    rows = doc["endpoints"]
    combos = list(dict.fromkeys((r["storage"], r["mode"]) for r in rows))
    names = list(dict.fromkeys(r["endpoint"] for r in rows))
    cells = {(r["endpoint"], r["storage"], r["mode"]): r for r in rows}
    head = ["endpoint", *(f"{s}/{m}" for s, m in combos), "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        mine = [cells.get((name, s, m)) for s, m in combos]
        out = ["" if row is None else _cell(row) for row in mine]
        target = _target([row for row in mine if row is not None])
        lines.append("| " + " | ".join([name, *out, target]) + " |")
    return "\n".join(lines)


def checks_table(doc: dict[str, Any]) -> str:
    lines = ["| scenario | value | target | result |", "|---|---|---|---|"]
    for check in doc["checks"]:
        digits = 3 if check["unit"] == "x" else 1
        value = f"{check['value']:.{digits}f} {check['unit']}"
        result = {True: "pass", False: "**fail**", None: "—"}[check["pass"]]
        lines.append(f"| {check['description']} | {value} | {check['target']} | {result} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("results", type=Path, help="a bench/results/*.json file")
    args = parser.parse_args(argv)
    doc = json.loads(args.results.read_text())
    targets = doc["targets"]
    runs = doc["settings"].get("runs", 1)
    print(
        f"Run {doc['started_utc']} (commit {doc['environment']['git_commit'][:7]}, "
        f"{runs} run{'s' if runs != 1 else ''} of the matrix{', medians' if runs > 1 else ''}), "
        f"{targets['met']} of {targets['checked']} targets met.\n"
    )
    print(endpoint_table(doc) + "\n")
    print(checks_table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
