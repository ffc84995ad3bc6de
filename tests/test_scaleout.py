"""Scale-out (issue 13): registryd daemons (``python -m registryd serve``, TLS) on one real
redis-server over TLS, as one registry: one namespace, one set of limits, single-use proofs, no
acknowledged write lost, 503 (never 500) while Redis is down and recovery without a restart,
and ``[server] workers = 2`` on one socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registryd.certs import DevCerts
from registryd.client import AsyncRegistryClient, IdentityKeys
from registryd.errors import ServerError
from tests.helpers import Daemon, config_text, tls_table, write_config
from tests.redis_support import RedisServer, redis_server
from tests.vectors import PEPPER_HEX

pytestmark = pytest.mark.e2e
PEPPER = bytes.fromhex(PEPPER_HEX)
NO_LIMITS = "[rate_limit]\nenabled = false\n"


@pytest.fixture
def tls_redis(tmp_path: Path, certs: DevCerts) -> Iterator[RedisServer]:
    """A redis-server of this test's own, TLS only (AOF, appendfsync always)."""
    with redis_server(tmp_path / "redis", certs=certs) as server:
        yield server


def write(path: Path, redis: RedisServer, certs: DevCerts, tables: str = NO_LIMITS) -> Path:
    """A TLS daemon config on ``redis`` (over TLS, trusting the dev CA)."""
    url = redis.url.replace("127.0.0.1", "localhost")
    text = config_text(kind="redis", url=url, mode="tls", tls=tls_table(certs), tables=tables)
    line = f'url = "{url}"\n'
    text = text.replace(line, f'{line}ca_file = "{certs.ca}"\ntimeout_ms = 500\n')
    if "[server]" not in tables:  # a quick stop: no test here keeps a request in flight
        text = text.replace("[envelope]", "[server]\nshutdown_grace_seconds = 3\n[envelope]", 1)
    return write_config(path, text.replace("{redis}", url))


@contextlib.contextmanager
def daemons(
    tmp_path: Path, redis: RedisServer, certs: DevCerts, tables: str = NO_LIMITS, n: int = 2
) -> Iterator[list[Daemon]]:
    """``n`` daemons on ``redis``, stopped (SIGTERM, or found killed) on exit."""
    path = write(tmp_path / "registry.toml", redis, certs, tables)
    started: list[Daemon] = []
    try:
        for _ in range(n):
            started.append(Daemon(path))
            assert started[-1].url, started[-1].log
        yield started
    finally:
        slow = []
        for d in started:
            try:
                d.stop()
            except subprocess.TimeoutExpired:  # killed, so no process or pipe outlives the test
                d.proc.kill()
                d.wait()
                slow.append(d.log)
        assert slow == [], "a daemon did not stop within 30 s of SIGTERM"


def client(d: Daemon, certs: DevCerts) -> AsyncRegistryClient:
    return AsyncRegistryClient(d.url, PEPPER, cafile=str(certs.ca), timeout=10)


async def test_register_on_one_resolve_on_the_other(
    tmp_path: Path, tls_redis: RedisServer, certs: DevCerts
) -> None:
    keys = IdentityKeys.generate()
    with daemons(tmp_path, tls_redis, certs) as (a, b):
        async with client(a, certs) as on_a, client(b, certs) as on_b:
            await on_a.register("alice", keys)
            found = await on_b.resolve("alice")
            assert found is not None and bytes(found.signing_public_key) == keys.signing_public_key
            assert await on_b.resolve("nobody") is None


async def test_concurrent_registrations_across_daemons_have_one_winner(
    tmp_path: Path, tls_redis: RedisServer, certs: DevCerts
) -> None:
    with daemons(tmp_path, tls_redis, certs) as (a, b):
        async with client(a, certs) as on_a, client(b, certs) as on_b:

            async def attempt(i: int) -> int:
                try:
                    await (on_a if i % 2 else on_b).register("contended", IdentityKeys.generate())
                except ServerError as exc:
                    return exc.status
                return 200

            codes = await asyncio.gather(*(attempt(i) for i in range(40)))
    assert sorted(codes) == [200] + [409] * 39


