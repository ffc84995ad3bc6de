"""The storage promises of ownership, P15-P19 (``registryd/storage/base.py``), over every
backend (the ``storage`` fixture), plus LevelDB's at-rest and restart checks.

====  ======================================================================================
P15   test_swap_writes_ops_and_owned_reads_them_back
P16   test_swap_is_all_or_nothing, test_swap_deletes, test_check_only_slots_write_nothing,
      test_concurrent_swaps_of_one_value_have_one_winner, test_leveldb_swaps_survive_restart
P17   test_a_full_presence_store_refuses_only_new_handles
P18   test_tombstones_expire_oldest_first_and_only_when_due,
      test_a_tombstone_swapped_to_no_expiry_is_kept
P19   test_leveldb_ops_and_deletes_leave_no_plaintext
====  ======================================================================================
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from registryd.config import Config
from registryd.identity import user_id
from registryd.secret import Secret
from registryd.storage import Storage
from registryd.storage.leveldb import LevelDBStorage
from registryd.storage.records import SLOT_IDENTITY, SLOT_OPS, SLOT_PRESENCE, Swapped
from registryd.timespec import now_ms
from tests.conftest import config_for_backend
from tests.helpers import IN_PROCESS_EXPIRY, INDEX_KEY_HEX

INDEX_KEY = Secret(bytes.fromhex(INDEX_KEY_HEX))
NOW = now_ms() + 3_600_000  # in the real future: Redis expires values by its own clock
CAP = 1_000


@pytest.fixture(params=["memory", "leveldb", "redis", "redis-cluster"])
def backend_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """The contract runs on a 3-master Redis Cluster too."""
    return config_for_backend(str(request.param), request, tmp_path)


async def test_swap_writes_ops_and_owned_reads_them_back(storage: Storage) -> None:
    alice = user_id("alice")
    assert await storage.register(alice, b"identity-1")
    owned = await storage.owned(alice)
    assert (owned.identity, owned.ops, owned.presence) == (b"identity-1", None, None)
    changes = {SLOT_OPS: (b"ops-1", 0), SLOT_PRESENCE: (b"presence-1", NOW + 5)}
    assert await storage.swap_owned(owned, changes, CAP) is Swapped.DONE
    after = await storage.owned(alice)
    assert (after.identity, after.ops, after.presence) == (b"identity-1", b"ops-1", b"presence-1")
    assert after.presence_expires_at_ms == NOW + 5
    assert await storage.get_presence(alice) == (b"presence-1", NOW + 5)
    assert await storage.get_identity(alice) == b"identity-1"
    assert (await storage.owned(user_id("bob"))).sealed == {
        SLOT_IDENTITY: None,
        SLOT_PRESENCE: None,
        SLOT_OPS: None,
    }


async def test_swap_is_all_or_nothing(storage: Storage) -> None:
    alice = user_id("alice")
    assert await storage.register(alice, b"identity-1")
    stale = await storage.owned(alice)
    fresh = await storage.owned(alice)
    assert await storage.swap_owned(fresh, {SLOT_OPS: (b"ops-1", 0)}, CAP) is Swapped.DONE
    # the ops slot changed since ``stale`` was read: nothing of this swap is written
    changes = {SLOT_IDENTITY: (b"identity-2", 0), SLOT_PRESENCE: (b"p", NOW)}
    assert await storage.swap_owned(stale, changes, CAP) is Swapped.STALE
    now = await storage.owned(alice)
    assert (now.identity, now.ops, now.presence) == (b"identity-1", b"ops-1", None)
    # a re-registration in between is a change too (the identity slot was empty)
    bob = user_id("bob")
    before = await storage.owned(bob)
    assert await storage.register(bob, b"bob")
    assert await storage.swap_owned(before, {SLOT_OPS: (b"x", 0)}, CAP) is Swapped.STALE


async def test_swap_deletes(storage: Storage) -> None:
    alice = user_id("alice")
    assert await storage.register(alice, b"identity-1")
    owned = await storage.owned(alice)
    assert (
        await storage.swap_owned(owned, {SLOT_PRESENCE: (b"p", NOW + 9), SLOT_OPS: (b"o", 0)}, CAP)
        is Swapped.DONE
    )
    owned = await storage.owned(alice)
    gone = {SLOT_IDENTITY: (None, 0), SLOT_PRESENCE: (None, 0), SLOT_OPS: (b"t", NOW + 1)}
    assert await storage.swap_owned(owned, gone, CAP) is Swapped.DONE
    assert await storage.get_identity(alice) is None
    assert await storage.exists(alice) is False
    assert await storage.get_presence(alice) is None
    assert (await storage.owned(alice)).ops == b"t"
    assert await storage.purge_expired(NOW + 100, 10) == 0  # the presence's index entry went too
    assert await storage.register(alice, b"identity-2")  # free again; the tombstone stays
    assert (await storage.owned(alice)).ops == b"t"


async def test_check_only_slots_write_nothing(storage: Storage) -> None:
    alice = user_id("alice")
    assert await storage.register(alice, b"identity-1")
    owned = await storage.owned(alice)
    assert await storage.swap_owned(owned, {}, CAP) is Swapped.DONE
    assert await storage.owned(alice) == owned  # same sealed bytes: nothing rewritten


async def test_concurrent_swaps_of_one_value_have_one_winner(storage: Storage) -> None:
    alice = user_id("alice")
    assert await storage.register(alice, b"identity-0")
    owned = await storage.owned(alice)
    values = [f"identity-{i}".encode() for i in range(1, 51)]
    results = await asyncio.gather(
        *(storage.swap_owned(owned, {SLOT_IDENTITY: (v, 0)}, CAP) for v in values)
    )
    assert results.count(Swapped.DONE) == 1
    assert results.count(Swapped.STALE) == 49
    assert await storage.get_identity(alice) == values[results.index(Swapped.DONE)]


async def test_a_full_presence_store_refuses_only_new_handles(storage: Storage) -> None:
    names = [user_id(f"user{i}") for i in range(3)]
    for i, handle in enumerate(names[:2]):
        owned = await storage.owned(handle)
        changes = {SLOT_PRESENCE: (b"p", NOW + i)}
        assert await storage.swap_owned(owned, changes, 2) is Swapped.DONE
    owned = await storage.owned(names[2])
    assert await storage.swap_owned(owned, {SLOT_PRESENCE: (b"p", NOW)}, 2) is Swapped.FULL
    assert await storage.get_presence(names[2]) is None
    refresh = await storage.owned(names[0])  # an existing one still refreshes
    assert await storage.swap_owned(refresh, {SLOT_PRESENCE: (b"q", NOW + 9)}, 2) is Swapped.DONE
    assert await storage.get_presence(names[0]) == (b"q", NOW + 9)
    if storage.native_expiry:  # Redis drops user1's at its real expiry: make room by deleting
        one = await storage.owned(names[1])
        assert await storage.swap_owned(one, {SLOT_PRESENCE: (None, 0)}, 2) is Swapped.DONE
    else:
        assert await storage.purge_expired(NOW + 1, 10) == 1  # user1's: room for one more
    owned = await storage.owned(names[2])
    assert await storage.swap_owned(owned, {SLOT_PRESENCE: (b"p", NOW)}, 2) is Swapped.DONE
    # deleting a presence makes room too
    gone = await storage.owned(names[0])
    assert await storage.swap_owned(gone, {SLOT_PRESENCE: (None, 0)}, 2) is Swapped.DONE
    owned = await storage.owned(names[1])
    assert await storage.swap_owned(owned, {SLOT_PRESENCE: (b"p", NOW)}, 2) is Swapped.DONE


@IN_PROCESS_EXPIRY
async def test_tombstones_expire_oldest_first_and_only_when_due(storage: Storage) -> None:
    handles = [user_id(f"gone{i}") for i in range(4)]
    for i, handle in enumerate(handles):
        owned = await storage.owned(handle)
        assert await storage.swap_owned(owned, {SLOT_OPS: (b"t", NOW + i)}, CAP) is Swapped.DONE
    live = user_id("live")
    owned = await storage.owned(live)
    assert await storage.swap_owned(owned, {SLOT_OPS: (b"o", 0)}, CAP) is Swapped.DONE
    assert await storage.purge_tombstones(NOW + 10, 2) == 2
    remaining = [(await storage.owned(h)).ops is not None for h in handles]
    assert remaining == [False, False, True, True]
    assert await storage.purge_tombstones(NOW + 2, 10) == 1
    assert await storage.purge_tombstones(NOW + 10**9, 10) == 1
    assert await storage.purge_tombstones(NOW + 10**9, 10) == 0
    assert (await storage.owned(live)).ops == b"o"  # expiry 0 never expires


@IN_PROCESS_EXPIRY
async def test_a_tombstone_swapped_below_what_a_purge_passed_is_found(storage: Storage) -> None:
    """A purge resumes where the last one stopped (LevelDB), yet finds an older expiry (P18)."""
    handles = [user_id(f"gone{i}") for i in range(3)]
    for i, handle in enumerate(handles):
        owned = await storage.owned(handle)
        assert (
            await storage.swap_owned(owned, {SLOT_OPS: (b"t", NOW + 10 + i)}, CAP) is Swapped.DONE
        )
    assert await storage.purge_tombstones(NOW + 20, 2) == 2
    owned = await storage.owned(handles[0])
    assert await storage.swap_owned(owned, {SLOT_OPS: (b"t", NOW + 1)}, CAP) is Swapped.DONE
    assert await storage.purge_tombstones(NOW + 20, 1) == 1
    assert (await storage.owned(handles[0])).ops is None
    assert await storage.purge_tombstones(NOW + 20, 10) == 1
    assert (await storage.owned(handles[2])).ops is None


@IN_PROCESS_EXPIRY
async def test_a_tombstone_swapped_to_no_expiry_is_kept(storage: Storage) -> None:
    alice = user_id("alice")
    owned = await storage.owned(alice)
    assert await storage.swap_owned(owned, {SLOT_OPS: (b"t", NOW)}, CAP) is Swapped.DONE
    owned = await storage.owned(alice)
    assert await storage.swap_owned(owned, {SLOT_OPS: (b"live", 0)}, CAP) is Swapped.DONE
    assert await storage.purge_tombstones(NOW + 1, 10) == 0  # the old index entry counts not
    assert (await storage.owned(alice)).ops == b"live"


async def test_leveldb_swaps_survive_restart(tmp_path: Path) -> None:
    alice = user_id("alice")
    store = LevelDBStorage(INDEX_KEY, tmp_path / "db")
    assert await store.register(alice, b"identity-1")
    owned = await store.owned(alice)
    changes = {SLOT_IDENTITY: (b"identity-2", 0), SLOT_OPS: (b"o", NOW), SLOT_PRESENCE: (b"p", 7)}
    assert await store.swap_owned(owned, changes, CAP) is Swapped.DONE
    await store.close()
    reopened = LevelDBStorage(INDEX_KEY, tmp_path / "db")
    try:
        after = await reopened.owned(alice)
        assert (after.identity, after.ops, after.presence) == (b"identity-2", b"o", b"p")
        # the presence count is rebuilt at open: one held, so a cap of 1 refuses a new one
        bob = await reopened.owned(user_id("bob"))
        assert await reopened.swap_owned(bob, {SLOT_PRESENCE: (b"p", 7)}, 1) is Swapped.FULL
        assert await reopened.purge_tombstones(NOW, 10) == 1
    finally:
        await reopened.close()


async def test_leveldb_ops_and_deletes_leave_no_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = LevelDBStorage(INDEX_KEY, path)
    canary = user_id("canary-ops-5521")
    assert await store.register(canary, b"canary-identity-8812")
    owned = await store.owned(canary)
    changes = {SLOT_OPS: (b"canary-ops-record-3310", 0), SLOT_PRESENCE: (b"canary-addr-77", 9)}
    assert await store.swap_owned(owned, changes, CAP) is Swapped.DONE
    owned = await store.owned(canary)
    gone = {SLOT_IDENTITY: (None, 0), SLOT_PRESENCE: (None, 0), SLOT_OPS: (b"canary-tomb-1", 1)}
    assert await store.swap_owned(owned, gone, CAP) is Swapped.DONE
    blind = store.blind(canary)
    await store.close()
    contents = b"".join(f.read_bytes() for f in path.rglob("*") if f.is_file())
    for needle in (b"canary", canary, canary.hex().encode(), b"ops-record", b"addr-77"):
        assert needle not in contents
    assert blind in contents  # positive control: the records are there, under the blind index
