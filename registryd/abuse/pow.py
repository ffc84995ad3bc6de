"""Hashcash proof of work on ``/resolve`` and ``/check_user`` (spec 4.7), issued statelessly.

Wire (as the reference): ``GET /pow/challenge`` answers ``{"challenge": <32 lowercase hex>,
"difficulty": <bits>, "expires_ms": <Unix ms>}``; the client sends
``x-enigma-pow: <challenge>:<solution>`` (split at the first ``:``), and the proof holds when
``SHA-256(ascii(challenge) || utf8(solution))`` starts with ``difficulty`` zero bits. Every
failure is :class:`~registryd.errors.PowRequired` (400 ``POW_REQUIRED``, "pow required").

Unlike the reference, issuing stores nothing per challenge: the 16 challenge bytes carry their
own terms under a server MAC, so a flood of ``GET /pow/challenge`` costs no memory::

    expiry (Unix s, 4 B big-endian) || difficulty (1 B) || nonce (3 B random) || MAC (8 B)
    MAC = BLAKE3-keyed(key, "registryd pow challenge v1" || first 8 bytes || client key)[:8]

(With ``adaptive``, issuing also counts the request in a table of fixed size, below.)

A challenge is bound to the client it was issued to (the rate-limit key) and is accepted only
while ``now_ms <= expires_ms``, at most once. The MAC key is random per process unless given, so
a restart invalidates outstanding challenges (pass a fixed key only together with a restart
delay of ``ttl_seconds``: the spent set does not survive the restart). :meth:`ProofOfWork.verify`
checks the cheap things first — format, MAC, expiry, replay — then hashes, and spends the
challenge only if the proof holds. Deliberately unlike the reference, which spends a challenge
even when the solution is wrong, a wrong solution costs the client a request (a rate-limit token,
and a count towards adaptive difficulty) but not the challenge, which stays usable until it
expires. Otherwise ``<fresh challenge>:garbage`` would spend a challenge for free, and
``max_spent`` of them would fill the spent set and lock every client out.

Spent challenges are kept until they expire, in a heap ordered by expiry (the challenge's leading
bytes), ~95 B each (~94 MB for the default ``max_spent`` of 1,000,000), bounded by
``max_spent``; when that many unexpired ones are held, new proofs are refused (fail closed)
rather than any spent one forgotten. Only solved proofs are held, so filling the set takes
``max_spent`` accepted proofs within ``ttl_seconds``: ``max_spent * 2**difficulty`` hashes
(10**6 * 2**18 ≈ 2.6e11 with the defaults: ~35 h of one CPython core) and
``max_spent / ttl_seconds`` accepted ``/resolve`` or ``/check_user`` requests per second (8,333
with the defaults, each served in full), from enough client keys to pass the rate limits. There
is no per-client cap on spent entries: one client key holds at most the proofs the rate limiter
lets through in ``ttl_seconds`` (with the ``[rate_limit]`` defaults about
``(burst + per_ip_rps * ttl_seconds) / 2`` = 305, as each proof also takes a
``GET /pow/challenge``), and a cap per key would cost memory per entry without slowing an
attacker holding many keys (IPv6 /64s), which the work above prices. The clock is made
monotonic, so stepping the wall clock back cannot revive a forgotten challenge.

Adaptive difficulty (``[pow] adaptive``): each client's request rate is an exponentially
decaying count with a 60 s half-life. ``issue()`` counts one request, and so does every refused
``verify()`` (wrong solution included) except one refused only because the spent set is full; an
accepted proof is not counted (its ``issue()`` already was), so an honest request — one
challenge, one proof — counts once. At a steady rate ``r`` the estimate converges to
``r + 0.006`` rps within ~10 minutes; a burst of ``n`` requests reads as ``n * 0.0116`` rps. The
difficulty issued is ``base + floor(log2(rate / adaptive_free_rps))`` once
``rate >= 2 * adaptive_free_rps``, else ``base``, and never more than 30. With the defaults
(base 18, free 1 rps):

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

Costs are for :func:`~registryd.hashcash.solve` on the development machine, ~2.1 M SHA-256/s
on one CPython core (measured: 2.0-2.3 M/s); a native solver is ~10x faster. The number of
hashes needed is geometric, so 1 in 20 honest solves takes three times the expected work. The
registryd client refuses challenges above ``max_pow_difficulty`` (default 24).

The counts live in a table of ``max_clients`` slots (default 100,000) of 16 bytes each — a
64-bit keyed fingerprint of the client key and one float — allocated when the
:class:`ProofOfWork` is made (1.6 MB; see :class:`_RateMeter`), so counting any number of
distinct clients grows memory by nothing (measured: 100,000 challenges to 100,000 distinct
clients grow RSS by 0 MB and tracemalloc by 0 B). A client whose slot goes to a newcomer is
forgotten and starts again at the base difficulty; with as many distinct clients active as there
are slots, ~86% are held, the heaviest first.

Not thread-safe: call from the event loop. ``verify`` never awaits, so its check-and-spend is
atomic under asyncio.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
from array import array
from collections.abc import Callable
from heapq import heappop, heappush
from typing import NamedTuple

import blake3

from ..config import PowConfig
from ..errors import PowRequired
from ..hashcash import Challenge, leading_zero_bits_ok
from ..secret import Secret

__all__ = [
    "HALF_LIFE_MS",
    "IDLE_MS",
    "MAX_DIFFICULTY",
    "RATE_PER_COUNT",
    "ProofOfWork",
    "parse_proof",
]

log = logging.getLogger("registryd")

MAX_DIFFICULTY = 30  # adaptive difficulty stops here
HALF_LIFE_MS = 60_000  # of the per-client request count
IDLE_MS = 10 * HALF_LIFE_MS  # a lone request this old has decayed 1024-fold: forget it
KEY_LEN = 32
CHALLENGE_LEN = 16
MAC_LEN = 8
MAX_EXPIRY_S = 0xFFFF_FFFF
_MAC_DOMAIN = b"registryd pow challenge v1"
_CHALLENGE_HEX = re.compile(r"[0-9a-f]{32}")
RATE_PER_COUNT = math.log(2) / (HALF_LIFE_MS / 1000)  # decayed count -> requests per second
_WAYS = 8  # slots a client may take in the rate table
_IDLE_LOG2 = -IDLE_MS / HALF_LIFE_MS  # log2 of the count below which a client is forgotten


class _Proof(NamedTuple):
    text: str  # the challenge as sent: 32 lowercase hex chars
    raw: bytes  # its 16 bytes
    solution: str


def parse_proof(header: str | None) -> _Proof | None:
    if header is None or not header.isascii():
        return None
    text, colon, solution = header.partition(":")
    if not colon or not solution or not _CHALLENGE_HEX.fullmatch(text):
        return None
    return _Proof(text, bytes.fromhex(text), solution)


class _RateMeter:
    """Per-client request rates in a fixed table: a count decaying with half-life
    :data:`HALF_LIFE_MS`, for up to ``max_clients`` clients in ``16 * max_clients`` bytes.

    A slot is two machine words: a client's fingerprint (the first 8 bytes of a BLAKE3 hash of
    its key under a random per-process key) and its *level* ``log2(count) + t / HALF_LIFE_MS``
    (``t``: ms since the meter's first request), from which its count at any later time is
    ``2 ** (level - t / HALF_LIFE_MS)`` without a stored timestamp. A client may sit in one of
    the :data:`_WAYS` slots of the bucket its fingerprint selects; a client not found there takes
    the slot with the lowest count (empty slots first). So a flood of new keys pushes out the
    lightest clients, not the heavy hitters adaptive difficulty is for: a client goes only when
    it is the lightest of the (up to) 8 in its bucket, and without the hash key no one can aim
    keys at a bucket. A client pushed out starts again from a count of 1, and one whose count
    has decayed below 1/1024 (a lone request :data:`IDLE_MS` ago) is as good as gone: losing a
    client only ever lowers its difficulty.
    """

    def __init__(self, max_clients: int) -> None:
        self._size = max_clients
        self._buckets = -(-max_clients // _WAYS)  # the last one may have fewer ways
        self._key = Secret(secrets.token_bytes(KEY_LEN))
        self._fingerprints = array("Q", [0]) * max_clients
        self._levels = array("d", [-math.inf]) * max_clients  # -inf: a count of 0, empty
        self._epoch_ms: int | None = None

    def live(self, now_ms: int) -> int:
        """How many clients have a count of at least 1/1024 at ``now_ms`` (O(max_clients))."""
        if self._epoch_ms is None:
            return 0
        threshold = (now_ms - self._epoch_ms) / HALF_LIFE_MS + _IDLE_LOG2
        return sum(1 for level in self._levels if level >= threshold)

    def hit(self, client_key: str, now_ms: int) -> float:
        """Count a request of ``client_key``; its rate in requests/s, this one included."""
        if self._epoch_ms is None:
            self._epoch_ms = now_ms
        age = (now_ms - self._epoch_ms) / HALF_LIFE_MS  # in half-lives; never decreases
        data = client_key.encode("utf-8", "surrogatepass")
        digest = blake3.blake3(data, key=self._key.reveal()).digest(8)
        fingerprint = int.from_bytes(digest, "little")
        start = fingerprint % self._buckets * _WAYS
        stop = min(start + _WAYS, self._size)
        levels = self._levels
        try:
            slot = self._fingerprints.index(fingerprint, start, stop)
            count = 1.0 + math.pow(2.0, levels[slot] - age)
        except ValueError:
            ways = levels[start:stop]
            slot = start + ways.index(min(ways))  # the lowest count: same age for all
            self._fingerprints[slot] = fingerprint
            count = 1.0
        levels[slot] = math.log2(count) + age
        return count * RATE_PER_COUNT


class ProofOfWork:
    """Issues and verifies proofs of work for one process (see the module docstring).

    ``config``: the ``[pow]`` table; ``clock``: Unix time in ms. ``key``: the 32-byte MAC key
    (random if None). ``max_spent``: the most spent, unexpired challenges remembered (~95 B
    each) before new proofs are refused; ``max_clients``: the slots of the table of client
    rates when ``config.adaptive`` (16 B each, allocated up front).
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
        """How many clients' request rates are held: those with a count of at least 1/1024 (0
        unless adaptive). Scans the whole table."""
        return 0 if self._rates is None else self._rates.live(self._now())

    def issue(self, client_key: str) -> Challenge:
        """A fresh challenge for ``client_key`` (the ``GET /pow/challenge`` answer); stores
        nothing, apart from counting the request when adaptive."""
        now = self._now()
        return self._challenge(self._difficulty(client_key, now), now, client_key)

    async def aissue(self, client_key: str) -> Challenge:
        """:meth:`issue`, for callers that may hold a shared one (its issue needs a round trip:
        :class:`registryd.abuse.stores.SharedProofOfWork`)."""
        return self.issue(client_key)

    async def averify(self, header: str | None, client_key: str) -> None:
        """:meth:`verify`, likewise."""
        self.verify(header, client_key)

    def _challenge(self, difficulty: int, now: int, client_key: str) -> Challenge:
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
        until its ``expires_ms``; a refused proof does not spend it."""
        now = self._now()
        proof = parse_proof(header)
        if proof is None or not self._fresh(proof.raw, client_key, now):
            self._count(client_key, now)
            raise PowRequired()
        digest = hashlib.sha256(proof.text.encode("ascii") + proof.solution.encode("ascii"))
        if not leading_zero_bits_ok(digest.digest(), proof.raw[4]):
            self._count(client_key, now)  # the challenge stays usable: count this try
            raise PowRequired()
        if not self._spend(proof.raw):  # no await since _fresh: check-and-spend is atomic
            raise PowRequired()

    def _now(self) -> int:
        self._last_ms = max(self._last_ms, self._clock())
        return self._last_ms

    def _mac(self, head: bytes, client_key: str) -> bytes:
        data = _MAC_DOMAIN + head + client_key.encode("utf-8", "surrogatepass")
        return blake3.blake3(data, key=self._key.reveal()).digest()[:MAC_LEN]

    def _authentic(self, raw: bytes, client_key: str, now: int) -> bool:
        """Issued with this key to ``client_key``, and unexpired."""
        if not hmac.compare_digest(raw[8:], self._mac(raw[:8], client_key)):
            return False
        return now <= int.from_bytes(raw[:4], "big") * 1000

    def _fresh(self, raw: bytes, client_key: str, now: int) -> bool:
        """Issued by this process to ``client_key``, unexpired and not spent."""
        if not self._authentic(raw, client_key, now):
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
        return self._difficulty_at(self._count(client_key, now) if self._rates else 0.0)

    def _difficulty_at(self, rate: float) -> int:
        """The difficulty for a client at ``rate`` requests/s (0: not adaptive)."""
        base = self.config.difficulty
        free = self.config.adaptive_free_rps
        if rate < 2 * free:
            return base
        extra = math.floor(math.log2(rate / free))
        return min(base + extra, max(base, MAX_DIFFICULTY))
