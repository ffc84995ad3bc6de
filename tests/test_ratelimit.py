"""Rate limiting (spec 4.8 + DESIGN "Deliberate differences"): token buckets, bans, bounded
memory, and the middleware around the real app. Time is a controllable clock; nothing sleeps."""

from __future__ import annotations

import contextlib
import json
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registryd.abuse.clientip import ClientKeys
from registryd.abuse.ratelimit import (
    CLIENT_KEY,
    ENDPOINTS,
    MAX_BYTES_PER_CLIENT,
    RateLimiter,
    RateLimitMiddleware,
    Refusal,
    endpoint_of,
)
from registryd.config import EndpointLimits, RateLimitConfig
from registryd.storage import open_storage
from tests.helpers import Clock, make_app, make_config
from tests.vectors import ALICE_HANDLE_HEX

PEER = "203.0.113.5"


def body_429(seconds: int) -> bytes:
    return b'{"error":{"code":"RATE_LIMITED","message":"rate limited: retry after %d s"}}' % seconds


def limits(
    *,
    per_ip_rps: int = 5,
    burst: int = 10,
    ban_seconds: int = 0,
    max_clients: int = 100_000,
    **endpoint_rps: int,
) -> RateLimitConfig:
    return RateLimitConfig(
        per_ip_rps=per_ip_rps,
        burst=burst,
        ban_seconds=ban_seconds,
        max_clients=max_clients,
        endpoints=EndpointLimits(**endpoint_rps),
    )


def allowed(limiter: RateLimiter, n: int, key: str = PEER, endpoint: str | None = None) -> int:
    """How many of ``n`` requests at the current time are allowed."""
    return sum(limiter.check(key, endpoint) is None for _ in range(n))


# --- token buckets ---------------------------------------------------------------------------


def test_global_bucket_refuses_at_burst_and_recovers_at_its_rate(clock: Clock) -> None:
    limiter = RateLimiter(limits(per_ip_rps=5, burst=10), clock)
    assert allowed(limiter, 10) == 10
    assert limiter.check(PEER, None) == Refusal(retry_after_s=1, limit=10, remaining=0, reset_s=1)
    clock.now_ms += 199
    assert allowed(limiter, 5) == 0
    clock.now_ms += 1  # 0.2 s after the burst: exactly one token
    assert allowed(limiter, 5) == 1
    clock.advance(2)  # 2 s: the bucket is full again, and holds no more than burst
    assert allowed(limiter, 20) == 10
    clock.advance(60)
    assert allowed(limiter, 20) == 10


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_endpoint_bucket_refuses_at_burst_with_global_available(
    clock: Clock, endpoint: str
) -> None:
    limiter = RateLimiter(limits(per_ip_rps=1000, burst=4, **{f"{endpoint}_rps": 2}), clock)
    start = clock.now_ms
    assert allowed(limiter, 4, endpoint=endpoint) == 4
    clock.now_ms += 10  # the global bucket (1000 rps) is full again, the endpoint's (2 rps) not
    assert allowed(limiter, 1, endpoint=endpoint) == 0
    assert allowed(limiter, 5, endpoint=None) == 3  # the refusal spent one global token
    clock.now_ms += 10
    for other in ENDPOINTS:
        if other != endpoint:
            assert allowed(limiter, 1, endpoint=other) == 1
    clock.now_ms = start + 499
    assert allowed(limiter, 1, endpoint=endpoint) == 0
    clock.now_ms = start + 500  # 2 rps: one token per 0.5 s
    assert allowed(limiter, 3, endpoint=endpoint) == 1
    clock.advance(2)
    assert allowed(limiter, 10, endpoint=endpoint) == 4


def test_endpoint_refusal_keeps_the_global_token_spent(clock: Clock) -> None:
    limiter = RateLimiter(limits(per_ip_rps=10, burst=2, register_rps=1), clock)
    assert allowed(limiter, 2, endpoint="register") == 2
    clock.advance(0.2)  # global full again (2 tokens), register holds 0.2
    assert limiter.check(PEER, "register") is not None  # spends a global token
    assert allowed(limiter, 3) == 1


