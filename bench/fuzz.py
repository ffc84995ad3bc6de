"""``make fuzz``: the schemathesis run of ``tests/test_openapi.py`` at 10,000 examples.

    python -m bench.fuzz [--examples N] [--jobs J] [--all]

Runs the fuzz test that reaches the handlers (rate limits and proof of work off, tokens given,
client on loopback; ``--all`` adds the run with default limits) with ``REGISTRYD_FUZZ_EXAMPLES``
= N (default 10,000) under ``nice``, in J processes (default 2) that share the operations out
(``REGISTRYD_FUZZ_SHARD``), then prints the cases and statuses per operation, the duration and
pytest's verdicts, and writes them to ``bench/results/fuzz.json``. Hypothesis stops
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
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--all", action="store_true", help="also fuzz with default limits")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    selection = "fuzz_reaching" if not args.all else "fuzz and not fuzzed"
    command = ["nice", "-n", "10", sys.executable, "-m", "pytest", "tests/test_openapi.py"]
    command += ["-k", selection, "-q", "-p", "no:cacheprovider"]
    started = time.monotonic()
    shards = []
    for index in range(args.jobs):
        report = RESULTS / f"fuzz-{index}.json"
        report.unlink(missing_ok=True)
        env = {
            **os.environ,
            "REGISTRYD_FUZZ_EXAMPLES": str(args.examples),
            "REGISTRYD_FUZZ_REPORT": str(report),
            "REGISTRYD_FUZZ_SHARD": f"{index}/{args.jobs}",
        }
        log = (RESULTS / f"fuzz-{index}.log").open("w", encoding="utf-8")
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)  # noqa: S603
        shards.append((process, report, log))
    codes = [process.wait() for process, _, _ in shards]
    seconds = time.monotonic() - started
    cases: dict[str, int] = {}
    statuses: dict[str, dict[str, int]] = {}
    for _, report, log in shards:
        log.close()
        if report.exists():
            figures = json.loads(report.read_text(encoding="utf-8"))
            cases.update(figures["cases"])
            for key, count in figures["statuses"].items():
                operation, status = key.rsplit(" ", 1)
                statuses.setdefault(operation, {})[status] = count
    print(f"{'operation':<42} {'cases':>7}  statuses")
    for operation, count in sorted(cases.items()):
        seen = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.get(operation, {}).items()))
        print(f"{operation:<42} {count:>7}  {seen}")
    failed = any(codes)
    verdict = f"FAILED (pytest exits {codes}; see {RESULTS}/fuzz-*.log)" if failed else "0 failures"
    total, per = sum(cases.values()), f"{args.examples} examples per operation"
    print(f"\n{total} cases in {seconds:.0f} s ({per}, {args.jobs} processes); {verdict}")
    summary = {"examples": args.examples, "jobs": args.jobs, "wall_seconds": round(seconds, 1)}
    summary.update(pytest_exits=codes, cases=cases, statuses=statuses)
    (RESULTS / "fuzz.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