async def test_a_burst_is_shared_across_daemons(
    tmp_path: Path, tls_redis: RedisServer, certs: DevCerts
) -> None:
    limits = '[rate_limit]\nper_ip_rps = 1\nburst = 3\nstorage_uri = "{redis}"\n'
    with daemons(tmp_path, tls_redis, certs, limits) as (a, b):
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=certs.ca)) as http:
            codes = [(await http.get(f"{(a, b)[i % 2].url}/health")).status_code for i in range(8)]
    assert codes[:3] == [200, 200, 200] and codes.count(200) <= 4
    assert set(codes) == {200, 429}


async def test_a_proof_of_work_from_one_daemon_is_accepted_once_by_any(
    tmp_path: Path, tls_redis: RedisServer, certs: DevCerts
) -> None:
    from registryd.hashcash import solve

    tables = '[pow]\nenabled = true\ndifficulty = 4\n[rate_limit]\nstorage_uri = "{redis}"\n'
    tables += "per_ip_rps = 1000\nburst = 1000\n"
    with daemons(tmp_path, tls_redis, certs, tables) as (a, b):
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=certs.ca)) as http:
            issued = (await http.get(f"{a.url}/pow/challenge")).json()
            proof = f"{issued['challenge']}:{solve(issued['challenge'], issued['difficulty'])}"
            path = f"/check_user/{'ab' * 32}"
            on_b = await http.get(f"{b.url}{path}", headers={"x-enigma-pow": proof})
            assert on_b.status_code == 200
            on_a = await http.get(f"{a.url}{path}", headers={"x-enigma-pow": proof})
            assert on_a.status_code == 400 and on_a.json()["error"]["code"] == "POW_REQUIRED"


async def test_acknowledged_registrations_survive_kill_9_of_a_daemon_and_of_redis(
    tmp_path: Path, tls_redis: RedisServer, certs: DevCerts
) -> None:
    acknowledged: list[str] = []
    with daemons(tmp_path, tls_redis, certs) as (a, b):
        async with client(a, certs) as on_a:

            async def register(worker: int) -> None:
                for i in range(1000):
                    name = f"load{worker}x{i}"
                    try:
                        await on_a.register(name, IdentityKeys.generate())
                    except Exception:
                        return
                    acknowledged.append(name)

            load = [asyncio.create_task(register(w)) for w in range(32)]
            await asyncio.sleep(1.5)
            a.proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*load), 30)
        tls_redis.stop(signal.SIGKILL)
        tls_redis.start()
        assert len(acknowledged) > 32, "the load acknowledged little before the kill"
        async with client(b, certs) as on_b:
            missing = [n for n in acknowledged if await on_b.resolve(n) is None]
    assert missing == []


async def test_redis_down_is_503_and_recovers_without_a_restart(
    tmp_path: Path, tls_redis: RedisServer, certs: DevCerts
) -> None:
    with daemons(tmp_path, tls_redis, certs, n=1) as (b,):
        async with (
            client(b, certs) as on_b,
            httpx.AsyncClient(
                verify=ssl.create_default_context(cafile=certs.ca), base_url=b.url
            ) as http,
        ):
            await on_b.register("alice", IdentityKeys.generate())
            tls_redis.stop(signal.SIGKILL)
            start = time.monotonic()
            with pytest.raises(ServerError) as refused:
                await on_b.resolve("alice")
            assert time.monotonic() - start < 2
            assert refused.value.status == 503
            lookup = await http.get(f"/check_user/{'ab' * 32}")
            assert lookup.status_code == 503 and lookup.headers["retry-after"] == "1"
            assert (await http.get("/health")).status_code == 503
            tls_redis.start()
            deadline = time.monotonic() + 30
            while (await http.get("/health")).status_code != 200:
                assert time.monotonic() < deadline, "not healthy 30 s after Redis returned"
                await asyncio.sleep(0.2)
            assert await on_b.resolve("alice") is not None
    assert "Traceback" not in b.log and " 500 " not in b.log


