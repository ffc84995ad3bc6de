"""Who is a peer (issue 8 item 7), over real TLS through Hypercorn on 127.0.0.1:0.

A client certificate from the public listener's CA makes nobody a peer or an admin caller; the
peer listener (``[peers] listen``, its own peer-only CA) does; bearer tokens work anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
import trustme

from registryd import config as config_mod
from registryd.certs import DevCerts
from registryd.cli import main
from registryd.config import Config
from registryd.errors import ConfigError
from registryd.server import serve
from registryd.sockets import bind_socket
from registryd.storage import open_storage
from registryd.tokens import hash_token
from tests.helpers import (
    NO_RATE_LIMIT,
    Clock,
    config_text,
    daemon,
    make_state,
    tls_table,
    write_config,
)

pytestmark = pytest.mark.e2e

PEER_TOKEN = "peer-token-" + "p" * 32
ADMIN_TOKEN = "admin-token-" + "a" * 32
PEER_HASH = hash_token(PEER_TOKEN)
ADMIN_HASH = hash_token(ADMIN_TOKEN)
NODES = {"nodes": [{"base_url": "https://peer.example:8443"}]}
LISTEN_CA = 'listen = "127.0.0.1:0"\nclient_ca_pem_path'
SYNC: dict[str, list[object]] = {"identities": []}


class PeerCerts(NamedTuple):
    ca: Path  # the peer-only CA: peers.client_ca_pem_path
    cert: Path  # a peer's certificate chain
    key: Path


@pytest.fixture(scope="session")
def peer_certs(tmp_path_factory: pytest.TempPathFactory) -> PeerCerts:
    """A second CA, used only for peer certificates, and one peer certificate from it."""
    out = tmp_path_factory.mktemp("peer-certs")
    ca = trustme.CA(organization_name="registryd test peers")
    leaf = ca.issue_cert("peer-1.example")
    made = PeerCerts(out / "peer-ca.pem", out / "peer.pem", out / "peer-key.pem")
    ca.cert_pem.write_to_path(str(made.ca))
    leaf.cert_chain_pems[0].write_to_path(str(made.cert))
    leaf.private_key_pem.write_to_path(str(made.key))
    return made


def peers_config(
    certs: DevCerts,
    peer_ca: Path | None = None,
    *,
    trusted_proxies: str = "",
    extra_peers: str = "",
) -> str:
    """TLS with public mTLS (the dev CA), sync allowed, peer and admin tokens; with ``peer_ca``
    a peer listener on 127.0.0.1:0."""
    peers = f'[peers]\ntoken_hashes = ["{PEER_HASH}"]\n{extra_peers}'
    if peer_ca is not None:
        peers += f'listen = "127.0.0.1:0"\nclient_ca_pem_path = "{peer_ca}"\n'
    return config_text(
        mode="tls",
        tls=tls_table(certs, mtls=True),
        extra=f"allow_sync = true\n{trusted_proxies}",
        tables=f'{NO_RATE_LIMIT}{peers}[admin]\ntoken_hashes = ["{ADMIN_HASH}"]\n',
    )


@contextlib.asynccontextmanager
async def serving(config: Config) -> AsyncIterator[tuple[str, str]]:
    """Serve ``config`` with real Hypercorn; yields the public URL and the peer listener's."""
    peer_sock = bind_socket("127.0.0.1", 0) if config.peers.listen else None
    peer_url = f"https://127.0.0.1:{peer_sock.getsockname()[1]}" if peer_sock else ""
    stop = asyncio.Event()
    urls: list[str] = []
    task = asyncio.create_task(
        serve(
            config,
            sock=bind_socket("127.0.0.1", 0),
            peer_sock=peer_sock,
            shutdown_trigger=stop.wait,
            on_ready=urls.append,
        )
    )
    while not urls and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    try:
        yield urls[0], peer_url
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def client(certs: DevCerts, cert: tuple[Path, Path] | None) -> httpx.AsyncClient:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if cert is not None:
        context.load_cert_chain(*cert)
    return httpx.AsyncClient(verify=context, timeout=10)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_certificate_from_the_public_ca_is_not_a_peer(certs: DevCerts) -> None:
    public_cert = (certs.client_cert, certs.client_key)
    async with serving(config_mod.parse(peers_config(certs))) as (url, _):
        async with client(certs, public_cert) as http:
            nodes = await http.post(f"{url}/nodes", json=NODES)
            sync = await http.post(f"{url}/sync", json=SYNC)
            assert (nodes.status_code, sync.status_code) == (401, 401)
            assert nodes.json() == {"error": {"code": "UNAUTHORIZED", "message": "unauthorized"}}
            # tokens work on the public listener, certificate or not
            wrong = await http.post(f"{url}/nodes", json=NODES, headers=bearer("x" * 43))
            assert wrong.status_code == 401
            ok = await http.post(f"{url}/nodes", json=NODES, headers=bearer(PEER_TOKEN))
            assert (ok.status_code, ok.json()) == (200, {"merged": 1})
            synced = await http.post(f"{url}/sync", json=SYNC, headers=bearer(PEER_TOKEN))
            assert (synced.status_code, synced.json()) == (200, {"merged": 0})
            assert (await http.get(f"{url}/nodes")).json()["nodes"] == NODES["nodes"]


