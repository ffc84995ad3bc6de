"""Challenge nonces (extensions spec §3.1): stateless, MAC'd, bound to one key, single use.

A nonce is ``b64url(expiry_ms_be64 (8) || id (16 random) || mac (16))``, 54 ASCII characters,
where ``mac = BLAKE3-keyed(key, DOMAIN || pubkey (32) || expiry || id)[:16]`` and ``key`` is
derived from the server's index key (so nonces survive a restart, and their spent set with
them on LevelDB). Issuing one stores nothing; accepting one (register or heartbeat, whichever
comes first) puts its id in the spent set until it expires. The spent set holds at most
:data:`MAX_SPENT` entries: when it is full of unexpired ones, signed requests get 503 until
some expire (at most ``challenge_ttl_seconds``), instead of memory growing without bound.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

import blake3

from ..errors import ApiError, ServiceUnavailable
from ..secret import Secret
from ..storage import Storage
from ..storage.records import Spend

DOMAIN = b"registryd:directory:nonce:v1"
KEY_CONTEXT = "registryd directory nonce key v1"
NONCE_CHARS = 54
MAX_SPENT = 200_000  # about 150 bytes each in memory: 30 MB at most
_BE64 = struct.Struct(">Q")
_B64URL = re.compile(r"[A-Za-z0-9_-]{54}")


@dataclass(frozen=True, slots=True)
class Ticket:
    """A nonce that passed its MAC and expiry checks: its 16-byte ``nonce_id`` and expiry."""

    nonce_id: bytes
    expires_at_ms: int


class Challenges:
    """Issues and checks nonces. ``clock`` is Unix ms; ``ttl_seconds()`` is read at each issue
    (so a reload applies to new nonces; issued ones keep their expiry)."""

    def __init__(
        self,
        index_key: Secret,
        storage: Storage,
        clock: Callable[[], int],
        ttl_seconds: Callable[[], int],
    ) -> None:
        self._key = blake3.blake3(index_key.reveal(), derive_key_context=KEY_CONTEXT).digest()
        self._storage = storage
        self._clock = clock
        self._ttl_seconds = ttl_seconds

    def __repr__(self) -> str:
        return "Challenges()"

    def _mac(self, pubkey: bytes, body: bytes) -> bytes:
        return blake3.blake3(DOMAIN + pubkey + body, key=self._key).digest()[:16]

    def issue(self, pubkey: bytes) -> tuple[str, int]:
        """A fresh nonce for the 32-byte ``pubkey`` and its expiry (Unix ms)."""
        expires_at_ms = self._clock() + self._ttl_seconds() * 1000
        body = _BE64.pack(expires_at_ms) + os.urandom(16)
        raw = body + self._mac(pubkey, body)
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="), expires_at_ms

    def check(self, nonce: str, pubkey: bytes) -> Ticket | None:
        """The :class:`Ticket` of ``nonce`` if it was issued to ``pubkey`` and is unexpired
        (spent or not), else None."""
        if not _B64URL.fullmatch(nonce):
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "==")
        except (binascii.Error, ValueError):
            return None
        body, mac = raw[:24], raw[24:]
        if len(raw) != 40 or not hmac.compare_digest(mac, self._mac(pubkey, body)):
            return None
        expires_at_ms = _BE64.unpack(body[:8])[0]
        if expires_at_ms <= self._clock():
            return None
        return Ticket(body[8:], expires_at_ms)

    async def usable(self, nonce: str, pubkey: bytes) -> Ticket | None:
        """:meth:`check`, and not spent yet."""
        ticket = self.check(nonce, pubkey)
        if ticket is None or await self._storage.nonce_spent(ticket.nonce_id):
            return None
        return ticket

    async def spend(self, ticket: Ticket, refusal: ApiError) -> None:
        """Spend ``ticket`` now; raises ``refusal`` if it was spent meanwhile, and
        :class:`ServiceUnavailable` (503) if the spent set is full."""
        spend = await self._storage.spend_nonce(
            ticket.nonce_id, ticket.expires_at_ms, self._clock(), MAX_SPENT
        )
        if spend is Spend.REPLAYED:
            raise refusal
        if spend is Spend.FULL:
            raise ServiceUnavailable("too many outstanding challenges; retry in a few minutes")