async def test_two_workers_serve_and_stop_together(
    tmp_path: Path, tls_redis: RedisServer, certs: DevCerts
) -> None:
    url = tls_redis.url.replace("127.0.0.1", "localhost")
    tables = (
        f'[server]\nworkers = 2\nshutdown_grace_seconds = 3\n[rate_limit]\nstorage_uri = "{url}"\n'
    )
    tables += "per_ip_rps = 1000\nburst = 1000\n[rate_limit.endpoints]\nregister_rps = 1000\n"
    tables += "resolve_rps = 1000\n"
    path = write(tmp_path / "registry.toml", tls_redis, certs, tables)
    d = Daemon(path)
    try:
        assert d.url, d.log
        async with client(d, certs) as c:

            async def round_trip(i: int) -> None:
                keys = IdentityKeys.generate()
                await c.register(f"worker{i}", keys)
                found = await c.resolve(f"worker{i}")
                assert found is not None
                assert bytes(found.signing_public_key) == keys.signing_public_key

            await asyncio.gather(*(round_trip(i) for i in range(40)))
        workers = children(d.proc.pid)
        assert len(workers) == 2
        d.proc.send_signal(signal.SIGHUP)
        start = time.monotonic()
        while d_log_count(d, "reloaded") < 2:
            assert time.monotonic() - start < 10, d.log
            await asyncio.sleep(0.1)
        start = time.monotonic()
        assert d.stop() == 0
        assert time.monotonic() - start < 3 + 5
        assert [pid for pid in workers if Path(f"/proc/{pid}").exists()] == []
    finally:
        d.stop()


def children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def d_log_count(d: Daemon, needle: str) -> int:
    """How often ``needle`` is in what the daemon logged so far (read without blocking)."""
    import os
    import selectors

    assert d.proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(d.proc.stderr, selectors.EVENT_READ)
        while sel.select(0):
            chunk = os.read(d.proc.stderr.fileno(), 65536).decode(errors="replace")
            if not chunk:
                break
            d.lines.append(chunk)
    return d.log.count(needle)


async def test_workers_stop_when_their_supervisor_is_killed(
    tmp_path: Path, tls_redis: RedisServer, certs: DevCerts
) -> None:
    url = tls_redis.url.replace("127.0.0.1", "localhost")
    tables = f'[server]\nworkers = 2\n[rate_limit]\nstorage_uri = "{url}"\n'
    d = Daemon(write(tmp_path / "registry.toml", tls_redis, certs, tables))
    try:
        assert d.url, d.log
        workers = children(d.proc.pid)
        assert len(workers) == 2
        d.proc.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 15
        while [pid for pid in workers if Path(f"/proc/{pid}").exists()]:
            assert time.monotonic() < deadline, "orphaned workers still running"
            await asyncio.sleep(0.1)
    finally:
        d.stop()


def test_a_leveldb_registry_moves_to_redis_and_serves_on_two_daemons(
    tmp_path: Path, tls_redis: RedisServer, certs: DevCerts
) -> None:
    """The README's migration: export the stopped LevelDB daemon's store, import it into Redis
    with the CLI, and both daemons on Redis serve the same registry."""
    from registryd.client import RegistryClient
    from tests.helpers import daemon
    from tests.test_storage_cli import leveldb_config, registryd

    source = leveldb_config(tmp_path, "leveldb", certs)
    keys = IdentityKeys.generate()
    with daemon(source) as d, RegistryClient(d.url, PEPPER, cafile=str(certs.ca)) as c:
        c.register("alice", keys)
        c.announce("alice", "198.51.100.7:4000", keys=keys)
        alice, seen = c.resolve("alice"), c.presence("alice")
    backup = tmp_path / "backup.rex"
    assert registryd("export", "--config", str(source), "--out", str(backup)).returncode == 0
    target = write(tmp_path / "redis.toml", tls_redis, certs)
    done = registryd("import", "--config", str(target), "--in", str(backup))
    assert done.returncode == 0, done.stderr
    assert "imported 3 records" in done.stdout
    with daemons(tmp_path, tls_redis, certs) as pair:
        for d in pair:
            with RegistryClient(d.url, PEPPER, cafile=str(certs.ca)) as c:
                assert alice is not None and c.resolve("alice") == alice
                assert seen is not None and c.presence("alice") == seen
    again = registryd("import", "--config", str(target), "--in", str(backup))
    assert again.returncode == 1 and "not empty" in again.stderr
