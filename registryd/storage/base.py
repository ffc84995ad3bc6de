"""The storage interface. Both backends hold only blind indexes and sealed records (DESIGN).

``blind = BLAKE3-keyed(index_key, b"registry:blind:v1" || user_id)`` (32 bytes) is the only key a
record is stored under. Records are sealed with XChaCha20-Poly1305 under
``BLAKE3-derive_key("registryd record v1", index_key || user_id)``, nonce (24 B) prepended, AAD =
record kind || blind, so reading one needs the index key *and* the handle.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence

import blake3

from .. import aead
from ..errors import StorageError
from ..secret import Secret

BLIND_DOMAIN = b"registry:blind:v1"
RECORD_CONTEXT = "registryd record v1"
SCHEMA_VERSION = b"1"
NONCE_LEN = 24
DECOY_LEN = 640  # about the size of a sealed identity with 32-byte keys
IDENTITY = b"identity:"
PRESENCE = b"presence:"


class Storage(ABC):
    """Async storage of identities, presences and peer nodes, keyed by blind index.

    ``user_id`` arguments are the 32 raw handle bytes; identity and presence values are the
    bytes to keep (canonical JSON), sealed before they reach the backend. Every write is
    durable before the method returns. Errors: :class:`~registryd.errors.StorageError`.
    """

    kind = "abstract"

    def __init__(self, index_key: Secret) -> None:
        self._index_key = index_key
        self._decoy = os.urandom(DECOY_LEN)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def blind(self, user_id: bytes) -> bytes:
        """The 32-byte blind index of ``user_id``."""
        return blake3.blake3(BLIND_DOMAIN + user_id, key=self._index_key.reveal()).digest()

    def _record_key(self, user_id: bytes) -> bytes:
        return blake3.blake3(
            self._index_key.reveal() + user_id, derive_key_context=RECORD_CONTEXT
        ).digest()

    def _seal(self, kind: bytes, user_id: bytes, blind: bytes, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        key = self._record_key(user_id)
        return nonce + aead.encrypt(plaintext, kind + blind, nonce, key)

    def _open(self, kind: bytes, user_id: bytes, blind: bytes, sealed: bytes) -> bytes:
        try:
            return aead.decrypt(
                sealed[NONCE_LEN:], kind + blind, sealed[:NONCE_LEN], self._record_key(user_id)
            )
        except Exception as exc:  # nacl CryptoError / ValueError: tampered or wrong index key
            raise StorageError("a stored record failed authentication (wrong index key?)") from exc

    # -- identities -------------------------------------------------------------------------

    async def register(self, user_id: bytes, identity: bytes) -> bool:
        """Store ``identity`` for ``user_id`` unless one exists. True if stored, False if taken.

        Atomic: of concurrent registrations of one handle exactly one returns True.
        """
        blind = self.blind(user_id)
        return await self._insert(blind, self._seal(IDENTITY, user_id, blind, identity))

    async def get_identity(self, user_id: bytes) -> bytes | None:
        """The identity bytes stored for ``user_id``, or None."""
        blind = self.blind(user_id)
        sealed = await self._get(blind)
        if sealed is None:
            self._seal(IDENTITY, user_id, blind, self._decoy)  # a miss costs what a hit costs
            return None
        return self._open(IDENTITY, user_id, blind, sealed)

    async def exists(self, user_id: bytes) -> bool:
        return await self._contains(self.blind(user_id))

    async def merge(self, identities: Sequence[tuple[bytes, bytes]]) -> int:
        """Insert each (user_id, identity) whose handle is free, atomically; returns how many."""
        records = []
        for user_id, identity in identities:
            blind = self.blind(user_id)
            records.append((blind, self._seal(IDENTITY, user_id, blind, identity)))
        return await self._insert_many(records)

    # -- presence ---------------------------------------------------------------------------

    async def announce(self, user_id: bytes, presence: bytes, expires_at_ms: int) -> None:
        """Upsert the presence of ``user_id``; it expires at ``expires_at_ms`` (Unix ms)."""
        blind = self.blind(user_id)
        await self._put_presence(
            blind, expires_at_ms, self._seal(PRESENCE, user_id, blind, presence)
        )

    async def get_presence(self, user_id: bytes) -> tuple[bytes, int] | None:
        """(presence bytes, expiry Unix ms) for ``user_id``, or None (expired ones until GC)."""
        blind = self.blind(user_id)
        found = await self._get_presence(blind)
        if found is None:
            return None
        expires_at_ms, sealed = found
        return self._open(PRESENCE, user_id, blind, sealed), expires_at_ms

    @abstractmethod
    async def purge_expired(self, now_ms: int, limit: int) -> int:
        """Delete up to ``limit`` presences whose expiry <= ``now_ms``; returns the count."""

    # -- nodes ------------------------------------------------------------------------------

    @abstractmethod
    async def add_nodes(self, base_urls: Sequence[str], max_nodes: int) -> int:
        """Append the URLs not yet known, stopping at ``max(max_nodes, 1)``; returns how many."""

    @abstractmethod
    async def nodes(self) -> list[str]:
        """Known node base URLs in insertion order."""

    @abstractmethod
    async def close(self) -> None:
        """Release the backend. Idempotent."""

    # -- what a backend provides ------------------------------------------------------------

    @abstractmethod
    async def _insert(self, blind: bytes, sealed: bytes) -> bool: ...

    @abstractmethod
    async def _get(self, blind: bytes) -> bytes | None: ...

    @abstractmethod
    async def _contains(self, blind: bytes) -> bool: ...

    @abstractmethod
    async def _insert_many(self, records: Sequence[tuple[bytes, bytes]]) -> int: ...

    @abstractmethod
    async def _put_presence(self, blind: bytes, expires_at_ms: int, sealed: bytes) -> None: ...

    @abstractmethod
    async def _get_presence(self, blind: bytes) -> tuple[int, bytes] | None: ...
