"""The storage contract (DESIGN "Storage layout") over every backend, plus LevelDB specifics.

Which test checks which promise of ``registryd/storage/base.py`` (P9 and P10, the node
directory's, are in ``test_storage_directory.py``; P15-P19, ownership's, in
``test_storage_ownership.py``; P20 and P21, export and import, in
``test_storage_transfer.py``); tests taking the ``storage`` fixture run
over every backend (memory, LevelDB, Redis, a 3-master Redis Cluster; Redis's own promises are in
``test_storage_redis.py``), ``test_leveldb_*`` and ``test_memory_*`` over one:

====  ======================================================================================
P1    test_register_twice_keeps_the_original, test_register_get_exists
P2    test_concurrent_registrations_of_one_handle_have_one_winner
P3    test_merge_inserts_only_free_handles_and_dedupes (not checked: that a merge failing
      midway stores nothing; LevelDB writes it as one transaction batch)
P4    test_register_get_exists, test_register_twice_keeps_the_original
P5    test_announce_upsert_last_write_wins, test_announce_upsert_to_an_earlier_expiry
P6    test_get_presence_after_announce
P7    test_purge_deletes_exactly_the_expired, test_purge_respects_limit,
      test_purge_oldest_first, test_purge_limit_zero_deletes_nothing,
      test_purge_with_nothing_expired_deletes_nothing, test_purge_is_o_expired,
      test_announce_upsert_last_write_wins, test_announce_upsert_to_an_earlier_expiry
P8    test_add_nodes_dedupes_and_keeps_insertion_order, test_add_nodes_caps_at_max_nodes,
      test_add_nodes_max_zero_behaves_as_one
P11   test_leveldb_persists_across_restart,
      test_leveldb_group_commit_acknowledges_only_durable_writes
P12   test_leveldb_at_rest_holds_no_plaintext, test_memory_holds_no_plaintext,
      test_blind_index_differs_from_user_id
P13   test_close_is_idempotent, test_leveldb_group_commit_acknowledges_only_durable_writes
P14   test_leveldb_second_open_in_process_is_refused,
      test_leveldb_second_process_gets_a_clear_error, test_leveldb_writes_schema_version,
      test_leveldb_refuses_another_schema_version,
      test_leveldb_refuses_data_without_schema_version, test_leveldb_wrong_index_key_cannot_read
====  ======================================================================================
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registryd import wire
from registryd.config import Config
from registryd.errors import SchemaVersionError, StorageError, StorageLockedError
from registryd.identity import PublicIdentity, user_id
from registryd.secret import Secret
from registryd.storage import Storage
from registryd.storage.base import SCHEMA_VERSION
from registryd.storage.binding import leveldb_module
from registryd.storage.leveldb import LevelDBStorage
from registryd.storage.leveldb_keys import IDENT, PRES, SCHEMA_KEY
from registryd.storage.memory import MemoryStorage
from registryd.timespec import now_ms
from tests.conftest import config_for_backend
from tests.helpers import IN_PROCESS_EXPIRY, INDEX_KEY_HEX
from tests.vectors import PEPPER_HEX

plyvel = leveldb_module()  # plyvel-next on Python 3.12+, plyvel on 3.11 (the leveldb extra)

INDEX_KEY = Secret(bytes.fromhex(INDEX_KEY_HEX))
OTHER_KEY = Secret(bytes(range(100, 132)))
# An hour ahead of the wall clock: Redis expires presences natively (PXAT, by its own clock), so
# an expiry "after NOW" must be in the real future for every backend to hold it.
NOW = now_ms() + 3_600_000


def uid(name: str) -> bytes:
    return user_id(name)


def identity_json(name: str) -> bytes:
    return PublicIdentity(
        user_id=uid(name).hex(),
        signing_public_key=[1, 2, 3],
        encryption_public_key=[4, 5, 6],
        signature=[7, 8, 9],
        created_at_ms=1,
        username_hint=name,
    ).to_json()


@pytest.fixture(params=["memory", "leveldb", "redis", "redis-cluster"])
def backend_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """The contract runs on a 3-master Redis Cluster too."""
    return config_for_backend(str(request.param), request, tmp_path)


# -- identities -----------------------------------------------------------------------------


async def test_register_get_exists(storage: Storage) -> None:
    alice, bob = uid("alice"), uid("bob")
    assert await storage.exists(alice) is False
    assert await storage.get_identity(alice) is None

    assert await storage.register(alice, identity_json("alice")) is True

    assert await storage.exists(alice) is True
    assert await storage.get_identity(alice) == identity_json("alice")
    assert await storage.exists(bob) is False
    assert await storage.get_identity(bob) is None


async def test_register_twice_keeps_the_original(storage: Storage) -> None:
    alice = uid("alice")
    assert await storage.register(alice, b"first") is True
    assert await storage.register(alice, b"second") is False
    assert await storage.get_identity(alice) == b"first"


async def test_concurrent_registrations_of_one_handle_have_one_winner(storage: Storage) -> None:
    handle = uid("contended")
    values = [f"candidate-{i}".encode() for i in range(50)]
    results = await asyncio.gather(*(storage.register(handle, v) for v in values))
    assert results.count(True) == 1
    assert results.count(False) == 49
    winner = values[results.index(True)]
    assert await storage.get_identity(handle) == winner


async def test_merge_inserts_only_free_handles_and_dedupes(storage: Storage) -> None:
    a, b, c = uid("a"), uid("b"), uid("c")
    assert await storage.register(a, b"a-original") is True

    merged = await storage.merge([(a, b"a-new"), (b, b"b-first"), (b, b"b-second"), (c, b"c")])

    assert merged == 2
    assert await storage.get_identity(a) == b"a-original"
    assert await storage.get_identity(b) == b"b-first"
    assert await storage.get_identity(c) == b"c"
    assert await storage.merge([(a, b"x"), (b, b"y"), (c, b"z")]) == 0
    assert await storage.merge([]) == 0


# -- presence -------------------------------------------------------------------------------


async def test_get_presence_after_announce(storage: Storage) -> None:
    alice = uid("alice")
    assert await storage.get_presence(alice) is None
    await storage.announce(alice, b'{"addr":"x"}', NOW + 5_000)
    assert await storage.get_presence(alice) == (b'{"addr":"x"}', NOW + 5_000)
    assert await storage.get_presence(uid("bob")) is None


@IN_PROCESS_EXPIRY
async def test_announce_upsert_last_write_wins(storage: Storage) -> None:
    alice = uid("alice")
    await storage.announce(alice, b"early", NOW + 1_000)
    await storage.announce(alice, b"later", NOW + 5_000)
    assert await storage.get_presence(alice) == (b"later", NOW + 5_000)

    # The first announcement's expiry has passed; its index entry must not purge the new one.
    assert await storage.purge_expired(NOW + 2_000, 100) == 0
    assert await storage.get_presence(alice) == (b"later", NOW + 5_000)

    assert await storage.purge_expired(NOW + 5_001, 100) == 1
    assert await storage.get_presence(alice) is None


@IN_PROCESS_EXPIRY
async def test_announce_upsert_to_an_earlier_expiry(storage: Storage) -> None:
    alice = uid("alice")
    await storage.announce(alice, b"long", NOW + 9_000)
    await storage.announce(alice, b"short", NOW + 1_000)
    assert await storage.get_presence(alice) == (b"short", NOW + 1_000)
    assert await storage.purge_expired(NOW + 2_000, 100) == 1
    assert await storage.get_presence(alice) is None
    # The superseded later expiry neither resurrects nor counts as a purge.
    assert await storage.purge_expired(NOW + 10_000, 100) == 0


@IN_PROCESS_EXPIRY
async def test_purge_deletes_exactly_the_expired(storage: Storage) -> None:
    expiries = {"a": NOW - 5_000, "b": NOW - 1, "c": NOW, "d": NOW + 1, "e": NOW + 5_000}
    for name, expiry in expiries.items():
        await storage.announce(uid(name), name.encode(), expiry)

    assert await storage.purge_expired(NOW, 100) == 3  # expiry <= now (spec 4.10: now - ts >= ttl)

    for name, expiry in expiries.items():
        found = await storage.get_presence(uid(name))
        assert found == (None if expiry <= NOW else (name.encode(), expiry)), name


@IN_PROCESS_EXPIRY
async def test_purge_respects_limit(storage: Storage) -> None:
    for i in range(5):
        await storage.announce(uid(f"user{i}"), b"p", NOW - 100 + i)
    await storage.announce(uid("fresh"), b"p", NOW + 100)

    assert [await storage.purge_expired(NOW, 2) for _ in range(4)] == [2, 2, 1, 0]
    assert all([await storage.get_presence(uid(f"user{i}")) is None for i in range(5)])
    assert await storage.get_presence(uid("fresh")) == (b"p", NOW + 100)


@IN_PROCESS_EXPIRY
async def test_purge_oldest_first(storage: Storage) -> None:
    for i in range(4):
        await storage.announce(uid(f"user{i}"), b"p", NOW - 1_000 * (i + 1))
    assert await storage.purge_expired(NOW, 2) == 2
    remaining = [await storage.get_presence(uid(f"user{i}")) is not None for i in range(4)]
    assert remaining == [True, True, False, False]


@IN_PROCESS_EXPIRY
async def test_purge_limit_zero_deletes_nothing(storage: Storage) -> None:
    await storage.announce(uid("alice"), b"p", NOW - 1)
    assert await storage.purge_expired(NOW, 0) == 0
    assert await storage.get_presence(uid("alice")) == (b"p", NOW - 1)


@IN_PROCESS_EXPIRY
async def test_purge_with_nothing_expired_deletes_nothing(storage: Storage) -> None:
    assert await storage.purge_expired(NOW, 100) == 0  # empty store
    for i in range(200):
        await storage.announce(uid(f"user{i}"), b"p", NOW + 1 + i)
    assert await storage.purge_expired(NOW, 1_000) == 0
    assert all([await storage.get_presence(uid(f"user{i}")) is not None for i in range(200)])


class _CountingDB:
    """Wraps a plyvel DB and counts the keys its iterators yield."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.yielded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def iterator(self, **kwargs: Any) -> Iterator[Any]:
        for item in self._db.iterator(**kwargs):
            self.yielded += 1
            yield item


