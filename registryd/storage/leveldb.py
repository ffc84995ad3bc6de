"""LevelDB backend (plyvel-next or plyvel: :mod:`registryd.storage.binding`). One process owns
the directory; writes are synced before returning.

Its key layout is in :mod:`registryd.storage.leveldb_keys`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread

from ..errors import SchemaVersionError, StorageError, StorageLockedError
from ..secret import Secret
from .base import SCHEMA_VERSION, Storage
from .binding import leveldb_module
from .leveldb_expiry import ExpiryIndexes
from .leveldb_keys import (
    BE64,
    DKEY,
    DNODE,
    DSPENT,
    DSPENT_EXPIRY,
    EXPIRY,
    IDENT,
    NODE,
    OPS,
    PRES,
    SCHEMA_KEY,
    TOMB,
    record_of,
)
from .records import (
    DNODE_RECORD,
    IDENTITY_RECORD,
    NODE_RECORD,
    NONCE_RECORD,
    OPS_RECORD,
    PRESENCE_RECORD,
    SLOT_IDENTITY,
    SLOT_OPS,
    Record,
    Spend,
    Swap,
    Swapped,
    pack_dnode,
    unpack_dnode,
)

plyvel = leveldb_module()  # ConfigError on storage.kind when the leveldb extra is missing

_SLOT_KEY = {SLOT_IDENTITY: IDENT, SLOT_OPS: OPS}  # else PRES
_GONE = b""  # a staged delete of a node directory key (their values are never empty)
Write = Callable[[Any, dict[bytes, bytes]], Any]  # (write batch, staged puts) -> result
EXPORT_CHUNK = 2_000  # records read per thread hop while exporting


def _storage_error(exc: Exception) -> StorageError:  # its class only, never its text
    return StorageError(f"LevelDB error: {type(exc).__name__}")


class LevelDBStorage(Storage):
    """Storage in a LevelDB directory at ``path`` (created if missing).

    Raises :class:`StorageLockedError` if another process has it open, and
    :class:`SchemaVersionError` if it was written with an unknown schema.
    """

    kind = "leveldb"

    def __init__(self, index_key: Secret, path: str | Path) -> None:
        super().__init__(index_key)
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db: Any = plyvel.DB(
                str(self.path),
                create_if_missing=True,
                bloom_filter_bits=10,  # a lookup touches one table block, not one per level
                lru_cache_size=64 * 1024 * 1024,  # hot blocks of a large registry stay in memory
            )
        except plyvel.IOError as exc:
            if "lock" in str(exc).lower():
                raise StorageLockedError(
                    f"{self.path} is in use by another registryd process (LevelDB lock held)"
                ) from exc
            raise StorageError(f"cannot open LevelDB at {self.path}: {exc}") from exc
        except (plyvel.Error, OSError) as exc:
            raise StorageError(f"cannot open LevelDB at {self.path}: {exc}") from exc
        self._check_schema()
        self._write_lock = asyncio.Lock()
        self._queued: list[tuple[Write, asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._node_list = [url.decode() for _, url in self._db.iterator(prefix=NODE)]
        self._node_set = set(self._node_list)
        self._spent_count = sum(1 for _ in self._db.iterator(prefix=DSPENT, include_value=False))
        self._presence_count = sum(1 for _ in self._db.iterator(prefix=PRES, include_value=False))
        self._expiry = ExpiryIndexes(self._db)  # staged and purged under _write_lock

    def __repr__(self) -> str:
        return f"LevelDBStorage(path={str(self.path)!r})"

    def _check_schema(self) -> None:
        version = self._db.get(SCHEMA_KEY)
        if version is None:
            if next(self._db.iterator(include_value=False), None) is not None:
                self._db.close()
                raise SchemaVersionError(f"{self.path} holds data but no schema_version")
            self._db.put(SCHEMA_KEY, SCHEMA_VERSION, sync=True)
        elif version != SCHEMA_VERSION:
            self._db.close()
            raise SchemaVersionError(
                f"{self.path} has schema_version {version!r}; this build reads {SCHEMA_VERSION!r}"
            )

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        except plyvel.Error as exc:
            raise _storage_error(exc) from exc

    # -- identities -------------------------------------------------------------------------

    async def _insert(self, blind: bytes, sealed: bytes) -> bool:
        return await self._insert_many([(blind, sealed)]) == 1

    async def _get(self, blind: bytes) -> bytes | None:
        value: bytes | None = self._db.get(IDENT + blind)
        return value

    async def _contains(self, blind: bytes) -> bool:
        return self._db.get(IDENT + blind) is not None

    async def _insert_many(self, records: Sequence[tuple[bytes, bytes]]) -> int:
        def write(batch: Any, staged: dict[bytes, bytes]) -> int:
            added = 0
            for blind, sealed in records:
                key = IDENT + blind
                if self._staged(staged, key) is None:
                    batch.put(key, sealed)
                    staged[key] = sealed
                    added += 1
            return added

        added: int = await self._commit(write)
        return added

    # -- group commit -----------------------------------------------------------------------

    async def _commit(self, write: Write) -> Any:
        """Run ``write`` in the next synced write batch; returns its result once durable.

        Writes that arrive while a batch is being synced wait and go together in the next one
        (group commit): one fsync for many acknowledgements instead of one each. ``staged``
        shows each write what earlier writes of the same batch wrote, so check-then-insert
        stays atomic across the batch. A separate task commits, so a cancelled request cannot
        strand the writes queued behind it.

        The batch is written and synced on the event loop's thread: hops to a worker thread
        waited for the GIL (README, Performance; ``python -m bench.register_tail``).
        """
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((write, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
        return await done

    def _apply(self, writes: list[Write]) -> list[Any]:
        staged: dict[bytes, bytes] = {}
        with self._db.write_batch(transaction=True, sync=True) as batch:
            return [write(batch, staged) for write in writes]

    async def _commit_queued(self) -> None:
        while self._queued:
            writes, self._queued = self._queued, []
            try:
                async with self._write_lock:
                    results = self._apply([w for w, _ in writes])
            except Exception as exc:  # handed to every writer waiting on this batch
                if isinstance(exc, plyvel.Error):
                    exc = _storage_error(exc)
                for _, done in writes:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for (_, done), result in zip(writes, results, strict=True):
                    if not done.done():
                        done.set_result(result)

    # -- presence ---------------------------------------------------------------------------

    async def _put_presence(self, blind: bytes, sealed: bytes, expires_at_ms: int) -> None:
        def write(batch: Any, staged: dict[bytes, bytes]) -> None:
            key = PRES + blind
            old = self._staged(staged, key)
            if old is not None:
                batch.delete(EXPIRY + old[:8] + blind)
            else:
                self._presence_count += 1
            value = BE64.pack(expires_at_ms) + sealed
            batch.put(key, value)
            self._expiry.stage(batch, EXPIRY + BE64.pack(expires_at_ms) + blind)
            staged[key] = value

        await self._commit(write)

    async def _get_presence(self, blind: bytes) -> tuple[bytes, int] | None:
        value = self._db.get(PRES + blind)
        if value is None:
            return None
        return value[8:], BE64.unpack(value[:8])[0]

    async def purge_expired(self, now_ms: int, limit: int) -> int:
        return await self._purge(EXPIRY, PRES, now_ms, limit, sync=False)

    async def _purge(self, index: bytes, prefix: bytes, now_ms: int, limit: int, sync: bool) -> int:
        """In one batch: up to ``limit`` entries of expiry ``index`` with expiry <= ``now_ms``,
        oldest first from its floor on, and each value under ``prefix`` + blind that still holds
        that expiry; returns how many values (P7, P18)."""

        def purge() -> int:
            expired = self._expiry.expired(index, now_ms, limit)
            purged = 0
            with self._db.write_batch(transaction=True, sync=sync) as batch:
                for key in expired:
                    batch.delete(key)
                    current = self._db.get(prefix + key[9:])
                    if current is not None and current[:8] == key[1:9]:
                        batch.delete(prefix + key[9:])
                        purged += 1
            self._expiry.deleted(index, expired)
            if prefix == PRES:
                self._presence_count -= purged
            return purged

        async with self._write_lock:
            purged: int = await self._in_thread(purge)
        return purged

    # -- ownership (extensions spec §2) -------------------------------------------------------

    async def _get_ops(self, blind: bytes) -> tuple[bytes, int] | None:
        value = self._db.get(OPS + blind)
        return None if value is None else (value[8:], BE64.unpack(value[:8])[0])

    async def _swap(self, blind: bytes, swaps: Sequence[Swap], max_presences: int) -> Swapped:
        def write(batch: Any, staged: dict[bytes, bytes]) -> Swapped:
            found = {}
            for s in swaps:
                prefix = _SLOT_KEY.get(s.slot, PRES)
                value = self._staged(staged, prefix + blind)
                sealed = value if value is None or prefix == IDENT else value[8:]
                if sealed != s.expected:
                    return Swapped.STALE
                found[s.slot] = value
            changed = [s for s in swaps if s.new != s.expected]
            new_presence = any(s.slot not in _SLOT_KEY and s.expected is None for s in changed)
            if new_presence and self._presence_count >= max_presences:
                return Swapped.FULL
            for s in changed:
                self._write_slot(batch, staged, blind, s, found[s.slot])
            return Swapped.DONE

        swapped: Swapped = await self._commit(write)
        return swapped

    def _write_slot(
        self, batch: Any, staged: dict[bytes, bytes], blind: bytes, s: Swap, old: bytes | None
    ) -> None:
        prefix = _SLOT_KEY.get(s.slot, PRES)
        key = prefix + blind
        index = {PRES: EXPIRY, OPS: TOMB}.get(prefix)
        if index is not None and old is not None and (prefix == PRES or old[:8] != bytes(8)):
            batch.delete(index + old[:8] + blind)
        if prefix == PRES:
            self._presence_count += (s.new is not None) - (old is not None)
        if s.new is None:
            batch.delete(key)
            staged[key] = _GONE
            return
        expiry = BE64.pack(s.expires_at_ms)
        value = s.new if index is None else expiry + s.new
        batch.put(key, value)
        staged[key] = value
        if index is not None and (prefix == PRES or s.expires_at_ms):
            self._expiry.stage(batch, index + expiry + blind)

    async def purge_tombstones(self, now_ms: int, limit: int) -> int:
        return await self._purge(TOMB, OPS, now_ms, limit, sync=True)

    # -- nodes ------------------------------------------------------------------------------

    async def add_nodes(self, base_urls: Sequence[str], max_nodes: int) -> int:
        def write(new: list[str]) -> None:
            with self._db.write_batch(transaction=True, sync=True) as batch:
                for seq, url in enumerate(new, start=len(self._node_list)):
                    batch.put(NODE + BE64.pack(seq), url.encode())

        async with self._write_lock:
            room = max(max_nodes, 1) - len(self._node_list)
            new = list(dict.fromkeys(u for u in base_urls if u not in self._node_set))[
                : max(room, 0)
            ]
            if new:
                await self._in_thread(write, new)
                self._node_list.extend(new)
                self._node_set.update(new)
        return len(new)

    async def nodes(self) -> list[str]:
        return list(self._node_list)

    # -- node directory (extensions spec §3) --------------------------------------------------

    def _staged(self, staged: dict[bytes, bytes], key: bytes) -> bytes | None:
        value: bytes | None = staged[key] if key in staged else self._db.get(key)
        return value or None

    def _unlink(self, batch: Any, staged: dict[bytes, bytes], host: bytes) -> bytes | None:
        """Stage the delete of ``host``'s record and, if it points back, its key index."""
        old = self._staged(staged, DNODE + host)
        if old is None:
            return None
        key = DKEY + old[:32]
        if self._staged(staged, key) == host:
            batch.delete(key)
            staged[key] = _GONE
        batch.delete(DNODE + host)
        staged[DNODE + host] = _GONE
        return old

    async def _put_dnode(self, host: str, pubkey: bytes, record: bytes, sealed: bytes) -> None:
        name = host.encode()
        value = pack_dnode(pubkey, record, sealed)

        def write(batch: Any, staged: dict[bytes, bytes]) -> None:
            self._unlink(batch, staged, name)
            batch.put(DNODE + name, value)
            batch.put(DKEY + pubkey, name)
            staged[DNODE + name] = value
            staged[DKEY + pubkey] = name

        await self._commit(write)

    async def _get_dnode(self, host: str) -> tuple[bytes, bytes, bytes] | None:
        value = self._db.get(DNODE + host.encode())
        return None if value is None else unpack_dnode(value)

    async def directory_host_of_key(self, pubkey: bytes) -> str | None:
        value = self._db.get(DKEY + pubkey)
        return None if value is None else bytes(value).decode()

    async def _list_dnodes(self) -> list[tuple[str, bytes, bytes, bytes]]:
        def scan() -> list[tuple[str, bytes, bytes, bytes]]:
            return [
                (key[len(DNODE) :].decode(), *unpack_dnode(value))
                for key, value in self._db.iterator(prefix=DNODE)
            ]

        nodes: list[tuple[str, bytes, bytes, bytes]] = await self._in_thread(scan)
        return nodes

    async def delete_directory_node(self, host: str) -> bool:
        def write(batch: Any, staged: dict[bytes, bytes]) -> bool:
            return self._unlink(batch, staged, host.encode()) is not None

        deleted: bool = await self._commit(write)
        return deleted

    async def spend_nonce(
        self, nonce_id: bytes, expires_at_ms: int, now_ms: int, max_entries: int
    ) -> Spend:
        if await self.nonce_spent(nonce_id):
            return Spend.REPLAYED
        if self._spent_count >= max_entries:
            await self.purge_spent_nonces(now_ms)
            if self._spent_count >= max_entries:
                return Spend.FULL
        expiry = BE64.pack(expires_at_ms)

        def write(batch: Any, staged: dict[bytes, bytes]) -> Spend:
            key = DSPENT + nonce_id
            if self._staged(staged, key) is not None:
                return Spend.REPLAYED
            batch.put(key, expiry)
            batch.put(DSPENT_EXPIRY + expiry + nonce_id, b"")
            staged[key] = expiry
            return Spend.SPENT

        spend: Spend = await self._commit(write)
        if spend is Spend.SPENT:
            self._spent_count += 1
        return spend

    async def nonce_spent(self, nonce_id: bytes) -> bool:
        return self._db.get(DSPENT + nonce_id) is not None

    async def purge_spent_nonces(self, now_ms: int) -> int:
        def purge() -> int:
            stop = DSPENT_EXPIRY + BE64.pack(now_ms + 1)
            keys = list(self._db.iterator(start=DSPENT_EXPIRY, stop=stop, include_value=False))
            with self._db.write_batch(transaction=True) as batch:
                for key in keys:
                    batch.delete(key)
                    batch.delete(DSPENT + key[len(DSPENT_EXPIRY) + 8 :])
            return len(keys)

        async with self._write_lock:
            purged: int = await self._in_thread(purge)
        self._spent_count -= purged
        return purged

    # -- end of node directory ----------------------------------------------------------------

    # -- export and import (P20, P21) --------------------------------------------------------

    async def _export_records(self, now_ms: int) -> AsyncGenerator[Record, None]:
        snapshot = self._db.snapshot()  # one consistent view, read in key order
        entries = snapshot.iterator()

        def take() -> list[Record]:
            records: list[Record] = []
            for key, value in entries:
                record = record_of(key, value, now_ms)
                if record is not None:
                    records.append(record)
                    if len(records) >= EXPORT_CHUNK:
                        break
            return records

        try:
            while chunk := await self._in_thread(take):
                for record in chunk:
                    yield record
        finally:
            entries.close()
            snapshot.close()

    async def _import_records(self, records: Sequence[Record]) -> None:
        urls = [key.decode() for kind, key, _, _ in records if kind == NODE_RECORD]
        urls = [url for url in dict.fromkeys(urls) if url not in self._node_set]

        def write(batch: Any, staged: dict[bytes, bytes]) -> int:
            for seq, url in enumerate(urls, start=len(self._node_list)):  # after the known ones
                batch.put(NODE + BE64.pack(seq), url.encode())
            spent = 0
            for kind, key, value, expiry in records:
                if kind == IDENTITY_RECORD:
                    batch.put(IDENT + key, value)
                elif kind == PRESENCE_RECORD and expiry is not None:
                    batch.put(PRES + key, BE64.pack(expiry) + value)
                    self._expiry.stage(batch, EXPIRY + BE64.pack(expiry) + key)
                elif kind == DNODE_RECORD:
                    batch.put(DNODE + key, value)
                    batch.put(DKEY + value[:32], key)
                elif kind == NONCE_RECORD and expiry is not None:
                    if self._staged(staged, DSPENT + key) is None:
                        spent += 1
                    batch.put(DSPENT + key, BE64.pack(expiry))
                    batch.put(DSPENT_EXPIRY + BE64.pack(expiry) + key, b"")
                    staged[DSPENT + key] = BE64.pack(expiry)
                elif kind == OPS_RECORD:
                    batch.put(OPS + key, BE64.pack(expiry or 0) + value)
                    if expiry:
                        self._expiry.stage(batch, TOMB + BE64.pack(expiry) + key)
            return spent

        self._spent_count += await self._commit(write)
        # the store was empty (P21), so every presence imported is a new one (P17's count)
        self._presence_count += sum(1 for r in records if r.kind == PRESENCE_RECORD)
        self._node_list.extend(urls)
        self._node_set.update(urls)

    async def close(self) -> None:
        if self._committer is not None:
            await self._committer  # writes already queued are committed, not dropped
        if not self._db.closed:
            async with self._write_lock:
                self._db.close()
