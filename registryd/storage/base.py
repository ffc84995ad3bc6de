"""The storage interface, and the contract a backend meets (DESIGN "Storage layout").

:class:`Storage` blinds and seals before a backend sees any bytes: a backend stores only blind
indexes, sealed records and public node data. ``blind = BLAKE3-keyed(index_key,
b"registry:blind:v1" || user_id)`` (32 bytes) is the only key a record is stored under.
Records are sealed with XChaCha20-Poly1305 under ``BLAKE3-derive_key("registryd record v1",
index_key || user_id)``; a *sealed* value is ``nonce (24 B) || ciphertext || tag (16 B)``, AAD
= record kind || blind, so reading one needs the index key *and* the handle. Times are Unix
milliseconds.

A backend subclasses :class:`Storage` and writes the hooks (``_insert`` ... ``_list_dnodes``)
and the abstract methods. The promises, P1-P14, each kept by every backend and checked by
the contract suite (``tests/test_storage.py``, ``tests/test_storage_directory.py``, run over
every backend; its docstring says which test checks which promise):

P1   ``_insert``: stores a record iff its blind index holds none; never overwrites.
P2   check-and-insert is atomic: of concurrent ``_insert`` / ``_insert_many`` calls for one
     blind index exactly one stores.
P3   ``_insert_many``: only free blind indexes, the first of duplicates wins, one atomic write.
P4   ``_get`` / ``_contains`` return exactly what was stored.
P5   ``_put_presence``: an upsert that replaces the value and its expiry index entry together.
P6   ``_get_presence``: what was put, with its expiry; expired entries until purged (with
     ``native_expiry``, Redis: until the backend deletes them at their expiry).
P7   ``purge_expired``: at most ``limit``, expiry <= now, oldest first, in O(expired); an
     index entry left by an overwritten presence neither deletes nor counts (with
     ``native_expiry``: returns 0, the backend having deleted them at their expiry).
P8   ``add_nodes`` / ``nodes``: deduplicated, in insertion order, at most ``max(max_nodes, 1)``.
P9   ``_put_dnode``: upserts a node and its key index together (one host per key).
P10  ``spend_nonce``: atomic (one of concurrent spends wins), bounded (FULL writes nothing),
     expired entries purged to make room.
P11  durable: every write is on disk (fsynced) before the method returns.
P12  at rest: blind indexes, sealed values and public node data only; no handle, username,
     identity, presence or contact email in the clear, even in deleted data.
P13  ``close`` is idempotent and commits writes still queued.
P14  errors: :class:`~registryd.errors.StorageError` only (opening may raise its
     subclasses :class:`~registryd.errors.StorageLockedError` and
     :class:`~registryd.errors.SchemaVersionError`); a record that fails authentication (wrong
     index key, tampering) is a StorageError, never returned.
"""

from __future__ import annotations

import enum
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import blake3

from .. import aead
from ..aead import NONCE_LEN
from ..errors import StorageError
from ..secret import Secret

BLIND_DOMAIN = b"registry:blind:v1"
RECORD_CONTEXT = "registryd record v1"
SCHEMA_VERSION = b"1"
DECOY_LEN = 640  # about the size of a sealed identity with 32-byte keys
IDENTITY = b"identity:"
PRESENCE = b"presence:"
CONTACT = b"node-contact:"


# -- node directory (extensions spec §3) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DirectoryNode:
    """A node directory entry: its ``host`` (the unique key), its 32-byte Ed25519 ``pubkey``,
    the public ``record`` (opaque bytes, JSON from :mod:`registryd.directory`) and the
    ``contact`` email (UTF-8; ``b""`` when listed without contacts)."""

    host: str
    pubkey: bytes
    record: bytes
    contact: bytes = b""


class Spend(enum.Enum):
    """What :meth:`Storage.spend_nonce` did: spent it now, found it spent, or found no room."""

    SPENT = "spent"
    REPLAYED = "replayed"
    FULL = "full"


# -- end of node directory --------------------------------------------------------------------