async def test_the_peer_listener_admits_peer_certificates_only(
    certs: DevCerts, peer_certs: PeerCerts
) -> None:
    cfg = config_mod.parse(peers_config(certs, peer_certs.ca))
    async with serving(cfg) as (url, peer_url):
        async with client(certs, (peer_certs.cert, peer_certs.key)) as peer:
            nodes = await peer.post(f"{peer_url}/nodes", json=NODES)
            assert (nodes.status_code, nodes.json()) == (200, {"merged": 1})
            sync = await peer.post(f"{peer_url}/sync", json=SYNC)
            assert (sync.status_code, sync.json()) == (200, {"merged": 0})
            assert (await peer.get(f"{peer_url}/health")).json()["status"] == "ok"
            # the public listener's TLS layer does not accept the peer CA's certificates
            with pytest.raises(httpx.TransportError):
                await peer.post(f"{url}/nodes", json=NODES)
        # a public client certificate, or none, gets no connection on the peer listener
        for cert in ((certs.client_cert, certs.client_key), None):
            async with client(certs, cert) as other:
                with pytest.raises(httpx.TransportError):
                    await other.post(f"{peer_url}/nodes", json=NODES)
        async with client(certs, (certs.client_cert, certs.client_key)) as public:
            refused = await public.post(f"{url}/nodes", json=NODES)
            assert refused.status_code == 401


