"""Per-client token buckets with bans (spec 4.8), bounded in memory (DESIGN "Deliberate
differences"), and the ASGI middleware that applies them to every HTTP request.

Each client (a key from :class:`~.clientip.ClientKeys`) has five token buckets, all of
capacity ``burst`` and starting full: ``global`` (refill ``per_ip_rps`` tokens/s) and one per
limited endpoint, ``register``, ``resolve``, ``check_user`` and ``pow_challenge`` (refill
``endpoints.<name>_rps``). Refill is continuous and a request spends one token. Per request, as in
the reference: a banned client is refused without touching its buckets; otherwise a token is
spent from ``global`` and then from the endpoint's bucket; an empty bucket refuses and bans the
client for ``ban_seconds`` (0: no ban) from every endpoint; a ``global`` token spent before the
endpoint bucket refused stays spent. Each ban that starts leaves one audit line, ``ban
client=<pseudonym> bucket=<name> ban_seconds=N``: the pseudonym is a keyed BLAKE3 hash of the
client key under a key made at start-up, so one process's lines can be told apart by client
while no address is ever written.

Buckets are GCRA: a bucket is one number, its theoretical arrival time (TAT), the time at which it
would be full again. With times in seconds it holds ``burst - (TAT - now) * rate`` tokens, so a
request is allowed iff ``TAT - now <= (burst - 1) / rate`` and then moves TAT on by ``1 / rate``.
Charging a full bucket starts from ``TAT = now``. TATs are stored in
units of ms x rate since the limiter was created, so one token is exactly 1000 units and the
arithmetic on integral ms stays exact in doubles.

Memory differs from the reference (entries live forever there):

- A client is one ``array('d')`` of six doubles (five TATs, ``banned_until``) in a dict, plus its
  key in a FIFO queue. Measured with tracemalloc: 230-255 bytes per client once filled (IPv4 and
  longest IPv6 /64 keys), up to ~300 after churning through several times ``max_clients`` keys,
  with transient peaks up to ~340 while the dict resizes. :data:`MAX_BYTES_PER_CLIENT` (350)
  bounds all of these: ``max_clients = 100_000`` costs at most 35 MB.
- A record whose buckets are all full again and that is not banned carries no information and is
  dropped: each time a new client is inserted, the two oldest records in the queue are looked
  at; an idle one is dropped, a live one goes to the back of the queue. Pruning is O(1) per
  request and idle clients leave within a couple of passes over the queue.
- At most ``max_clients`` are tracked. Inserting one more drops the record at the front of the
  queue (the oldest inserted or least recently re-queued) even if it is live: that client is
  forgotten, its buckets start full and any ban it had is lifted. Memory stays bounded at the
  price that a client presenting more than ``max_clients`` distinct keys (IPv4 addresses or IPv6
  /64s) while those records are live can make the limiter forget others.
"""

from __future__ import annotations

import math
import secrets
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import blake3
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import wire
from ..config import RateLimitConfig
from ..errors import RateLimited
from ..logs import audit
from .clientip import ClientKeys


class Shared(Protocol):
    """A limiter checked with a round trip: :class:`registryd.abuse.stores.SharedRateLimiter`."""

    async def check(self, key: str, endpoint: str | None) -> Refusal | None: ...

    async def close(self) -> None: ...


CLIENT_KEY = "registryd.client"
"""The scope key under which :class:`RateLimitMiddleware` stores the client's key (a ``str``)."""

MAX_BYTES_PER_CLIENT = 350
"""Documented upper bound on memory per tracked client, in bytes (key, record, dict and queue),
transient dict resizes included."""

ENDPOINTS = ("register", "resolve", "check_user", "pow_challenge")
"""Names of the endpoint buckets, as passed to :meth:`RateLimiter.check`."""