class Storage(ABC):
    """Async storage of identities, presences and peer nodes, keyed by blind index.

    ``user_id`` arguments are the 32 raw handle bytes; identity and presence values are the
    bytes to keep (canonical JSON), sealed before they reach the backend. Every write is
    durable before the method returns. Errors: :class:`~registryd.errors.StorageError`.
    """

    kind = "abstract"
    native_expiry = False
    """True when the backend deletes expired presences itself (Redis): the GC loop then has
    nothing to do and :meth:`purge_expired` returns 0 (P6, P7 read "until the backend expires
    it")."""

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
        sealed = self._seal(PRESENCE, user_id, blind, presence)
        await self._put_presence(blind, sealed, expires_at_ms)

    async def get_presence(self, user_id: bytes) -> tuple[bytes, int] | None:
        """(presence bytes, expiry Unix ms) for ``user_id``, or None (expired ones until GC)."""
        blind = self.blind(user_id)
        found = await self._get_presence(blind)
        if found is None:
            return None
        sealed, expires_at_ms = found
        return self._open(PRESENCE, user_id, blind, sealed), expires_at_ms

    @abstractmethod
    async def purge_expired(self, now_ms: int, limit: int) -> int:
        """Delete up to ``limit`` presences whose expiry <= ``now_ms``, oldest first, visiting
        only expired index entries (O(expired), P7); returns how many presences it deleted.
        An index entry left by a presence since overwritten is dropped without deleting or
        counting the newer value."""

    # -- nodes ------------------------------------------------------------------------------

    @abstractmethod
    async def add_nodes(self, base_urls: Sequence[str], max_nodes: int) -> int:
        """Append the URLs not yet known, stopping at ``max(max_nodes, 1)`` known URLs, durably;
        returns how many (P8)."""

    @abstractmethod
    async def nodes(self) -> list[str]:
        """Known node base URLs in insertion order (P8)."""

    # -- node directory (extensions spec §3) --------------------------------------------------
    #
    # Node records are public data and stored as given; the contact email is sealed like an
    # identity (key derived from the index key and the host) and never returned by listings.
    # One host has one key and one key one host: ``put_directory_node`` keeps the key index in
    # step with the records. The caller (registryd.directory) serialises read-modify-writes.

    async def put_directory_node(self, node: DirectoryNode) -> None:
        """Insert or replace the entry of ``node.host`` (and its key index), durably."""
        host = node.host.encode()
        sealed = self._seal(CONTACT, host, b"", node.contact)
        await self._put_dnode(node.host, node.pubkey, node.record, sealed)

    async def get_directory_node(self, host: str) -> DirectoryNode | None:
        """The entry of ``host`` with its contact email opened, or None."""
        found = await self._get_dnode(host)
        if found is None:
            return None
        pubkey, record, sealed = found
        contact = self._open(CONTACT, host.encode(), b"", sealed)
        return DirectoryNode(host, pubkey, record, contact)

    @abstractmethod
    async def directory_host_of_key(self, pubkey: bytes) -> str | None:
        """The host registered with the 32-byte ``pubkey``, or None."""

    async def list_directory_nodes(self, *, with_contact: bool = False) -> list[DirectoryNode]:
        """Every entry, in no particular order; contacts are ``b""`` unless ``with_contact``."""
        nodes = []
        for host, pubkey, record, sealed in await self._list_dnodes():
            contact = self._open(CONTACT, host.encode(), b"", sealed) if with_contact else b""
            nodes.append(DirectoryNode(host, pubkey, record, contact))
        return nodes

    @abstractmethod
    async def delete_directory_node(self, host: str) -> bool:
        """Remove the entry of ``host`` and its key index; False if there was none."""

    @abstractmethod
    async def spend_nonce(
        self, nonce_id: bytes, expires_at_ms: int, now_ms: int, max_entries: int
    ) -> Spend:
        """Mark ``nonce_id`` (16 bytes) spent until ``expires_at_ms`` (Unix ms), atomically:
        :attr:`Spend.SPENT` if it was not spent, :attr:`Spend.REPLAYED` if it was, and
        :attr:`Spend.FULL` (nothing written) when ``max_entries`` entries unexpired at
        ``now_ms`` are held (expired ones are purged first), so the set stays bounded (P10)."""

    @abstractmethod
    async def nonce_spent(self, nonce_id: bytes) -> bool:
        """Whether ``nonce_id`` is in the spent set (expired entries count until purged)."""

    @abstractmethod
    async def purge_spent_nonces(self, now_ms: int) -> int:
        """Drop spent-set entries whose expiry <= ``now_ms``; returns how many."""

    @abstractmethod
    async def _put_dnode(self, host: str, pubkey: bytes, record: bytes, sealed: bytes) -> None:
        """Insert or replace the node of ``host`` (UTF-8 text): its 32-byte ``pubkey``, its
        public ``record`` and its ``sealed`` contact email, and make ``pubkey`` index ``host``
        (dropping the index entry of the key it replaces) in one atomic, durable write (P9,
        P11). Callers serialise read-modify-writes; concurrent puts must still leave one
        consistent index."""

    @abstractmethod
    async def _get_dnode(self, host: str) -> tuple[bytes, bytes, bytes] | None:
        """(pubkey, record, sealed contact) of ``host``, as put; None if there is none."""

    @abstractmethod
    async def _list_dnodes(self) -> list[tuple[str, bytes, bytes, bytes]]:
        """Every node as (host, pubkey, record, sealed contact), in no particular order."""

    # -- end of node directory ----------------------------------------------------------------

    async def ping(self) -> None:
        """Raise :class:`StorageError` if the backend cannot answer now (``/health``); an
        embedded backend always can."""
        return None

    @abstractmethod
    async def close(self) -> None:
        """Commit what is queued and release the backend; idempotent (P13)."""

    # -- what a backend provides ------------------------------------------------------------
    #
    # ``blind`` is always the 32-byte blind index, ``sealed`` the sealed value (nonce, then
    # ciphertext and tag); the argument orders follow the public methods'. Every hook may
    # raise StorageError only (P14); every write is durable before it returns (P11).

    @abstractmethod
    async def _insert(self, blind: bytes, sealed: bytes) -> bool:
        """Store ``sealed`` under ``blind`` unless a record is there; True if stored (P1).
        Atomic against concurrent ``_insert`` and ``_insert_many`` calls (P2)."""

    @abstractmethod
    async def _get(self, blind: bytes) -> bytes | None:
        """The sealed record under ``blind``, byte for byte as stored, or None (P4)."""

    @abstractmethod
    async def _contains(self, blind: bytes) -> bool:
        """Whether a record is stored under ``blind`` (P4)."""

    @abstractmethod
    async def _insert_many(self, records: Sequence[tuple[bytes, bytes]]) -> int:
        """Store each (blind, sealed) whose blind index holds nothing yet, the first of
        duplicates in ``records`` winning, in one atomic write; returns how many (P2, P3)."""

    @abstractmethod
    async def _put_presence(self, blind: bytes, sealed: bytes, expires_at_ms: int) -> None:
        """Upsert the presence under ``blind``: replace its value and its expiry index entry
        together, so that :meth:`purge_expired` finds it by ``expires_at_ms`` (P5)."""

    @abstractmethod
    async def _get_presence(self, blind: bytes) -> tuple[bytes, int] | None:
        """(sealed, expires_at_ms) as last put under ``blind``, expired or not (until it is
        purged), or None (P6)."""
