"""Load benchmarks of registryd against the framework floor: ``python -m bench [options]``.

Scenarios (each module's docstring says exactly what it measures):

- :mod:`bench.matrix`: resolve hits and misses, presence_resolve, check_user, register,
  announce, nodes, heartbeat and update on every (storage, mode), each beside the floor; peak
  rps, p50/p99, p99 at half the peak rate. ``--runs N`` runs the matrix N times and reports
  each cell's median (ratios: the median of each run's ratio to its own floor).
- :mod:`bench.ratelimits`: resolve with generous rate limits on vs off.
- :mod:`bench.workers`: resolve on Redis against LevelDB (side by side), and on Redis with
  ``[server] workers = 2`` vs 1.
- :mod:`bench.memory_rss`: resident bytes per identity in the memory store (N identities, at
  least 10,000; also 1,000,000 with ``--scaling``).
- with ``--scaling``, :mod:`bench.scaling`: resolve with 1,000,000 vs 1,000 identities in
  LevelDB, and :mod:`bench.gc_stall`: collecting 1,000,000 expired presences while serving
  resolves (stall and p99 loop lag above a no-GC baseline of the same run).

Prints the tables, writes ``<out>/<timestamp>.json`` and ``<out>/latest.json`` and draws
``<out>/latest.png``. Exits 0 when every measurement ran (``--strict``: and every target was
met), 1 when a measurement failed, 2 on usage errors. Servers only ever bind 127.0.0.1:0.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from registryd import __version__
from registryd.certs import write_dev_certs

from . import chart, ratelimits, report, scaling, workers
from .checks import Check
from .matrix import Measured, Workspace, run_matrix
from .settings import Settings

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
TOOLS = ("wrk", "hey")
MIN_MEMORY_IDENTITIES = 10_000


def _csv(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(item.strip() for item in text.split(",") if item.strip())
        bad = [item for item in items if item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(choices)}")
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--identities", type=int, default=d.identities, help="preloaded identities")
    p.add_argument(
        "--owners", type=int, default=d.owners, help="identities with keys, updated (>= conns)"
    )
    p.add_argument("--nodes", type=int, default=d.nodes, help="node directory entries")
    p.add_argument("--runs", type=int, default=d.runs, help="matrix runs; cells give the median")
    p.add_argument("--storage", type=_csv(d.storages), default=d.storages, help="memory,leveldb")
    p.add_argument("--mode", type=_csv(d.modes), default=d.modes, help="http,tls")
    p.add_argument("--endpoints", type=_csv(d.endpoints), default=d.endpoints)
    p.add_argument("--duration", type=float, default=d.duration_s, help="s per peak run")
    p.add_argument("--warmup", type=float, default=d.warmup_s, help="s of warm-up before each")
    p.add_argument("--half-duration", type=float, default=d.half_duration_s, help="s at half peak")
    p.add_argument("--connections", type=int, default=d.connections, help="wrk connections")
    p.add_argument("--threads", type=int, default=d.threads, help="wrk threads")
    p.add_argument("--request-lines", type=int, default=d.request_lines, help="requests per file")
    p.add_argument(
        "--register-cap",
        type=float,
        default=d.register_cap_rps,
        help="envelopes prepared per second of a register run (more rps shows as 409 errors)",
    )
    p.add_argument("--half-peak-tool", choices=("hey", "wrk"), default=d.half_peak_tool)
    p.add_argument(
        "--busy-retries",
        type=int,
        default=d.busy_retries,
        help="repeat a run up to this often while other processes keep the machine busy",
    )
    p.add_argument(
        "--busy-retry-budget",
        type=int,
        default=d.busy_retry_budget,
        help="repeats of disturbed runs allowed per matrix run (--runs), scenarios included",
    )
    p.add_argument("--no-rate-limits", action="store_true", help="skip the rate-limit scenario")
    p.add_argument("--no-memory", action="store_true", help="skip the memory-per-identity run")
    p.add_argument("--no-workers", action="store_true", help="skip workers = 2 vs 1 on Redis")
    p.add_argument("--scaling", action="store_true", help="also 1M-identity and GC scenarios")
    p.add_argument("--scaling-identities", type=int, default=d.scaling_identities)
    p.add_argument("--gc-presences", type=int, default=d.gc_presences)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    p.add_argument("--keep-work", action="store_true", help="keep configs, logs, request files")
    p.add_argument("--strict", action="store_true", help="exit 1 unless every target is met")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    return replace(
        Settings(),
        identities=args.identities,
        owners=args.owners,
        nodes=args.nodes,
        runs=args.runs,
        storages=args.storage,
        modes=args.mode,
        endpoints=args.endpoints,
        duration_s=args.duration,
        warmup_s=args.warmup,
        half_duration_s=args.half_duration,
        connections=args.connections,
        threads=args.threads,
        request_lines=args.request_lines,
        register_cap_rps=args.register_cap,
        half_peak_tool=args.half_peak_tool,
        busy_retries=args.busy_retries,
        busy_retry_budget=args.busy_retry_budget,
        rate_limits=not args.no_rate_limits,
        memory_scenario=not args.no_memory,
        workers_scenario=not args.no_workers and "redis" in args.storage,
        scaling=args.scaling,
        scaling_identities=args.scaling_identities,
        gc_presences=args.gc_presences,
        seed=args.seed,
    )


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the options together, if anything (exit 2)."""
    if args.runs < 1:
        return "--runs: at least 1"
    if "update" in args.endpoints and (
        args.owners < args.connections or args.owners % max(1, args.threads)
    ):
        # a handle's next update must wait for its last one's answer: no stale timestamps
        return "--owners: at least --connections, and a multiple of --threads"
    if {"nodes", "heartbeat"} & set(args.endpoints) and args.nodes < 1:
        return "--nodes: at least 1 for the nodes and heartbeat endpoints"
    return None


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _command_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else ""


