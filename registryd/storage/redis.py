"""Redis backend (``[storage] kind = "redis"``): many registryd processes on one Redis or Redis
Cluster, over redis-py's asyncio client. The layout promises are LevelDB's (P1-P14 of
:mod:`.base`) with the differences noted there for presences (P6, P7: native expiry).

Key layout (``H`` is the 64-hex blind index; ``{...}`` is the Redis Cluster hash tag, so the keys
of one handle, and each shared structure, stay on one slot):

    registryd:schema_version           → SCHEMA_VERSION
    registryd:{H}:i                    → sealed identity              (SET NX: P1, P2)
    registryd:{H}:p                    → expiry_be64 + sealed presence, expiring natively then
    registryd:{nodes}:list / :set      → node base URLs, in order / deduplicated (P8)
    registryd:{directory}:nodes        → hash: host → pubkey + record_len_be32 + record + sealed
    registryd:{directory}:keys         → hash: pubkey (32) → host     (one host per key, P9)
    registryd:{spent}:nonces           → sorted set: nonce id (16) scored by expiry, Unix ms (P10)

Every call is bounded by ``[storage] timeout_ms``; any Redis or network error, or the deadline,
is a :class:`StorageError` (the app answers 503 with ``Retry-After``). A write returns once
Redis has acknowledged it (P11 needs Redis's ``appendonly yes`` and ``appendfsync always``,
checked at start-up, or ``wait_replicas``: each write then also waits for that many
replicas). In a cluster, :meth:`merge` spans slots, so it stores handle by handle
(each still atomic) rather than in one atomic write (P3).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis

from ..errors import StorageError
from ..secret import Secret
from . import redis_scripts as lua
from .base import SCHEMA_VERSION, Storage
from .records import (
    DNODE_RECORD,
    IDENTITY_RECORD,
    NODE_RECORD,
    NONCE_RECORD,
    OPS_RECORD,
    PRESENCE_RECORD,
    SLOT_IDENTITY,
    SLOT_OPS,
    SLOT_PRESENCE,
    Record,
    Spend,
    Swap,
    Swapped,
)
from .redis_conn import (
    aclose_within,
    async_client,
    check_schema,
    durability_warnings,
    is_cluster,
    sync_client,
)

T = TypeVar("T")
log = logging.getLogger("registryd")

PREFIX = b"registryd:"
SCHEMA_KEY = PREFIX + b"schema_version"
NODE_LIST, NODE_SET = PREFIX + b"{nodes}:list", PREFIX + b"{nodes}:set"
DNODES, DKEYS = PREFIX + b"{directory}:nodes", PREFIX + b"{directory}:keys"
SPENT = PREFIX + b"{spent}:nonces"
PRESENCES = PREFIX + b"{presences}:index"
_SLOT_INDEX = {SLOT_IDENTITY: 1, SLOT_PRESENCE: 2, SLOT_OPS: 3}
_SWAPPED = (Swapped.DONE, Swapped.STALE, Swapped.FULL)
EXPORT_BATCH = 500
BE64 = struct.Struct(">Q")
BE32 = struct.Struct(">I")
_SPEND = (Spend.SPENT, Spend.REPLAYED, Spend.FULL)


def identity_key(blind: bytes) -> bytes:
    return PREFIX + b"{" + blind.hex().encode() + b"}:i"


def presence_key(blind: bytes) -> bytes:
    return PREFIX + b"{" + blind.hex().encode() + b"}:p"


def ops_key(blind: bytes) -> bytes:
    return PREFIX + b"{" + blind.hex().encode() + b"}:o"


def _handle_key(key: bytes) -> tuple[bytes, bytes] | None:
    """(blind, slot letter) of a handle's key, or None for any other key."""
    head = len(PREFIX) + 1
    if len(key) != head + 64 + 3 or key[head - 1 : head] != b"{" or key[head + 64 :][:2] != b"}:":
        return None
    try:
        return bytes.fromhex(key[head : head + 64].decode()), key[-1:]
    except ValueError:
        return None


