"""The LevelDB backend's expiry indexes walked in slices: where each purge starts (its floor) and
the iterator a purge pass goes on with (:mod:`registryd.storage.leveldb`; key layout in
:mod:`registryd.storage.leveldb_keys`: ``x`` + expiry_be64 + blind for presences, ``t`` + ... for
tombstones). Everything here runs under the storage's write lock.
"""

from __future__ import annotations

import itertools
from typing import Any

from .leveldb_keys import BE64, EXPIRY, TOMB


class ExpiryIndexes:
    """Per expiry index, a **floor**: a key no entry of it sorts below. A purge starts there,
    not at the index's start, so it does not walk the tombstones of the slices it already
    deleted (LevelDB keeps them until compaction: seeking from the start, the 500th slice of
    1,000 of 1,000,000 expired presences took 17 ms, the first 0.25 ms). Purges raise it, index
    writes (:meth:`stage`) lower it.

    And per index, the **cursor** of a purge pass: the iterator its last slice stopped in, kept
    while the pass goes on (same ``now_ms``, floor unchanged). Opening an iterator holds
    LevelDB's mutex while it opens tables — 9 to 26 ms per slice during a 1,000,000-presence GC
    (``python -m bench.gc_stall``) — and a resolve's get on the event loop waits for that mutex,
    so a new iterator per slice stalled the loop as long: one per pass instead.
    """

    def __init__(self, db: Any) -> None:
        self._db = db
        self._floor = {EXPIRY: EXPIRY, TOMB: TOMB + bytes(8)}
        # (now_ms, the floor the iterator stands at — None until its last slice is deleted —,
        # iterator)
        self._cursors: dict[bytes, tuple[int, bytes | None, Any]] = {}

    def stage(self, batch: Any, key: bytes) -> None:
        """Stage index entry ``key`` (index byte + expiry_be64 + blind) in ``batch``, lowering
        that index's floor if it sorts below it (the next purge then opens a new iterator)."""
        batch.put(key, b"")
        if key < self._floor[key[:1]]:
            self._floor[key[:1]] = key

    def expired(self, index: bytes, now_ms: int, limit: int) -> list[bytes]:
        """Up to ``limit`` keys of ``index`` with expiry <= ``now_ms``, oldest first from the
        floor on. An entry is as of the pass's start (its iterator's snapshot): check it
        against the live value before deleting what it points to. Once they are deleted, call
        :meth:`deleted`; if not (the write failed), the next slice reads them again."""
        keys = self._cursor(index, now_ms)
        expired = list(itertools.islice(keys, max(limit, 0)))
        if len(expired) < limit:  # the pass has seen every entry expired at now_ms
            keys.close()
        else:
            self._cursors[index] = (now_ms, None, keys)
        return expired

    def deleted(self, index: bytes, expired: list[bytes]) -> None:
        """``expired`` (the last :meth:`expired` of ``index``) are deleted: the floor rises to
        the last of them, where the pass's iterator then stands for its next slice."""
        if not expired:
            return
        self._floor[index] = expired[-1]
        cursor = self._cursors.get(index)
        if cursor is not None:
            self._cursors[index] = (cursor[0], expired[-1], cursor[2])

    def _cursor(self, index: bytes, now_ms: int) -> Any:
        cursor = self._cursors.pop(index, None)
        if cursor is not None and cursor[:2] == (now_ms, self._floor[index]):
            return cursor[2]
        if cursor is not None:  # another pass, a failed slice, or an index write below the floor
            cursor[2].close()
        stop = index + BE64.pack(now_ms + 1)
        return self._db.iterator(start=self._floor[index], stop=stop, include_value=False)
