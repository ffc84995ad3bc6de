"""Export and import (P20, P21 of ``registryd/storage/base.py``) over every backend, and the
export file's refusals (:mod:`registryd.storage.transfer`).

====  ======================================================================================
P20   test_export_yields_every_record_once_and_skips_the_expired,
      test_export_reads_one_view_while_writes_go_on,
      test_round_trip_between_every_pair_of_backends, test_is_empty_sees_every_kind
P21   test_round_trip_between_every_pair_of_backends (reads, expiry and key indexes, node
      order and the spent set all answer as in the source), test_leveldb_import_is_durable
P12   test_the_export_file_holds_no_plaintext
====  ======================================================================================
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import blake3
import msgspec
import pytest

from registryd.config import Config
from registryd.errors import TransferError
from registryd.secret import Secret
from registryd.storage import Storage, leveldb, open_storage
from registryd.storage.leveldb import LevelDBStorage
from registryd.storage.memory import MemoryStorage
from registryd.storage.records import RECORD_KINDS, SLOT_OPS, DirectoryNode, Record, Spend, Swapped
from registryd.storage.transfer import (
    END,
    FRAME_HEAD,
    HEADER,
    Summary,
    export_store,
    import_file,
    verify_file,
)
from registryd.timespec import now_ms
from tests.conftest import config_for_backend
from tests.helpers import INDEX_KEY_HEX, make_config
from tests.test_storage import CANARIES, _fill_canaries, _needles, identity_json, uid

INDEX_KEY = Secret(bytes.fromhex(INDEX_KEY_HEX))
OTHER_KEY = Secret(bytes(range(100, 132)))
NOW = now_ms() + 3_600_000  # in the real future: Redis expires values by its own clock
LIVE, DEAD = NOW + 60_000, NOW - 1
K1, K2 = bytes([1]) * 32, bytes([2]) * 32
NODES = ["https://c.example", "https://a.example", "https://b.example"]  # not sorted
N_LIVE, N_DEAD = bytes([7]) * 16, bytes([8]) * 16
EMAIL = b"canary-ops@example.org"


async def fill(store: Storage) -> None:
    """Some of every kind: identities, live and expired presences, nodes, directory nodes
    (one without a contact), live and expired spent nonces, ops records (never expiring, live
    tombstone, expired tombstone)."""
    for name in ("alice", "bob", "carol"):
        assert await store.register(uid(name), identity_json(name))
    await store.announce(uid("alice"), b'{"addr":"a"}', LIVE)
    await store.announce(uid("bob"), b'{"addr":"b"}', DEAD)
    assert await store.add_nodes(NODES, 10) == 3
    await store.put_directory_node(DirectoryNode("n1.example", K1, b'{"n":1}', EMAIL))
    await store.put_directory_node(DirectoryNode("n2.example", K2, b'{"n":2}', b""))
    assert await store.spend_nonce(N_LIVE, LIVE, NOW - 10, 100) is Spend.SPENT
    assert await store.spend_nonce(N_DEAD, DEAD, NOW - 10, 100) is Spend.SPENT
    for name, expiry in (("alice", 0), ("carol", LIVE), ("bob", DEAD)):
        owned = await store.owned(uid(name))
        changes = {SLOT_OPS: (b'{"ops":"' + name.encode() + b'"}', expiry)}
        assert await store.swap_owned(owned, changes, 100) is Swapped.DONE


# Every backend kind, as conftest's ``backend_config`` has them: a new backend adds itself to
# both, so that the round trip runs between every pair.
TARGET_KINDS = ["memory", "leveldb"]


def target_of(kind: str, tmp_path: Path) -> Storage:
    path = str(tmp_path / "target") if kind == "leveldb" else ""
    return open_storage(make_config(kind=kind, path=path))


@pytest.fixture
async def memory() -> AsyncIterator[Storage]:
    store = MemoryStorage(INDEX_KEY)
    await fill(store)
    yield store
    await store.close()


async def exported(store: Storage) -> bytes:
    out = io.BytesIO()
    await export_store(store, out, NOW)
    return out.getvalue()


async def records_of(store: Storage) -> list[Record]:
    return [r async for r in store.export_records(NOW)]


# -- the contract (every backend) ----------------------------------------------------------


@pytest.fixture(params=["memory", "leveldb", "redis", "redis-cluster"])
def backend_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """The contract runs on a 3-master Redis Cluster too."""
    return config_for_backend(str(request.param), request, tmp_path)


async def test_export_yields_every_record_once_and_skips_the_expired(storage: Storage) -> None:
    await fill(storage)
    records = await records_of(storage)
    kinds = [r.kind for r in records]
    assert {k: kinds.count(k) for k in RECORD_KINDS} == {
        "identity": 3,
        "presence": 1,  # bob's expired
        "node": 3,
        "directory-node": 2,
        "spent-nonce": 1,  # N_DEAD expired
        "ops": 2,  # bob's tombstone expired
    }
    assert len(set(records)) == len(records)
    assert [r.key.decode() for r in records if r.kind == "node"] == NODES  # insertion order
    presence = next(r for r in records if r.kind == "presence")
    assert presence.key == storage.blind(uid("alice")) and presence.expires_at_ms == LIVE
    assert (await storage._get_presence(presence.key)) == (presence.value, LIVE)  # as stored
    identities = {r.key: r.value for r in records if r.kind == "identity"}
    assert identities == {
        storage.blind(uid(n)): await storage._get(storage.blind(uid(n)))
        for n in ("alice", "bob", "carol")
    }
    nonce = next(r for r in records if r.kind == "spent-nonce")
    assert nonce == Record("spent-nonce", N_LIVE, b"", LIVE)
    # with an earlier "now" nothing is expired: bob's presence and tombstone and N_DEAD come too
    assert len([r async for r in storage.export_records(DEAD - 1)]) == len(records) + 3


@pytest.mark.parametrize("backend_config", ["memory", "leveldb"], indirect=True)
async def test_export_reads_one_view_while_writes_go_on(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backends with a consistent view (``Storage.export_view``); Redis has no snapshot, so its
    exports need stopped writers, as ``storage export`` requires."""
    assert storage.export_view
    monkeypatch.setattr(leveldb, "EXPORT_CHUNK", 1)  # LevelDB reads on after each record
    await fill(storage)
    records = storage.export_records(NOW)
    first = await anext(records)
    await storage.register(uid("late"), b"late")  # written after the export began
    await storage.add_nodes(["https://late.example"], 10)
    rest = [r async for r in records]
    assert len([first, *rest]) == 12
    assert storage.blind(uid("late")) not in {r.key for r in rest}
    assert b"https://late.example" not in {r.key for r in rest}
    assert len(await records_of(storage)) == 14  # a new export sees them


