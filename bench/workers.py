"""Workers on Redis, and Redis against LevelDB (issue 13).

:func:`workers_scaling`: two daemons on one redis-server (``appendfsync always``), plain HTTP,
one with ``[server] workers = 1`` and one with ``workers = 2``, preloaded with the run's N
identities (through the first; both read the same Redis). Resolve hits are driven at both,
A B B A (:mod:`bench.compare`); the figure is 2 workers / 1 worker, reported without a target:
on a 2-core machine wrk, redis-server and the workers share the cores.

:func:`redis_vs_leveldb`: from the matrix, Redis resolve-hit peak rps / LevelDB's, per mode
(target >= 0.8 with one worker).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from . import procs
from .checks import Check, at_least
from .compare import abba, ratio_check
from .configs import Setup
from .matrix import Measured, Workspace
from .preload import preload_sync
from .redis_server import redis_server
from .settings import REDIS_VS_LEVELDB_RESOLVE


def workers_scaling(ws: Workspace) -> Check:
    settings = ws.settings
    with redis_server(ws.root / "redis-workers") as redis_url:
        one = Setup("redis", "http", redis_url=redis_url)
        two = replace(one, workers=2)
        with (
            procs.server(
                procs.daemon_argv(ws.config(one, ws.root / "db-w1", "workers-1")),
                ws.root / "daemon-workers-1.log",
            ) as url_one,
            procs.server(
                procs.daemon_argv(ws.config(two, ws.root / "db-w2", "workers-2")),
                ws.root / "daemon-workers-2.log",
            ) as url_two,
        ):
            preload_sync(url_one, ws.secrets, settings.identities, settings.seed, None)
            hits = ws.files["resolve_hit"]
            runs = abba((url_one, hits), (url_two, hits), settings, ws.retries)
    return ratio_check(
        "redis_workers_2_vs_1",
        "resolve rps with [server] workers = 2 / 1 (redis, http)",
        ("1_worker", "2_workers"),
        runs,
        None,
    )


def redis_vs_leveldb(measured: Sequence[Measured]) -> list[Check]:
    """Redis / LevelDB resolve-hit peak rps, one check per mode measured on both."""
    peaks = {(m.storage, m.mode): m.peak for m in measured if m.endpoint == "resolve_hit"}
    checks = []
    for mode in sorted({mode for _, mode in peaks}):
        redis, leveldb = peaks.get(("redis", mode)), peaks.get(("leveldb", mode))
        if redis is None or leveldb is None:
            continue
        ratio = redis.rps / leveldb.rps
        checks.append(
            Check(
                name=f"redis_vs_leveldb_resolve_{mode}",
                description=f"resolve-hit peak rps, redis / leveldb ({mode}, one worker)",
                value=ratio,
                unit="x",
                target=f">= {REDIS_VS_LEVELDB_RESOLVE}",
                passed=at_least(ratio, REDIS_VS_LEVELDB_RESOLVE),
                details={"rps_redis": redis.rps, "rps_leveldb": leveldb.rps},
            )
        )
    return checks
