"""Rate-limit checks per second: in-process, our Redis script, and (when installed) throttled-py's
GCRA on Redis and limits' moving window on Redis, each against a local redis-server.

``python -m bench.shared_limits REDIS_URL`` prints µs per request for one client key, sequential
(latency-bound: one round trip each) and 64 at once (throughput). A request is what the limiter
does for one HTTP request: global bucket, endpoint bucket and ban. throttled-py and limits check
one bucket per call, so they make two calls per request and have no ban.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

from registryd.abuse.ratelimit import RateLimiter
from registryd.abuse.stores import SharedRateLimiter
from registryd.config import RateLimitConfig
from registryd.secret import Secret
from registryd.timespec import now_ms

N = 4000


async def timed(check: Callable[[int], Awaitable[object]], parallel: int) -> float:
    """µs per request over :data:`N` requests, ``parallel`` at a time."""
    start = time.perf_counter()
    for batch in range(0, N, parallel):
        await asyncio.gather(*(check(i) for i in range(batch, batch + parallel)))
    return (time.perf_counter() - start) / N * 1e6


async def main(url: str) -> None:
    config = RateLimitConfig(storage_uri=url, per_ip_rps=1_000_000, burst=1_000_000)
    local = RateLimiter(config, now_ms)
    shared = SharedRateLimiter(config, now_ms, Secret(bytes(range(32))))
    candidates: dict[str, Callable[[int], Awaitable[object]]] = {}

    async def in_process(i: int) -> object:
        return local.check("client", "resolve")

    async def lua(i: int) -> object:
        return await shared.check("client", "resolve")

    candidates["in-process"] = in_process
    candidates["registryd Lua (1 round trip)"] = lua
    try:
        from throttled.asyncio import RateLimiterType, Throttled, rate_limiter, store

        redis_store = store.RedisStore(server=url)
        quota = rate_limiter.per_sec(1_000_000, burst=1_000_000)
        gcra = Throttled(using=RateLimiterType.GCRA.value, quota=quota, store=redis_store)

        async def throttled(i: int) -> object:
            await gcra.limit("client:global")
            return await gcra.limit("client:resolve")

        candidates["throttled-py GCRA (2 calls)"] = throttled
    except ImportError:
        print("throttled-py not installed: skipped", file=sys.stderr)
    try:
        from limits import parse
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter

        window = MovingWindowRateLimiter(RedisStorage("async+" + url))
        item = parse("1000000/second")

        async def moving(i: int) -> object:
            await window.hit(item, "client", "global")
            return await window.hit(item, "client", "resolve")

        candidates["limits moving window (2 calls)"] = moving
    except ImportError:
        print("limits not installed: skipped", file=sys.stderr)
    for name, check in candidates.items():
        await check(0)
        sequential, parallel = await timed(check, 1), await timed(check, 64)
        print(f"{name:34} {sequential:7.1f} µs sequential  {parallel:7.1f} µs at 64 at once")
    await shared.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"))
