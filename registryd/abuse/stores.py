"""The shared abuse state: with ``[rate_limit] storage_uri = "redis://..."`` the token buckets
and bans of :mod:`.ratelimit` (:class:`SharedRateLimiter`) and the proof-of-work spent set and
adaptive meter of :mod:`.pow` (:class:`SharedProofOfWork`) live in Redis, so N workers or hosts
enforce one set of limits and accept each proof of work once.

Same semantics as the in-process :class:`~.ratelimit.RateLimiter` (GCRA, ``burst``, rates, ban,
``Retry-After``), in one Lua script per request (one round trip): a banned client is refused
untouched; else a ``global`` token is spent, then one from the endpoint's bucket; an empty bucket
refuses and bans for ``ban_seconds``. Times come from Redis (``TIME``), one clock for every host.

A client is one hash, ``registryd:rl:{<16-byte keyed BLAKE3 of the client key, hex>}`` with a
field per bucket (its TAT, Unix ms) and ``ban`` (until, Unix ms), expiring once every bucket is
full again and the ban is over, so Redis holds only live clients and never an address.

Why a script of our own: ``limits`` (slowapi's engine) has fixed and moving windows but no token
bucket and no ban; ``throttled-py`` has GCRA on Redis but one bucket per call and no ban, so a
request (global + endpoint bucket + ban) would take three round trips. Measured figures are in
the README (Abuse resistance, shared limits).

When Redis fails (error or ``timeout_ms``), requests are limited by an in-process limiter for
:data:`RETRY_AFTER_FAILURE_S`, then Redis is tried again; the switch is logged once each way.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Callable
from typing import Any

import blake3
import redis

from ..config import PowConfig, RateLimitConfig
from ..errors import PowRequired, StorageError
from ..hashcash import Challenge, leading_zero_bits_ok
from ..logs import audit
from ..secret import Secret
from ..storage.redis_conn import aclose_within, async_client
from ..storage.redis_scripts import SPEND
from .pow import HALF_LIFE_MS, IDLE_MS, RATE_PER_COUNT, ProofOfWork, parse_proof
from .ratelimit import ENDPOINTS, RateLimiter, Refusal

log = logging.getLogger("registryd")

RETRY_AFTER_FAILURE_S = 1.0
KEY_CONTEXT = "registryd rate limit client key v1"
POW_CONTEXT = "registryd shared pow key v1"
METER_CONTEXT = "registryd shared pow meter key v1"
POW_SPENT = b"registryd:{pow}:spent"
SPENT, FULL = 0, 2  # the spend script's answers (1: replayed)

GCRA = """
-- KEYS[1]: the client's hash; ARGV: endpoint ('' for global only), global rps, endpoint rps,
-- burst, ban ms, key ttl ms. Returns {0} allowed, {1, ms} banned, {2, ms, bucket} banned now,
-- {3, ms, bucket} refused (no ban), ms being the wait.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ban = tonumber(redis.call('HGET', KEYS[1], 'ban') or '0')
if ban > now then return {1, ban - now} end
local burst = tonumber(ARGV[4])
local function spend(field, rate)
  local interval = 1000 / rate
  local tat = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  if tat < now then tat = now end
  local excess = tat - now - (burst - 1) * interval
  if excess > 0 then return excess end
  redis.call('HSET', KEYS[1], field, string.format('%.3f', tat + interval))
  return 0
end
local bucket = 'global'
local wait = spend('global', tonumber(ARGV[2]))
if wait == 0 and ARGV[1] ~= '' then
  bucket = ARGV[1]
  wait = spend(ARGV[1], tonumber(ARGV[3]))
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if wait == 0 then return {0} end
local ban_ms = tonumber(ARGV[5])
if ban_ms > 0 then
  redis.call('HSET', KEYS[1], 'ban', now + ban_ms)
  return {2, ban_ms, bucket}
