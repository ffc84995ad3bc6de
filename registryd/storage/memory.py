"""In-memory backend: dicts of blind index → sealed record; lost when the process stops.

Expiry indexes are sorted lists of (expiry, blind) with one entry per value, replaced with it,
so a GC slice visits only live, expired entries (a heap with skipped stale entries would make a
slice of N deletions visit any number of superseded ones).
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncGenerator, Sequence

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from ..secret import Secret
from .base import Storage
from .records import (
    DNODE_RECORD,
    IDENTITY_RECORD,
    NODE_RECORD,
    NONCE_RECORD,
    OPS_RECORD,
    PRESENCE_RECORD,
    SLOT_IDENTITY,
    SLOT_PRESENCE,
    Record,
    Spend,
    Swap,
    Swapped,
    pack_dnode,
    unpack_dnode,
)


class MemoryStorage(Storage):
    """Storage held in this process. Operations never await, so each one is atomic."""

    kind = "memory"

    def __init__(self, index_key: Secret) -> None:
        super().__init__(index_key)
        self._identities: dict[bytes, bytes] = {}
        self._presences: dict[bytes, tuple[int, bytes]] = {}
        self._expiry = SortedList()  # (expiry, blind) of each presence
        self._ops: dict[bytes, tuple[int, bytes]] = {}  # blind -> (expiry or 0, sealed ops)
        self._tombstones = SortedList()  # (expiry, blind) of each ops value with an expiry
        self._nodes: dict[str, None] = {}
        # node directory: host -> (pubkey, record, sealed contact); pubkey -> host; spent set
        self._dnodes: dict[str, tuple[bytes, bytes, bytes]] = {}
        self._dkeys: dict[bytes, str] = {}
        self._spent: dict[bytes, int] = {}
        self._spent_expiry: list[tuple[int, bytes]] = []  # heap of (expiry, nonce id)

    async def _insert(self, blind: bytes, sealed: bytes) -> bool:
        return await self._insert_many([(blind, sealed)]) == 1

    async def _get(self, blind: bytes) -> bytes | None:
        return self._identities.get(blind)

    async def _contains(self, blind: bytes) -> bool:
        return blind in self._identities

    async def _insert_many(self, records: Sequence[tuple[bytes, bytes]]) -> int:
        added = 0
        for blind, sealed in records:
            if blind not in self._identities:
                self._identities[blind] = sealed
                added += 1
        return added

    async def _put_presence(self, blind: bytes, sealed: bytes, expires_at_ms: int) -> None:
        old = self._presences.get(blind)
        if old is not None:
            self._expiry.discard((old[0], blind))
        self._presences[blind] = (expires_at_ms, sealed)
        self._expiry.add((expires_at_ms, blind))

    async def _get_presence(self, blind: bytes) -> tuple[bytes, int] | None:
        found = self._presences.get(blind)
        return None if found is None else (found[1], found[0])

    async def purge_expired(self, now_ms: int, limit: int) -> int:
        return _purge(self._expiry, self._presences, now_ms, limit)

    # -- ownership (extensions spec §2) -------------------------------------------------------

    async def _get_ops(self, blind: bytes) -> tuple[bytes, int] | None:
        found = self._ops.get(blind)
        return None if found is None else (found[1], found[0])

    def _current(self, slot: bytes, blind: bytes) -> bytes | None:
        if slot == SLOT_IDENTITY:
            return self._identities.get(blind)
        found = (self._presences if slot == SLOT_PRESENCE else self._ops).get(blind)
        return None if found is None else found[1]

    async def _swap(self, blind: bytes, swaps: Sequence[Swap], max_presences: int) -> Swapped:
        if any(self._current(s.slot, blind) != s.expected for s in swaps):
            return Swapped.STALE
        changed = [s for s in swaps if s.new != s.expected]
        if any(s.slot == SLOT_PRESENCE and s.expected is None for s in changed):
            if len(self._presences) >= max_presences:
                return Swapped.FULL
        for s in changed:
            if s.slot == SLOT_IDENTITY:
                if s.new is None:
                    del self._identities[blind]
                else:
                    self._identities[blind] = s.new
                continue
            table, index = (
                (self._presences, self._expiry)
                if s.slot == SLOT_PRESENCE
                else (self._ops, self._tombstones)
            )
            old = table.pop(blind, None)
            if old is not None:
                index.discard((old[0], blind))  # ops expiry 0: not indexed
            if s.new is None:
                continue
            table[blind] = (s.expires_at_ms, s.new)
            if s.slot == SLOT_PRESENCE or s.expires_at_ms:
                index.add((s.expires_at_ms, blind))
        return Swapped.DONE

    async def purge_tombstones(self, now_ms: int, limit: int) -> int:
        return _purge(self._tombstones, self._ops, now_ms, limit)

    async def add_nodes(self, base_urls: Sequence[str], max_nodes: int) -> int:
        added = 0
        for url in base_urls:
            if len(self._nodes) >= max(max_nodes, 1):
                break
            if url not in self._nodes:
                self._nodes[url] = None
                added += 1
        return added

    async def nodes(self) -> list[str]:
        return list(self._nodes)

    # -- node directory (extensions spec §3) --------------------------------------------------

    async def _put_dnode(self, host: str, pubkey: bytes, record: bytes, sealed: bytes) -> None:
        old = self._dnodes.get(host)
        if old is not None and self._dkeys.get(old[0]) == host:
            del self._dkeys[old[0]]
        self._dnodes[host] = (pubkey, record, sealed)
        self._dkeys[pubkey] = host

    async def _get_dnode(self, host: str) -> tuple[bytes, bytes, bytes] | None:
        return self._dnodes.get(host)

    async def directory_host_of_key(self, pubkey: bytes) -> str | None:
        return self._dkeys.get(pubkey)

    async def _list_dnodes(self) -> list[tuple[str, bytes, bytes, bytes]]:
        return [(host, *entry) for host, entry in self._dnodes.items()]

    async def delete_directory_node(self, host: str) -> bool:
        old = self._dnodes.pop(host, None)
        if old is None:
            return False
        if self._dkeys.get(old[0]) == host:
            del self._dkeys[old[0]]
        return True

    async def spend_nonce(
        self, nonce_id: bytes, expires_at_ms: int, now_ms: int, max_entries: int
    ) -> Spend:
        if nonce_id in self._spent:
            return Spend.REPLAYED
        if len(self._spent) >= max_entries:
            await self.purge_spent_nonces(now_ms)
            if len(self._spent) >= max_entries:
                return Spend.FULL
        self._spent[nonce_id] = expires_at_ms
        heapq.heappush(self._spent_expiry, (expires_at_ms, nonce_id))
        return Spend.SPENT

    async def nonce_spent(self, nonce_id: bytes) -> bool:
        return nonce_id in self._spent

    async def purge_spent_nonces(self, now_ms: int) -> int:
        purged = 0
        while self._spent_expiry and self._spent_expiry[0][0] <= now_ms:
            _, nonce_id = heapq.heappop(self._spent_expiry)
            del self._spent[nonce_id]
            purged += 1
        return purged

    # -- end of node directory ----------------------------------------------------------------

    async def _export_records(self, now_ms: int) -> AsyncGenerator[Record, None]:
        # one view, taken before the first yield: references only, no bytes are copied
        identities, presences = list(self._identities.items()), list(self._presences.items())
        nodes, dnodes, spent = (
            list(self._nodes),
            list(self._dnodes.items()),
            list(self._spent.items()),
        )
        ops = list(self._ops.items())
        for blind, sealed in identities:
            yield Record(IDENTITY_RECORD, blind, sealed)
        for blind, (expiry, sealed) in presences:
            if expiry > now_ms:
                yield Record(PRESENCE_RECORD, blind, sealed, expiry)
        for url in nodes:
            yield Record(NODE_RECORD, url.encode(), b"")
        for host, entry in dnodes:
            yield Record(DNODE_RECORD, host.encode(), pack_dnode(*entry))
        for nonce_id, expiry in spent:
            if expiry > now_ms:
                yield Record(NONCE_RECORD, nonce_id, b"", expiry)
        for blind, (expiry, sealed) in ops:
            if not expiry or expiry > now_ms:
                yield Record(OPS_RECORD, blind, sealed, expiry or None)

    async def _import_records(self, records: Sequence[Record]) -> None:
        for kind, key, value, expiry in records:
            if kind == IDENTITY_RECORD:
                self._identities[key] = value
            elif kind == PRESENCE_RECORD and expiry is not None:
                await self._put_presence(key, value, expiry)
            elif kind == NODE_RECORD:
                self._nodes[key.decode()] = None
            elif kind == DNODE_RECORD:
                await self._put_dnode(key.decode(), *unpack_dnode(value))
            elif kind == NONCE_RECORD and expiry is not None and key not in self._spent:
                self._spent[key] = expiry
                heapq.heappush(self._spent_expiry, (expiry, key))
            elif kind == OPS_RECORD:
                self._ops[key] = (expiry or 0, value)
                if expiry:
                    self._tombstones.add((expiry, key))

    async def close(self) -> None:
        return None


def _purge(
    index: SortedList, table: dict[bytes, tuple[int, bytes]], now_ms: int, limit: int
) -> int:
    """Delete the first ``limit`` entries of ``index`` (expiry, blind) with expiry <= ``now_ms``
    and their values in ``table``; returns how many."""
    end = min(index.bisect_right((now_ms, b"\xff" * 33)), max(limit, 0))
    for _, blind in index.islice(0, end):
        del table[blind]
    del index[:end]
    return int(end)
