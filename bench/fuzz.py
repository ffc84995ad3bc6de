"""``make fuzz``: the schemathesis run of ``tests/test_openapi.py`` at 10,000 examples.

    python -m bench.fuzz [--examples N] [--all]

Runs the fuzz test that reaches the handlers (rate limits and proof of work off, tokens given,
client on loopback; ``--all`` adds the run with default limits) with ``REGISTRYD_FUZZ_EXAMPLES``
= N (default 10,000) under ``nice``, then prints the cases and statuses per operation, the
duration and pytest's verdict, and writes them to ``bench/results/fuzz.json``. Hypothesis stops
early on an operation whose input space it has exhausted (a GET without parameters has a handful
of distinct requests); every other operation gets N cases per phase. Exits with pytest's code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from .procs import REPO

RESULTS = REPO / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--all", action="store_true", help="also fuzz with default limits")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = RESULTS / "fuzz.json"
    report.unlink(missing_ok=True)
    env = {
        **os.environ,
        "REGISTRYD_FUZZ_EXAMPLES": str(args.examples),
        "REGISTRYD_FUZZ_REPORT": str(report),
    }
    selection = "fuzz" if args.all else "fuzz_reaching"
    command = ["nice", "-n", "10", sys.executable, "-m", "pytest", "tests/test_openapi.py"]
    command += ["-k", selection, "-q", "-p", "no:cacheprovider"]
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, check=False)  # noqa: S603 - our own argv
    seconds = time.monotonic() - started
    if not report.exists():
        print(f"fuzz: no report (pytest exited {done.returncode})", file=sys.stderr)
        return done.returncode or 1
    figures = json.loads(report.read_text(encoding="utf-8"))
    statuses: dict[str, dict[str, int]] = {}
    for key, count in figures["statuses"].items():
        operation, status = key.rsplit(" ", 1)
        statuses.setdefault(operation, {})[status] = count
    print(f"\n{'operation':<42} {'cases':>7}  statuses")
    for operation, cases in figures["cases"].items():
        seen = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.get(operation, {}).items()))
        print(f"{operation:<42} {cases:>7}  {seen}")
    total = sum(figures["cases"].values())
    verdict = "0 failures" if done.returncode == 0 else f"FAILED (pytest exit {done.returncode})"
    print(f"\n{total} cases in {seconds:.0f} s ({args.examples} examples per phase); {verdict}")
    figures.update(wall_seconds=round(seconds, 1), pytest_exit=done.returncode)
    report.write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
