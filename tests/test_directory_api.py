"""The node directory's HTTP API in-process over both backends (extensions spec §3.1-3.4, 3.7):
registration with real Ed25519 signatures, heartbeats, nonces, the listing, administration."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from registryd.abuse.ratelimit import endpoint_of
from registryd.directory.challenges import NONCE_CHARS
from registryd.directory.prober import Outcome
from registryd.storage import Storage
from tests.directory_harness import (
    DIRECTORY_TABLE,
    HOST_A,
    HOST_B,
    Harness,
    error_of,
    harness_fixture,  # noqa: F401 - the harness fixture
    nodes,
    serving,
)
from tests.directory_support import NodeKey, fake_resolver, payload
from tests.helpers import NO_RATE_LIMIT, Clock, app_client, app_with_state, make_config

# -- the happy paths ----------------------------------------------------------------------


async def test_challenge_answers_a_short_bound_nonce(harness: Harness) -> None:
    key = NodeKey()
    response = await harness.client.post(
        "/api/registry/challenge", json={"pubkey_b64": key.pubkey_b64}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"nonce", "expires_at"}
    assert body["nonce"].isascii() and len(body["nonce"]) == NONCE_CHARS <= 64
    assert body["expires_at"] == "2023-11-14T22:18:20.000Z"  # clock + 300 s, RFC 3339 UTC
    unpadded = key.pubkey_b64.rstrip("=")  # unpadded base64 is accepted on input
    again = await harness.client.post("/api/registry/challenge", json={"pubkey_b64": unpadded})
    assert again.status_code == 200 and again.json()["nonce"] != body["nonce"]


async def test_register_lists_the_node_with_hushnet_fields(harness: Harness) -> None:
    key = NodeKey()
    features = {"relay": {"max_mbps": 100, "regions": ["eu", "東京"]}, "a": None, "ok": True}
    body = payload(HOST_A, "https://node-a.test/api", name="nœud 東京", features=features)
    body["extra_ignored"] = {"covered": "by the signature"}
    response = await key.register(harness.client, body)
    assert response.status_code == 200 and response.json() == {"ok": True}

    (listed,) = await nodes(harness.client)
    assert list(listed) == [
        "name",
        "host",
        "ip",
        "api_base_url",
        "protocol_version",
        "features",
        "country_code",
        "country_name",
        "last_seen_at",
        "last_latency_ms",
        "status",
        "uptime_ratio",
        "pubkey_b64",
    ]
    assert listed == {
        "name": "nœud 東京",
        "host": HOST_A,
        "ip": HOST_A,
        "api_base_url": "https://node-a.test/api",
        "protocol_version": "0.0.1",
        "features": features,
        "country_code": None,
        "country_name": None,
        "last_seen_at": None,
        "last_latency_ms": None,
        "status": "unknown",
        "uptime_ratio": None,
        "pubkey_b64": key.pubkey_b64,
    }
    raw = (await harness.client.get("/api/nodes")).content
    assert b"ops@example.org" not in raw and b"contact" not in raw and b"extra_ignored" not in raw
    # features are listed as canonical JSON: sorted keys, raw UTF-8
    assert (
        '"features":{"a":null,"ok":true,"relay":{"max_mbps":100,"regions":["eu","東京"]}}'.encode()
        in raw
    )


async def test_a_hushnet_node_registers_unchanged(harness: Harness) -> None:
    """The bytes HushNet-Backend's register_with_registry sends: serde_json::to_string of the
    json! payload (sorted keys, compact) as the signed text, padded standard base64."""
    key = NodeKey(bytes(range(32)))
    challenge = await harness.client.post(
        "/api/registry/challenge",
        content=json.dumps({"pubkey_b64": key.pubkey_b64}),
        headers={"content-type": "application/json"},
    )
    nonce = challenge.json()["nonce"]
    signed = (
        b'{"api_base_url":"http://node-a.test:8080","contact_email":"ops@hushnet.net",'
        b'"features":{},"host":"node-a.test","name":"node-eu1","protocol_version":"0.0.1"}'
    )
    signature = key.sign(signed + nonce.encode())
    body = (
        f'{{"nonce":"{nonce}","pubkey_b64":"{key.pubkey_b64}",'
        f'"signature_b64":"{signature}","payload":{signed.decode()}}}'
    )
    response = await harness.client.post(
        "/api/registry/register", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    (listed,) = await nodes(harness.client)
    assert (listed["host"], listed["ip"], listed["name"]) == (
        "node-a.test",
        "127.0.0.2",
        "node-eu1",
    )


async def test_reregistering_keeps_status_and_updates_fields(harness: Harness) -> None:
    key = NodeKey()
    assert (await key.register(harness.client, payload(HOST_A, "http://a.test"))).status_code == 200
    assert (await key.heartbeat(harness.client, HOST_A)).status_code == 200
    harness.clock.advance(10)
    again = payload(HOST_A, "http://a2.test", name="renamed", protocol_version="0.0.2")
    assert (await key.register(harness.client, again)).status_code == 200
    (listed,) = await nodes(harness.client)
    assert listed["status"] == "online"  # kept
    assert listed["last_seen_at"] == "2023-11-14T22:13:20.000Z"  # kept
    assert (listed["name"], listed["api_base_url"], listed["protocol_version"]) == (
        "renamed",
        "http://a2.test",
        "0.0.2",
    )


async def test_host_is_compared_case_insensitively(harness: Harness) -> None:
    a, b = NodeKey(), NodeKey()
    assert (
        await a.register(harness.client, payload("Node-A.test.", "http://a"))
    ).status_code == 200
    response = await b.register(harness.client, payload("node-a.TEST", "http://evil"))
    assert error_of(response) == (
        403,
        "FORBIDDEN",
        "forbidden: host already registered with another key",
    )
    (listed,) = await nodes(harness.client)
    assert listed["host"] == "node-a.test"
    assert (await a.heartbeat(harness.client, "NODE-A.test")).status_code == 200


async def test_heartbeat_sets_online_and_last_seen(harness: Harness) -> None:
    key = NodeKey()
    await key.register(harness.client, payload(HOST_A, "http://a.test"))
    harness.clock.advance(42.5)
    response = await key.heartbeat(harness.client, HOST_A)
    assert response.status_code == 200 and response.json() == {"ok": True}
    (listed,) = await nodes(harness.client)
    assert (listed["status"], listed["last_seen_at"]) == ("online", "2023-11-14T22:14:02.500Z")


async def test_listing_orders_online_unknown_offline_each_by_name(harness: Harness) -> None:
    made = []
    for i, (name, state) in enumerate(
        [
            ("d", "offline"),
            ("b", "online"),
            ("c", "unknown"),
            ("a", "offline"),
            ("e", "online"),
            ("B", "unknown"),
            ("é", "online"),
        ]
    ):
        key = NodeKey()
        host = f"127.0.1.{i + 1}"
        assert (
            await key.register(harness.client, payload(host, "http://x", name=name))
        ).status_code == 200
        made.append((key, host, state))
    for _, host, state in made:
        entry = await harness.storage.get_directory_node(host)
        assert entry is not None
        if state != "unknown":
            await harness.directory.record_probe(entry, Outcome(ok=state == "online", latency_ms=5))
    listed = [(n["status"], n["name"]) for n in await nodes(harness.client)]
    assert listed == [
        ("online", "b"),
        ("online", "e"),
        ("online", "é"),
        ("unknown", "B"),
        ("unknown", "c"),
        ("offline", "a"),
        ("offline", "d"),
    ]


async def test_enigma_nodes_routes_are_unchanged(harness: Harness) -> None:
    key = NodeKey()
    await key.register(harness.client, payload(HOST_A, "http://a.test"))
    response = await harness.client.get("/nodes")
    assert response.status_code == 200 and response.json() == {"nodes": []}
    posted = await harness.client.post("/nodes", json={"nodes": [{"base_url": "http://n"}]})
    assert posted.status_code == 401  # still peers only


def test_directory_posts_are_charged_to_the_register_bucket() -> None:
    for path in ("/api/registry/challenge", "/api/registry/register", "/api/registry/heartbeat"):
        assert endpoint_of("POST", path) == "register"
    assert endpoint_of("GET", "/api/nodes") is None


async def test_rate_limited_challenges_get_429(tmp_path: Path) -> None:
    config = make_config(tables="[rate_limit]\nburst = 2\nban_seconds = 0\n")
    key = NodeKey()
    async with app_client(config, clock=Clock(), base_url="http://r.test") as client:
        codes = [
            (
                await client.post("/api/registry/challenge", json={"pubkey_b64": key.pubkey_b64})
            ).status_code
            for _ in range(4)
        ]
    assert codes == [200, 200, 429, 429]


# -- nonces: bound to a key, single use across register and heartbeat ---------------------


async def test_a_nonce_serves_one_register_or_heartbeat_only(harness: Harness) -> None:
    key = NodeKey()
    client = harness.client
    nonce = await key.challenge(client)
    first = await client.post(
        "/api/registry/register", json=key.register_body(payload(HOST_A, "http://a"), nonce)
    )
    assert first.status_code == 200
    # the same nonce for a heartbeat, or a second register, is refused
    heartbeat = await client.post("/api/registry/heartbeat", json=key.heartbeat_body(HOST_A, nonce))
    assert error_of(heartbeat) == (401, "UNAUTHORIZED", "unauthorized")
    again = await client.post(
        "/api/registry/register", json=key.register_body(payload(HOST_A, "http://a"), nonce)
    )
    assert error_of(again) == (400, "INVALID_INPUT", "invalid input: invalid or expired nonce")
    # and the other way round: a heartbeat's nonce does not register
    nonce = await key.challenge(client)
    assert (
        await client.post("/api/registry/heartbeat", json=key.heartbeat_body(HOST_A, nonce))
    ).status_code == 200
    replay = await client.post(
        "/api/registry/register", json=key.register_body(payload(HOST_A, "http://a"), nonce)
    )
    assert error_of(replay)[0] == 400


async def test_nonces_survive_a_restart_single_use_included(tmp_path: Path) -> None:
    config = make_config(
        kind="leveldb", path=str(tmp_path / "db"), tables=NO_RATE_LIMIT + DIRECTORY_TABLE
    )
    clock = Clock()
    key = NodeKey()
    async with serving(config, clock) as h:
        used = await key.challenge(h.client)
        unused = await key.challenge(h.client)
        body = key.register_body(payload(HOST_A, "http://a"), used)
        assert (await h.client.post("/api/registry/register", json=body)).status_code == 200
    async with serving(config, clock) as h:  # a new process would see the same
        assert error_of(await h.client.post("/api/registry/register", json=body))[0] == 400
        fresh = key.heartbeat_body(HOST_A, unused)  # issued before the restart, still valid
        assert (await h.client.post("/api/registry/heartbeat", json=fresh)).status_code == 200
        assert error_of(await h.client.post("/api/registry/heartbeat", json=fresh))[0] == 401


async def test_many_concurrent_uses_of_one_nonce_have_one_winner(harness: Harness) -> None:
    key = NodeKey()
    await key.register(harness.client, payload(HOST_A, "http://a"))
    nonce = await key.challenge(harness.client)
    body = key.heartbeat_body(HOST_A, nonce)
    responses = await asyncio.gather(
        *(harness.client.post("/api/registry/heartbeat", json=body) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses) == [200] + [401] * 19


# -- administration (§3.7) -----------------------------------------------------------------


ADMIN_TOKEN = "directory-admin-token"


@pytest.fixture
async def admin_client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    from argon2 import PasswordHasher

    digest = PasswordHasher().hash(ADMIN_TOKEN)
    config = make_config(tables=NO_RATE_LIMIT + f'[admin]\ntoken_hashes = ["{digest}"]\n')
    async with app_with_state(
        config,
        clock=Clock(),
        client=("127.0.0.1", 5000),
        base_url="http://r.test",
        resolver=fake_resolver,
    ) as (state, client):
        yield client, state.storage


async def test_admin_lists_with_contacts_and_removes(
    admin_client: tuple[httpx.AsyncClient, Storage],
) -> None:
    client, storage = admin_client
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    key = NodeKey()
    assert (await key.register(client, payload(HOST_A, "http://a"))).status_code == 200

    assert (await client.get("/admin/directory")).status_code == 401
    listing = await client.get("/admin/directory", headers=auth)
    assert listing.status_code == 200
    (entry,) = listing.json()["nodes"]
    assert (entry["host"], entry["contact_email"]) == (HOST_A, "ops@example.org")
    assert entry["registered_at"] == "2023-11-14T22:13:20.000Z"

    missing = await client.post("/admin/directory/remove", json={"host": "127.0.0.9"}, headers=auth)
    assert error_of(missing)[:2] == (404, "NOT_FOUND")
    removed = await client.post("/admin/directory/remove", json={"host": HOST_A}, headers=auth)
    assert removed.status_code == 200 and removed.json() == {"removed": HOST_A}
    assert await nodes(client) == []
    assert await storage.directory_host_of_key(key.pubkey) is None
    # the key is free to register another host now
    assert (await key.register(client, payload(HOST_B, "http://b"))).status_code == 200
