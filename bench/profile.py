"""Flame graphs of the daemon under load: ``python -m bench.profile [options]`` (issue 15).

Starts the daemon (and, with ``--floor``, the floor app) on 127.0.0.1:0 with the benchmark's
config, preloads identities as ``make bench`` does, drives one endpoint with wrk at peak and
samples the server with py-spy (``py-spy record --pid``, 500 Hz, idle frames left out) for the
run. Writes ``<out>/<endpoint>-<storage>-<mode>.svg`` (the flame graph) and ``.txt`` (the
collapsed stacks, ``frame;frame;... count``, for grep and diffs), and prints the throughput
wrk saw under sampling (py-spy costs a few per cent) and the top frames by own time.

py-spy needs ptrace: run as root, or with ``kernel.yama.ptrace_scope`` = 0.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from registryd.certs import write_dev_certs

from . import loadgen, procs
from .configs import Setup
from .matrix import Workspace
from .preload import preload_leveldb, preload_sync
from .settings import Settings

SAMPLE_HZ = 500
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def own_time(collapsed: Path, top: int) -> list[tuple[str, float]]:
    """The ``top`` frames by own (leaf) samples, as fractions of all samples."""
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaves[stack.rsplit(";", 1)[-1]] += int(count)
        total += int(count)
    return [(frame, n / max(total, 1)) for frame, n in leaves.most_common(top)]


def record(
    ws: Workspace, argv: list[str], name: str, endpoint: str, seconds: float, out: Path
) -> float:
    """Serve with ``argv``, drive ``endpoint`` for ``seconds`` under py-spy; returns the rps."""
    setup_storage = name.split("-")[1]
    with procs.started(argv, ws.root / f"{name}.log") as (url, proc):
        if setup_storage == "memory" and not name.startswith("floor"):
            cafile = ws.certs.ca if url.startswith("https") else None
            preload_sync(url, ws.secrets, ws.settings.identities, ws.settings.seed, cafile)
        requests = ws.requests(endpoint)
        loadgen.wrk_peak(  # warm-up
            url, requests("warmup", 5000), duration_s=2, connections=32, threads=1
        )
        svg, txt = out / f"{name}.svg", out / f"{name}.txt"
        spy = [PY_SPY, "record", "--pid", str(proc.pid), "--rate", str(SAMPLE_HZ)]
        spy += ["--duration", str(round(seconds)), "--nonblocking"]
        # two samplers at once (nonblocking: they read the process's memory, never pause it):
        # the flame graph, and the collapsed stacks for grep and diffs
        samplers = [
            subprocess.Popen([*spy, "--format", fmt, "-o", str(path)])  # noqa: S603
            for fmt, path in (("flamegraph", svg), ("raw", txt))
        ]
        time.sleep(1)  # py-spy attaches
        result = loadgen.wrk_peak(
            url,
            requests("peak", round(seconds * 2500)),
            duration_s=seconds - 1,
            connections=32,
            threads=1,
        )
        for sampler in samplers:
            sampler.wait(seconds + 30)
        return result.rps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--endpoint", default="resolve_hit", help="as in make bench")
    parser.add_argument("--storage", default="leveldb", choices=["memory", "leveldb"])
    parser.add_argument("--mode", default="http", choices=["http", "tls"])
    parser.add_argument("--seconds", type=float, default=15.0, help="s of sampling under load")
    parser.add_argument("--identities", type=int, default=10_000)
    parser.add_argument("--floor", action="store_true", help="profile the floor app too")
    parser.add_argument("--out", type=Path, default=Path("bench/results/profiles"))
    parser.add_argument("--top", type=int, default=25, help="frames listed by own time")
    args = parser.parse_args(argv)
    if not Path(PY_SPY).exists():
        parser.error("py-spy is not installed: .venv/bin/pip install py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = Settings(identities=args.identities, request_lines=5_000)
    with tempfile.TemporaryDirectory(prefix="registryd-profile-") as tmp:
        root = Path(tmp)
        certs = write_dev_certs(root / "certs")
        ws = Workspace.create(root, settings, certs, lambda line: print(line, file=sys.stderr))
        setup = Setup(storage=args.storage, mode=args.mode)
        data_dir = root / "db"
        config = ws.config(setup, data_dir)
        if args.storage == "leveldb":
            preload_leveldb(data_dir, ws.secrets, settings.identities, settings.seed)
        runs = [(procs.daemon_argv(config), f"{args.endpoint}-{args.storage}-{args.mode}")]
        if args.floor:
            floor_endpoint = "floor_get" if args.endpoint == "check_user" else "floor_post"
            runs.append((procs.floor_argv(config), f"floor-{args.storage}-{args.mode}"))
        for server_argv, name in runs:
            endpoint = args.endpoint if not name.startswith("floor") else floor_endpoint
            rps = record(ws, server_argv, name, endpoint, args.seconds, args.out)
            print(f"{name}: {rps:.0f} requests/s under py-spy; {args.out / name}.svg")
            for frame, share in own_time(args.out / f"{name}.txt", args.top):
                print(f"  {share:6.1%}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