async def test_admin_callers_need_loopback_or_the_peer_listener(
    certs: DevCerts, peer_certs: PeerCerts
) -> None:
    # 127.0.0.1 as a trusted proxy: the tests' loopback connections count as remote callers
    text = peers_config(certs, peer_certs.ca, trusted_proxies='trusted_proxies = ["127.0.0.1"]\n')
    async with serving(config_mod.parse(text)) as (url, peer_url):
        async with client(certs, (certs.client_cert, certs.client_key)) as public:
            refused = await public.get(f"{url}/admin/keys", headers=bearer(ADMIN_TOKEN))
            assert (refused.status_code, refused.json()["error"]["code"]) == (403, "FORBIDDEN")
        async with client(certs, (peer_certs.cert, peer_certs.key)) as peer:
            listing = await peer.get(f"{peer_url}/admin/keys", headers=bearer(ADMIN_TOKEN))
            assert listing.status_code == 200 and listing.json()[0]["state"] == "active"
            no_token = await peer.get(f"{peer_url}/admin/keys")
            assert no_token.status_code == 401
            peer_token = await peer.get(f"{peer_url}/admin/keys", headers=bearer(PEER_TOKEN))
            assert peer_token.status_code == 401


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda t: t.replace("[peers]\n", "[peers]\nmtls = true\n"), "peers.mtls"),
        (lambda t: t.replace("[peers]\n", "[peers]\nmtls = false\n"), "peers.mtls"),
        (lambda t: t.replace('listen = "127.0.0.1:0"', 'listen = "peer:9443"'), "peers.listen"),
        (
            lambda t: t.replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:8443"').replace(
                'address = "127.0.0.1:0"', 'address = "127.0.0.1:8443"'
            ),
            "peers.listen",
        ),
        (
            lambda t: t.replace(LISTEN_CA, LISTEN_CA.replace("\n", "\n# ")),
            "peers.client_ca_pem_path",
        ),
        (lambda t: t.replace('listen = "127.0.0.1:0"', ""), "peers.client_ca_pem_path"),
    ],
)
def test_peer_config_errors_name_the_key(
    certs: DevCerts, peer_certs: PeerCerts, change: Callable[[str], str], key: str
) -> None:
    text = peers_config(certs, peer_certs.ca)
    assert text.count(LISTEN_CA) == 1
    with pytest.raises(ConfigError) as err:
        config_mod.parse(change(text))
    assert err.value.path == key


def test_the_peer_listener_needs_tls(certs: DevCerts, peer_certs: PeerCerts) -> None:
    text = peers_config(certs, peer_certs.ca).replace('mode = "tls"', 'mode = "http"')
    with pytest.raises(ConfigError) as err:
        config_mod.parse(text)
    assert err.value.path == "peers.listen"


async def test_a_peer_ca_shared_with_the_public_ca_stops_before_binding(
    certs: DevCerts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "same-ca.pem"  # the public CA under another name is still the public CA
    shutil.copy(certs.ca, copy)
    path = tmp_path / "registry.toml"
    write_config(path, peers_config(certs, copy))
    path.chmod(0o600)
    with pytest.raises(ConfigError) as err:
        await serve(config_mod.load(path), shutdown_trigger=asyncio.Event().wait)
    assert err.value.path == "peers.client_ca_pem_path"
    assert main(["check-config", str(path)]) == 1
    assert "peers.client_ca_pem_path: shares a CA" in capsys.readouterr().err


async def test_a_reload_keeps_the_peer_listener_and_applies_new_tokens(
    certs: DevCerts, peer_certs: PeerCerts, tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "registry.toml"
    write_config(path, peers_config(certs, peer_certs.ca))
    cfg = config_mod.load(path)
    storage = open_storage(cfg)
    try:
        registry = make_state(cfg, storage, clock, config_path=str(path))
        new_hash = hash_token("another-peer-token-" + "n" * 32)
        text = path.read_text().replace(PEER_HASH, new_hash)
        write_config(path, text.replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:9443"'))
        assert await registry.reload() == ["peers.listen"]
        assert registry.config.peers.listen == "127.0.0.1:0"
        assert registry.config.peers.token_hashes == (new_hash,)
    finally:
        await storage.close()


async def test_the_daemon_serves_the_peer_listener_and_stops_cleanly(
    certs: DevCerts, peer_certs: PeerCerts, tmp_path: Path
) -> None:
    path = tmp_path / "registry.toml"
    write_config(path, peers_config(certs, peer_certs.ca))
    path.chmod(0o600)
    with daemon(path) as d:
        found = re.search(r"peer listener on (https://127\.0\.0\.1:\d+)", d.log)
        assert found, d.log
        async with client(certs, (peer_certs.cert, peer_certs.key)) as peer:
            nodes = await peer.post(f"{found.group(1)}/nodes", json=NODES)
        assert (nodes.status_code, nodes.json()) == (200, {"merged": 1})
        assert d.stop() == 0
    assert "Traceback" not in d.log
