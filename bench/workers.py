"""Workers on Redis, and Redis against LevelDB (issue 13).

:func:`workers_scaling`: two daemons on one redis-server (``appendfsync always``), plain HTTP,
one with ``[server] workers = 1`` and one with ``workers = 2``, preloaded with the run's N
identities (through the first; both read the same Redis). Resolve hits are driven at both,
A B B A (:mod:`bench.compare`); the figure is 2 workers / 1 worker, reported without a target:
on a 2-core machine wrk, redis-server and the workers share the cores.

:func:`redis_vs_leveldb`: resolve hits on a LevelDB daemon and a Redis daemon (one worker each,
plain HTTP) side by side, A B B A; Redis / LevelDB, target >= 0.8.
"""

from __future__ import annotations

from dataclasses import replace

from . import procs
from .checks import Check
from .compare import abba, ratio_check
from .configs import Setup
from .matrix import Workspace
from .preload import preload_leveldb, preload_sync
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


def redis_vs_leveldb(ws: Workspace) -> Check:
    """Resolve hits on a LevelDB daemon and a Redis daemon side by side, A B B A: Redis /
    LevelDB (target >= 0.8, one worker each, plain HTTP)."""
    settings = ws.settings
    leveldb_dir = ws.root / "db-vs-leveldb"
    preload_leveldb(leveldb_dir, ws.secrets, settings.identities, settings.seed)
    with redis_server(ws.root / "redis-vs") as redis_url:
        leveldb = Setup("leveldb", "http")
        redis = Setup("redis", "http", redis_url=redis_url)
        with (
            procs.server(
                procs.daemon_argv(ws.config(leveldb, leveldb_dir, "vs-leveldb")),
                ws.root / "daemon-vs-leveldb.log",
            ) as url_leveldb,
            procs.server(
                procs.daemon_argv(ws.config(redis, ws.root / "db-vs-redis", "vs-redis")),
                ws.root / "daemon-vs-redis.log",
            ) as url_redis,
        ):
            preload_sync(url_redis, ws.secrets, settings.identities, settings.seed, None)
            hits = ws.files["resolve_hit"]
            runs = abba((url_leveldb, hits), (url_redis, hits), settings, ws.retries)
    return ratio_check(
        "redis_vs_leveldb_resolve",
        "resolve rps, redis / leveldb (http, one worker each)",
        ("leveldb", "redis"),
        runs,
        REDIS_VS_LEVELDB_RESOLVE,
    )
