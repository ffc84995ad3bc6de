"""What rate limiting costs: resolve throughput with generous limits on vs limits off.

Two daemons over the memory store in plain HTTP, both preloaded with the run's N identities:
one with ``[rate_limit] enabled = false``, one with limits of 1,000,000 requests/s everywhere
(so every request pays the per-client bucket bookkeeping, and none is refused). Resolve hits are
driven at both, A B B A (:mod:`bench.compare`); the figure is on/off throughput, which the issue
wants >= 0.85 (limits cost at most 15 %). Any refused request would show as errors.
"""

from __future__ import annotations

from . import procs
from .checks import Check
from .compare import abba, ratio_check
from .configs import Setup
from .matrix import Workspace
from .preload import preload_sync
from .settings import RATE_LIMITS_MIN_RATIO


def rate_limits_cost(ws: Workspace) -> Check:
    settings = ws.settings
    off, on = Setup("memory", "http"), Setup("memory", "http", rate_limits=True)
    with (
        procs.server(
            procs.daemon_argv(ws.config(off, ws.root / "db-rl-off")), ws.root / "daemon-rl-off.log"
        ) as url_off,
        procs.server(
            procs.daemon_argv(ws.config(on, ws.root / "db-rl-on")), ws.root / "daemon-rl-on.log"
        ) as url_on,
    ):
        for url in (url_off, url_on):
            preload_sync(url, ws.secrets, settings.identities, settings.seed, None)
        hits = ws.files["resolve_hit"]
        off_runs, on_runs = abba((url_off, hits), (url_on, hits), settings, ws.retries)
    return ratio_check(
        "rate_limits_cost",
        "resolve rps with generous rate limits on / off (memory, http)",
        ("off", "on"),
        (off_runs, on_runs),
        RATE_LIMITS_MIN_RATIO,
    )