@IN_PROCESS_EXPIRY
async def test_purge_is_o_expired(storage: Storage) -> None:
    for i in range(300):
        await storage.announce(uid(f"fresh{i}"), b"p", NOW + 1 + i)
    await storage.announce(uid("old"), b"p", NOW - 1)

    if isinstance(storage, LevelDBStorage):
        counting = _CountingDB(storage._db)
        storage._db = storage._expiry._db = counting
        assert await storage.purge_expired(NOW, 1_000) == 1
        storage._db = storage._expiry._db = counting._db
        assert counting.yielded == 1  # the fresh entries were never visited
    else:
        assert isinstance(storage, MemoryStorage)
        before = len(storage._expiry)
        assert await storage.purge_expired(NOW, 1_000) == 1
        assert before - len(storage._expiry) == 1
    assert await storage.get_presence(uid("old")) is None


# -- nodes ----------------------------------------------------------------------------------


async def test_add_nodes_dedupes_and_keeps_insertion_order(storage: Storage) -> None:
    assert await storage.nodes() == []
    assert (
        await storage.add_nodes(["https://b.example", "http://a.example", "https://b.example"], 10)
        == 2
    )
    assert await storage.nodes() == ["https://b.example", "http://a.example"]
    assert await storage.add_nodes(["http://a.example", "https://c.example"], 10) == 1
    assert await storage.nodes() == ["https://b.example", "http://a.example", "https://c.example"]


