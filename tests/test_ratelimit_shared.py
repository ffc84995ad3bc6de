"""The shared rate limiter (``[rate_limit] storage_uri = "redis://..."``) on a real redis-server:
the in-process limiter's semantics (burst, ban, Retry-After), one budget across app instances,
no address in Redis, and the in-process fallback while Redis is down, logged once each way.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from registryd.abuse.ratelimit import RateLimiter
from registryd.abuse.stores import SharedRateLimiter
from registryd.config import Config, RateLimitConfig
from registryd.storage import open_storage
from registryd.timespec import now_ms
from tests.helpers import BASE_URL, INDEX_KEY_HEX, make_app, make_config
from tests.redis_support import RedisServer, redis_server
from tests.test_storage import INDEX_KEY


def limits(url: str, *, ban_seconds: int = 7) -> RateLimitConfig:
    return RateLimitConfig(storage_uri=url, per_ip_rps=1, burst=3, ban_seconds=ban_seconds)


async def test_same_answers_as_the_in_process_limiter(redis: RedisServer) -> None:
    for ban in (7, 0):
        shared = SharedRateLimiter(limits(redis.url, ban_seconds=ban), now_ms, INDEX_KEY)
        local = RateLimiter(limits("memory://", ban_seconds=ban), now_ms)
        try:
            for client in ("198.51.100.1", "198.51.100.2"):
                for endpoint in (None, "resolve", None, "register", "resolve", None):
                    theirs = await shared.check(client + str(ban), endpoint)
                    ours = local.check(client + str(ban), endpoint)
                    assert theirs == ours, (ban, client, endpoint)
        finally:
            await shared.close()


@contextlib.asynccontextmanager
async def instance(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    """An app over its own storage, its lifespan run (which closes the shared limiter)."""
    storage = open_storage(config)
    app = make_app(config, storage)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
                yield http
    finally:
        await storage.close()


async def test_a_burst_is_shared_between_instances(redis: RedisServer) -> None:
    text = '[rate_limit]\nper_ip_rps = 1\nburst = 3\nban_seconds = 30\nstorage_uri = "{}"\n'
    config = make_config(kind="redis", url=redis.url, tables=text.format(redis.url))
    async with instance(config) as a, instance(config) as b:
        answers = [(await (a if i % 2 else b).get("/health")).status_code for i in range(8)]
        assert answers.count(200) <= 4 and answers[:3] == [200, 200, 200]
        refused = await a.get("/health")
        assert refused.status_code == 429
        assert 0 < int(refused.headers["retry-after"]) <= 30
    with redis.client() as client:  # client hashes are keyed digests, never addresses
        keys = [k for k in client.scan_iter(match=b"registryd:rl:*")]
        assert len(keys) == 1 and b"127.0.0.1" not in keys[0]
        assert 0 < client.pttl(keys[0]) <= 34_000  # gone once full again and unbanned


async def test_falls_back_in_process_while_redis_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with redis_server(tmp_path / "redis") as server:
        shared = SharedRateLimiter(limits(server.url, ban_seconds=0), now_ms, INDEX_KEY)
        try:
            assert await shared.check("a", None) is None
            server.stop(signal.SIGKILL)
            with caplog.at_level(logging.WARNING, logger="registryd"):
                answers = [await shared.check("b", None) for _ in range(10)]
            assert answers[:3] == [None, None, None]  # the fallback's own burst of 3
            assert all(a is not None and a.retry_after_s == 1 for a in answers[3:])
            assert caplog.text.count("Redis failed") == 1
        finally:
            await shared.close()


def test_index_key_hex_is_what_keys_the_clients() -> None:
    assert INDEX_KEY.reveal().hex() == INDEX_KEY_HEX  # the tests' key, shared by instances