def test_refusal_without_ban_reports_the_time_until_a_token(clock: Clock) -> None:
    limiter = RateLimiter(limits(per_ip_rps=1, burst=2), clock)
    assert allowed(limiter, 2) == 2
    assert limiter.check(PEER, None) == Refusal(retry_after_s=1, limit=2, remaining=0, reset_s=1)
    clock.now_ms += 999
    assert limiter.check(PEER, None) == Refusal(retry_after_s=1, limit=2, remaining=0, reset_s=1)
    clock.now_ms += 1
    assert limiter.check(PEER, None) is None


def test_rates_that_do_not_divide_a_second_stay_exact(clock: Clock) -> None:
    limiter = RateLimiter(limits(per_ip_rps=1000, burst=3, resolve_rps=3), clock)
    assert allowed(limiter, 5, endpoint="resolve") == 3
    start = clock.now_ms
    for k in range(1, 301):  # 3 rps: the k-th token is due at ceil(k * 333.33 ms)
        due = start + -(-k * 1000 // 3)
        clock.now_ms = due - 1
        assert allowed(limiter, 1, endpoint="resolve") == 0
        clock.now_ms = due
        assert allowed(limiter, 2, endpoint="resolve") == 1


# --- bans ------------------------------------------------------------------------------------


def test_ban_lasts_ban_seconds_exactly(clock: Clock) -> None:
    limiter = RateLimiter(limits(per_ip_rps=1, burst=2, ban_seconds=300), clock)
    assert allowed(limiter, 2) == 2
    ban_end = clock.now_ms + 300_000
    assert limiter.check(PEER, None) == Refusal(
        retry_after_s=300, limit=2, remaining=0, reset_s=300, bucket="global", ban_started=True
    )
    clock.advance(100.5)
    assert limiter.check(PEER, None) == Refusal(
        retry_after_s=200, limit=2, remaining=0, reset_s=200, bucket="banned"
    )
    clock.now_ms = ban_end - 1
    assert limiter.check(PEER, None) == Refusal(
        retry_after_s=1, limit=2, remaining=0, reset_s=1, bucket="banned"
    )
    clock.now_ms = ban_end
    assert allowed(limiter, 5) == 2


def test_ban_is_per_client(clock: Clock) -> None:
    limiter = RateLimiter(limits(burst=2, ban_seconds=300), clock)
    assert allowed(limiter, 3, key="198.51.100.1") == 2
    assert allowed(limiter, 3, key="198.51.100.2") == 2
    assert allowed(limiter, 1, key="198.51.100.1") == 0
    assert allowed(limiter, 1, key="198.51.100.3") == 1


def test_an_endpoint_violation_bans_from_every_endpoint(clock: Clock) -> None:
    limiter = RateLimiter(limits(per_ip_rps=1000, burst=2, ban_seconds=10), clock)
    assert allowed(limiter, 3, endpoint="register") == 2
    for endpoint in (None, *ENDPOINTS):
        assert allowed(limiter, 1, endpoint=endpoint) == 0
    clock.advance(10)
    assert allowed(limiter, 1, endpoint="resolve") == 1


def test_banned_requests_do_not_touch_the_buckets(clock: Clock) -> None:
    limiter = RateLimiter(limits(per_ip_rps=1, burst=10, ban_seconds=1), clock)
    assert allowed(limiter, 11) == 10
    assert allowed(limiter, 100) == 0  # banned: refused without spending
    clock.advance(1)  # the ban is over and the global bucket refilled one token
    assert allowed(limiter, 1) == 1


# --- bounded memory --------------------------------------------------------------------------


def ipv6_key(i: int) -> str:
    """A distinct /64 key of the longest form (24 characters) for each ``i``."""
    return f"fd00:{i >> 32 & 0xFFFF:04x}:{i >> 16 & 0xFFFF:04x}:{i & 0xFFFF:04x}::/64"


def traced_growth(limiter: RateLimiter, keys: range) -> tuple[int, int]:
    """Bytes allocated (still held, peak) while every key in ``keys`` makes one request."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in keys:  # the clock stands still: every record stays live
            limiter.check(ipv6_key(i), "resolve")
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return held - before, peak - before


def test_100_000_clients_stay_within_the_documented_bound(clock: Clock) -> None:
    n = 100_000
    limiter = RateLimiter(limits(max_clients=n), clock)
    held, peak = traced_growth(limiter, range(n))
    assert len(limiter) == n
    assert held < MAX_BYTES_PER_CLIENT * n, held / n
    assert peak < MAX_BYTES_PER_CLIENT * n, peak / n


def test_churning_at_the_cap_stays_within_the_documented_bound(clock: Clock) -> None:
    n = 11_000  # the worst ratio of dict size to entries measured
    limiter = RateLimiter(limits(max_clients=n), clock)
    held, peak = traced_growth(limiter, range(3 * n))
    assert len(limiter) == n
    assert held < MAX_BYTES_PER_CLIENT * n, held / n
    assert peak < MAX_BYTES_PER_CLIENT * n, peak / n


def test_tracked_clients_never_exceed_max_clients(clock: Clock) -> None:
    limiter = RateLimiter(limits(max_clients=1000, ban_seconds=300), clock)
    for i in range(100_000):
        assert limiter.check(ipv6_key(i), None) is None
        assert len(limiter) <= 1000
        if i % 100 == 0:
            clock.now_ms += 1
    assert len(limiter) == 1000


def test_idle_clients_are_dropped(clock: Clock) -> None:
    limiter = RateLimiter(limits(per_ip_rps=5), clock)
    for i in range(1000):
        limiter.check(f"10.0.{i // 256}.{i % 256}", None)
    clock.advance(0.2)  # one token back: every bucket is full again
    for i in range(1000):
        limiter.check(f"10.1.{i // 256}.{i % 256}", None)
    assert len(limiter) == 1000


def test_live_clients_survive_pruning(clock: Clock) -> None:
    limiter = RateLimiter(limits(burst=2, ban_seconds=300), clock)
    assert allowed(limiter, 3) == 2  # banned, and the oldest record
    for i in range(10_000):
        limiter.check(ipv6_key(i), None)
        clock.now_ms += 10
    assert allowed(limiter, 1) == 0  # still banned: 100 s of 300 have passed
    assert len(limiter) < 100  # the idle newcomers were dropped along the way


def test_at_the_cap_the_oldest_client_is_forgotten(clock: Clock) -> None:
    limiter = RateLimiter(limits(burst=2, ban_seconds=300, max_clients=2), clock)
    assert allowed(limiter, 3, key="198.51.100.1") == 2  # banned
    assert allowed(limiter, 3, key="198.51.100.2") == 2
    assert allowed(limiter, 1, key="198.51.100.3") == 1  # evicts 198.51.100.1
    assert len(limiter) == 2
    assert allowed(limiter, 1, key="198.51.100.1") == 1  # the documented price


# --- the middleware --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "endpoint"),
    [
        ("POST", "/register", "register"),
        ("POST", "/resolve", "resolve"),
        ("GET", "/check_user/" + ALICE_HANDLE_HEX, "check_user"),
        ("HEAD", "/check_user/xyz", "check_user"),
        ("GET", "/pow/challenge", "pow_challenge"),
        ("GET", "/register", None),
        ("POST", "/check_user/xyz", None),
        ("POST", "/announce", None),
        ("POST", "/sync", None),
        ("GET", "/nodes", None),
        ("POST", "/nodes", None),
        ("GET", "/envelope_pubkey", None),
        ("GET", "/envelope_pubkeys", None),
        ("GET", "/no/such/path", None),
        ("POST", "/register/", None),
    ],
)
def test_endpoint_of(method: str, path: str, endpoint: str | None) -> None:
    assert endpoint_of(method, path) == endpoint


class Recorder:
    """A stub ASGI app: records the scopes it sees and answers 204."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})


async def call(app: ASGIApp, path: str = "/", client: str = PEER) -> tuple[int, list[Message]]:
    """One raw ASGI GET; receive() fails the test, since the middleware must not read bodies."""
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [],
        "client": (client, 1234),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError("the body was read")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], sent


