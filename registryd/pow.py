"""Hashcash proof of work on ``/resolve`` and ``/check_user`` (spec 4.7), issued statelessly.

Wire (as the reference): ``GET /pow/challenge`` answers ``{"challenge": <32 lowercase hex>,
"difficulty": <bits>, "expires_ms": <Unix ms>}``; the client sends
``x-enigma-pow: <challenge>:<solution>`` (split at the first ``:``), and the proof holds when
``SHA-256(ascii(challenge) || utf8(solution))`` starts with ``difficulty`` zero bits. Every
failure is :class:`~registryd.errors.PowRequired` (400 ``POW_REQUIRED``, "pow required").

Unlike the reference, issuing stores nothing: the 16 challenge bytes carry their own terms
under a server MAC, so a flood of ``GET /pow/challenge`` costs no memory::

    expiry (Unix s, 4 B big-endian) || difficulty (1 B) || nonce (3 B random) || MAC (8 B)
    MAC = BLAKE3-keyed(key, "registryd pow challenge v1" || first 8 bytes || client key)[:8]

A challenge is bound to the client it was issued to (the rate-limit key) and is accepted only
while ``now_ms <= expires_ms``, at most once. The MAC key is random per process unless given, so
a restart invalidates outstanding challenges (pass a fixed key only together with a restart
delay of ``ttl_seconds``: the spent set does not survive the restart). :meth:`ProofOfWork.verify`
checks the cheap things first — format, MAC, expiry, replay — and hashes only a fresh challenge,
which is then spent even if the solution is wrong (as the reference). Spent challenges are kept
until they expire, in a heap ordered by expiry (the challenge's leading bytes), bounded by
``max_spent``; when that many unexpired ones are held, new proofs are refused (fail closed)
rather than any spent one forgotten. The clock is made monotonic, so stepping the wall clock
back cannot revive a forgotten challenge.

Adaptive difficulty (``[pow] adaptive``): each client's request rate is an exponentially
decaying count with a 60 s half-life. ``issue()`` counts one request, and so does every
``verify()`` except the first use of a fresh challenge (its ``issue()`` already counted), so an
honest request — one challenge, one proof — counts once. At a steady rate ``r`` the estimate
converges to ``r + 0.006`` rps within ~10 minutes; a burst of ``n`` requests reads as
``n * 0.0116`` rps. The difficulty issued is ``base + floor(log2(rate / adaptive_free_rps))``
once ``rate >= 2 * adaptive_free_rps``, else ``base``, and never more than 30. With the
defaults (base 18, free 1 rps):

    =====================  ==========  ====================  =====================
    client rate (req/s)    difficulty  expected hashes       honest cost (CPython)
    =====================  ==========  ====================  =====================
    below 2                18          2**18 = 262 144       0.12 s
    2 to < 4               19          2**19 = 524 288       0.25 s
    4 to < 8               20          2**20 ≈ 1.0 M         0.5 s
    8 to < 16              21          2**21 ≈ 2.1 M         1 s
    64 to < 128            24          2**24 ≈ 16.8 M        8 s
    256 to < 512           26          2**26 ≈ 67 M          32 s
    4096 and more          30 (cap)    2**30 ≈ 1.07 G        8.5 min
    =====================  ==========  ====================  =====================

Costs are for :func:`solve` on the development machine, ~2.1 M SHA-256/s on one CPython core
(measured: 2.0-2.3 M/s); a native solver is ~10x faster. The number of hashes needed is
geometric, so 1 in 20 honest solves takes three times the expected work. The registryd client
refuses challenges above ``max_pow_difficulty`` (default 24).

Not thread-safe: call from the event loop. ``verify`` never awaits, so its check-and-spend is
atomic under asyncio.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import math
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from heapq import heappop, heappush
from typing import NamedTuple, TypedDict

import blake3

from .config import PowConfig
from .errors import PowRequired
from .secret import Secret

__all__ = [
    "HEADER",
    "MAX_DIFFICULTY",
    "Challenge",
    "ProofOfWork",
    "SolveCancelled",
    "leading_zero_bits_ok",
    "solve",
]

log = logging.getLogger("registryd")

HEADER = "x-enigma-pow"
MAX_DIFFICULTY = 30  # adaptive difficulty stops here
HALF_LIFE_MS = 60_000  # of the per-client request count
IDLE_MS = 10 * HALF_LIFE_MS  # a client's count has decayed 1024-fold: forget it
KEY_LEN = 32
CHALLENGE_LEN = 16
MAC_LEN = 8
MAX_EXPIRY_S = 0xFFFF_FFFF
_MAC_DOMAIN = b"registryd pow challenge v1"
_CHALLENGE_HEX = re.compile(r"[0-9a-f]{32}")
_RATE_PER_COUNT = math.log(2) / (HALF_LIFE_MS / 1000)  # decayed count -> requests per second
_SUFFIXES = tuple(b"%02x" % low for low in range(256))


class Challenge(TypedDict):
    """The ``GET /pow/challenge`` answer (spec 4.5, 4.7)."""

    challenge: str
    difficulty: int
    expires_ms: int


class SolveCancelled(Exception):
    """:func:`solve` was stopped through its ``stop`` event."""


def leading_zero_bits_ok(digest: bytes, difficulty: int) -> bool:
    """Spec 4.7: the first ``difficulty // 8`` bytes are zero and, when ``r = difficulty % 8``
    is not 0, the next byte has at least ``r`` leading zero bits."""
    full, rest = divmod(difficulty, 8)
    if difficulty < 0 or len(digest) * 8 < difficulty or any(digest[:full]):
        return False
    return rest == 0 or digest[full] >> (8 - rest) == 0


def solve(challenge: str, difficulty: int, *, stop: threading.Event | None = None) -> str:
    """The smallest counter, in lowercase hex, that solves ``challenge`` (the reference solver).

    Expected work is ``2**difficulty`` SHA-256 computations (~2 M/s in CPython). ``stop``, when
    set from another thread, makes it raise :class:`SolveCancelled` within ~65 000 hashes.
    """
    if not 0 <= difficulty <= 256:
        raise ValueError("difficulty must be 0..256 bits")
    if difficulty == 0:
        return "0"
    prefix = hashlib.sha256(challenge.encode("utf-8"))
    bound = (1 << (256 - difficulty)).to_bytes(32, "big")  # digest < bound: enough zero bits
    for counter in range(256):  # "0" .. "ff"
        attempt = prefix.copy()
        attempt.update(b"%x" % counter)
        if attempt.digest() < bound:
            return f"{counter:x}"
    for high in itertools.count(1):  # counter = high * 256 + low, in hex: f"{high:x}{low:02x}"
        if stop is not None and not high & 0xFF and stop.is_set():
            raise SolveCancelled()
        base = prefix.copy()
        base.update(b"%x" % high)
        copy = base.copy
        for low, suffix in enumerate(_SUFFIXES):
            attempt = copy()
            attempt.update(suffix)
            if attempt.digest() < bound:
                return f"{high:x}{low:02x}"
    raise AssertionError("unreachable")  # pragma: no cover


class _Proof(NamedTuple):
    text: str  # the challenge as sent: 32 lowercase hex chars
    raw: bytes  # its 16 bytes
    solution: str


def _parse(header: str | None) -> _Proof | None:
    if header is None or not header.isascii():
        return None
    text, colon, solution = header.partition(":")
    if not colon or not solution or not _CHALLENGE_HEX.fullmatch(text):
        return None
    return _Proof(text, bytes.fromhex(text), solution)


class _RateMeter:
    """Per-client request rates: a count decaying with half-life :data:`HALF_LIFE_MS`.

    Clients are kept in order of their last request, so idle ones (:data:`IDLE_MS`) are dropped
    from the front in amortized O(1); at ``max_clients`` the least recently seen goes first.
    """

    def __init__(self, max_clients: int) -> None:
        self._max_clients = max_clients
        self._clients: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def hit(self, client_key: str, now_ms: int) -> float:
        """Count a request of ``client_key``; its rate in requests/s, this one included."""
        clients = self._clients
        entry = clients.pop(client_key, None)
        count = 1.0
        if entry is not None:
            count += entry[0] * 0.5 ** ((now_ms - entry[1]) / HALF_LIFE_MS)
        while clients:
            _, (_, last_ms) = next(iter(clients.items()))
            if now_ms - last_ms <= IDLE_MS and len(clients) < self._max_clients:
                break
            clients.popitem(last=False)
        clients[client_key] = (count, now_ms)
        return count * _RATE_PER_COUNT


class ProofOfWork:
    """Issues and verifies proofs of work for one process (see the module docstring).

    ``config``: the ``[pow]`` table; ``clock``: Unix time in ms. ``key``: the 32-byte MAC key
    (random if None). ``max_spent``: the most spent, unexpired challenges remembered (~110 B
    each) before new proofs are refused; ``max_clients``: the most clients whose rate is
    tracked when ``config.adaptive`` (~250 B each).
    """

    def __init__(
        self,
        config: PowConfig,
        clock: Callable[[], int],
        *,
        key: bytes | None = None,
        max_spent: int = 1_000_000,
        max_clients: int = 100_000,
    ) -> None:
        key = secrets.token_bytes(KEY_LEN) if key is None else key
        if len(key) != KEY_LEN:
            raise ValueError("key must be 32 bytes")
        if max_spent <= 0 or max_clients <= 0:
            raise ValueError("max_spent and max_clients must be positive")
        if not 0 <= config.difficulty <= 255:
            raise ValueError("difficulty must be 0..255 bits")
        self.config = config
        self._clock = clock
        self._key = Secret(key)
        self._max_spent = max_spent
        self._last_ms = 0
        self._spent: set[int] = set()
        self._expiry_heap: list[int] = []  # the same ints; big-endian, so ordered by expiry
        self._warned_full = False
        self._rates = _RateMeter(max_clients) if config.adaptive else None

    def __repr__(self) -> str:
        return f"ProofOfWork(difficulty={self.config.difficulty}, spent={self.spent})"

    @property
    def spent(self) -> int:
        """How many spent challenges are remembered now (unexpired ones, after pruning)."""
        self._prune(self._now())
        return len(self._spent)

    @property
    def tracked_clients(self) -> int:
        """How many clients' request rates are held (0 unless adaptive)."""
        return 0 if self._rates is None else len(self._rates)

    def issue(self, client_key: str) -> Challenge:
        """A fresh challenge for ``client_key`` (the ``GET /pow/challenge`` answer); stores
        nothing, apart from counting the request when adaptive."""
        now = self._now()
        difficulty = self._difficulty(client_key, now)
        expiry_s = min((now + self.config.ttl_seconds * 1000) // 1000, MAX_EXPIRY_S)
        head = expiry_s.to_bytes(4, "big") + bytes((difficulty,)) + secrets.token_bytes(3)
        return {
            "challenge": (head + self._mac(head, client_key)).hex(),
            "difficulty": difficulty,
            "expires_ms": expiry_s * 1000,
        }

    def verify(self, header: str | None, client_key: str) -> None:
        """Accept the ``x-enigma-pow`` header value of ``client_key``'s request, or raise
        :class:`PowRequired`. Each challenge is accepted once, by the client it was issued to,
        until its ``expires_ms``."""
        now = self._now()
        proof = _parse(header)
        if proof is None or not self._fresh(proof.raw, client_key, now):
            self._count(client_key, now)
            raise PowRequired()
        if not self._spend(proof.raw):
            raise PowRequired()
        digest = hashlib.sha256(proof.text.encode("ascii") + proof.solution.encode("ascii"))
        if not leading_zero_bits_ok(digest.digest(), proof.raw[4]):
            raise PowRequired()

    def _now(self) -> int:
        self._last_ms = max(self._last_ms, self._clock())
        return self._last_ms

    def _mac(self, head: bytes, client_key: str) -> bytes:
        data = _MAC_DOMAIN + head + client_key.encode("utf-8", "surrogatepass")
        return blake3.blake3(data, key=self._key.reveal()).digest()[:MAC_LEN]

    def _fresh(self, raw: bytes, client_key: str, now: int) -> bool:
        """Issued by this process to ``client_key``, unexpired and not spent."""
        if not hmac.compare_digest(raw[8:], self._mac(raw[:8], client_key)):
            return False
        if now > int.from_bytes(raw[:4], "big") * 1000:
            return False
        self._prune(now)
        return int.from_bytes(raw, "big") not in self._spent

    def _spend(self, raw: bytes) -> bool:
        if len(self._spent) >= self._max_spent:
            if not self._warned_full:
                log.warning(
                    "proof of work: %d spent challenges held; refusing proofs until some expire",
                    len(self._spent),
                )
                self._warned_full = True
            return False
        if len(self._spent) < self._max_spent * 9 // 10:
            self._warned_full = False
        number = int.from_bytes(raw, "big")
        self._spent.add(number)
        heappush(self._expiry_heap, number)
        return True

    def _prune(self, now: int) -> None:
        heap = self._expiry_heap
        while heap and (heap[0] >> 96) * 1000 < now:  # top 32 bits: expiry in Unix seconds
            self._spent.discard(heappop(heap))

    def _count(self, client_key: str, now: int) -> float:
        return 0.0 if self._rates is None else self._rates.hit(client_key, now)

    def _difficulty(self, client_key: str, now: int) -> int:
        base = self.config.difficulty
        rate = self._count(client_key, now)
        free = self.config.adaptive_free_rps
        if self._rates is None or rate < 2 * free:
            return base
        extra = math.floor(math.log2(rate / free))
        return min(base + extra, max(base, MAX_DIFFICULTY))
