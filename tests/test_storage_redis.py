"""The Redis backend's own promises, on real redis-server processes (the contract suite runs it
too, through the ``storage`` fixture): P11 across a ``kill -9`` of Redis (AOF, appendfsync
always), P12 at rest, P14 (schema_version, wrong index key, unreachable Redis), native presence
expiry, TLS and unix sockets, the 503s and ``/health`` while Redis is down, and the durability
warnings of start-up and ``check-config``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import time
from pathlib import Path

import pytest

from registryd import config as config_mod
from registryd import presence
from registryd.certs import DevCerts
from registryd.cli import main
from registryd.errors import SchemaVersionError, StorageError
from registryd.metrics import Metrics
from registryd.storage import open_storage
from registryd.storage.base import SCHEMA_VERSION
from registryd.storage.memory import MemoryStorage
from registryd.storage.records import SLOT_OPS, SLOT_PRESENCE, Spend, Swapped
from registryd.storage.redis import (
    PRESENCES,
    SCHEMA_KEY,
    RedisStorage,
    identity_key,
    presence_key,
)
from registryd.storage.redis_scripts import INDEX_TRIM
from registryd.storage.transfer import import_file
from registryd.timespec import now_ms
from tests.helpers import app_client, config_text, make_config, write_config
from tests.redis_support import RedisCluster, RedisServer, free_port, redis_server
from tests.test_storage import (
    CANARIES,
    INDEX_KEY,
    OTHER_KEY,
    _fill_canaries,
    _needles,
    identity_json,
    uid,
)


def dump(server: RedisServer) -> dict[bytes, bytes]:
    """Every key and its value's serialisation (DUMP), for looking for plaintext."""
    with server.client() as client:
        return {key: client.dump(key) or b"" for key in client.scan_iter(count=1000)}


async def test_at_rest_holds_no_plaintext(redis: RedisServer) -> None:
    store = RedisStorage(INDEX_KEY, redis.url)
    await _fill_canaries(store)
    blinds = [store.blind(uid(name)) for name in CANARIES]
    await store.close()

    data = dump(redis)
    aof = b"".join(f.read_bytes() for f in redis.directory.rglob("*.aof"))
    everything = b"".join(k + v for k, v in data.items()) + aof
    assert [label for label, needle in _needles().items() if needle in everything] == []
    # Positive control: the records are there, under their blind indexes (in the AOF too).
    for blind in blinds:
        assert identity_key(blind) in data
        assert identity_key(blind) in aof


async def test_writes_schema_version_and_refuses_another(redis: RedisServer) -> None:
    await RedisStorage(INDEX_KEY, redis.url).close()
    with redis.client() as client:
        assert client.get(SCHEMA_KEY) == SCHEMA_VERSION
        client.set(SCHEMA_KEY, b"99")
    with pytest.raises(SchemaVersionError, match="99"):
        RedisStorage(INDEX_KEY, redis.url)


async def test_refuses_data_without_schema_version(redis: RedisServer) -> None:
    store = RedisStorage(INDEX_KEY, redis.url)
    await store.register(uid("alice"), b"x")
    await store.close()
    with redis.client() as client:
        client.delete(SCHEMA_KEY)
    with pytest.raises(SchemaVersionError, match="no schema_version"):
        RedisStorage(INDEX_KEY, redis.url)


async def test_wrong_index_key_cannot_read(redis: RedisServer) -> None:
    store = RedisStorage(INDEX_KEY, redis.url)
    await store.register(uid("alice"), identity_json("alice"))
    await store.close()
    other = RedisStorage(OTHER_KEY, redis.url)
    try:
        assert await other.get_identity(uid("alice")) is None  # another blind index
        sealed = await store_raw(redis, store.blind(uid("alice")))
        with redis.client() as client:  # the right blind index, read under the wrong key
            client.set(identity_key(other.blind(uid("alice"))), sealed)
        with pytest.raises(StorageError, match="failed authentication"):
            await other.get_identity(uid("alice"))
    finally:
        await other.close()


