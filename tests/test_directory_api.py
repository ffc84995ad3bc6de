"""The node directory's HTTP API in-process over both backends (extensions spec §3.1-3.4, 3.7):
registration with real Ed25519 signatures, heartbeats, the listing, and the bad-input table."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from registryd.app import build_app
from registryd.config import Config
from registryd.directory import Directory
from registryd.directory.challenges import NONCE_CHARS
from registryd.directory.prober import Outcome
from registryd.ratelimit import endpoint_of
from registryd.routes import Registry
from registryd.storage import Storage, open_storage
from tests.conftest import NO_RATE_LIMIT, Clock, make_config
from tests.directory_support import NodeKey, fake_resolver, payload

HOST_A, HOST_B, HOST_C = "127.0.0.2", "127.0.0.4", "127.0.0.5"
DIRECTORY_TABLE = '[directory]\nprobe_allow_cidrs = ["127.0.0.2/32"]\nprobe_timeout_ms = 1000\n'


@dataclass
class Harness:
    config: Config
    storage: Storage
    clock: Clock
    registry: Registry
    directory: Directory
    client: httpx.AsyncClient


@contextlib.asynccontextmanager
async def serving(config: Config, clock: Clock) -> AsyncIterator[Harness]:
    """The app over a freshly opened storage, in-process; storage closed on exit."""
    storage = open_storage(config)
    registry = Registry(config, storage, config.keyring(), clock)
    directory = Directory(registry, resolver=fake_resolver)
    app = build_app(registry, run_gc=False, directory=directory)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as c:
            yield Harness(config, storage, clock, registry, directory, c)
    finally:
        await storage.close()


@pytest.fixture(params=["memory", "leveldb"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    kind = str(request.param)
    config = make_config(
        kind=kind,
        path=str(tmp_path / "db") if kind == "leveldb" else "",
        tables=NO_RATE_LIMIT + DIRECTORY_TABLE,
    )
    async with serving(config, Clock()) as h:
        yield h


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return response.status_code, body["error"]["code"], body["error"]["message"]


async def nodes(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/api/nodes")
    assert response.status_code == 200
    listed: list[dict[str, Any]] = response.json()["nodes"]
    return listed


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
    storage = open_storage(config)
    registry = Registry(config, storage, config.keyring(), Clock())
    app = build_app(registry, run_gc=False)
    key = NodeKey()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://r.test"
        ) as client:
            codes = [
                (
                    await client.post(
                        "/api/registry/challenge", json={"pubkey_b64": key.pubkey_b64}
                    )
                ).status_code
                for _ in range(4)
            ]
    finally:
        await storage.close()
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


# -- the bad-input table -------------------------------------------------------------------


@dataclass
class World:
    """Node A registered at HOST_A with key ``a``; node B at HOST_B with key ``b``; key ``c``
    has nothing registered."""

    h: Harness
    a: NodeKey
    b: NodeKey
    c: NodeKey

    async def nonce(self, key: NodeKey) -> str:
        return await key.challenge(self.h.client)

    async def post(self, path: str, body: Any) -> httpx.Response:
        if isinstance(body, bytes):
            return await self.h.client.post(
                path, content=body, headers={"content-type": "application/json"}
            )
        return await self.h.client.post(path, json=body)

    async def register(
        self, key: NodeKey, body: dict[str, Any], *, nonce_of: NodeKey | None = None
    ) -> httpx.Response:
        signed = key.register_body(body, await self.nonce(nonce_of or key))
        return await self.post("/api/registry/register", signed)

    async def register_raw(self, key: NodeKey, payload_json: str) -> httpx.Response:
        """Register with ``payload_json`` spliced in verbatim (numbers Python cannot emit)."""
        nonce = await self.nonce(key)
        sig = key.sign(payload_json.encode() + nonce.encode())  # whatever: floats fail first
        body = (
            f'{{"payload":{payload_json},"nonce":"{nonce}",'
            f'"signature_b64":"{sig}","pubkey_b64":"{key.pubkey_b64}"}}'
        )
        return await self.post("/api/registry/register", body.encode())

    async def heartbeat(
        self, key: NodeKey, host: str, *, nonce: str | None = None
    ) -> httpx.Response:
        body = key.heartbeat_body(host, nonce or await self.nonce(key))
        return await self.post("/api/registry/heartbeat", body)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def with_(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**body, **changes}


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


P = payload(HOST_C, "http://c.test")  # a valid payload for key c
BAD_SIG = b64(bytes(64))


async def _expired(w: World) -> httpx.Response:
    nonce = await w.nonce(w.c)
    w.h.clock.advance(301)
    return await w.post("/api/registry/register", w.c.register_body(P, nonce))


async def _replayed(w: World) -> httpx.Response:
    body = w.c.register_body(P, await w.nonce(w.c))
    assert (await w.post("/api/registry/register", body)).status_code == 200
    return await w.post("/api/registry/register", body)


async def _tampered(w: World) -> httpx.Response:
    body = w.c.register_body(P, await w.nonce(w.c))
    return await w.post("/api/registry/register", with_(body, payload=with_(P, name="other")))


async def _heartbeat_reuse(w: World) -> httpx.Response:
    nonce = await w.nonce(w.a)
    assert (await w.heartbeat(w.a, HOST_A, nonce=nonce)).status_code == 200
    return await w.heartbeat(w.a, HOST_A, nonce=nonce)


async def _heartbeat_foreign_nonce(w: World) -> httpx.Response:
    return await w.heartbeat(w.a, HOST_A, nonce=await w.nonce(w.b))


async def _reg_body(w: World, **changes: Any) -> httpx.Response:
    body = w.c.register_body(P, await w.nonce(w.c))
    return await w.post("/api/registry/register", with_(body, **changes))


async def _hb_body(w: World, **changes: Any) -> httpx.Response:
    body = w.a.heartbeat_body(HOST_A, await w.nonce(w.a))
    return await w.post("/api/registry/heartbeat", with_(body, **changes))


NONCE = "invalid input: invalid or expired nonce"
Case = Callable[[World], Awaitable[httpx.Response]]
CASES: dict[str, tuple[Case, int, str]] = {
    # -- challenge
    "challenge: key not base64": (
        lambda w: w.post("/api/registry/challenge", {"pubkey_b64": "not base64!"}),
        400,
        "pubkey_b64",
    ),
    "challenge: 31-byte key": (
        lambda w: w.post("/api/registry/challenge", {"pubkey_b64": b64(w.c.pubkey[:31])}),
        400,
        "32 bytes",
    ),
    "challenge: 33-byte key": (
        lambda w: w.post("/api/registry/challenge", {"pubkey_b64": b64(w.c.pubkey + b"\0")}),
        400,
        "32 bytes",
    ),
    "challenge: 32 bytes that are no Ed25519 key": (
        lambda w: w.post("/api/registry/challenge", {"pubkey_b64": b64(bytes(32))}),
        400,
        "pubkey_b64",
    ),
    "challenge: URL-safe base64 key": (
        lambda w: w.post(
            "/api/registry/challenge",
            {"pubkey_b64": base64.urlsafe_b64encode(b"\xfb" * 32).decode()},
        ),
        400,
        "pubkey_b64",
    ),
    "challenge: key missing": (lambda w: w.post("/api/registry/challenge", {}), 400, "pubkey_b64"),
    "challenge: key not a string": (
        lambda w: w.post("/api/registry/challenge", {"pubkey_b64": 12}),
        400,
        "str",
    ),
    "challenge: unknown field": (
        lambda w: w.post("/api/registry/challenge", {"pubkey_b64": w.c.pubkey_b64, "x": 1}),
        400,
        "unknown field",
    ),
    "challenge: malformed JSON": (
        lambda w: w.post("/api/registry/challenge", b'{"pubkey_b64": '),
        400,
        "malformed json",
    ),
    "challenge: duplicate key": (
        lambda w: w.post(
            "/api/registry/challenge",
            f'{{"pubkey_b64":"{w.c.pubkey_b64}","pubkey_b64":"x"}}'.encode(),
        ),
        400,
        "duplicate",
    ),
    # -- register: nonce
    "register: another key's nonce": (lambda w: w.register(w.c, P, nonce_of=w.a), 400, NONCE),
    "register: expired nonce": (_expired, 400, NONCE),
    "register: replayed nonce": (_replayed, 400, NONCE),
    "register: self-made nonce": (lambda w: _reg_body(w, nonce="A" * 54), 400, NONCE),
    "register: oversized nonce": (lambda w: _reg_body(w, nonce="A" * 10_000), 400, NONCE),
    "register: non-ASCII nonce": (lambda w: _reg_body(w, nonce="é" * 27), 400, NONCE),
    # -- register: keys and signatures
    "register: key not base64": (lambda w: _reg_body(w, pubkey_b64="%%%"), 400, "pubkey_b64"),
    "register: 31-byte key": (
        lambda w: _reg_body(w, pubkey_b64=b64(w.c.pubkey[:31])),
        400,
        "32 bytes",
    ),
    "register: 33-byte key": (
        lambda w: _reg_body(w, pubkey_b64=b64(w.c.pubkey + b"\1")),
        400,
        "32 bytes",
    ),
    "register: signature not base64": (
        lambda w: _reg_body(w, signature_b64="??"),
        400,
        "signature_b64",
    ),
    "register: 63-byte signature": (
        lambda w: _reg_body(w, signature_b64=b64(bytes(63))),
        400,
        "64 bytes",
    ),
    "register: 64-byte signature that does not verify": (
        lambda w: _reg_body(w, signature_b64=BAD_SIG),
        401,
        "unauthorized",
    ),
    "register: payload changed after signing": (_tampered, 401, "unauthorized"),
    # -- register: floats (before the signature), payload fields
    "register: float at the top": (lambda w: w.register_raw(w.c, '{"name":1.5}'), 400, "float"),
    "register: float nested in features": (
        lambda w: w.register_raw(w.c, '{"features":{"a":[1,{"b":2.0}]}}'),
        400,
        "float",
    ),
    "register: exponent number": (lambda w: w.register_raw(w.c, '{"n":1e3}'), 400, "float"),
    "register: -0": (lambda w: w.register_raw(w.c, '{"n":-0}'), 400, "i64/u64"),
    "register: integer beyond u64": (
        lambda w: w.register_raw(w.c, '{"n":18446744073709551616}'),
        400,
        "i64/u64",
    ),
    "register: payload not an object": (lambda w: _reg_body(w, payload=[1]), 400, "object"),
    "register: duplicate payload key": (
        lambda w: w.register_raw(w.c, '{"name":"a","name":"b"}'),
        400,
        "duplicate",
    ),
    "register: name missing": (lambda w: w.register(w.c, without(P, "name")), 400, "payload.name"),
    "register: name not a string": (
        lambda w: w.register(w.c, with_(P, name=7)),
        400,
        "payload.name",
    ),
    "register: empty name": (lambda w: w.register(w.c, with_(P, name="")), 400, "payload.name"),
    "register: host missing": (lambda w: w.register(w.c, without(P, "host")), 400, "payload.host"),
    "register: host null": (lambda w: w.register(w.c, with_(P, host=None)), 400, "payload.host"),
    "register: api_base_url missing": (
        lambda w: w.register(w.c, without(P, "api_base_url")),
        400,
        "payload.api_base_url",
    ),
    "register: api_base_url ftp": (
        lambda w: w.register(w.c, with_(P, api_base_url="ftp://c.test")),
        400,
        "payload.api_base_url",
    ),
    "register: api_base_url javascript": (
        lambda w: w.register(w.c, with_(P, api_base_url="javascript:alert(1)")),
        400,
        "payload.api_base_url",
    ),
    "register: api_base_url without a host": (
        lambda w: w.register(w.c, with_(P, api_base_url="http://")),
        400,
        "payload.api_base_url",
    ),
    "register: api_base_url with credentials": (
        lambda w: w.register(w.c, with_(P, api_base_url="http://u:p@c.test")),
        400,
        "payload.api_base_url",
    ),
    "register: api_base_url with a query": (
        lambda w: w.register(w.c, with_(P, api_base_url="http://c.test/?x=1")),
        400,
        "payload.api_base_url",
    ),
    "register: protocol_version over 256 bytes": (
        lambda w: w.register(w.c, with_(P, protocol_version="é" * 129)),
        400,
        "payload.protocol_version",
    ),
    "register: protocol_version missing": (
        lambda w: w.register(w.c, without(P, "protocol_version")),
        400,
        "payload.protocol_version",
    ),
    "register: features not an object": (
        lambda w: w.register(w.c, with_(P, features=["a"])),
        400,
        "payload.features",
    ),
    "register: features over 4 KiB": (
        lambda w: w.register(w.c, with_(P, features={"k": "x" * 4090})),
        400,
        "4096 bytes",
    ),
    "register: contact_email not a string": (
        lambda w: w.register(w.c, with_(P, contact_email=["a@b"])),
        400,
        "payload.contact_email",
    ),
    "register: contact_email null": (
        lambda w: w.register(w.c, with_(P, contact_email=None)),
        400,
        "payload.contact_email",
    ),
    "register: host that is not a name": (
        lambda w: w.register(w.c, with_(P, host="bad host!")),
        400,
        "host",
    ),
    "register: scoped IPv6 host": (
        lambda w: w.register(w.c, with_(P, host="fe80::1%eth0")),
        400,
        "host",
    ),
    "register: unresolvable host": (
        lambda w: w.register(w.c, with_(P, host="nowhere.test")),
        400,
        "invalid input: could not resolve host",
    ),
    # -- register: ownership
    "register: host taken by another key": (
        lambda w: w.register(w.c, with_(P, host=HOST_A)),
        403,
        "forbidden: host already registered with another key",
    ),
    "register: second host for one key": (
        lambda w: w.register(w.a, with_(P, host=HOST_C)),
        403,
        "forbidden: key already registered with another host",
    ),
    "register: unknown top-level field": (lambda w: _reg_body(w, extra=1), 400, "unknown field"),
    "register: wrong content type": (
        lambda w: w.h.client.post(
            "/api/registry/register", content=b"{}", headers={"content-type": "text/plain"}
        ),
        400,
        "application/json",
    ),
    # -- heartbeat
    "heartbeat: unknown host": (lambda w: w.heartbeat(w.c, HOST_C), 401, "unauthorized"),
    "heartbeat: another key than the host's": (
        lambda w: w.heartbeat(w.b, HOST_A),
        401,
        "unauthorized",
    ),
    "heartbeat: self-made nonce": (
        lambda w: w.heartbeat(w.a, HOST_A, nonce="B" * 54),
        401,
        "unauthorized",
    ),
    "heartbeat: nonce issued to another key": (_heartbeat_foreign_nonce, 401, "unauthorized"),
    "heartbeat: nonce reuse": (_heartbeat_reuse, 401, "unauthorized"),
    "heartbeat: 64-byte signature that does not verify": (
        lambda w: _hb_body(w, signature_b64=BAD_SIG),
        401,
        "unauthorized",
    ),
    "heartbeat: signature over another host": (
        lambda w: _hb_body(w, host=HOST_B),
        401,
        "unauthorized",
    ),
    "heartbeat: signature not base64": (
        lambda w: _hb_body(w, signature_b64="@@"),
        400,
        "signature_b64",
    ),
    "heartbeat: 33-byte key": (lambda w: _hb_body(w, pubkey_b64=b64(bytes(33))), 400, "32 bytes"),
    "heartbeat: host over 256 bytes": (lambda w: _hb_body(w, host="a" * 300), 400, "host"),
    "heartbeat: host missing": (
        lambda w: w.post(
            "/api/registry/heartbeat", without(w.a.heartbeat_body(HOST_A, "n"), "host")
        ),
        400,
        "host",
    ),
}


@pytest.fixture
async def world(harness: Harness) -> World:
    w = World(harness, NodeKey(), NodeKey(), NodeKey())
    assert (await w.register(w.a, payload(HOST_A, "http://a.test"))).status_code == 200
    assert (await w.register(w.b, payload(HOST_B, "http://b.test"))).status_code == 200
    return w


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input(world: World, case: str) -> None:
    make, status, message = CASES[case]
    before = await nodes(world.h.client)
    response = await make(world)
    code = {400: "INVALID_INPUT", 401: "UNAUTHORIZED", 403: "FORBIDDEN"}[status]
    got_status, got_code, got_message = error_of(response)
    assert (got_status, got_code) == (status, code), got_message
    assert message in got_message
    after = await nodes(world.h.client)
    # nothing changed, except what a case did on purpose before its refused request
    assert [(n["host"], n["pubkey_b64"]) for n in after if n["host"] != HOST_C] == [
        (n["host"], n["pubkey_b64"]) for n in before
    ]


# -- administration (§3.7) -----------------------------------------------------------------


ADMIN_TOKEN = "directory-admin-token"


@pytest.fixture
async def admin_client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    from argon2 import PasswordHasher

    digest = PasswordHasher().hash(ADMIN_TOKEN)
    config = make_config(tables=NO_RATE_LIMIT + f'[admin]\ntoken_hashes = ["{digest}"]\n')
    storage = open_storage(config)
    registry = Registry(config, storage, config.keyring(), Clock())
    app = build_app(registry, run_gc=False, directory=Directory(registry, resolver=fake_resolver))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://r.test") as client:
            yield client, storage
    finally:
        await storage.close()


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
