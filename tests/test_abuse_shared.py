"""The shared abuse state (``[rate_limit] storage_uri = "redis://..."``) on a real redis-server:
the rate limiter keeps the in-process semantics (burst, ban, Retry-After) with one budget across
app instances, no address in Redis and an in-process fallback while Redis is down (logged once);
a proof of work issued by one instance is accepted once by any; the adaptive meter is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from registryd.abuse.ratelimit import RateLimiter
from registryd.abuse.stores import SharedRateLimiter
from registryd.config import Config, RateLimitConfig
from registryd.hashcash import leading_zero_bits_ok, solve
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


# -- proof of work -----------------------------------------------------------------------------

POW = "[pow]\nenabled = true\ndifficulty = 4\nadaptive = {}\n[rate_limit]\nenabled = false\n"


def pow_config(redis: RedisServer, adaptive: bool = False) -> Config:
    tables = POW.format("true" if adaptive else "false")
    tables += f'storage_uri = "{redis.url}"\n'
    return make_config(kind="redis", url=redis.url, tables=tables)


def unsolved(challenge: str, difficulty: int) -> str:
    """A solution that does not solve ``challenge``."""
    for n in range(1000):
        digest = hashlib.sha256(f"{challenge}x{n}".encode()).digest()
        if not leading_zero_bits_ok(digest, difficulty):
            return f"x{n}"
    raise AssertionError("every candidate solved it")


async def test_a_proof_issued_by_one_instance_is_accepted_once_by_any(redis: RedisServer) -> None:
    config = pow_config(redis)
    async with instance(config) as a, instance(config) as b:
        issued = (await a.get("/pow/challenge")).json()
        header = f"{issued['challenge']}:{solve(issued['challenge'], issued['difficulty'])}"
        path = f"/check_user/{'ab' * 32}"
        assert (await b.get(path, headers={"x-enigma-pow": header})).status_code == 200
        again = await a.get(path, headers={"x-enigma-pow": header})
        assert again.status_code == 400 and again.json()["error"]["code"] == "POW_REQUIRED"
        # a wrong solution does not spend a challenge, on any instance
        issued = (await b.get("/pow/challenge")).json()
        wrong = f"{issued['challenge']}:{unsolved(issued['challenge'], issued['difficulty'])}"
        assert (await a.get(path, headers={"x-enigma-pow": wrong})).status_code == 400
        right = f"{issued['challenge']}:{solve(issued['challenge'], issued['difficulty'])}"
        assert (await a.get(path, headers={"x-enigma-pow": right})).status_code == 200


async def test_concurrent_spends_of_one_proof_across_instances_have_one_winner(
    redis: RedisServer,
) -> None:
    config = pow_config(redis)
    async with instance(config) as a, instance(config) as b:
        issued = (await a.get("/pow/challenge")).json()
        header = {"x-enigma-pow": f"{issued['challenge']}:{solve(issued['challenge'], 4)}"}
        path = f"/check_user/{'cd' * 32}"
        answers = await asyncio.gather(
            *((a if i % 2 else b).get(path, headers=header) for i in range(20))
        )
        assert sorted(r.status_code for r in answers) == [200] + [400] * 19


async def test_the_adaptive_meter_is_shared(redis: RedisServer) -> None:
    config = pow_config(redis, adaptive=True)
    async with instance(config) as a, instance(config) as b:
        difficulties = [
            (await (a if i % 2 else b).get("/pow/challenge")).json() for i in range(300)
        ]
    # 300 requests in a moment read as 300 * 0.0116 ≈ 3.5 rps across both: one bit more
    assert difficulties[0]["difficulty"] == 4 and difficulties[-1]["difficulty"] == 5
    with redis.client() as client:
        assert len(list(client.scan_iter(match=b"registryd:pow:rate:*"))) == 1


async def test_proof_of_work_answers_503_while_redis_is_down(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        async with instance(pow_config(server)) as a:
            issued = (await a.get("/pow/challenge")).json()
            header = {"x-enigma-pow": f"{issued['challenge']}:{solve(issued['challenge'], 4)}"}
            server.stop(signal.SIGKILL)
            refused = await a.get(f"/check_user/{'ef' * 32}", headers=header)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
