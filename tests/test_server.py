"""Real Hypercorn on 127.0.0.1:0: TLS and mTLS in-process, and the daemon as a process."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from wsgiref.handlers import format_date_time

import httpx
import pytest
from hypercorn.config import Config as HypercornConfig

from registryd import config as config_mod
from registryd.certs import DevCerts
from registryd.client import AsyncRegistryClient, IdentityKeys, RegistryClient
from registryd.config import Config
from registryd.errors import ConfigError, ServerError, TransportError
from registryd.identity import user_id
from registryd.server import ServingConfig, serve
from tests.helpers import (
    INDEX_KEY_HEX,
    Daemon,
    config_text,
    daemon,
    running,
    tls_table,
    write_config,
)
from tests.vectors import PEPPER_HEX, SERVER_PRIVATE_HEX

pytestmark = pytest.mark.e2e
PEPPER = bytes.fromhex(PEPPER_HEX)
SECRETS = [PEPPER_HEX, INDEX_KEY_HEX, SERVER_PRIVATE_HEX]


def tls_config(certs: DevCerts, db: Path, *, mtls: bool = False) -> Config:
    text = config_text(kind="leveldb", path=str(db), mode="tls", tls=tls_table(certs, mtls=mtls))
    return config_mod.parse(text)


async def test_tls_e2e_with_client_library(certs: DevCerts, tmp_path: Path) -> None:
    async with running(tls_config(certs, tmp_path / "db")) as url:
        assert url.startswith("https://127.0.0.1:")
        async with AsyncRegistryClient(url, PEPPER, cafile=str(certs.ca)) as client:
            keys = {name: IdentityKeys.generate() for name in ("alice", "bob")}
            for name, k in keys.items():
                await client.register(name, k)
            for name, k in keys.items():
                identity = await client.resolve(name)
                assert identity is not None
                assert identity.handle == user_id(name)
                assert identity.username_hint == name
                assert bytes(identity.encryption_public_key) == k.encryption_public_key
                assert identity.verify_signature()
                assert await client.check_user(name) is True
                await client.announce(name, "203.0.113.7:51820", keys=k)
                presence = await client.presence(name)
                assert presence is not None and presence.addr == "203.0.113.7:51820"
            assert await client.resolve("carol") is None
            assert await client.check_user("carol") is False
            with pytest.raises(ServerError) as conflict:
                await client.register("alice", keys["alice"])
            assert (conflict.value.status, conflict.value.code) == (409, "CONFLICT")
        # the TLS port speaks TLS only: a plain-HTTP request gets no answer
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(url.replace("https://", "http://") + "/nodes", timeout=5)


async def test_fifty_concurrent_registrations_of_one_handle(
    certs: DevCerts, tmp_path: Path
) -> None:
    async with (
        running(tls_config(certs, tmp_path / "db")) as url,
        AsyncRegistryClient(url, PEPPER, cafile=str(certs.ca)) as client,
    ):
        contenders = [IdentityKeys.generate() for _ in range(50)]
        outcomes = await asyncio.gather(
            *(client.register("contested", keys) for keys in contenders), return_exceptions=True
        )
        winners = [
            keys for keys, outcome in zip(contenders, outcomes, strict=True) if outcome is None
        ]
        losers = [o for o in outcomes if isinstance(o, ServerError)]
        assert len(winners) == 1
        assert len(losers) == 49 and {(o.status, o.code) for o in losers} == {(409, "CONFLICT")}
        identity = await client.resolve("contested")
        assert identity is not None
        assert bytes(identity.signing_public_key) == winners[0].signing_public_key


async def test_mtls_requires_client_certificate(certs: DevCerts, tmp_path: Path) -> None:
    async with running(tls_config(certs, tmp_path / "db", mtls=True)) as url:
        async with AsyncRegistryClient(url, PEPPER, cafile=str(certs.ca)) as anonymous:
            with pytest.raises(TransportError):
                await anonymous.check_user("alice")
        cert = (str(certs.client_cert), str(certs.client_key))
        async with AsyncRegistryClient(
            url, PEPPER, cafile=str(certs.ca), client_cert=cert
        ) as client:
            assert await client.check_user("alice") is False
        # a verified client certificate does not make a peer (tests/test_peers.py)
        context = ssl.create_default_context(cafile=str(certs.ca))
        context.load_cert_chain(*cert)
        async with httpx.AsyncClient(verify=context) as raw:
            nodes = {"nodes": [{"base_url": "https://peer.example"}]}
            response = await raw.post(url + "/nodes", json=nodes)
        assert response.status_code == 401


async def test_bad_tls_files_stop_before_binding(certs: DevCerts, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n")
    cases = {
        "tls.cert_pem_path": f'[tls]\ncert_pem_path = "{tmp_path / "missing.pem"}"\n'
        f'key_pem_path = "{certs.server_key}"\n',
        "tls": f'[tls]\ncert_pem_path = "{garbage}"\nkey_pem_path = "{certs.server_key}"\n',
        "tls.client_ca_pem_path": tls_table(certs)
        + f'client_ca_pem_path = "{tmp_path / "nope"}"\n',
    }
    for path, table in cases.items():
        cfg = config_mod.parse(config_text(kind="memory", mode="tls", tls=table))
        with pytest.raises(ConfigError) as err:
            await serve(cfg, shutdown_trigger=asyncio.Event().wait)
        assert err.value.path == path


# -- the daemon as a separate process --------------------------------------------------------


@pytest.fixture
def daemon_config(certs: DevCerts, tmp_path: Path) -> Path:
    path = tmp_path / "registry.toml"
    db = tmp_path / "db"
    write_config(path, config_text(kind="leveldb", path=str(db), mode="tls", tls=tls_table(certs)))
    return path


CANARIES = ["canary-zebra-4417", "Zoë-canary-∆", "  spaced canary  "]


def test_restart_persistence_and_nothing_in_clear_at_rest(
    certs: DevCerts, daemon_config: Path, tmp_path: Path
) -> None:
    keys = {name: IdentityKeys.generate() for name in CANARIES}
    old_keys = dict(keys)
    gone = CANARIES[-1]  # registered, announced, updated, then deleted
    with daemon(daemon_config) as d, RegistryClient(d.url, PEPPER, cafile=str(certs.ca)) as c:
        for name, k in keys.items():
            c.register(name, k, created_at_ms=1)
            c.announce(name, "canary-addr-198.51.100.77:4242", keys=k)
            keys[name] = IdentityKeys.generate()
            c.update(name, k, keys[name])  # extensions spec §2.1
            c.announce(name, "canary-addr-203.0.113.99:4343", keys=keys[name])
        c.delete(gone, keys[gone])
    # a fresh process on the same directory serves what the first acknowledged
    with daemon(daemon_config) as d, RegistryClient(d.url, PEPPER, cafile=str(certs.ca)) as c:
        for name, k in keys.items():
            identity = c.resolve(name)
            if name == gone:
                assert identity is None and c.presence(name) is None
                continue
            assert identity is not None and identity.handle == user_id(name)
            assert bytes(identity.signing_public_key) == k.signing_public_key
            presence = c.presence(name)
            assert presence is not None and presence.addr == "canary-addr-203.0.113.99:4343"
    needles: list[bytes] = [b"canary-addr-198.51.100.77", b"canary-addr-203.0.113.99"]
    for k in [*keys.values(), *old_keys.values()]:  # public keys, as bytes and as JSON arrays
        for public in (k.signing_public_key, k.encryption_public_key):
            needles += [public, public.hex().encode(), ",".join(map(str, public)).encode()]
    for name in CANARIES:
        handle = user_id(name)
        needles += [
            name.strip().encode(),
            handle,
            handle.hex().encode(),
            handle.hex().upper().encode(),
        ]
    needles += [bytes.fromhex(s) for s in SECRETS] + [s.encode() for s in SECRETS]
    files = [p for p in (tmp_path / "db").rglob("*") if p.is_file()]
    assert files
    hits = [(p.name, n) for p in files for n in needles if n in p.read_bytes()]
    assert hits == []


def serve_to_exit(config_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``registryd serve`` expecting it to exit by itself (bounded by a timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "registryd", "serve", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_second_process_on_same_database_exits_with_clear_error(daemon_config: Path) -> None:
    with daemon(daemon_config):
        second = serve_to_exit(daemon_config)
    assert second.returncode == 1
    assert "in use by another registryd process" in second.stderr
    assert "listening" not in second.stderr


def test_bad_config_exits_before_binding(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    write_config(path, config_text() + "\n[rate_limit.endpoints]\nresolv_rps = 3\n")
    result = serve_to_exit(path)
    assert result.returncode == 1
    assert "rate_limit.endpoints.resolv_rps: unknown key" in result.stderr
    assert "listening" not in result.stderr


async def test_sigterm_lets_in_flight_request_finish(certs: DevCerts, daemon_config: Path) -> None:
    handle = user_id("in-flight").hex()
    requester = IdentityKeys.generate().encryption_public_key.hex()
    body = b'{"handle":"%s","requester_ephemeral_pubkey_hex":"%s"}' % (
        handle.encode(),
        requester.encode(),
    )
    half_sent, resume = asyncio.Event(), asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield body[:10]
        half_sent.set()
        await resume.wait()
        yield body[10:]

    d = Daemon(daemon_config)
    try:
        assert d.url, d.log
        context = ssl.create_default_context(cafile=str(certs.ca))
        async with httpx.AsyncClient(verify=context, timeout=30) as client:
            request = asyncio.create_task(
                client.post(
                    d.url + "/resolve",
                    content=trickle(),
                    headers={"content-type": "application/json"},
                )
            )
            await half_sent.wait()
            await asyncio.sleep(0.3)  # the server has read the first chunk
            d.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)  # the server is shutting down with the request in flight
            resume.set()
            response = await request
        assert response.status_code == 200
        assert response.json()["handle"] == handle  # answered in full: a constant-shape miss
        assert set(response.json()["envelope"]) == {"kid", "sender_pubkey", "nonce", "ciphertext"}
        assert await asyncio.to_thread(d.wait) == 0  # the one SIGTERM above stops it cleanly
        assert "registryd stopped" in d.log
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.communicate(timeout=10)


def test_logs_hold_no_secrets_and_no_handles(certs: DevCerts, daemon_config: Path) -> None:
    keys = IdentityKeys.generate()
    logs = {}
    for level in ("info", "debug"):
        with (
            daemon(daemon_config, level) as d,
            RegistryClient(d.url, PEPPER, cafile=str(certs.ca)) as c,
        ):
            name = f"log-canary-{level}"
            c.register(name, keys)
            assert c.resolve(name) is not None
            c.check_user(name)
            c.announce(name, "192.0.2.1:1", keys=keys)
            with pytest.raises(ServerError):
                c.register(name, keys)
            httpx.post(
                d.url + "/register",
                content=b"{",
                verify=ssl.create_default_context(cafile=str(certs.ca)),
            )
        logs[level] = d.log
    everything = "".join(logs.values())
    for secret in [*SECRETS, keys.signing_private_hex(), keys.encryption_private_hex()]:
        assert secret.lower() not in everything.lower()
    assert "listening on" in logs["info"]
    for level in ("info", "debug"):  # debug too: third-party loggers (hpack) stay at WARNING
        handle = user_id(f"log-canary-{level}").hex()
        assert handle not in logs[level].lower()
        assert f"log-canary-{level}" not in logs[level]


def test_daemon_serves_ipv6_loopback(certs: DevCerts, tmp_path: Path) -> None:
    if not os.path.exists("/proc/net/if_inet6"):
        pytest.fail("this machine has no IPv6; the test needs ::1")
    path = tmp_path / "v6.toml"
    text = config_text(kind="memory", mode="tls", tls=tls_table(certs))
    write_config(path, text.replace('address = "127.0.0.1:0"', 'address = "[::1]:0"'))
    with daemon(path) as d:
        assert d.url.startswith("https://[::1]:")
        with RegistryClient(d.url, PEPPER, cafile=str(certs.ca)) as client:
            assert client.check_user("alice") is False


def test_response_headers_match_hypercorns_and_follow_the_clock() -> None:
    """The once-a-second ``date`` (:class:`ServingConfig`) is byte-identical to Hypercorn's
    per-response one, for every protocol and with the ``server`` header on, and moves on with
    the clock."""
    ours, theirs = ServingConfig(), HypercornConfig()
    for include_server in (False, True):
        ours.include_server_header = theirs.include_server_header = include_server
        ours._second = -1  # the settings changed: drop what was built under the old ones
        for protocol in ("h11", "h2", "h3"):
            for _ in range(5):  # the two calls may straddle a second boundary: again then
                before, mine, hypercorns = (
                    time.time(),
                    ours.response_headers(protocol),
                    (theirs.response_headers(protocol)),
                )
                if int(before) == int(time.time()):
                    break
            assert mine == hypercorns
    first = ours.response_headers("h11")
    first.append((b"x", b"y"))  # a caller extending its list does not touch the cache
    assert ours.response_headers("h11") != first
    time.sleep(1.05 - time.time() % 1)
    assert ours.response_headers("h11")[0] != first[0]
    assert ours.response_headers("h11")[0][1] == format_date_time(time.time()).encode()
