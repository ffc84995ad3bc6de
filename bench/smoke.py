"""``make bench-smoke``: the whole harness on tiny settings, in well under a minute (for CI).

    python -m bench.smoke

Runs ``python -m bench`` with 200 identities, 64 owners, 20 nodes, 1-second load runs and no
warm-up, plain HTTP over the memory, LevelDB and Redis stores, into a temporary results directory
(so a real run's ``bench/results/latest.*`` stay untouched), then checks that it exited 0,
printed the table, wrote the JSON with a non-zero peak and half-peak rate for every endpoint
(the new ones too: nodes, heartbeat, update) and floor on every store, that the half-peak runs
of the single-use requests (register, heartbeat, update) got no error (so each was valid and
unique: the half-peak slice always holds more than the run sends), and drew a PNG. The figures
themselves are not judged: they are too short to mean anything. Exits 1 with the reason on any
failure.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .matrix import FLOOR_ENDPOINTS
from .procs import REPO, python_module
from .settings import Settings

STORAGES = ("memory", "leveldb", "redis")
SINGLE_USE = ("register", "heartbeat", "update")
TIMEOUT_S = 200.0  # a healthy run takes ~90 s; a loaded machine can double that
ARGS = (
    "--identities",
    "200",
    "--owners",
    "64",
    "--nodes",
    "20",
    "--duration",
    "1",
    "--warmup",
    "0",
    "--half-duration",
    "1",
    "--mode",
    "http",
    "--storage",
    ",".join(STORAGES),
    "--request-lines",
    "2000",
    "--busy-retries",
    "0",  # the figures are not judged: no repeats when other work shares the machine
    "--no-workers",  # its figure has no target, so no verdict to check
)


class SmokeFailed(Exception):
    pass


def check(stdout: str, out_dir: Path) -> list[str]:
    """What the run produced, checked; returns a line per verified item."""
    for marker in ("endpoint", "x floor", "targets met:"):
        if marker not in stdout:
            raise SmokeFailed(f"the table was not printed (no {marker!r} in the output)")
    latest = out_dir / "latest.json"
    if not latest.is_file():
        raise SmokeFailed(f"no {latest}")
    document = json.loads(latest.read_text())
    rows = {(row["endpoint"], row["storage"]): row for row in document["endpoints"]}
    expected = [*FLOOR_ENDPOINTS, *Settings().endpoints]
    for storage in STORAGES:
        for endpoint in expected:
            row = rows.get((endpoint, storage))
            if row is None:
                raise SmokeFailed(f"no result for {endpoint} on {storage}")
            if not row["peak"]["rps"] > 0 or not row["half_peak"]["rps"] > 0:
                raise SmokeFailed(f"zero requests/s for {endpoint} on {storage}: {row}")
            if endpoint in SINGLE_USE and row["half_peak"]["errors"]:
                raise SmokeFailed(f"refused {endpoint} requests on {storage}: {row['half_peak']}")
    for check_ in document["checks"]:
        if check_["pass"] is None:
            raise SmokeFailed(f"check {check_['name']} has no verdict")
    png = out_dir / "latest.png"
    if not png.is_file() or png.stat().st_size < 10_000:
        raise SmokeFailed(f"no chart at {png}")
    return [
        f"{len(expected) * len(STORAGES)} results with non-zero rps",
        f"no error at half peak for {', '.join(SINGLE_USE)}",
        f"{len(document['checks'])} scenario checks",
        f"chart {png.stat().st_size} bytes",
    ]


def run_bench(argv: list[str]) -> tuple[int, str]:
    """Run the harness; past :data:`TIMEOUT_S` interrupt it (SIGINT, so its ``finally`` blocks
    stop the servers it started), and kill it 60 s later if it is still there."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)  # noqa: S603
    try:
        stdout, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise SmokeFailed(f"python -m bench ran past {TIMEOUT_S:.0f} s") from None
    return proc.returncode, stdout


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="registryd-bench-smoke-") as tmp:
        out_dir = Path(tmp)
        try:
            code, stdout = run_bench(python_module("bench", *ARGS, "--out", str(out_dir)))
            print(stdout)
            if code != 0:
                raise SmokeFailed(f"python -m bench exited {code}")
            verified = check(stdout, out_dir)
        except (SmokeFailed, KeyError, ValueError) as exc:
            print(f"bench-smoke: FAILED: {exc}")
            return 1
    print(f"bench-smoke: OK in {time.monotonic() - started:.0f} s: " + "; ".join(verified))
    return 0


if __name__ == "__main__":
    sys.exit(main())