async def test_is_empty_sees_every_kind(storage: Storage) -> None:
    assert await storage.is_empty()
    await storage.add_nodes(["https://x.example"], 5)
    assert not await storage.is_empty()
    lone = MemoryStorage(INDEX_KEY)
    await lone.spend_nonce(N_DEAD, DEAD, NOW, 10)  # expired, but held until purged
    assert not await lone.is_empty()


@pytest.mark.parametrize("target_kind", TARGET_KINDS)
async def test_round_trip_between_every_pair_of_backends(
    storage: Storage, target_kind: str, tmp_path: Path
) -> None:
    await fill(storage)
    data = await exported(storage)
    target = target_of(target_kind, tmp_path)
    try:
        summary = await import_file(target, io.BytesIO(data), "export", NOW)
        assert summary.records == 12 and summary.expired == 0 and summary.size == len(data)
        assert sorted(await records_of(target)) == sorted(await records_of(storage))
        for name in ("alice", "bob", "carol"):
            assert await target.get_identity(uid(name)) == identity_json(name)
        assert await target.get_presence(uid("alice")) == (b'{"addr":"a"}', LIVE)
        assert await target.get_presence(uid("bob")) is None  # expired at export
        assert await target.nodes() == NODES
        assert await target.add_nodes(["https://d.example"], 10) == 1  # appended after them
        assert await target.nodes() == [*NODES, "https://d.example"]
        n1 = DirectoryNode("n1.example", K1, b'{"n":1}', EMAIL)
        assert await target.get_directory_node("n1.example") == n1
        assert await target.directory_host_of_key(K2) == "n2.example"  # key index rebuilt
        assert await target.nonce_spent(N_LIVE) and not await target.nonce_spent(N_DEAD)
        assert await target.spend_nonce(N_LIVE, LIVE, NOW, 100) is Spend.REPLAYED
        assert await target.purge_spent_nonces(LIVE) == 1  # its expiry index came along
        assert await target.purge_expired(LIVE, 10) == 1  # so did the presence's
        assert await target.get_presence(uid("alice")) is None
        ops = {n: (await target.owned(uid(n))).ops for n in ("alice", "bob", "carol")}
        assert ops == {"alice": b'{"ops":"alice"}', "bob": None, "carol": b'{"ops":"carol"}'}
        assert await target.purge_tombstones(LIVE, 10) == 1  # carol's expiry index came along
        assert (await target.owned(uid("carol"))).ops is None
        assert (await target.owned(uid("alice"))).ops is not None  # 0: never expires
    finally:
        await target.close()


