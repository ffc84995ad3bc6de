"""Before and after: ``python -m bench.ab --before DIR [options]`` (issue 15).

Serves the same store with two daemons side by side, one running the code of another checkout
(``--before DIR``, e.g. a ``git worktree`` of main, with its own ``.venv``) and one running this
tree, and compares their peak throughput on one endpoint with A B B A wrk runs
(:func:`bench.compare.abba`), the floor measured beside them. Prints rps, the ratio after/before
and each side's ratio to the floor, and each side's CPU time per request (µs, the server process
tree's user + system time over its runs divided by the requests wrk completed: unlike rps, hardly
moved by other work on a shared machine) and its ratio after/before; exits 0. LevelDB is
preloaded once and copied, so both sides serve the same 10,000 (``--identities``) identities.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

from registryd.certs import write_dev_certs

from . import procs
from .compare import abba, cpu_us_per_request, mean_rps
from .configs import Setup
from .matrix import Workspace
from .preload import preload_leveldb, preload_sync
from .settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout with its .venv")
    parser.add_argument("--endpoint", default="resolve_hit", help="as in make bench")
    parser.add_argument("--storage", default="leveldb", choices=["memory", "leveldb"])
    parser.add_argument("--mode", default="http", choices=["http", "tls"])
    parser.add_argument("--duration", type=float, default=8.0, help="s per peak run")
    parser.add_argument("--identities", type=int, default=10_000)
    args = parser.parse_args(argv)
    before_python = args.before.resolve() / ".venv" / "bin" / "python"
    if not before_python.exists():
        parser.error(f"{before_python} not found: run make install in {args.before}")
    settings = Settings(identities=args.identities, duration_s=args.duration, request_lines=5_000)
    with tempfile.TemporaryDirectory(prefix="registryd-ab-") as tmp, contextlib.ExitStack() as up:
        root = Path(tmp)
        ws = Workspace.create(
            root, settings, write_dev_certs(root / "certs"), lambda s: print(s, file=sys.stderr)
        )
        setup = Setup(storage=args.storage, mode=args.mode)
        if args.storage == "leveldb":
            preload_leveldb(root / "db-a", ws.secrets, settings.identities, settings.seed)
            shutil.copytree(root / "db-a", root / "db-b")
        urls, pids = {}, {}
        for side, python, cwd in (
            ("before", str(before_python), args.before.resolve()),
            ("after", sys.executable, procs.REPO),
        ):
            config = ws.config(setup, root / ("db-a" if side == "before" else "db-b"), side)
            argv = [python, *procs.daemon_argv(config)[1:]]
            urls[side], proc = up.enter_context(procs.started(argv, root / f"{side}.log", cwd=cwd))
            pids[side] = proc.pid
            if args.storage == "memory":
                cafile = ws.certs.ca if args.mode == "tls" else None
                preload_sync(urls[side], ws.secrets, settings.identities, settings.seed, cafile)
        floor, floor_proc = up.enter_context(
            procs.started(procs.floor_argv(config), root / "floor.log")  # the last config
        )
        file = ws.files[args.endpoint]
        floor_file = ws.files["floor_get" if args.endpoint == "check_user" else "floor_post"]
        before, after = abba(
            (urls["before"], file),
            (urls["after"], file),
            settings,
            ws.retries,
            pids=(pids["before"], pids["after"]),
        )
        floor_pids = (floor_proc.pid, floor_proc.pid)
        floor_runs, _ = abba(
            (floor, floor_file), (floor, floor_file), settings, ws.retries, pids=floor_pids
        )
    sides = {"before": before, "after": after, "floor": floor_runs}
    rps = {side: mean_rps(runs) for side, runs in sides.items()}
    cpu = {side: cpu_us_per_request(runs) for side, runs in sides.items()}
    print(f"{args.endpoint} {args.storage}/{args.mode}, A B B A, {args.duration:g} s runs:")
    for side in ("before", "after", "floor"):
        print(
            f"  {side:6}  {rps[side]:7.0f} rps  ({rps[side] / rps['floor']:.2f}x the floor)"
            f"  {cpu[side]:6.1f} us CPU/request"
        )
    print(f"  after / before: {rps['after'] / rps['before']:.3f}x rps,")
    print(f"                  {cpu['after'] / cpu['before']:.3f}x CPU/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
