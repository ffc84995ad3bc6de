"""The storage contract's node directory section (extensions spec §3) over every backend.

Which test checks which promise of ``registryd/storage/base.py`` (the others:
``test_storage.py``):

====  ======================================================================================
P9    test_put_get_list_delete, test_upsert_replaces_the_record,
      test_key_index_follows_the_records, test_concurrent_puts_keep_one_consistent_index
P10   test_spend_nonce_once, test_concurrent_spends_have_one_winner,
      test_spent_set_is_bounded_and_purged_by_expiry
P11   test_leveldb_directory_persists_across_restart
P12   test_leveldb_keeps_contact_emails_sealed
P14   test_leveldb_directory_with_another_index_key_cannot_open_contacts
====  ======================================================================================
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from registryd.config import Config
from registryd.errors import StorageError
from registryd.secret import Secret
from registryd.storage import Storage
from registryd.storage.leveldb import LevelDBStorage
from registryd.storage.records import DirectoryNode, Spend
from tests.conftest import config_for_backend
from tests.helpers import INDEX_KEY_HEX

INDEX_KEY = Secret(bytes.fromhex(INDEX_KEY_HEX))
NOW = 1_700_000_000_000
K1, K2, K3 = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32
EMAIL = b"canary-ops@example.org"


def node(
    host: str, key: bytes, record: bytes = b'{"r":1}', contact: bytes = EMAIL
) -> DirectoryNode:
    return DirectoryNode(host, key, record, contact)


async def test_put_get_list_delete(storage: Storage) -> None:
    assert await storage.get_directory_node("a.example") is None
    assert await storage.list_directory_nodes() == []

    await storage.put_directory_node(node("a.example", K1, b'{"a":1}'))
    await storage.put_directory_node(node("b.example", K2, b'{"b":2}', b""))

    assert await storage.get_directory_node("a.example") == node("a.example", K1, b'{"a":1}')
    assert await storage.get_directory_node("b.example") == node("b.example", K2, b'{"b":2}', b"")
    listed = sorted(await storage.list_directory_nodes(), key=lambda n: n.host)
    # listings leave the contact email out unless asked
    assert listed == [
        DirectoryNode("a.example", K1, b'{"a":1}', b""),
        DirectoryNode("b.example", K2, b'{"b":2}', b""),
    ]
    with_contact = sorted(
        await storage.list_directory_nodes(with_contact=True), key=lambda n: n.host
    )
    assert [n.contact for n in with_contact] == [EMAIL, b""]

    assert await storage.delete_directory_node("a.example") is True
    assert await storage.delete_directory_node("a.example") is False
    assert await storage.get_directory_node("a.example") is None
    assert [n.host for n in await storage.list_directory_nodes()] == ["b.example"]


async def test_upsert_replaces_the_record(storage: Storage) -> None:
    await storage.put_directory_node(node("a.example", K1, b"old", b"old@example.org"))
    await storage.put_directory_node(node("a.example", K1, b"new", EMAIL))
    assert await storage.get_directory_node("a.example") == node("a.example", K1, b"new")
    assert len(await storage.list_directory_nodes()) == 1


async def test_key_index_follows_the_records(storage: Storage) -> None:
    await storage.put_directory_node(node("a.example", K1))
    assert await storage.directory_host_of_key(K1) == "a.example"
    assert await storage.directory_host_of_key(K2) is None

    await storage.put_directory_node(node("a.example", K2))  # the host changes key
    assert await storage.directory_host_of_key(K1) is None
    assert await storage.directory_host_of_key(K2) == "a.example"

    await storage.put_directory_node(node("b.example", K2))  # the key moves to another host
    assert await storage.directory_host_of_key(K2) == "b.example"
    assert await storage.delete_directory_node("a.example") is True
    assert await storage.directory_host_of_key(K2) == "b.example"  # not a's to remove

    assert await storage.delete_directory_node("b.example") is True
    assert await storage.directory_host_of_key(K2) is None


async def test_concurrent_puts_keep_one_consistent_index(storage: Storage) -> None:
    keys = [bytes([i]) * 32 for i in range(1, 21)]
    await asyncio.gather(*(storage.put_directory_node(node("a.example", k)) for k in keys))
    stored = await storage.get_directory_node("a.example")
    assert stored is not None
    indexed = [k for k in keys if await storage.directory_host_of_key(k) == "a.example"]
    assert indexed == [stored.pubkey]


async def test_spend_nonce_once(storage: Storage) -> None:
    nid = b"n" * 16
    assert await storage.nonce_spent(nid) is False
    assert await storage.spend_nonce(nid, NOW + 1_000, NOW, 10) is Spend.SPENT
    assert await storage.nonce_spent(nid) is True
    assert await storage.spend_nonce(nid, NOW + 1_000, NOW, 10) is Spend.REPLAYED
    assert await storage.nonce_spent(b"m" * 16) is False


async def test_concurrent_spends_have_one_winner(storage: Storage) -> None:
    nid = b"c" * 16
    results = await asyncio.gather(
        *(storage.spend_nonce(nid, NOW + 1_000, NOW, 100) for _ in range(30))
    )
    assert results.count(Spend.SPENT) == 1
    assert results.count(Spend.REPLAYED) == 29


async def test_spent_set_is_bounded_and_purged_by_expiry(storage: Storage) -> None:
    ids = [bytes([i]) * 16 for i in range(1, 5)]
    assert await storage.spend_nonce(ids[0], NOW + 1_000, NOW, 3) is Spend.SPENT
    assert await storage.spend_nonce(ids[1], NOW + 2_000, NOW, 3) is Spend.SPENT
    assert await storage.spend_nonce(ids[2], NOW + 3_000, NOW, 3) is Spend.SPENT
    # full of unexpired entries: refused, nothing written
    assert await storage.spend_nonce(ids[3], NOW + 4_000, NOW, 3) is Spend.FULL
    assert await storage.nonce_spent(ids[3]) is False
    # once one has expired, a full set makes room by purging it
    assert await storage.spend_nonce(ids[3], NOW + 4_000, NOW + 1_000, 3) is Spend.SPENT
    assert await storage.nonce_spent(ids[0]) is False
    assert await storage.purge_spent_nonces(NOW + 2_500) == 1
    assert [await storage.nonce_spent(i) for i in ids] == [False, False, True, True]
    assert await storage.purge_spent_nonces(NOW + 2_500) == 0
    assert await storage.purge_spent_nonces(NOW + 10_000) == 2


@pytest.fixture(params=["memory", "leveldb", "redis", "redis-cluster"])
def backend_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """The contract runs on a 3-master Redis Cluster too."""
    return config_for_backend(str(request.param), request, tmp_path)


# -- LevelDB only ---------------------------------------------------------------------------


async def test_leveldb_directory_persists_across_restart(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = LevelDBStorage(INDEX_KEY, path)
    await store.put_directory_node(node("a.example", K1, b"rec-a"))
    await store.put_directory_node(node("b.example", K2, b"rec-b"))
    assert await store.delete_directory_node("b.example") is True
    assert await store.spend_nonce(b"s" * 16, NOW + 1_000, NOW, 2) is Spend.SPENT
    assert await store.spend_nonce(b"t" * 16, NOW + 5_000, NOW, 2) is Spend.SPENT
    await store.close()

    store = LevelDBStorage(INDEX_KEY, path)
    try:
        assert await store.get_directory_node("a.example") == node("a.example", K1, b"rec-a")
        assert await store.get_directory_node("b.example") is None
        assert await store.directory_host_of_key(K1) == "a.example"
        assert await store.directory_host_of_key(K2) is None
        # single use survives the restart, and so does the bound
        assert await store.spend_nonce(b"s" * 16, NOW + 1_000, NOW, 2) is Spend.REPLAYED
        assert await store.spend_nonce(b"u" * 16, NOW + 1_000, NOW, 2) is Spend.FULL
        assert await store.spend_nonce(b"u" * 16, NOW + 9_000, NOW + 1_000, 2) is Spend.SPENT
        assert await store.nonce_spent(b"s" * 16) is False  # purged by its expiry index
    finally:
        await store.close()


async def test_leveldb_keeps_contact_emails_sealed(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = LevelDBStorage(INDEX_KEY, path)
    await store.put_directory_node(node("canary-host.example", K1, b'{"name":"canary-name"}'))
    await store.close()
    contents = b"".join(f.read_bytes() for f in path.rglob("*") if f.is_file())
    assert EMAIL not in contents
    assert b"canary-name" in contents  # positive control: public records are stored as given


async def test_leveldb_directory_with_another_index_key_cannot_open_contacts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    store = LevelDBStorage(INDEX_KEY, path)
    await store.put_directory_node(node("a.example", K1))
    await store.close()
    store = LevelDBStorage(Secret(bytes(32)), path)
    try:
        assert [n.host for n in await store.list_directory_nodes()] == ["a.example"]
        with pytest.raises(StorageError):
            await store.get_directory_node("a.example")
    finally:
        await store.close()
