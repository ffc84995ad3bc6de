"""The node directory's bad-input table (issue 11): every malformed or hostile request to
the four routes gets a 4xx with the structured error body, and changes nothing stored."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.directory_harness import (
    HOST_A,
    HOST_B,
    HOST_C,
    Harness,
    error_of,
    harness_fixture,  # noqa: F401 - the harness fixture
    nodes,
)
from tests.directory_support import NodeKey, payload

# -- the table -------------------------------------------------------------------


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