async def test_add_nodes_caps_at_max_nodes(storage: Storage) -> None:
    assert await storage.add_nodes(["http://1", "http://2"], 4) == 2
    assert await storage.add_nodes(["http://2", "http://3", "http://4", "http://5"], 4) == 2
    assert await storage.nodes() == ["http://1", "http://2", "http://3", "http://4"]
    assert await storage.add_nodes(["http://6"], 4) == 0
    assert await storage.nodes() == ["http://1", "http://2", "http://3", "http://4"]


async def test_add_nodes_max_zero_behaves_as_one(storage: Storage) -> None:
    assert await storage.add_nodes(["http://x", "http://y"], 0) == 1
    assert await storage.nodes() == ["http://x"]
    assert await storage.add_nodes(["http://z"], 0) == 0
    assert await storage.nodes() == ["http://x"]


async def test_close_is_idempotent(storage: Storage) -> None:
    await storage.register(uid("alice"), b"x")
    await storage.close()
    await storage.close()


# -- LevelDB only ---------------------------------------------------------------------------


async def test_leveldb_persists_across_restart(tmp_path: Path) -> None:
    path = tmp_path / "db"
    alice = uid("alice")
    store = LevelDBStorage(INDEX_KEY, path)
    assert await store.register(alice, identity_json("alice")) is True
    await store.announce(alice, b'{"addr":"203.0.113.7:51820"}', NOW + 1_000)
    await store.announce(uid("bob"), b"bob", NOW + 9_000)
    await store.add_nodes(["https://z.example", "http://a.example"], 10)
    await store.close()

    store = LevelDBStorage(INDEX_KEY, path)
    try:
        assert await store.exists(alice) is True
        assert await store.get_identity(alice) == identity_json("alice")
        assert await store.register(alice, b"other") is False
        assert await store.get_presence(alice) == (b'{"addr":"203.0.113.7:51820"}', NOW + 1_000)
        assert await store.nodes() == ["https://z.example", "http://a.example"]
        assert await store.add_nodes(["http://a.example", "http://new.example"], 10) == 1
        # The expiry index survived too.
        assert await store.purge_expired(NOW + 2_000, 100) == 1
        assert await store.get_presence(alice) is None
        assert await store.get_presence(uid("bob")) == (b"bob", NOW + 9_000)
    finally:
        await store.close()

    store = LevelDBStorage(INDEX_KEY, path)
    try:
        assert await store.nodes() == [
            "https://z.example",
            "http://a.example",
            "http://new.example",
        ]
        assert await store.get_presence(alice) is None
    finally:
        await store.close()