_GLOBAL = 0
_SLOT = {name: i for i, name in enumerate(ENDPOINTS, start=1)}
_BANNED_UNTIL = len(ENDPOINTS) + 1
_FRESH = (float("-inf"),) * (_BANNED_UNTIL + 1)  # every bucket full, no ban
_TOKEN = 1000.0  # one token in TAT units (ms x rate)
_LOOKS_PER_INSERT = 2


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was refused, shaped for the 429 headers (all integers, seconds ceiled).

    ``retry_after_s``: until the ban ends, or (no ban) until the refusing bucket holds a token.
    ``limit``: the bucket capacity (``burst``). ``remaining``: tokens left, always 0.
    ``reset_s``: until the refusing bucket has a token again or the ban ends.
    ``bucket``: the bucket that refused (``global`` or one of :data:`ENDPOINTS`), or
    ``banned`` for a client already banned; ``ban_started``: this refusal started a ban.
    """

    retry_after_s: int
    limit: int
    remaining: int
    reset_s: int
    bucket: str = "global"
    ban_started: bool = False


class RateLimiter:
    """Token buckets per client key (spec 4.8) with bans and bounded memory (module docstring).

    ``clock`` returns milliseconds (the app's Unix-ms clock); only differences are used, so a
    monotonic ms clock works too. Not thread-safe: call it from the event loop only.
    """

    def __init__(self, config: RateLimitConfig, clock: Callable[[], int]) -> None:
        self._clock = clock
        self._epoch = clock()
        self._burst = config.burst
        self._tolerance = (config.burst - 1) * _TOKEN
        self._ban_ms = config.ban_seconds * 1000
        self._max_clients = config.max_clients
        e = config.endpoints
        self._rates = (
            config.per_ip_rps,
            e.register_rps,
            e.resolve_rps,
            e.check_user_rps,
            e.pow_challenge_rps,
        )
        self._pseudonyms = secrets.token_bytes(32)  # this process's, for ban audit lines
        self._records: dict[str, array[float]] = {}
        self._queue: deque[str] = deque()  # every key of _records once, oldest first

    def __len__(self) -> int:
        """The number of clients tracked now (at most ``max_clients``)."""
        return len(self._records)

    def check(self, key: str, endpoint: str | None) -> Refusal | None:
        """Charge one request by ``key`` to ``global`` and to ``endpoint`` (one of
        :data:`ENDPOINTS`, or None for global only); None if allowed, else the :class:`Refusal`.
        """
        now = self._clock() - self._epoch
        record = self._records.get(key)
        if record is None:
            record = self._insert(key, now)
        elif record[_BANNED_UNTIL] > now:
            return self._refusal(record[_BANNED_UNTIL] - now, "banned")
        bucket = "global"
        wait_ms = self._spend(record, _GLOBAL, now)
        if not wait_ms and endpoint is not None:
            bucket = endpoint
            wait_ms = self._spend(record, _SLOT[endpoint], now)
        if not wait_ms:
            return None
        if self._ban_ms:
            record[_BANNED_UNTIL] = now + self._ban_ms
            audit(
                "ban", client=self.pseudonym(key), bucket=bucket, ban_seconds=self._ban_ms // 1000
            )
            return self._refusal(self._ban_ms, bucket, ban_started=True)
        return self._refusal(wait_ms, bucket)

    def pseudonym(self, key: str) -> str:
        """16 hex characters standing for client ``key`` in this process's audit lines."""
        return blake3.blake3(key.encode(), key=self._pseudonyms).hexdigest(length=8)

    def _spend(self, record: array[float], slot: int, now: int) -> float:
        """Take a token from bucket ``slot``: 0.0 if taken, else the ms until it holds one."""
        rate = self._rates[slot]
        scaled_now = now * rate
        tat = record[slot]
        if tat < scaled_now:
            tat = scaled_now
        excess = tat - scaled_now - self._tolerance
        if excess > 0:
            return excess / rate
        record[slot] = tat + _TOKEN
        return 0.0

    def _refusal(self, wait_ms: float, bucket: str, *, ban_started: bool = False) -> Refusal:
        wait_s = math.ceil(wait_ms / 1000)
        return Refusal(wait_s, self._burst, 0, wait_s, bucket, ban_started)

    def _live(self, record: array[float], now: int) -> bool:
        """Whether ``record`` carries information: a ban, or a bucket that is not full."""
        if record[_BANNED_UNTIL] > now:
            return True
        return any(record[slot] > now * rate for slot, rate in enumerate(self._rates))

    def _insert(self, key: str, now: int) -> array[float]:
        records, queue = self._records, self._queue
        for _ in range(min(_LOOKS_PER_INSERT, len(queue))):
            oldest = queue.popleft()
            if self._live(records[oldest], now):
                queue.append(oldest)
            else:
                del records[oldest]
        while len(records) >= self._max_clients:
            del records[queue.popleft()]
        record = array("d", _FRESH)
        records[key] = record
        queue.append(key)
        return record


def client_key(request: Request) -> str:
    """The client's rate-limit key, put in the scope by :class:`RateLimitMiddleware`."""
    key: str = request.scope[CLIENT_KEY]
    return key


def refusal_body(refusal: Refusal) -> bytes:
    """The 429 body: ``{"error":{"code":"RATE_LIMITED","message":"rate limited: retry after
    N s"}}`` (spec 4.6's code; the message adds how long the refusal or ban lasts)."""
    return wire.error_body(RateLimited(f"retry after {refusal.retry_after_s} s"))


_ROUTES = {
    ("POST", "/register"): "register",
    ("POST", "/api/registry/challenge"): "register",  # node directory (extensions spec §3)
    ("POST", "/api/registry/register"): "register",
    ("POST", "/api/registry/heartbeat"): "register",
    ("POST", "/resolve"): "resolve",
    ("POST", "/identity/update"): "register",  # extensions spec §2
    ("POST", "/identity/delete"): "register",
    ("POST", "/presence/resolve"): "resolve",
    ("GET", "/pow/challenge"): "pow_challenge",
    ("HEAD", "/pow/challenge"): "pow_challenge",
}


def endpoint_of(method: str, path: str) -> str | None:
    """The endpoint bucket charged for ``method path``; None means the global bucket only.

    ``HEAD`` is routed like ``GET`` by Starlette, so it is charged like ``GET`` (a ``HEAD
    /check_user/...`` answers with the ``exists`` body's length).
    """
    endpoint = _ROUTES.get((method, path))
    if endpoint is None and method in ("GET", "HEAD") and path.startswith("/check_user/"):
        return "check_user"
    return endpoint


class RateLimitMiddleware:
    """Pure ASGI middleware: keys every HTTP request and, with a ``limiter``, limits it.

    For each ``http`` scope (any path or method, unknown paths included) the client key from
    ``keys`` is stored in ``scope[CLIENT_KEY]`` (``"registryd.client"``). With a ``limiter`` the
    request is then charged (:func:`endpoint_of`); a refusal is answered here with 429 and the
    spec 4.6 body (:func:`refusal_body`: ``"message":"rate limited: retry after N s"``), headers
    ``retry-after``, ``ratelimit-limit``, ``ratelimit-remaining``, ``ratelimit-reset`` (seconds),
    without reading the body or calling ``app``. ``limiter`` is a :class:`RateLimiter`, or the
    shared store's (:class:`registryd.abuse.stores.SharedRateLimiter`, a :class:`Shared`);
    ``limiter=None`` (``[rate_limit] enabled = false``) only keys. Each refusal is also handed
    to ``on_refusal`` (the metrics).
    Other scopes (lifespan, websocket) pass through untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter | Shared | None,
        keys: ClientKeys,
        on_refusal: Callable[[Refusal], None] | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.keys = keys
        self.on_refusal = on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            key = scope[CLIENT_KEY] = self.keys(scope)
            limiter = self.limiter
            if limiter is not None:
                endpoint = endpoint_of(scope["method"], scope["path"])
                if isinstance(limiter, RateLimiter):
                    refusal = limiter.check(key, endpoint)
                else:  # the shared store (Redis): one round trip
                    refusal = await limiter.check(key, endpoint)
                if refusal is not None:
                    if self.on_refusal is not None:
                        self.on_refusal(refusal)
                    await _send_429(send, refusal)
                    return
        await self.app(scope, receive, send)


async def _send_429(send: Send, refusal: Refusal) -> None:
    body = refusal_body(refusal)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"%d" % refusal.retry_after_s),
        (b"ratelimit-limit", b"%d" % refusal.limit),
        (b"ratelimit-remaining", b"%d" % refusal.remaining),
        (b"ratelimit-reset", b"%d" % refusal.reset_s),
    ]
    await send(
        {"type": "http.response.start", "status": RateLimited.status_code, "headers": headers}
    )
    await send({"type": "http.response.body", "body": body})