async def store_raw(server: RedisServer, blind: bytes) -> bytes:
    with server.client() as client:
        value = client.get(identity_key(blind))
    assert isinstance(value, bytes)
    return value


async def test_acknowledged_writes_survive_kill_9_of_redis(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        store = RedisStorage(INDEX_KEY, server.url)
        try:
            names = [f"user{i}" for i in range(50)]
            done = await asyncio.gather(*(store.register(uid(n), n.encode()) for n in names))
            assert all(done)
            server.stop(signal.SIGKILL)  # no shutdown save: only the AOF holds them
            server.start()
            for name in names:
                assert await store.get_identity(uid(name)) == name.encode()
        finally:
            await store.close()


async def test_presences_expire_natively_and_the_gc_has_nothing_to_do(redis: RedisServer) -> None:
    store = RedisStorage(INDEX_KEY, redis.url)
    try:
        expiry = now_ms() + 400
        await store.announce(uid("alice"), b"here", expiry)
        assert await store.get_presence(uid("alice")) == (b"here", expiry)
        await asyncio.sleep(0.6)
        assert await store.get_presence(uid("alice")) is None
        assert await store.purge_expired(now_ms(), 100) == 0
        gc = presence.gc_loop(store, lambda: make_config().presence, now_ms, Metrics())
        await asyncio.wait_for(gc, 1)  # returns at once: no loop to run
    finally:
        await store.close()


async def test_a_new_presence_trims_the_index_a_bounded_slice_at_a_time(
    redis: RedisServer,
) -> None:
    """The presence index keeps expired entries (Redis expired their values) until presences
    are created: each creation drops at most INDEX_TRIM of them, oldest first, and counts only
    unexpired entries against ``max_presences`` (P17)."""
    store = RedisStorage(INDEX_KEY, redis.url)
    expired = 2 * INDEX_TRIM + 50
    past = now_ms() - 60_000
    try:
        with redis.client() as client:
            client.zadd(PRESENCES, {f"gone-{i:04d}": past + i for i in range(expired)})
        for count, name in enumerate(("alice", "bob"), start=1):
            owned = await store.owned(uid(name))
            change = {SLOT_PRESENCE: (b"p", now_ms() + 60_000)}
            assert await store.swap_owned(owned, change, 2) is Swapped.DONE
            with redis.client() as client:
                assert client.zcard(PRESENCES) == expired - count * INDEX_TRIM + count
                oldest = client.zrange(PRESENCES, 0, 0)
                assert oldest == [f"gone-{count * INDEX_TRIM:04d}".encode()]
        owned = await store.owned(uid("carol"))
        change = {SLOT_PRESENCE: (b"p", now_ms() + 60_000)}
        assert await store.swap_owned(owned, change, 2) is Swapped.FULL  # 2 live, 50 expired
        with redis.client() as client:
            assert client.zcard(PRESENCES) == 2  # refused, yet it trimmed the last 50
    finally:
        await store.close()


async def test_unreachable_redis_is_a_storage_error_within_the_timeout(tmp_path: Path) -> None:
    port = free_port()  # nothing listens: connection refused
    with pytest.raises(StorageError, match="cannot reach Redis"):
        RedisStorage(INDEX_KEY, f"redis://127.0.0.1:{port}/0")
    with redis_server(tmp_path / "redis") as server:
        store = RedisStorage(INDEX_KEY, server.url, timeout_ms=300)
        try:
            await store.register(uid("bob"), b"x")  # a pooled connection is open
            server.pause()  # connected, never answers
            start = time.monotonic()
            with pytest.raises(StorageError):
                await store.get_identity(uid("alice"))
            assert time.monotonic() - start < 1.0
        finally:
            server.pause(False)
            await store.close()


async def test_http_answers_503_while_redis_is_down_and_recovers(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        config = make_config(kind="redis", url=server.url)
        async with app_client(config, raise_app_exceptions=False) as api:
            assert (await api.get("/health")).status_code == 200
            server.stop(signal.SIGKILL)
            response = await api.get(f"/check_user/{uid('alice').hex()}")
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.json() == {
                "error": {
                    "code": "SERVICE_UNAVAILABLE",
                    "message": "service unavailable: storage unavailable",
                }
            }
            health = await api.get("/health")
            assert health.status_code == 503
            assert health.json()["reason"] == "storage unavailable"
            server.start()
            assert (await api.get("/health")).status_code == 200
            found = await api.get(f"/check_user/{uid('alice').hex()}")
            assert found.json() == {"exists": False}


async def test_tls_with_a_ca_file(tmp_path: Path, certs: DevCerts) -> None:
    with redis_server(tmp_path / "redis", certs=certs) as server:
        url = server.url.replace("127.0.0.1", "localhost")  # the name in the certificate
        assert url.startswith("rediss://")
        line = f'url = "{url}"\n'
        text = config_text(kind="redis", url=url).replace(line, f'{line}ca_file = "{certs.ca}"\n')
        store = open_storage(config_mod.parse(text))
        try:
            assert await store.register(uid("alice"), b"over tls") is True
            assert await store.get_identity(uid("alice")) == b"over tls"
        finally:
            await store.close()
        with pytest.raises(StorageError):  # without the CA, the certificate is not trusted
            RedisStorage(INDEX_KEY, url)


async def test_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    extra = ("--unixsocket", str(sock), "--unixsocketperm", "700")
    with redis_server(tmp_path / "redis", extra=extra):
        store = open_storage(make_config(kind="redis", url=f"unix://{sock}?db=0"))
        try:
            assert await store.register(uid("alice"), b"over a socket") is True
            assert await store.get_identity(uid("alice")) == b"over a socket"
        finally:
            await store.close()


def test_weak_durability_is_warned_at_start_and_by_check_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with redis_server(tmp_path / "redis") as server:
        with server.client() as client:
            client.config_set("appendfsync", "everysec")
        with caplog.at_level(logging.WARNING, logger="registryd"):
            store = RedisStorage(INDEX_KEY, server.url)
        asyncio.run(store.close())
        assert "Redis has appendfsync everysec, not always" in caplog.text
        path = write_config(tmp_path / "r.toml", config_text(kind="redis", url=server.url))
        assert main(["check-config", str(path)]) == 0
        assert "warning: Redis has appendfsync everysec, not always" in capsys.readouterr().err
        with server.client() as client:
            client.config_set("appendfsync", "always")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="registryd"):
            store = RedisStorage(INDEX_KEY, server.url)
        asyncio.run(store.close())
        assert "Redis has" not in caplog.text


async def test_a_cluster_spreads_handles_and_keeps_each_on_one_slot(
    redis_cluster_session: RedisCluster,
) -> None:
    cluster = redis_cluster_session
    cluster.flush()
    store = RedisStorage(INDEX_KEY, cluster.url)
    try:
        names = [f"spread{i}" for i in range(30)]
        assert await store.merge([(uid(n), n.encode()) for n in names]) == 30
        for name in names:
            await store.announce(uid(name), b"here", now_ms() + 60_000)
        await store.add_nodes(["https://a.example"], 10)
        assert await store.spend_nonce(b"n" * 16, now_ms() + 60_000, now_ms(), 10) is Spend.SPENT
    finally:
        await store.close()
    held = []
    for node in cluster.nodes:
        with node.client() as client:
            held.append({key for key in client.scan_iter(count=1000)})
    assert sum(1 for keys in held if any(k.endswith(b":i") for k in keys)) == 3  # every master
    for name in names:  # a handle's keys share a node (their hash tag's slot)
        blind = store.blind(uid(name))
        assert [identity_key(blind) in keys for keys in held] == [
            presence_key(blind) in keys for keys in held
        ]


def test_check_config_never_prints_a_redis_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "redis://registry:s3cret-pw@127.0.0.1:1/0"  # nothing listens on port 1
    text = config_text(kind="redis", url=url).replace(
        "[rate_limit]", f'[rate_limit]\nstorage_uri = "{url}"', 1
    )
    path = write_config(tmp_path / "r.toml", text)
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "s3cret" not in out + err
    assert '"url": "redis://registry:<redacted>@127.0.0.1:1/0"' in out
    assert "warning: cannot reach Redis at storage.url" in err


def wait_for_replicas(server: RedisServer, count: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        with server.client() as client:
            info = client.info("replication")
        if info.get("connected_slaves") == count and (
            count == 0 or info.get("slave0", {}).get("state") == "online"
        ):
            return
        assert time.monotonic() < deadline, info
        time.sleep(0.05)


async def test_wait_replicas_acknowledges_only_replicated_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # replication stands in for fsync here; a replica syncs at once (default: after 5 s)
    weak = ("--appendfsync", "everysec", "--repl-diskless-sync-delay", "0")
    with redis_server(tmp_path / "primary", extra=weak) as primary:
        # no AOF on the replica: while it writes its first one after syncing, it ignores SIGTERM
        replica_of = ("--replicaof", "127.0.0.1", str(primary.port), "--appendonly", "no")
        with redis_server(tmp_path / "replica", extra=replica_of) as replica:
            wait_for_replicas(primary, 1)
            with caplog.at_level(logging.WARNING, logger="registryd"):
                # WAIT gets half the timeout: 2 s, room for a replica's ack on a busy machine
                store = RedisStorage(INDEX_KEY, primary.url, wait_replicas=1, timeout_ms=4000)
            assert "appendfsync" not in caplog.text
            try:
                assert await store.register(uid("alice"), b"replicated") is True
                with replica.client() as client:  # there as soon as the write is acknowledged
                    assert client.get(identity_key(store.blind(uid("alice")))) is not None
                # every kind of write goes through WAIT: scripts in a pipeline too
                assert await store.merge([(uid("bob"), b"b"), (uid("carol"), b"c")]) == 2
                assert await store.add_nodes(["https://a.example"], 10) == 1
                assert await store.spend_nonce(b"n" * 16, now_ms() + 9_000, now_ms(), 9) is (
                    Spend.SPENT
                )
                await store.announce(uid("alice"), b"here", now_ms() + 60_000)
                replica.stop()
                wait_for_replicas(primary, 0)
                start = time.monotonic()
                with pytest.raises(StorageError, match="reached 0 of 1 replicas"):
                    await store.register(uid("dave"), b"unreplicated")
                assert time.monotonic() - start < 4.0  # refused within the timeout
            finally:
                await store.close()


async def test_an_export_imports_into_redis_and_reads_back_the_same(redis: RedisServer) -> None:
    from tests.test_storage_transfer import LIVE, NODES, NOW, exported, fill, records_of

    source = MemoryStorage(INDEX_KEY)
    await fill(source)
    data = await exported(source)
    target = RedisStorage(INDEX_KEY, redis.url)
    try:
        assert await target.is_empty()
        summary = await import_file(target, io.BytesIO(data), "export", NOW)
        assert summary.records == 12
        assert sorted(await records_of(target)) == sorted(await records_of(source))
        assert await target.get_presence(uid("alice")) == (b'{"addr":"a"}', LIVE)
        assert await target.nodes() == NODES
        assert await target.directory_host_of_key(bytes([2]) * 32) == "n2.example"
        with redis.client() as client:  # imported presences expire natively, and are counted
            # Redis counts from its cached clock, which may trail ours by a millisecond or two
            ttl = client.pttl(presence_key(target.blind(uid("alice"))))
            assert 0 < ttl <= LIVE - now_ms() + 5
            assert client.zcard(PRESENCES) == 1
    finally:
        await target.close()


async def test_ops_values_expire_natively_unless_written_without_expiry(
    redis: RedisServer,
) -> None:
    store = RedisStorage(INDEX_KEY, redis.url)
    try:
        gone, kept = uid("gone"), uid("kept")
        for handle, expiry in ((gone, now_ms() + 300), (kept, 0)):
            owned = await store.owned(handle)
            changes = {SLOT_OPS: (b"t", expiry)}
            assert await store.swap_owned(owned, changes, 10) is Swapped.DONE
        await asyncio.sleep(0.5)
        assert (await store.owned(gone)).ops is None
        assert (await store.owned(kept)).ops == b"t"
        assert await store.purge_tombstones(now_ms(), 10) == 0
    finally:
        await store.close()