async def test_leveldb_second_open_in_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    first = LevelDBStorage(INDEX_KEY, path)
    try:
        with pytest.raises(StorageLockedError, match="in use"):
            LevelDBStorage(INDEX_KEY, path)
        await first.register(uid("alice"), b"x")  # the first handle still works
    finally:
        await first.close()
    again = LevelDBStorage(INDEX_KEY, path)  # lock released on close
    try:
        assert await again.get_identity(uid("alice")) == b"x"
    finally:
        await again.close()


OPEN_FROM_CHILD = (
    "import sys\n"
    "from registryd.secret import Secret\n"
    "from registryd.storage.leveldb import LevelDBStorage\n"
    "LevelDBStorage(Secret(bytes(32)), sys.argv[1])\n"
    "print('opened')\n"
)


async def test_leveldb_second_process_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "db"
    first = LevelDBStorage(INDEX_KEY, path)
    try:
        child = subprocess.run(
            [sys.executable, "-c", OPEN_FROM_CHILD, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        await first.close()
    assert child.returncode != 0
    assert "opened" not in child.stdout
    assert "StorageLockedError" in child.stderr
    assert "in use by another registryd process" in child.stderr


async def test_leveldb_writes_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "db"
    await LevelDBStorage(INDEX_KEY, path).close()
    db = plyvel.DB(str(path))
    try:
        assert db.get(SCHEMA_KEY) == SCHEMA_VERSION
    finally:
        db.close()
    await LevelDBStorage(INDEX_KEY, path).close()  # and accepts it on reopen


async def test_leveldb_refuses_another_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = plyvel.DB(str(path), create_if_missing=True)
    db.put(SCHEMA_KEY, b"999")
    db.close()
    with pytest.raises(SchemaVersionError, match="999"):
        LevelDBStorage(INDEX_KEY, path)
    db = plyvel.DB(str(path))  # the refused open released the directory
    try:
        assert db.get(SCHEMA_KEY) == b"999"
    finally:
        db.close()


async def test_leveldb_refuses_data_without_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = plyvel.DB(str(path), create_if_missing=True)
    db.put(b"ifoo", b"bar")
    db.close()
    with pytest.raises(SchemaVersionError):
        LevelDBStorage(INDEX_KEY, path)


CANARIES = ["canary-zebra-4417", "canary-Зоё-ünï-7731", "canary quokka 9052"]
CANARY_ADDR = "canary-addr-198.51.100.77:40404"


def _needles() -> dict[str, bytes]:
    index_key, pepper = INDEX_KEY.reveal(), bytes.fromhex(PEPPER_HEX)
    needles = {
        "addr": CANARY_ADDR.encode(),
        "index key": index_key,
        "index key hex": index_key.hex().encode(),
        "index key HEX": index_key.hex().upper().encode(),
        "pepper": pepper,
        "pepper hex": pepper.hex().encode(),
        "pepper HEX": pepper.hex().upper().encode(),
    }
    for name in CANARIES:
        handle = uid(name)
        needles[f"{name} utf-8"] = name.encode("utf-8")
        needles[f"{name} user_id"] = handle
        needles[f"{name} hex"] = handle.hex().encode()
        needles[f"{name} HEX"] = handle.hex().upper().encode()
    return needles


async def _fill_canaries(store: Storage) -> None:
    for name in CANARIES:
        handle = uid(name)
        assert await store.register(handle, identity_json(name)) is True
        presence = wire.Presence(user_id=handle.hex(), addr=CANARY_ADDR, ts_ms=NOW)
        await store.announce(handle, wire.encode(presence), NOW + 60_000)


async def test_leveldb_at_rest_holds_no_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = LevelDBStorage(INDEX_KEY, path)
    await _fill_canaries(store)
    blinds = [store.blind(uid(name)) for name in CANARIES]
    await store.close()

    files = [f for f in path.rglob("*") if f.is_file()]
    contents = b"".join(f.read_bytes() for f in files)
    hits = [
        f"{label} in {f.name}"
        for f in files
        for label, needle in _needles().items()
        if needle in f.read_bytes()
    ]
    assert hits == []
    # Positive control: the records really are in those files, under their blind indexes.
    for blind in blinds:
        assert blind in contents


async def test_blind_index_differs_from_user_id(storage: Storage) -> None:
    alice = uid("alice")
    blind = storage.blind(alice)
    assert len(blind) == 32
    assert blind != alice
    assert blind == storage.blind(alice)  # deterministic
    assert blind != storage.blind(uid("bob"))


async def test_leveldb_wrong_index_key_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "db"
    alice = uid("alice")
    store = LevelDBStorage(INDEX_KEY, path)
    await store.register(alice, identity_json("alice"))
    await store.announce(alice, b"presence", NOW + 1_000)
    right_blind = store.blind(alice)
    await store.close()

    wrong = LevelDBStorage(OTHER_KEY, path)
    try:
        wrong_blind = wrong.blind(alice)
        assert wrong_blind != right_blind
        # Under another key the records cannot even be found ...
        assert await wrong.exists(alice) is False
        assert await wrong.get_identity(alice) is None
        assert await wrong.get_presence(alice) is None
        # ... and a record moved to where that key looks fails authentication.
        wrong._db.put(IDENT + wrong_blind, wrong._db.get(IDENT + right_blind))
        wrong._db.put(PRES + wrong_blind, wrong._db.get(PRES + right_blind))
        with pytest.raises(StorageError):
            await wrong.get_identity(alice)
        with pytest.raises(StorageError):
            await wrong.get_presence(alice)
    finally:
        await wrong.close()


def _walk_bytes(obj: object) -> Iterator[bytes]:
    if isinstance(obj, bytes | bytearray):
        yield bytes(obj)
    elif isinstance(obj, str):
        yield obj.encode("utf-8", "surrogatepass")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _walk_bytes(key)
            yield from _walk_bytes(value)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            yield from _walk_bytes(item)


async def test_memory_holds_no_plaintext() -> None:
    store = MemoryStorage(INDEX_KEY)
    await _fill_canaries(store)
    state = {name: value for name, value in vars(store).items() if name != "_index_key"}
    held = list(_walk_bytes(state))
    hits = [label for label, needle in _needles().items() if any(needle in b for b in held)]
    assert hits == []
    # Positive control: the records are there, keyed by blind index.
    assert set(store._identities) == {store.blind(uid(name)) for name in CANARIES}
    assert set(store._presences) == set(store._identities)
    await store.close()


async def test_leveldb_group_commit_acknowledges_only_durable_writes(tmp_path: Path) -> None:
    """Concurrent writes share synced batches; close() commits what is queued; all persist."""
    store = LevelDBStorage(INDEX_KEY, tmp_path / "db")
    batches = 0
    apply = store._apply

    def counting_apply(writes: list[Any]) -> list[Any]:
        nonlocal batches
        batches += 1
        return apply(writes)

    store._apply = counting_apply  # type: ignore[method-assign]
    handles = [uid(f"group-{i}") for i in range(200)]
    pending = [asyncio.ensure_future(store.register(h, b"identity")) for h in handles]
    await asyncio.sleep(0)
    await store.close()  # waits for the queued writes
    assert all(p.done() for p in pending) and [p.result() for p in pending] == [True] * 200
    assert 1 <= batches < 200  # fewer fsyncs than acknowledgements
    reopened = LevelDBStorage(INDEX_KEY, tmp_path / "db")
    try:
        assert all([await reopened.exists(h) for h in handles])
    finally:
        await reopened.close()


@IN_PROCESS_EXPIRY
async def test_purge_finds_an_entry_put_below_what_it_passed(storage: Storage) -> None:
    """A purge resumes where the last one stopped (LevelDB: past its own deletions), yet an
    expiry announced older than those is still found (P7)."""
    for i in range(4):
        await storage.announce(uid(f"user{i}"), b"p", NOW - 100 + i)
    assert await storage.purge_expired(NOW, 2) == 2
    await storage.announce(uid("older"), b"p", NOW - 1_000)
    await storage.announce(uid("user0"), b"back", NOW - 500)  # a purged handle, older again
    assert await storage.purge_expired(NOW, 2) == 2
    assert await storage.get_presence(uid("older")) is None
    assert await storage.get_presence(uid("user0")) is None
    assert await storage.purge_expired(NOW, 100) == 2
    assert all([await storage.get_presence(uid(f"user{i}")) is None for i in range(4)])
    assert await storage.purge_expired(NOW, 100) == 0