async def test_refusal_answers_429_without_calling_the_app(clock: Clock) -> None:
    inner = Recorder()
    limiter = RateLimiter(limits(burst=2, ban_seconds=60), clock)
    app = RateLimitMiddleware(inner, limiter=limiter, keys=ClientKeys([]))
    assert [(await call(app))[0] for _ in range(2)] == [204, 204]
    status, sent = await call(app)
    assert status == 429 and len(inner.scopes) == 2
    assert dict(sent[0]["headers"])[b"retry-after"] == b"60"
    assert sent[1] == {"type": "http.response.body", "body": body_429(60)}


async def test_disabled_limiter_never_refuses_but_sets_the_key() -> None:
    inner = Recorder()
    app = RateLimitMiddleware(inner, limiter=None, keys=ClientKeys([]))
    statuses = {(await call(app, client="2001:db8::1"))[0] for _ in range(1000)}
    assert statuses == {204}
    assert {s[CLIENT_KEY] for s in inner.scopes} == {"2001:db8::/64"}
    assert CLIENT_KEY == "registryd.client"


async def test_lifespan_passes_through_untouched() -> None:
    inner = Recorder()
    app = RateLimitMiddleware(inner, limiter=None, keys=ClientKeys([]))
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}}

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    await app(scope, receive, send)
    assert inner.scopes == [{"type": "lifespan", "asgi": {"version": "3.0"}}]


