"""The storage interface, and the contract a backend meets (DESIGN "Storage layout").

:class:`Storage` blinds and seals before a backend sees any bytes: a backend stores only blind
indexes, sealed records and public node data. ``blind = BLAKE3-keyed(index_key,
b"registry:blind:v1" || user_id)`` (32 bytes) is the only key a record is stored under.
Records are sealed with XChaCha20-Poly1305 under ``BLAKE3-derive_key("registryd record v1",
index_key || user_id)``; a *sealed* value is ``nonce (24 B) || ciphertext || tag (16 B)``, AAD
= record kind || blind, so reading one needs the index key *and* the handle. Times are Unix
milliseconds.

A backend subclasses :class:`Storage` and writes the hooks (``_insert`` ... ``_list_dnodes``,
``_export_records``, ``_import_records``) and the abstract methods. The promises, P1-P21, each
kept by every backend and checked by the contract suite (``tests/test_storage.py``,
``tests/test_storage_directory.py``, ``tests/test_storage_transfer.py``, run over every
backend; the first one's docstring says which test checks which promise):

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

Ownership (extensions spec §2): a handle's records live in three *slots* under its blind index,
``SLOT_IDENTITY`` (what ``_insert`` writes), ``SLOT_PRESENCE`` (what ``_put_presence`` writes)
and ``SLOT_OPS`` (the sealed per-handle operation state: last accepted ``ts_ms`` per family and
the marks of the last accepted requests, kept by :mod:`registryd.ownership`). Signed operations
read the three and write them back with one compare-and-swap:

P15  ``_get_ops``: the sealed ops value as last swapped, with its expiry; expired ones until
     purged.
P16  ``_swap``: all-or-nothing. Every slot named holds exactly its ``expected`` sealed bytes
     (None: empty) or nothing is written and STALE is returned; otherwise every ``new`` is
     written (None deletes; ``new == expected`` writes nothing), presence and ops expiry index
     entries replaced with the value, in one atomic, durable write (P11). Atomic against every
     other write hook: of concurrent swaps guarding one slot's value at most one succeeds.
P17  bounded presences: a ``_swap`` creating a presence where there was none returns FULL and
     writes nothing when ``max_presences`` presences (expired or not, until purged) are held;
     replacing an existing presence is never refused.
P18  ``purge_tombstones``: ops values whose expiry (non-zero) <= now are deleted, at most
     ``limit``, oldest first, in O(expired); an index entry left by a since-swapped value
     neither deletes nor counts. An ops value written with expiry 0 never expires.
P19  at rest, ops values are sealed like identities (AAD = ``ops:`` || blind); only the blind
     index and the expiry are in the clear (as for presences); a deleted identity or presence
     leaves no plaintext (P12).

Export and import (``registryd storage export|import``):

P20  ``_export_records(now_ms)``: yields every record exactly once, as a :class:`Record`
     holding the bytes as stored (sealed values stay sealed): identities, presences and spent
     nonces whose expiry > ``now_ms``, the node list in insertion order, directory nodes;
     streaming (memory does not grow with the store), from one consistent view (a snapshot
     where the backend has one; else writers are stopped, as ``storage export`` requires).
P21  ``_import_records``: stores a batch of records as given in one atomic, durable write,
     with the indexes each kind needs (presence and spent-nonce expiry, directory key,
     node order); an empty store that imports what P20 yielded answers every read as the
     exported one did. Only called on a store that was empty when the import began.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing

import blake3

from .. import aead
from ..aead import NONCE_LEN
from ..errors import StorageError
from ..secret import Secret
from .records import (
    SLOT_IDENTITY,
    SLOT_OPS,
    SLOT_PRESENCE,
    SLOTS,
    DirectoryNode,
    Owned,
    Record,
    Spend,
    Swap,
    Swapped,
)

BLIND_DOMAIN = b"registry:blind:v1"
RECORD_CONTEXT = "registryd record v1"
EXPORT_CONTEXT = "registryd export v1"
SCHEMA_VERSION = b"1"
DECOY_LEN = 640  # about the size of a sealed identity with 32-byte keys
IDENTITY = b"identity:"
PRESENCE = b"presence:"
CONTACT = b"node-contact:"
OPS = b"ops:"
_KIND = {SLOT_IDENTITY: IDENTITY, SLOT_PRESENCE: PRESENCE, SLOT_OPS: OPS}


class Storage(ABC):
    """Async storage of identities, presences and peer nodes, keyed by blind index.

    ``user_id`` arguments are the 32 raw handle bytes; identity and presence values are the
    bytes to keep (canonical JSON), sealed before they reach the backend. Every write is
    durable before the method returns. Errors: :class:`~registryd.errors.StorageError`.
    """

    kind = "abstract"
    native_expiry = False
    """True when the backend deletes expired presences and tombstones itself (Redis): the GC
    loop then has nothing to do and :meth:`purge_expired` / :meth:`purge_tombstones` return 0
    (P6, P7, P15, P18 read "until the backend expires it")."""
    export_view = True
    """False when :meth:`export_records` reads the live store (Redis: no snapshot), so only a
    store whose writers are stopped, as ``storage export`` requires, exports one view (P20)."""

    def __init__(self, index_key: Secret) -> None:
        self._index_key = index_key
        self._decoy = os.urandom(DECOY_LEN)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def index_key_id(self) -> bytes:
        """32 bytes naming the index key without revealing it: ``BLAKE3-keyed(index_key,
        b"registryd index key id v1")``. Export files carry it, so an import into a store with
        another key (whose records would not open) is refused."""
        return blake3.blake3(b"registryd index key id v1", key=self._index_key.reveal()).digest()

    def export_mac_key(self) -> Secret:
        """The 32-byte key of an export file's checksum: ``BLAKE3-derive_key("registryd export
        v1", index_key)``; only a holder of the index key can make a file that verifies."""
        return Secret(
            blake3.blake3(self._index_key.reveal(), derive_key_context=EXPORT_CONTEXT).digest()
        )

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
        """Upsert the presence of ``user_id``; it expires at ``expires_at_ms`` (Unix ms).

        A bare upsert, unbounded and unguarded (P5): the API stores presences with
        :meth:`swap_owned`, which checks the owner's records and ``max_entries`` (P16, P17)."""
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

    # -- ownership (extensions spec §2) -------------------------------------------------------

    async def owned(self, user_id: bytes) -> Owned:
        """The identity, ops and presence of ``user_id``, opened, with the sealed bytes read."""
        blind = self.blind(user_id)
        identity = await self._get(blind)
        ops = await self._get_ops(blind)
        presence = await self._get_presence(blind)
        sealed = {
            SLOT_IDENTITY: identity,
            SLOT_OPS: None if ops is None else ops[0],
            SLOT_PRESENCE: None if presence is None else presence[0],
        }
        opened = {
            slot: None if value is None else self._open(_KIND[slot], user_id, blind, value)
            for slot, value in sealed.items()
        }
        return Owned(
            user_id,
            opened[SLOT_IDENTITY],
            opened[SLOT_OPS],
            opened[SLOT_PRESENCE],
            0 if presence is None else presence[1],
            sealed,
        )

    async def swap_owned(
        self,
        owned: Owned,
        changes: Mapping[bytes, tuple[bytes | None, int]],
        max_presences: int,
    ) -> Swapped:
        """Write ``changes`` (slot -> (plaintext or None to delete, expiry Unix ms)) if none of
        the three records changed since ``owned`` was read; slots not changed are checked only.
        Returns :attr:`Swapped.STALE` (re-read and try again) or :attr:`Swapped.FULL` (a new
        presence and ``max_presences`` held) without writing anything (P16, P17)."""
        blind = self.blind(owned.user_id)
        swaps = []
        for slot in SLOTS:
            expected = owned.sealed[slot]
            if slot not in changes:
                swaps.append(Swap(slot, expected, expected))
                continue
            plaintext, expires_at_ms = changes[slot]
            new = None
            if plaintext is not None:
                new = self._seal(_KIND[slot], owned.user_id, blind, plaintext)
            swaps.append(Swap(slot, expected, new, expires_at_ms))
        return await self._swap(blind, swaps, max_presences)

    @abstractmethod
    async def purge_tombstones(self, now_ms: int, limit: int) -> int:
        """Delete up to ``limit`` ops values whose non-zero expiry <= ``now_ms``, oldest first,
        in O(expired); returns how many (P18)."""

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

    # -- export and import (registryd.storage.transfer) ----------------------------------------

    def export_records(self, now_ms: int) -> AsyncGenerator[Record, None]:
        """Every stored record, sealed as stored, presences and spent nonces expired at
        ``now_ms`` (Unix ms) left out (P20). Close it (``contextlib.aclosing``) if not
        exhausted."""
        return self._export_records(now_ms)

    async def import_records(self, records: Sequence[Record]) -> None:
        """Store ``records`` (from :meth:`export_records`, checked by the caller) in one
        atomic, durable write (P21). Call only on a store :meth:`is_empty` found empty."""
        if records:
            await self._import_records(records)

    async def is_empty(self) -> bool:
        """Whether the store holds no record at all (expired ones count until purged)."""
        async with aclosing(self._export_records(-1)) as records:
            async for _ in records:
                return False
        return True

    @abstractmethod
    def _export_records(self, now_ms: int) -> AsyncGenerator[Record, None]:
        """Yield every record once, as stored; skip expiries <= ``now_ms`` (P20)."""

    @abstractmethod
    async def _import_records(self, records: Sequence[Record]) -> None:
        """Store ``records`` as given, with their indexes, in one atomic durable write (P21)."""

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

    @abstractmethod
    async def _get_ops(self, blind: bytes) -> tuple[bytes, int] | None:
        """(sealed, expires_at_ms) of the ops value under ``blind`` as last swapped, expired or
        not until purged (0: never expires), or None (P15)."""

    @abstractmethod
    async def _swap(self, blind: bytes, swaps: Sequence[Swap], max_presences: int) -> Swapped:
        """Compare-and-swap the slots of ``blind`` named in ``swaps`` (each slot at most once).

        If any slot's stored sealed bytes differ from its ``expected`` (None: the slot must be
        empty), write nothing and return STALE. If a swap fills an empty presence slot while
        ``max_presences`` presences are stored, write nothing and return FULL. Otherwise, for
        each swap whose ``new`` differs from ``expected``: delete the slot (``new`` None) or
        store ``new``; a presence or ops slot's expiry index entry goes with its value (the old
        entry removed, a new one added for presences and for ops with a non-zero expiry); and
        return DONE. All of it is one atomic, durable write (P11, P16, P17): a Redis backend
        runs it as one Lua script over the slot keys (GET and compare each, then SET/DEL and
        ZADD/ZREM the expiry sorted sets, checking ZCARD of the presence set for FULL).
        """
