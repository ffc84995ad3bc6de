"""Shared fixtures: a config and storage per backend, a clock, the in-process app, certificates.

Helpers the tests import live in :mod:`tests.helpers`, the spec's vectors in :mod:`tests.vectors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from registryd.certs import DevCerts, write_dev_certs
from registryd.config import Config
from registryd.storage import Storage, open_storage
from registryd.timespec import now_ms
from tests.helpers import Clock, app_client, make_config
from tests.redis_support import RedisCluster, RedisServer, redis_server


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (AOF, appendfsync always), stopped by PID."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis(redis_session: RedisServer) -> RedisServer:
    """The session's redis-server, emptied for this test."""
    redis_session.flush()
    return redis_session


@pytest.fixture(scope="session")
def redis_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster for the session, stopped by PID."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


def config_for_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """A config for backend ``name``: memory, leveldb (under ``tmp_path/db``), redis (the
    session's redis-server, emptied) or redis-cluster (the session's cluster, emptied)."""
    if name == "redis":
        server: RedisServer = request.getfixturevalue("redis")
        return make_config(kind="redis", url=server.url)
    if name == "redis-cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster_session")
        cluster.flush()
        return make_config(kind="redis", url=cluster.url)
    return make_config(kind=name, path=str(tmp_path / "db") if name == "leveldb" else "")


@pytest.fixture(params=["memory", "leveldb", "redis"])
def backend_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """A config for each storage backend (:func:`config_for_backend`); the storage contract
    modules add ``redis-cluster``."""
    return config_for_backend(str(request.param), request, tmp_path)


@pytest.fixture
async def storage(backend_config: Config) -> AsyncIterator[Storage]:
    store = open_storage(backend_config)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def clock() -> Clock:
    """A controllable clock starting at the wall clock's now: Redis expires presences by its
    own clock, so an app-clock expiry must be a real one for every backend to agree."""
    return Clock(now_ms() // 1000 * 1000)  # whole seconds, as the PoW expiries are


@pytest.fixture
async def api(
    backend_config: Config, storage: Storage, clock: Clock
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking in-process to the app, over each backend, GC task off."""
    async with app_client(backend_config, storage=storage, clock=clock) as client:
        yield client


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    """Dev CA, server (localhost, 127.0.0.1, ::1) and client certificates, made once."""
    return write_dev_certs(tmp_path_factory.mktemp("certs"))
