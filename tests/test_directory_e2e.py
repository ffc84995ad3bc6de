"""The node directory against a real daemon process over TLS (extensions spec §3): two fake
nodes on 127.0.0.0/8, one allowed by probe_allow_cidrs and one not, real Ed25519 signatures
over canonical JSON, the prober's transitions, and ``registryd directory`` via the admin API."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from registryd import cli
from registryd.certs import DevCerts
from tests.directory_support import NodeKey, fake_nodes, payload
from tests.helpers import config_text, daemon, tls_table, write_config

pytestmark = pytest.mark.e2e

A, B = "127.0.0.2", "127.0.0.3"
TOKEN = "e2e-directory-admin-token"
FEATURES = {"z": {"nested": {"deep": [1, "two", None, True]}}, "a": "Ünïcödé ✓ \n \u0001"}


def daemon_config(tmp_path: Path, certs: DevCerts) -> Path:
    digest = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(TOKEN)
    tables = (
        "[rate_limit]\nenabled = false\n"
        f'[admin]\ntoken_hashes = ["{digest}"]\n'
        "[directory]\nprobe_interval_seconds = 1\nprobe_timeout_ms = 800\n"
        f'probe_allow_cidrs = ["{A}/32"]\n'
    )
    path = tmp_path / "registry.toml"
    write_config(
        path,
        config_text(
            kind="leveldb",
            path=str(tmp_path / "db"),
            mode="tls",
            tls=tls_table(certs),
            tables=tables,
        ),
    )
    return path


async def wait_for(
    client: httpx.AsyncClient, host: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll GET /api/nodes until ``host``'s entry passes ``check`` (at most 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        nodes = (await client.get("/api/nodes")).json()["nodes"]
        node: dict[str, Any] = next(n for n in nodes if n["host"] == host)
        if check(node):
            return node
        assert time.monotonic() < deadline, f"{host} never reached the state: {node}"
        await asyncio.sleep(0.1)


def error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return response.status_code, body["error"]["message"]


async def test_directory_against_a_real_daemon(
    certs: DevCerts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = daemon_config(tmp_path, certs)
    context = ssl.create_default_context(cafile=str(certs.ca))
    async with fake_nodes(A, B) as (node_a, node_b):
        with daemon(config) as d:
            async with httpx.AsyncClient(base_url=d.url, verify=context, timeout=10) as client:
                await _scenario(client, node_a, node_b)
                await _administer(d.url, certs, tmp_path, capsys)
                assert (await client.get("/nodes")).json() == {"nodes": []}  # Enigma's list
        log = d.log
    assert node_b.connections == 0  # never connected to, from start to stop
    assert "directory round:" in log
    assert f"probe of {B} refused by the address policy" in log
    assert "ops@example.org" not in log and "Traceback" not in log
    assert "/health" not in log  # no per-probe request lines


async def _scenario(client: httpx.AsyncClient, node_a: Any, node_b: Any) -> None:
    a, b, intruder = NodeKey(), NodeKey(), NodeKey()
    body_a = payload(A, node_a.url, name="nœud-東京", features=FEATURES)
    nonce = await a.challenge(client)
    signed = a.register_body(body_a, nonce)
    assert (await client.post("/api/registry/register", json=signed)).status_code == 200
    # nonce replay
    assert error(await client.post("/api/registry/register", json=signed)) == (
        400,
        "invalid input: invalid or expired nonce",
    )
    # another key's nonce
    foreign = b.register_body(payload(B, node_b.url), await a.challenge(client))
    assert error(await client.post("/api/registry/register", json=foreign))[0] == 400
    # bad signature: a valid one, over another payload
    tampered = b.register_body(payload(B, node_b.url), await b.challenge(client))
    tampered["payload"]["name"] = "changed after signing"
    assert error(await client.post("/api/registry/register", json=tampered))[0] == 401
    assert (await b.register(client, payload(B, node_b.url, name="b"))).status_code == 200
    # host taken by another key; a second host for one key
    assert error(await intruder.register(client, payload(A, "http://evil.test"))) == (
        403,
        "forbidden: host already registered with another key",
    )
    assert error(await a.register(client, payload("127.0.0.9", node_a.url)))[0] == 403
    # heartbeats: fine once; nonce reuse, a self-made nonce, another key: 401
    nonce = await a.challenge(client)
    beat = a.heartbeat_body(A, nonce)
    assert (await client.post("/api/registry/heartbeat", json=beat)).status_code == 200
    assert error(await client.post("/api/registry/heartbeat", json=beat))[0] == 401
    made_up = a.heartbeat_body(A, "Q" * 54)
    assert error(await client.post("/api/registry/heartbeat", json=made_up))[0] == 401
    assert error(await b.heartbeat(client, A))[0] == 401

    # the prober: online with a latency, offline when /health fails, online again
    node = await wait_for(client, A, lambda n: n["last_latency_ms"] is not None)
    assert node["status"] == "online"
    node_a.status = 500
    await wait_for(client, A, lambda n: n["status"] == "offline")
    node_a.status = 200
    node = await wait_for(client, A, lambda n: n["status"] == "online")
    assert 0 < node["uptime_ratio"] < 1
    assert node["last_latency_ms"] >= 0

    response = await client.get("/api/nodes")
    nodes = response.json()["nodes"]
    assert [(n["host"], n["status"]) for n in nodes] == [(A, "online"), (B, "offline")]
    assert nodes[0]["features"] == FEATURES and nodes[0]["name"] == "nœud-東京"
    assert nodes[0]["pubkey_b64"] == a.pubkey_b64 and nodes[1]["uptime_ratio"] == 0.0
    assert b"ops@example.org" not in response.content and b"contact" not in response.content


async def _administer(
    url: str, certs: DevCerts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    base = ["directory", "--url", url, "--cafile", str(certs.ca), "--token-file", str(token_file)]

    def run(*args: str) -> int:
        return cli.main([*base, *args])

    assert await asyncio.to_thread(run, "list") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "status", "name", "host", "ip", "country", "latency", "uptime", "last", "seen", "key",
    ]  # fmt: skip
    assert table[1].startswith("online") and A in table[1] and "nœud-東京" in table[1]
    assert table[2].startswith("offline") and B in table[2]

    assert await asyncio.to_thread(run, "remove", B) == 0
    assert capsys.readouterr().out.strip() == f"removed {B}"
    assert await asyncio.to_thread(run, "remove", B) == 1
    assert "404" in capsys.readouterr().err
    assert await asyncio.to_thread(run, "list", "--json") == 0
    listed = capsys.readouterr().out
    assert B not in listed and '"contact_email": "ops@example.org"' in listed

    wrong = tmp_path / "wrong.token"
    wrong.write_text("not the token")
    code = await asyncio.to_thread(
        cli.main,
        ["directory", "--url", url, "--cafile", str(certs.ca), "--token-file", str(wrong), "list"],
    )
    assert code == 1 and "401" in capsys.readouterr().err
