"""LevelDB's purge passes (registryd/storage/leveldb_expiry.py): one iterator per pass, since
opening one holds LevelDB's mutex and a resolve's get on the event loop waits for it (the GC
stalls of issue 15); what a pass reads stays correct although its iterator is a snapshot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from registryd.errors import StorageError
from registryd.identity import user_id
from registryd.secret import Secret
from registryd.storage.binding import leveldb_module
from registryd.storage.leveldb import LevelDBStorage
from registryd.timespec import now_ms

NOW = now_ms() + 3_600_000
plyvel = leveldb_module()


class _DB:
    """A plyvel DB that counts the iterators opened and can fail its next write batch."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.iterators = 0
        self.fail_next_write = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def iterator(self, **kwargs: Any) -> Any:
        self.iterators += 1
        return self._db.iterator(**kwargs)

    def write_batch(self, **kwargs: Any) -> Any:
        if self.fail_next_write:
            self.fail_next_write = False
            raise plyvel.IOError("disk gone")
        return self._db.write_batch(**kwargs)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[LevelDBStorage]:
    store = LevelDBStorage(Secret(b"k" * 32), tmp_path / "db")
    try:
        yield store
    finally:
        await store.close()


def spy(storage: LevelDBStorage) -> _DB:
    db = _DB(storage._db)
    storage._db = storage._expiry._db = db
    return db


async def expired_presences(storage: LevelDBStorage, count: int) -> list[bytes]:
    handles = [user_id(f"user{i}") for i in range(count)]
    for i, handle in enumerate(handles):
        await storage.announce(handle, b"p", NOW - 1_000 + i)
    return handles


async def drain(storage: LevelDBStorage, now: int, limit: int) -> int:
    total = 0
    while (purged := await storage.purge_expired(now, limit)) == limit:
        total += purged
    return total + purged


async def test_a_pass_in_slices_opens_one_iterator(storage: LevelDBStorage) -> None:
    handles = await expired_presences(storage, 100)
    db = spy(storage)
    assert await drain(storage, NOW, 10) == 100  # 10 slices of 10, then one finding none
    assert db.iterators == 1
    assert all([await storage.get_presence(h) is None for h in handles])
    await expired_presences(storage, 5)
    assert await drain(storage, NOW + 1, 10) == 5  # another pass: a new iterator
    assert db.iterators == 2


async def test_an_entry_written_below_the_floor_mid_pass_is_found(
    storage: LevelDBStorage,
) -> None:
    await expired_presences(storage, 30)
    db = spy(storage)
    assert await storage.purge_expired(NOW, 10) == 10
    await storage.announce(user_id("older"), b"p", NOW - 5_000)  # below the floor
    assert await drain(storage, NOW, 10) == 21
    assert db.iterators == 2  # the floor went down: the pass reopened there
    assert await storage.get_presence(user_id("older")) is None


async def test_a_presence_announced_again_mid_pass_is_kept(storage: LevelDBStorage) -> None:
    """The pass's iterator still holds the old index entry; the live value decides."""
    handles = await expired_presences(storage, 30)
    assert await storage.purge_expired(NOW, 10) == 10
    await storage.announce(handles[25], b"again", NOW + 60_000)
    assert await drain(storage, NOW, 10) == 19
    assert await storage.get_presence(handles[25]) == (b"again", NOW + 60_000)
    assert all([await storage.get_presence(h) is None for h in handles if h != handles[25]])


async def test_a_slice_whose_write_failed_is_read_again(storage: LevelDBStorage) -> None:
    handles = await expired_presences(storage, 30)
    db = spy(storage)
    assert await storage.purge_expired(NOW, 10) == 10
    db.fail_next_write = True
    with pytest.raises(StorageError):
        await storage.purge_expired(NOW, 10)
    assert await drain(storage, NOW, 10) == 20  # nothing skipped past by the failed slice
    assert all([await storage.get_presence(h) is None for h in handles])