VERSIONS_OF = ("hypercorn", "starlette", "h11", "plyvel", "plyvel-next", "pynacl")


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def environment() -> dict[str, object]:
    repo = Path(__file__).resolve().parents[1]
    commit = _command_output(["git", "-C", str(repo), "rev-parse", "HEAD"])
    dirty = _command_output(["git", "-C", str(repo), "status", "--porcelain", "registryd"])
    return {
        "registryd": __version__,
        "git_commit": commit,
        "registryd_tree_dirty": bool(dirty),
        "python": platform.python_version(),
        **{name: _version(name) for name in VERSIONS_OF},
        "wrk": _command_output(["wrk", "--version"]),
        "hey": _command_output(["dpkg-query", "-W", "-f", "${Version}", "hey"]),
        "cpus": _cpu_count(),
        "platform": platform.platform(),
    }


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    return [round(x, 2) for x in os.getloadavg()]


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="registryd-bench-"))
        log(f"work files kept in {path}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="registryd-bench-") as tmp:
        yield Path(tmp)


def run_checks(ws: Workspace) -> list[Check]:
    settings = ws.settings
    checks: list[Check] = []
    if settings.rate_limits:
        log("rate limits on vs off (resolve, memory/http)")
        checks.append(ratelimits.rate_limits_cost(ws))
    if settings.workers_scenario:
        log("redis vs leveldb (resolve, http, one worker each)")
        checks.append(workers.redis_vs_leveldb(ws))
        log("workers = 2 vs 1 (resolve, redis/http)")
        checks.append(workers.workers_scaling(ws))
    # Below ~10,000 identities the store's growth is lost in page-sized RSS noise.
    sizes = [max(settings.identities, MIN_MEMORY_IDENTITIES)] if settings.memory_scenario else []
    if settings.scaling and settings.scaling_identities not in sizes:
        sizes.append(settings.scaling_identities)
    for size in sizes:
        log(f"memory store: resident bytes per identity with {size} identities")
        checks.append(scaling.memory_per_identity(size))
    if settings.scaling:
        log(f"scaling: resolve with {settings.scaling_identities} vs {settings.scaling_small}")
        checks.append(scaling.resolve_scaling(ws))
        log(f"scaling: GC of {settings.gc_presences} expired presences while serving")
        checks.extend(scaling.gc_stall(settings.gc_presences))
    return checks


def run(settings: Settings, out_dir: Path, keep_work: bool) -> tuple[int, int]:
    """Run everything asked; print, write and draw the results; returns (met, targets)."""
    started = time.time()
    env = environment()  # before: the daemon runs whatever registryd/ holds while it starts
    load_before = load_average()
    if load_before[0] > 0.5:
        log(f"load average {load_before[0]} before starting: other work will skew the figures")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    runs: list[list[report.Row]] = []
    with workdir(keep_work) as root:
        certs = write_dev_certs(root / "certs")
        ws = Workspace.create(root, settings, certs, log)
        for run_index in range(settings.runs):
            if settings.runs > 1:
                log(f"matrix run {run_index + 1} of {settings.runs}")
            measured: list[Measured] = []
            for m in run_matrix(ws, run_index):
                errors = m.peak.errors + m.half.errors
                log(
                    f"{m.endpoint:<16} {m.storage}/{m.mode}: {m.peak.rps:7.0f} rps, "
                    f"p99 {m.peak.p99_ms:.1f} ms; at {m.half.rps:.0f} rps "
                    f"p99 {m.half.p99_ms:.1f} ms" + (f"; {errors} errors" if errors else "")
                )
                measured.append(m)
            runs.append(report.rows_of(measured))
        checks = run_checks(ws)
    table_rows = report.medians(runs)
    met, targets = report.tally(table_rows, checks)
    elapsed = time.time() - started
    document: dict[str, object] = {
        "schema": 2,
        "started_utc": stamp,
        "elapsed_s": round(elapsed, 1),
        "settings": settings.to_json(),
        "environment": env,
        "git_commit_at_end": environment()["git_commit"],
        "load_average": {"before": load_before, "after": load_average()},
        "endpoints": [row.to_json() for row in table_rows],
        "checks": [check.to_json() for check in checks],
        "targets": {"met": met, "checked": targets},
    }
    json_path = report.write_json(document, out_dir, stamp)
    title = chart.title_of(stamp, settings.identities, settings.runs, _cpu_count())
    png = chart.draw(table_rows, checks, out_dir / "latest.png", title)
    print(report.endpoint_table(table_rows))
    if checks:
        print()
        print(report.checks_table(checks))
    print()
    print(f"targets met: {met} of {targets}   ({elapsed / 60:.1f} min)")
    print(f"json: {json_path} (and {out_dir / 'latest.json'})")
    print(f"chart: {png}")
    return met, targets


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the finally blocks that stop the servers


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if problem := usage_problem(args):
        parser.error(problem)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(
            f"missing load tools: {', '.join(missing)} (apt-get install wrk hey; "
            "`make bench` installs them)",
            file=sys.stderr,
        )
        return 1
    try:
        met, targets = run(settings_from(args), args.out, args.keep_work)
    except Exception as exc:  # a failed measurement: say what failed, exit 1
        log(f"benchmark failed: {type(exc).__name__}: {exc}")
        return 1
    return 1 if args.strict and met < targets else 0


if __name__ == "__main__":
    raise SystemExit(main())