def rate_tables(
    *, per_ip_rps: int = 5, burst: int = 10, ban_seconds: int = 0, **endpoint_rps: int
) -> str:
    endpoints = "".join(f"{name} = {rps}\n" for name, rps in endpoint_rps.items())
    return (
        f"[rate_limit]\nenabled = true\nper_ip_rps = {per_ip_rps}\nburst = {burst}\n"
        f"ban_seconds = {ban_seconds}\n[rate_limit.endpoints]\n{endpoints}"
    )


@contextlib.asynccontextmanager
async def limited_app(
    clock: Clock,
    tables: str,
    *,
    extra: str = "",
    client: str = PEER,
    wrap: Callable[[ASGIApp], ASGIApp] = lambda app: app,
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for the real app behind the middleware, as the peer ``client``."""
    cfg = make_config(tables=tables, extra=extra)
    storage = open_storage(cfg)
    try:
        app = make_app(cfg, storage, clock=clock)
        limiter = RateLimiter(cfg.rate_limit, clock)
        limited = RateLimitMiddleware(app, limiter=limiter, keys=ClientKeys(cfg.trusted_proxies))
        transport = httpx.ASGITransport(app=wrap(limited), client=(client, 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as c:
            yield c
    finally:
        await storage.close()


async def test_429_body_and_headers(clock: Clock) -> None:
    async with limited_app(clock, rate_tables(per_ip_rps=1, burst=2, ban_seconds=300)) as api:
        assert [(await api.get("/nodes")).status_code for _ in range(2)] == [200, 200]
        response = await api.get("/nodes")
    assert response.status_code == 429
    assert response.content == body_429(300)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(body_429(300)))
    assert {k: v for k, v in response.headers.items() if k.startswith(("retry", "ratelimit"))} == {
        "retry-after": "300",
        "ratelimit-limit": "2",
        "ratelimit-remaining": "0",
        "ratelimit-reset": "300",
    }


async def test_a_404_flood_is_limited(clock: Clock) -> None:
    async with limited_app(clock, rate_tables(burst=3)) as api:
        statuses = [(await api.get(f"/no/such/path/{i}")).status_code for i in range(5)]
        clock.advance(0.2)
        assert (await api.get("/nowhere")).status_code == 404
    assert statuses == [404, 404, 404, 429, 429]


async def test_wrong_methods_are_limited(clock: Clock) -> None:
    async with limited_app(clock, rate_tables(burst=2)) as api:
        statuses = [(await api.delete("/register")).status_code for _ in range(3)]
    assert statuses == [405, 405, 429]


async def test_endpoint_buckets_through_the_app(clock: Clock) -> None:
    tables = rate_tables(per_ip_rps=1000, burst=3, check_user_rps=1)
    async with limited_app(clock, tables) as api:
        path = "/check_user/" + ALICE_HANDLE_HEX
        statuses = [(await api.get(path)).status_code for _ in range(4)]
        clock.now_ms += 10  # the global bucket (1000 rps) refills, check_user (1 rps) does not
        head = await api.head(path)
        nodes = await api.get("/nodes")
    assert statuses == [200, 200, 200, 429]
    assert head.status_code == 429
    assert nodes.status_code == 200


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X_FORWARDED_FOR", "X-Real-IP", "Forwarded"])
async def test_rotating_forwarding_headers_do_not_bypass_the_limit(
    clock: Clock, header: str
) -> None:
    """The DESIGN pitfall: slowapi let 6 of 6 rotating-header requests through a limit of 2."""
    async with limited_app(clock, rate_tables(per_ip_rps=1, burst=2)) as api:
        statuses = [
            (await api.get("/nodes", headers={header: f"198.51.100.{i}"})).status_code
            for i in range(6)
        ]
    assert statuses == [200, 200, 429, 429, 429, 429]


async def test_clients_behind_a_trusted_proxy_are_limited_apart(clock: Clock) -> None:
    tables = rate_tables(per_ip_rps=1, burst=2)
    extra = 'trusted_proxies = ["10.0.0.0/8"]'
    async with limited_app(clock, tables, extra=extra, client="10.0.0.1") as api:

        async def get(xff: str) -> int:
            return (await api.get("/nodes", headers={"X-Forwarded-For": xff})).status_code

        first = [await get(f"6.6.6.{i}, 198.51.100.1, 10.0.0.2") for i in range(3)]
        second = [await get("198.51.100.2") for _ in range(3)]
    assert first == [200, 200, 429]  # spoofed left-most entries do not make new clients
    assert second == [200, 200, 429]


def peer_from_header(app: ASGIApp) -> ASGIApp:
    """Test-only: take the TCP peer from ``x-test-peer`` (so one httpx client can be many)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        peer = dict(scope["headers"]).get(b"x-test-peer")
        if peer is not None:
            scope = {**scope, "client": (peer.decode(), 1234)}
        await app(scope, receive, send)

    return wrapped


async def test_a_64_is_limited_together(clock: Clock) -> None:
    async with limited_app(clock, rate_tables(burst=10), wrap=peer_from_header) as api:
        statuses = [
            (await api.get("/nodes", headers={"x-test-peer": f"2001:db8:7:8::{i:x}"})).status_code
            for i in range(1, 1001)
        ]
        other = await api.get("/nodes", headers={"x-test-peer": "2001:db8:7:9::1"})
    assert statuses.count(200) == 10
    assert statuses.count(429) == 990
    assert other.status_code == 200


async def test_the_refused_body_is_the_wire_error_shape(clock: Clock) -> None:
    async with limited_app(clock, rate_tables(burst=1)) as api:
        await api.get("/nodes")
        body: Any = json.loads((await api.get("/nodes")).content)
    assert body == {"error": {"code": "RATE_LIMITED", "message": "rate limited: retry after 1 s"}}


async def test_the_429_message_says_how_long_the_ban_lasts(clock: Clock) -> None:
    async with limited_app(clock, rate_tables(burst=1, ban_seconds=300)) as api:
        await api.get("/nodes")
        banned = await api.get("/nodes")
        clock.advance(258)
        later = await api.get("/nodes")
        clock.advance(42)
        free = await api.get("/nodes")
    messages = [r.json()["error"]["message"] for r in (banned, later)]
    assert messages == ["rate limited: retry after 300 s", "rate limited: retry after 42 s"]
    assert [banned.headers["retry-after"], later.headers["retry-after"]] == ["300", "42"]
    assert {banned.json()["error"]["code"], later.json()["error"]["code"]} == {"RATE_LIMITED"}
    assert free.status_code == 200