end
return {3, math.ceil(wait), bucket}
"""


class SharedRateLimiter:
    """:class:`~.ratelimit.RateLimiter`'s semantics with the buckets in Redis (module
    docstring). ``index_key`` keys the client hashes (every process must share it);
    ``timeout_ms`` bounds each check; ``clock`` (Unix ms) drives the in-process fallback."""

    def __init__(
        self,
        config: RateLimitConfig,
        clock: Callable[[], int],
        index_key: Secret,
        *,
        ca_file: str | None = None,
        timeout_ms: int = 1000,
    ) -> None:
        self._redis: Any = async_client(config.storage_uri, ca_file, timeout_ms / 1000)
        self._script = self._redis.register_script(GCRA)
        self._timeout_s = timeout_ms / 1000
        self._key = blake3.blake3(index_key.reveal(), derive_key_context=KEY_CONTEXT).digest()
        self._fallback = RateLimiter(config, clock)
        e = config.endpoints
        self._rates = {
            "register": e.register_rps,
            "resolve": e.resolve_rps,
            "check_user": e.check_user_rps,
            "pow_challenge": e.pow_challenge_rps,
        }
        assert set(self._rates) == set(ENDPOINTS)
        self._global = config.per_ip_rps
        self._burst = config.burst
        self._ban_ms = config.ban_seconds * 1000
        slowest = min(config.per_ip_rps, *self._rates.values())
        self._ttl_ms = math.ceil(config.burst * 1000 / slowest) + self._ban_ms + 1000
        self._down_until = 0.0

    def __repr__(self) -> str:
        return f"SharedRateLimiter(fallback={self._down_until > 0})"

    def _client(self, key: str) -> bytes:
        digest = blake3.blake3(key.encode("utf-8", "surrogatepass"), key=self._key).hexdigest(16)
        return b"registryd:rl:{" + digest.encode() + b"}"

    async def check(self, key: str, endpoint: str | None) -> Refusal | None:
        """Charge one request by ``key`` to ``global`` and ``endpoint``; None if allowed, else
        the :class:`Refusal` (as :meth:`RateLimiter.check`)."""
        loop = asyncio.get_running_loop()
        if self._down_until:
            if loop.time() < self._down_until:
                return self._fallback.check(key, endpoint)
        args = [
            endpoint or "",
            self._global,
            self._rates[endpoint] if endpoint else 1,
            self._burst,
            self._ban_ms,
            self._ttl_ms,
        ]
        try:
            async with asyncio.timeout(self._timeout_s):
                reply = await self._script([self._client(key)], args)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            if not self._down_until:
                log.warning(
                    "rate limiter: Redis failed (%s); limiting in this process until it answers",
                    type(exc).__name__,
                )
            self._down_until = loop.time() + RETRY_AFTER_FAILURE_S
            return self._fallback.check(key, endpoint)
        if self._down_until:
            log.warning("rate limiter: Redis answers again; limits are shared again")
            self._down_until = 0.0
        if reply[0] == 0:
            return None
        bucket = "banned"
        if reply[0] != 1:
            bucket = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
        if reply[0] == 2:
            client = self._fallback.pseudonym(key)
            audit("ban", client=client, bucket=bucket, ban_seconds=self._ban_ms // 1000)
        wait_s = math.ceil(int(reply[1]) / 1000)
        return Refusal(wait_s, self._burst, 0, wait_s, bucket, ban_started=reply[0] == 2)

    async def close(self) -> None:
        await aclose_within(self._redis, self._timeout_s)


# -- proof of work ------------------------------------------------------------------------------

METER = """
-- KEYS[1]: the client's decaying count (its level: log2(count) + t / half-life);
-- ARGV: half-life ms, idle ms. Returns the count, this request included, as a string.
local t = redis.call('TIME')
local age = (tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000) / tonumber(ARGV[1])
local level = redis.call('GET', KEYS[1])
local count = 1
if level then count = 1 + 2 ^ (tonumber(level) - age) end
local next_level = math.log(count) / math.log(2) + age
redis.call('SET', KEYS[1], string.format('%.17g', next_level), 'PX', ARGV[2])
return string.format('%.17g', count)
"""


class SharedProofOfWork(ProofOfWork):
    """:class:`~.pow.ProofOfWork` for many processes: challenges MAC'd with ``key`` (the same
    in every process, derived from the index key), the spent set a sorted set in Redis
    (``registryd:{pow}:spent``, challenges scored by expiry, at most ``max_spent``: the storage's
    spend script) and, when adaptive, each client's decaying count a Redis key
    (``registryd:pow:rate:{<keyed digest>}``, expiring after :data:`~.pow.IDLE_MS`).

    A proof is checked (format, MAC, expiry, hash) and then spent in one round trip, so of
    several processes given one proof exactly one accepts it. A Redis failure is a
    :class:`~registryd.errors.StorageError` (503): a proof is never accepted unrecorded.
    """

    def __init__(
        self,
        config: PowConfig,
        clock: Callable[[], int],
        index_key: Secret,
        client: Any,
        *,
        timeout_ms: int = 1000,
        max_spent: int = 1_000_000,
    ) -> None:
        key = blake3.blake3(index_key.reveal(), derive_key_context=POW_CONTEXT).digest()
        super().__init__(config, clock, key=key, max_spent=max_spent, max_clients=1)
        self._redis = client
        self._spend_lua = client.register_script(SPEND)
        self._meter_lua = client.register_script(METER)
        self._timeout_s = timeout_ms / 1000
        self._fingerprints = blake3.blake3(key, derive_key_context=METER_CONTEXT).digest()

    async def _call(self, call: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except (redis.RedisError, OSError, TimeoutError) as exc:
            raise StorageError(f"proof of work: Redis failed: {type(exc).__name__}") from exc

    async def _rate(self, client_key: str) -> float:
        if not self.config.adaptive:
            return 0.0
        digest = blake3.blake3(client_key.encode("utf-8", "surrogatepass"), key=self._fingerprints)
        key = b"registryd:pow:rate:{" + digest.hexdigest(16).encode() + b"}"
        count = await self._call(self._meter_lua([key], [HALF_LIFE_MS, IDLE_MS]))
        return float(count) * RATE_PER_COUNT

    async def aissue(self, client_key: str) -> Challenge:
        now = self._now()
        return self._challenge(self._difficulty_at(await self._rate(client_key)), now, client_key)

    async def averify(self, header: str | None, client_key: str) -> None:
        now = self._now()
        proof = parse_proof(header)
        if proof is None or not self._authentic(proof.raw, client_key, now):
            await self._rate(client_key)
            raise PowRequired()
        digest = hashlib.sha256(proof.text.encode("ascii") + proof.solution.encode("ascii"))
        if not leading_zero_bits_ok(digest.digest(), proof.raw[4]):
            await self._rate(client_key)  # the challenge stays usable: count this try
            raise PowRequired()
        expiry_ms = int.from_bytes(proof.raw[:4], "big") * 1000
        args = [proof.raw, expiry_ms, now, self._max_spent]
        spend = int(await self._call(self._spend_lua([POW_SPENT], args)))
        if spend == FULL:
            log.warning("proof of work: the shared spent set is full; refusing proofs")
        if spend != SPENT:
            raise PowRequired()

    async def close(self) -> None:
        await aclose_within(self._redis, self._timeout_s)
