"""Register's latency at a fixed rate, before and after: ``python -m bench.register_tail``
(issue 15).

Serves LevelDB (or memory) with two daemons side by side, one running the code of another
checkout (``--before DIR`` with its own ``.venv``; without it both run this tree) and one this
tree, and sends ``POST /register`` to each in the order A B B A: a paced wrk run at a fixed
``--rate`` (the same for both sides, so their tails compare; ``make bench`` paces at half of each
side's own peak) and a wrk peak run. Prints, per run, p50 / p99 / max at the fixed rate, peak
rps, the daemon's CPU per request (µs, from ``/proc/<pid>/stat``: robust to other work on the
machine) and the cores other processes kept busy. Exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from registryd.certs import write_dev_certs

from . import loadgen, procs
from .compare import with_server_cpu
from .configs import Setup
from .cpu import ForeignCpu
from .matrix import Workspace
from .settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--before", type=Path, help="checkout with its .venv (default: this one)")
    parser.add_argument("--storage", default="leveldb", choices=["memory", "leveldb"])
    parser.add_argument("--mode", default="http", choices=["http", "tls"])
    parser.add_argument("--rate", type=float, default=1200.0, help="requests/s of the paced runs")
    parser.add_argument("--seconds", type=float, default=6.0, help="s per run")
    args = parser.parse_args(argv)
    before = (args.before or procs.REPO).resolve()
    settings = Settings(identities=1_000, request_lines=5_000)
    with tempfile.TemporaryDirectory(prefix="registryd-tail-") as tmp, contextlib.ExitStack() as up:
        root = Path(tmp)
        ws = Workspace.create(
            root, settings, write_dev_certs(root / "certs"), lambda s: print(s, file=sys.stderr)
        )
        setup = Setup(storage=args.storage, mode=args.mode)
        sides = {}
        for side, python, cwd in (
            ("before", str(before / ".venv" / "bin" / "python"), before),
            ("after", sys.executable, procs.REPO),
        ):
            config = ws.config(setup, root / f"db-{side}", side)
            argv_ = [python, *procs.daemon_argv(config)[1:]]
            sides[side] = up.enter_context(procs.started(argv_, root / f"{side}.log", cwd=cwd))
        requests = ws.requests("register")
        for side, (url, _) in sides.items():  # warm-up
            loadgen.wrk_peak(
                url, requests(f"warm-{side}", 6000), duration_s=2, connections=32, threads=1
            )
        print(
            f"register {args.storage}/{args.mode}, paced at {args.rate:g} rps and peak, "
            f"{args.seconds:g} s runs"
        )
        print(
            "side     p50 ms  p99 ms  max ms   rps@rate  peak rps  µs/req@rate  µs/req@peak  other"
        )
        for i, side in enumerate(("before", "after", "after", "before")):
            url, proc = sides[side]
            rows = []
            for kind in ("rate", "peak"):
                phase = f"{kind}-{side}-{i}"
                run: Callable[[], loadgen.LoadResult]
                if kind == "rate":
                    count = round(args.seconds * args.rate * 1.5) + 100
                    run = functools.partial(
                        loadgen.wrk_paced,
                        url,
                        requests(phase, count),
                        rate=args.rate,
                        duration_s=args.seconds,
                    )
                else:
                    run = functools.partial(
                        loadgen.wrk_peak,
                        url,
                        requests(phase, round(args.seconds * 4000)),
                        duration_s=args.seconds,
                        connections=32,
                        threads=1,
                    )
                others = ForeignCpu()
                result = with_server_cpu(proc.pid, run)
                rows.append((result, result.cpu_us_per_request or 0.0, others.cores()))
            (rate, rate_us, o1), (peak, peak_us, o2) = rows
            errors = rate.errors + peak.errors
            print(
                f"{side:7} {rate.p50_ms:7.2f} {rate.p99_ms:7.2f} {rate.max_ms:7.2f} "
                f"{rate.rps:10.0f} {peak.rps:9.0f} {rate_us:12.0f} {peak_us:12.0f} "
                f"{max(o1, o2):6.2f}" + (f"  {errors} errors" if errors else "")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