async def test_leveldb_import_is_durable(memory: Storage, tmp_path: Path) -> None:
    data = await exported(memory)
    target = LevelDBStorage(INDEX_KEY, tmp_path / "db")
    await import_file(target, io.BytesIO(data), "export", NOW)
    await target.close()
    reopened = LevelDBStorage(INDEX_KEY, tmp_path / "db")
    try:
        assert sorted(await records_of(reopened)) == sorted(await records_of(memory))
        assert await reopened.nodes() == NODES
        assert await reopened.spend_nonce(N_LIVE, LIVE, NOW, 1) is Spend.REPLAYED  # counted
    finally:
        await reopened.close()


async def test_expired_by_import_time_are_skipped(memory: Storage) -> None:
    data = await exported(memory)
    target = MemoryStorage(INDEX_KEY)
    summary = await import_file(target, io.BytesIO(data), "export", LIVE)
    assert summary.expired == 3 and summary.counts["presence"] == 0
    assert summary.counts["spent-nonce"] == 0 and summary.counts["identity"] == 3
    assert summary.counts["ops"] == 1  # carol's tombstone expired, alice's never does
    assert await target.get_presence(uid("alice")) is None


async def test_dry_run_export_counts_and_writes_nothing(memory: Storage) -> None:
    counted = await export_store(memory, None, NOW)
    data = await exported(memory)
    assert counted.records == 12 and counted.size == len(data)
    verified = verify_file(MemoryStorage(INDEX_KEY), io.BytesIO(data), "export")
    assert verified.counts == counted.counts and verified.source == "memory"


# -- refusals ----------------------------------------------------------------------------


def frames(data: bytes) -> list[int]:
    """Where each frame of an export file starts."""
    starts, at = [], 0
    while at < len(data):
        starts.append(at)
        at += FRAME_HEAD.size + FRAME_HEAD.unpack(data[at : at + FRAME_HEAD.size])[1]
    return starts


async def refused(data: bytes, match: str, key: Secret = INDEX_KEY) -> None:
    """Importing ``data`` raises TransferError matching ``match`` and writes nothing."""
    target = MemoryStorage(key)
    with pytest.raises(TransferError, match=match):
        await import_file(target, io.BytesIO(data), "backup.rex", NOW)
    assert await target.is_empty()


async def test_another_index_key_is_refused(memory: Storage) -> None:
    await refused(await exported(memory), "backup.rex: exported with another index key", OTHER_KEY)


async def test_a_non_empty_target_is_refused(memory: Storage) -> None:
    data = await exported(memory)
    target = MemoryStorage(INDEX_KEY)
    await target.register(uid("zed"), b"zed")
    with pytest.raises(TransferError, match="not empty"):
        await import_file(target, io.BytesIO(data), "backup.rex", NOW)
    assert len(await records_of(target)) == 1


async def test_every_truncation_is_refused(memory: Storage) -> None:
    data = await exported(memory)
    for cut in range(1, len(data), 7):
        target = MemoryStorage(INDEX_KEY)
        with pytest.raises(TransferError, match=r"truncated|not a registryd-export"):
            await import_file(target, io.BytesIO(data[:cut]), "backup.rex", NOW)
        assert await target.is_empty(), cut
    await refused(data[:-1], "truncated at byte")


async def test_every_flipped_byte_is_refused(memory: Storage) -> None:
    data = await exported(memory)
    for at in range(0, len(data), 5):
        altered = bytearray(data)
        altered[at] ^= 0x40
        target = MemoryStorage(INDEX_KEY)
        with pytest.raises(TransferError):
            await import_file(target, io.BytesIO(bytes(altered)), "backup.rex", NOW)
        assert await target.is_empty(), at


