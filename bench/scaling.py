"""How the daemon holds up as the registry grows (``--scaling``), and memory per identity.

- :func:`resolve_scaling`: resolve-hit throughput of a LevelDB daemon holding 1,000,000
  identities over one holding 1,000 (both preloaded in-process, both running, A B B A runs of
  random hits over each one's own identities). Target >= 0.9.
- :func:`gc_stall`: ``python -m bench.gc_stall``: collecting 1,000,000 expired presences while
  serving resolves: the longest event-loop stall and the p99 loop lag above the no-GC baseline
  of the same run. Targets <= 20 ms and <= 5 ms.
- :func:`memory_per_identity`: ``python -m bench.memory_rss``: resident bytes per identity in
  the memory store. Target <= 1 GiB per 1,000,000 (~1074 bytes each).
"""

from __future__ import annotations

import json
import subprocess

from . import procs, workload
from .checks import Check, at_most
from .compare import abba, ratio_check
from .configs import Setup
from .matrix import Workspace
from .preload import preload_leveldb
from .settings import GC_MAX_STALL_MS, GC_P99_LAG_MS, MEMORY_BYTES_PER_IDENTITY, SCALING_1M_VS_1K

SUBPROCESS_TIMEOUT_S = 1800.0


def resolve_scaling(ws: Workspace) -> Check:
    settings = ws.settings
    small, large = settings.scaling_small, settings.scaling_identities
    setup = Setup("leveldb", "http")
    sides = []
    for count in (small, large):
        data_dir = ws.root / f"db-scaling-{count}"
        took = preload_leveldb(data_dir, ws.secrets, count, settings.seed)
        ws.log(f"scaling: preloaded {count} identities into LevelDB in {took:.1f} s")
        hits = workload.resolve_requests(
            ws.root / f"resolve-hit-{count}.tsv",
            hits=True,
            identities=count,
            lines=settings.request_lines,
            seed=settings.seed,
        )
        sides.append((ws.config(setup, data_dir, name=f"scaling-{count}"), hits))
    (small_config, small_hits), (large_config, large_hits) = sides
    with (
        procs.server(procs.daemon_argv(small_config), ws.root / "daemon-small.log") as url_small,
        procs.server(procs.daemon_argv(large_config), ws.root / "daemon-large.log") as url_large,
    ):
        small_runs, large_runs = abba(
            (url_small, small_hits), (url_large, large_hits), settings, ws.retries
        )
    return ratio_check(
        "resolve_1m_vs_1k",
        f"resolve rps, LevelDB with {large:,} / with {small:,} identities",
        ("small", "large"),
        (small_runs, large_runs),
        SCALING_1M_VS_1K,
    )


def _json_subprocess(module: str, *args: str) -> dict[str, object]:
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        procs.python_module(module, *args),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        cwd=procs.REPO,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _number(result: dict[str, object], key: str) -> float:
    value = result.get(key)
    if not isinstance(value, int | float):
        raise RuntimeError(f"expected a number for {key!r}, got {value!r}")
    return float(value)


def gc_stall(presences: int) -> list[Check]:
    """Two checks from one ``bench.gc_stall`` run: the GC's longest stall and its p99 loop lag,
    each above the no-GC baseline of the same run (resolve load on in both)."""
    result = _json_subprocess("bench.gc_stall", "--presences", str(presences))
    gc_s = _number(result, "gc_total_ms") / 1000
    checks = []
    for name, key, what, target in (
        ("gc_max_stall", "max_stall", "longest event-loop stall", GC_MAX_STALL_MS),
        ("gc_p99_lag", "p99_lag", "p99 event-loop lag", GC_P99_LAG_MS),
    ):
        above = _number(result, f"{key}_above_baseline_ms")
        checks.append(
            Check(
                name=name,
                description=f"{what} collecting {presences:,} expired presences under resolve "
                f"load, above the no-GC baseline (GC took {gc_s:.1f} s)",
                value=above,
                unit="ms",
                target=f"<= {target:g}",
                passed=at_most(above, target),
                details=result,
            )
        )
    return checks


def memory_per_identity(identities: int) -> Check:
    result = _json_subprocess("bench.memory_rss", "--identities", str(identities))
    per_identity = _number(result, "bytes_per_identity")
    return Check(
        name=f"memory_per_identity_{identities}",
        description=f"resident bytes per identity, memory store, {identities:,} identities",
        value=per_identity,
        unit="B",
        target=f"<= {MEMORY_BYTES_PER_IDENTITY:.0f}",
        passed=at_most(per_identity, MEMORY_BYTES_PER_IDENTITY),
        details=result,
    )