class RedisStorage(Storage):
    """Storage in the Redis at ``url`` (:mod:`.redis_conn` lists the URL forms).

    Opening checks ``schema_version`` with a short synchronous connection; raises
    :class:`StorageError` if Redis cannot be reached and
    :class:`~registryd.errors.SchemaVersionError` on an unknown schema. ``timeout_ms`` bounds
    every call. ``wait_replicas`` > 0: each write is acknowledged only once that many replicas
    hold it (``WAIT``); start-up then skips the ``appendfsync`` warning.
    """

    kind = "redis"
    native_expiry = True
    export_view = False

    def __init__(
        self,
        index_key: Secret,
        url: str,
        *,
        ca_file: str | None = None,
        timeout_ms: int = 1000,
        wait_replicas: int = 0,
    ) -> None:
        super().__init__(index_key)
        self._timeout_s = timeout_ms / 1000
        self._wait_replicas = wait_replicas
        self._wait_ms = max(timeout_ms // 2, 1)
        self._cluster = is_cluster(url)
        with sync_client(url, ca_file, self._timeout_s) as client:
            check_schema(client, SCHEMA_KEY, SCHEMA_VERSION, PREFIX)
            for warning in [] if wait_replicas else durability_warnings(client):
                log.warning("%s", warning)
        self._r: Any = async_client(url, ca_file, self._timeout_s)
        self._insert_many_lua = self._r.register_script(lua.INSERT_MANY)
        self._add_nodes_lua = self._r.register_script(lua.ADD_NODES)
        self._put_dnode_lua = self._r.register_script(lua.PUT_DNODE)
        self._delete_dnode_lua = self._r.register_script(lua.DELETE_DNODE)
        self._spend_lua = self._r.register_script(lua.SPEND)
        self._put_presence_lua = self._r.register_script(lua.PUT_PRESENCE)
        self._swap_lua = self._r.register_script(lua.SWAP)
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisStorage(cluster={self._cluster})"

    async def _call(self, call: Awaitable[T]) -> T:
        """``call``'s result within the deadline; every failure a :class:`StorageError`."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except TimeoutError as exc:
            raise StorageError(f"Redis did not answer within {self._timeout_s:g} s") from exc
        except (redis.RedisError, OSError) as exc:
            raise StorageError(f"Redis error: {type(exc).__name__}") from exc

    async def _write(self, build: Callable[[Any], Any]) -> Any:
        """The write that ``build(client)`` makes, acknowledged by Redis; with
        ``wait_replicas``, sent with ``WAIT`` on the same connection (a pipeline) and refused
        (StorageError) unless that many replicas hold it within half the timeout."""
        if not self._wait_replicas:
            return await self._call(build(self._r))
        pipe = self._r.pipeline(transaction=False)
        build(pipe)
        pipe.execute_command("WAIT", self._wait_replicas, self._wait_ms)
        result, held = await self._call(pipe.execute())
        if int(held) < self._wait_replicas:
            raise StorageError(f"a write reached {held} of {self._wait_replicas} replicas in time")
        return result

    def _eval(self, client: Any, script: Any, keys: list[bytes], args: Sequence[Any]) -> Any:
        """Run ``script`` on ``client``: the pool (a coroutine), or a pipeline it is queued on
        (loaded first by the pipeline if Redis does not know it)."""
        if client is self._r:
            return script(keys, args)
        client.scripts.add(script)
        return client.evalsha(script.sha, len(keys), *keys, *args)

    async def ping(self) -> None:
        await self._call(self._r.ping())

    # -- identities -------------------------------------------------------------------------

    async def _insert(self, blind: bytes, sealed: bytes) -> bool:
        return await self._set_nx(identity_key(blind), sealed)

    async def _set_nx(self, key: bytes, value: bytes) -> bool:
        return bool(await self._write(lambda r: r.set(key, value, nx=True)))

    async def _get(self, blind: bytes) -> bytes | None:
        value: bytes | None = await self._call(self._r.get(identity_key(blind)))
        return value

    async def _contains(self, blind: bytes) -> bool:
        return bool(await self._call(self._r.exists(identity_key(blind))))

    async def _insert_many(self, records: Sequence[tuple[bytes, bytes]]) -> int:
        if not records:
            return 0
        keys = [identity_key(blind) for blind, _ in records]
        values = [sealed for _, sealed in records]
        if not self._cluster:
            return int(
                await self._write(lambda r: self._eval(r, self._insert_many_lua, keys, values))
            )
        added = 0  # keys of different handles live on different slots: one handle at a time
        for key, sealed in zip(keys, values, strict=True):
            added += await self._set_nx(key, sealed)
        return added

    # -- presence ---------------------------------------------------------------------------

    async def _put_presence(self, blind: bytes, sealed: bytes, expires_at_ms: int) -> None:
        key = presence_key(blind)
        value = BE64.pack(expires_at_ms) + sealed
        expiry = max(expires_at_ms, 1)
        if not self._cluster:
            args = [value, expiry]
            await self._write(
                lambda r: self._eval(r, self._put_presence_lua, [key, PRESENCES], args)
            )
            return
        await self._write(lambda r: r.set(key, value, pxat=expiry))  # the index is elsewhere
        await self._call(self._r.zadd(PRESENCES, {key: expiry}))

    async def _get_presence(self, blind: bytes) -> tuple[bytes, int] | None:
        value: bytes | None = await self._call(self._r.get(presence_key(blind)))
        if value is None:
            return None
        return value[8:], BE64.unpack(value[:8])[0]

    async def purge_expired(self, now_ms: int, limit: int) -> int:
        """Nothing to do: Redis deletes each presence at its expiry (``PXAT``)."""
        return 0

    # -- ownership (extensions spec §2) -------------------------------------------------------

    async def _get_ops(self, blind: bytes) -> tuple[bytes, int] | None:
        value: bytes | None = await self._call(self._r.get(ops_key(blind)))
        return None if value is None else (value[8:], BE64.unpack(value[:8])[0])

    async def _swap(self, blind: bytes, swaps: Sequence[Swap], max_presences: int) -> Swapped:
        """One script on the handle's slot (P16); the presence bound (P17) inside it, or, in
        a cluster (the index is on another slot), checked and kept just around it."""
        keys = [identity_key(blind), presence_key(blind), ops_key(blind)]
        args: list[Any] = [len(swaps)]
        for swap in swaps:
            args += [
                _SLOT_INDEX[swap.slot],
                "0" if swap.expected is None else "1",
                swap.expected or b"",
                "0" if swap.new is None else "1",
                swap.new or b"",
                swap.expires_at_ms,
                BE64.pack(swap.expires_at_ms),
            ]
        args.append(max_presences)
        creates = any(
            s.slot == SLOT_PRESENCE and s.expected is None and s.new is not None for s in swaps
        )
        if self._cluster and creates and await self._presence_count() >= max_presences:
            return Swapped.FULL
        script_keys = keys if self._cluster else [*keys, PRESENCES]
        done = _SWAPPED[
            int(await self._write(lambda r: self._eval(r, self._swap_lua, script_keys, args)))
        ]
        if self._cluster and done is Swapped.DONE:
            for swap in (s for s in swaps if s.slot == SLOT_PRESENCE and s.new != s.expected):
                if swap.new is None:
                    await self._call(self._r.zrem(PRESENCES, keys[1]))
                else:
                    await self._call(self._r.zadd(PRESENCES, {keys[1]: swap.expires_at_ms}))
        return done

    async def _presence_count(self) -> int:
        """Presences held now: index entries not yet expired. At most
        :data:`~.redis_scripts.INDEX_TRIM` expired ones are dropped first, oldest first, so no
        call holds Redis for long."""
        t = await self._call(self._r.time())
        now = t[0] * 1000 + t[1] // 1000
        expired = int(await self._call(self._r.zcount(PRESENCES, "-inf", now)))
        if expired:
            trim = min(expired, lua.INDEX_TRIM)
            await self._call(self._r.zremrangebyrank(PRESENCES, 0, trim - 1))
        held = int(await self._call(self._r.zcard(PRESENCES)))
        return held - int(await self._call(self._r.zcount(PRESENCES, "-inf", now)))

    async def purge_tombstones(self, now_ms: int, limit: int) -> int:
        """Nothing to do: Redis deletes each ops value at its expiry (``PXAT``)."""
        return 0

    # -- nodes ------------------------------------------------------------------------------

    async def add_nodes(self, base_urls: Sequence[str], max_nodes: int) -> int:
        if not base_urls:
            return 0
        urls = [url.encode() for url in base_urls]
        args = [max(max_nodes, 1), *urls]
        return int(
            await self._write(
                lambda r: self._eval(r, self._add_nodes_lua, [NODE_LIST, NODE_SET], args)
            )
        )

    async def nodes(self) -> list[str]:
        urls: list[bytes] = await self._call(self._r.lrange(NODE_LIST, 0, -1))
        return [url.decode() for url in urls]

    # -- node directory (extensions spec §3) --------------------------------------------------

    async def _put_dnode(self, host: str, pubkey: bytes, record: bytes, sealed: bytes) -> None:
        value = pubkey + BE32.pack(len(record)) + record + sealed
        args = [host, pubkey, value]
        await self._write(lambda r: self._eval(r, self._put_dnode_lua, [DNODES, DKEYS], args))

    @staticmethod
    def _split_dnode(value: bytes) -> tuple[bytes, bytes, bytes]:
        end = 36 + BE32.unpack(value[32:36])[0]
        return value[:32], value[36:end], value[end:]

    async def _get_dnode(self, host: str) -> tuple[bytes, bytes, bytes] | None:
        value: bytes | None = await self._call(self._r.hget(DNODES, host))
        return None if value is None else self._split_dnode(value)

    async def directory_host_of_key(self, pubkey: bytes) -> str | None:
        host: bytes | None = await self._call(self._r.hget(DKEYS, pubkey))
        return None if host is None else host.decode()

    async def _list_dnodes(self) -> list[tuple[str, bytes, bytes, bytes]]:
        entries: dict[bytes, bytes] = await self._call(self._r.hgetall(DNODES))
        return [(host.decode(), *self._split_dnode(value)) for host, value in entries.items()]

    async def delete_directory_node(self, host: str) -> bool:
        return bool(
            await self._write(
                lambda r: self._eval(r, self._delete_dnode_lua, [DNODES, DKEYS], [host])
            )
        )

    async def spend_nonce(
        self, nonce_id: bytes, expires_at_ms: int, now_ms: int, max_entries: int
    ) -> Spend:
        args = [nonce_id, expires_at_ms, now_ms, max_entries]
        return _SPEND[
            int(await self._write(lambda r: self._eval(r, self._spend_lua, [SPENT], args)))
        ]

    async def nonce_spent(self, nonce_id: bytes) -> bool:
        return await self._call(self._r.zscore(SPENT, nonce_id)) is not None

    async def purge_spent_nonces(self, now_ms: int) -> int:
        return int(await self._write(lambda r: r.zremrangebyscore(SPENT, "-inf", now_ms)))

    # -- end of node directory ----------------------------------------------------------------

    # -- export and import (P20, P21) ---------------------------------------------------------

    async def _export_records(self, now_ms: int) -> AsyncGenerator[Record, None]:
        """Every record, scanning the keyspace in batches (Redis has no snapshot: writers are
        stopped during an export, as ``storage export`` requires)."""
        batch: list[bytes] = []
        async for key in self._r.scan_iter(match=PREFIX + b"{*}:?", count=EXPORT_BATCH):
            if _handle_key(key) is not None:
                batch.append(key)
            if len(batch) >= EXPORT_BATCH:
                for record in await self._handle_records(batch, now_ms):
                    yield record
                batch = []
        for record in await self._handle_records(batch, now_ms):
            yield record
        for url in await self.nodes():
            yield Record(NODE_RECORD, url.encode(), b"")
        entries: dict[bytes, bytes] = await self._call(self._r.hgetall(DNODES))
        for host, value in entries.items():
            yield Record(DNODE_RECORD, host, value)
        spent = await self._call(self._r.zrange(SPENT, 0, -1, withscores=True))
        for nonce_id, expiry in spent:
            if int(expiry) > now_ms:
                yield Record(NONCE_RECORD, nonce_id, b"", int(expiry))

    async def _handle_records(self, keys: list[bytes], now_ms: int) -> list[Record]:
        if not keys:
            return []
        values = (
            await self._call(self._r.mget(keys))
            if not self._cluster
            else [await self._call(self._r.get(key)) for key in keys]
        )
        records = []
        for key, value in zip(keys, values, strict=True):
            found = _handle_key(key)
            if value is None or found is None:
                continue  # expired since the scan
            blind, slot = found
            if slot == SLOT_IDENTITY:
                records.append(Record(IDENTITY_RECORD, blind, value))
                continue
            expiry, sealed = BE64.unpack(value[:8])[0], value[8:]
            if slot == SLOT_PRESENCE and expiry > now_ms:
                records.append(Record(PRESENCE_RECORD, blind, sealed, expiry))
            elif slot == SLOT_OPS and (not expiry or expiry > now_ms):
                records.append(Record(OPS_RECORD, blind, sealed, expiry or None))
        return records

    async def _import_records(self, records: Sequence[Record]) -> None:
        """One MULTI/EXEC transaction (in a cluster, a pipeline: atomic per slot only)."""
        pipe = self._r.pipeline(transaction=not self._cluster)
        for kind, key, value, expiry in records:
            if kind == IDENTITY_RECORD:
                pipe.set(identity_key(key), value)
            elif kind == PRESENCE_RECORD and expiry is not None:
                pipe.set(presence_key(key), BE64.pack(expiry) + value, pxat=expiry)
                pipe.zadd(PRESENCES, {presence_key(key): expiry})
            elif kind == NODE_RECORD:
                pipe.rpush(NODE_LIST, key)
                pipe.sadd(NODE_SET, key)
            elif kind == DNODE_RECORD:
                pipe.hset(DNODES, key, value)
                pipe.hset(DKEYS, value[:32], key)
            elif kind == NONCE_RECORD and expiry is not None:
                pipe.zadd(SPENT, {key: expiry})
            elif kind == OPS_RECORD:
                stored = BE64.pack(expiry or 0) + value
                pipe.set(ops_key(key), stored, pxat=expiry) if expiry else pipe.set(
                    ops_key(key), stored
                )
        await self._call(pipe.execute())

    async def close(self) -> None:
        """Close the pool; every write was acknowledged before its method returned (P13)."""
        if not self._closed:
            self._closed = True
            await aclose_within(self._r, self._timeout_s)