async def test_a_record_added_without_the_key_is_refused(memory: Storage) -> None:
    """Someone without the index key adds a node URL (public data) and recomputes an
    unkeyed checksum: the keyed MAC does not match."""
    data = await exported(memory)
    trailer_at = frames(data)[-1]
    assert data[trailer_at : trailer_at + 1] == END
    body = msgspec.msgpack.encode([Record("node", b"https://evil.example", b"")])
    forged = data[:trailer_at] + FRAME_HEAD.pack(b"R", len(body)) + body
    trailer = msgspec.msgpack.decode(data[trailer_at + FRAME_HEAD.size :])
    trailer["records"] += 1
    trailer["counts"]["node"] += 1
    trailer["mac"] = blake3.blake3(forged).digest()
    end = msgspec.msgpack.encode(trailer)
    await refused(forged + FRAME_HEAD.pack(END, len(end)) + end, "checksum does not match")


async def test_other_files_and_versions_are_refused(memory: Storage) -> None:
    await refused(b"", "not a registryd-export file")
    await refused(b'{"format": "registryd-export"}\n', "not a registryd-export file")
    data = await exported(memory)
    await refused(data + b"\x00", "bytes after the end trailer")
    header_len = FRAME_HEAD.unpack(data[: FRAME_HEAD.size])[1]
    header = msgspec.msgpack.decode(data[FRAME_HEAD.size : FRAME_HEAD.size + header_len])
    for field, value, match in (
        ("version", 2, "registryd-export version 2; this build reads 1"),
        ("schema_version", "2", "schema_version '2' records"),
    ):
        body = msgspec.msgpack.encode({**header, field: value})
        rest = data[FRAME_HEAD.size + header_len :]
        await refused(FRAME_HEAD.pack(HEADER, len(body)) + body + rest, match)


async def test_a_malformed_record_is_refused_even_with_a_valid_mac() -> None:
    store = MemoryStorage(INDEX_KEY)
    await store._import_records([Record("identity", b"short", b"x" * 40)])
    await refused(await exported(store), "malformed 'identity' record")


class ChangedBetweenPasses(io.BytesIO):
    """A file that reads as ``first`` until it is rewound, then as ``second``."""

    def __init__(self, first: bytes, second: bytes) -> None:
        super().__init__(first)
        self.second = second

    def seek(self, offset: int, whence: int = 0) -> int:
        if self.second:
            super().seek(0)
            self.truncate()
            self.write(self.second)
            self.second = b""
        return super().seek(offset, whence)


async def test_a_failure_while_writing_says_the_store_holds_part_of_the_file() -> None:
    source = MemoryStorage(INDEX_KEY)
    await source.merge([(uid(f"u{i}"), b"identity") for i in range(1_500)])  # two frames
    data = await exported(source)
    target = MemoryStorage(INDEX_KEY)
    second_frame = frames(data)[2]
    changed = ChangedBetweenPasses(data, data[: second_frame + 10])
    with pytest.raises(TransferError, match=r"now holds part of backup\.rex: wipe it"):
        await import_file(target, changed, "backup.rex", NOW)
    assert len(await records_of(target)) == 1_000  # the first frame's batch, as it says


# -- at rest -----------------------------------------------------------------------------


async def test_the_export_file_holds_no_plaintext(tmp_path: Path) -> None:
    store = LevelDBStorage(INDEX_KEY, tmp_path / "db")
    try:
        await _fill_canaries(store)
        await store.put_directory_node(DirectoryNode("n1.example", K1, b"{}", EMAIL))
        data = await exported(store)
        blinds = [store.blind(uid(name)) for name in CANARIES]
    finally:
        await store.close()
    needles = {**_needles(), "contact": EMAIL, "mac key": store.export_mac_key().reveal()}
    assert [label for label, needle in needles.items() if needle in data] == []
    assert all(blind in data for blind in blinds)  # positive control: the records are there
    assert b"n1.example" in data  # public data stays as it is


def test_summary_describes_counts() -> None:
    summary = Summary()
    summary.counts["identity"] = 1
    summary.counts["node"] = 1_000
    assert summary.describe().startswith("1 identity, 0 presences, 1,000 nodes")
