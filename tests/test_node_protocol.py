"""The §3.1-3.3 messages the agent signs, its HTTP client, and the fake directory's checks."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from nacl.signing import VerifyKey

from registryd.errors import ProtocolError, ServerError, TransportError
from registryd.node import NodeKey
from registryd.node.directory_client import DirectoryClient, safe_text
from registryd.node.protocol import (
    heartbeat_body,
    parse_challenge,
    register_body,
    register_message,
)
from tests.node_fake import FakeDirectory, FakeTime

PAYLOAD: dict[str, Any] = {
    "name": "n1",
    "host": "n1.example",
    "api_base_url": "https://n1.example",
    "protocol_version": "1",
    "features": {"b": 1, "a": "\u00e9"},
}
# canonical_json(PAYLOAD) || "nonce-1", by hand: keys sorted, compact, raw UTF-8.
REGISTER_MESSAGE = (
    b'{"api_base_url":"https://n1.example","features":{"a":"\xc3\xa9","b":1},'
    b'"host":"n1.example","name":"n1","protocol_version":"1"}nonce-1'
)


def verify(key: NodeKey, message: bytes, signature_b64: str) -> None:
    VerifyKey(key.public_key).verify(message, base64.b64decode(signature_b64))


def test_register_signs_canonical_payload_then_nonce() -> None:
    key = NodeKey.generate()
    assert register_message(PAYLOAD, "nonce-1") == REGISTER_MESSAGE
    body = register_body(key, PAYLOAD, "nonce-1")
    assert body["payload"] is PAYLOAD and body["nonce"] == "nonce-1"
    assert body["pubkey_b64"] == base64.b64encode(key.public_key).decode()
    assert len(base64.b64decode(body["signature_b64"])) == 64
    verify(key, REGISTER_MESSAGE, body["signature_b64"])


def test_heartbeat_signs_host_then_nonce() -> None:
    key = NodeKey.generate()
    body = heartbeat_body(key, "n1.example", "nonce-2")
    assert set(body) == {"host", "nonce", "signature_b64", "pubkey_b64"}
    verify(key, b"n1.examplenonce-2", body["signature_b64"])


@pytest.mark.parametrize(
    "answer",
    [
        b'{"nonce":"abc","expires_at":"2026-01-01T00:00:00Z"}',
        b'{"nonce":"' + b"n" * 64 + b'","expires_at":"x","other":1}',  # extra fields ignored
    ],
)
def test_challenge_answers(answer: bytes) -> None:
    assert parse_challenge(answer) == json.loads(answer)["nonce"]


@pytest.mark.parametrize(
    "answer",
    [
        b'{"nonce":"' + b"n" * 65 + b'","expires_at":"x"}',
        b'{"nonce":"","expires_at":"x"}',
        b'{"nonce":"caf\xc3\xa9","expires_at":"x"}',
        b'{"nonce":"a\\nb","expires_at":"x"}',
        b'{"nonce":5,"expires_at":"x"}',
        b'{"nonce":"abc"}',
        b"[]",
        b"not json",
    ],
)
def test_bad_challenge_answers(answer: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_challenge(answer)


# -- the fake directory checks what the real one will -------------------------------------------


async def post(client: httpx.AsyncClient, endpoint: str, body: object) -> httpx.Response:
    return await client.post(f"/api/registry/{endpoint}", json=body)


async def nonce(client: httpx.AsyncClient, key: NodeKey) -> str:
    answer = await post(client, "challenge", {"pubkey_b64": key.pubkey_b64})
    assert answer.status_code == 200
    return str(answer.json()["nonce"])


async def test_fake_directory_checks_nonces_and_signatures() -> None:
    directory = FakeDirectory(FakeTime())
    key, other = NodeKey.generate(), NodeKey.generate()
    async with httpx.AsyncClient(transport=directory.transport(), base_url="http://r") as c:
        good = register_body(key, PAYLOAD, await nonce(c, key))
        assert (await post(c, "register", good)).status_code == 200
        assert (await post(c, "register", good)).status_code == 400  # nonce spent
        tampered = register_body(key, PAYLOAD, await nonce(c, key))
        tampered["payload"] = {**PAYLOAD, "name": "n2"}
        assert (await post(c, "register", tampered)).status_code == 401
        foreign = register_body(key, PAYLOAD, await nonce(c, other))  # nonce for another key
        assert (await post(c, "register", foreign)).status_code == 400
        stolen = register_body(other, PAYLOAD, await nonce(c, other))
        assert (await post(c, "register", stolen)).status_code == 403  # host has another key
        floaty = {**PAYLOAD, "features": {"x": 0.5}}
        refused = await post(c, "register", register_body(key, PAYLOAD, await nonce(c, key)))
        assert refused.status_code == 200  # re-register: idempotent
        raw = {**register_body(key, PAYLOAD, await nonce(c, key)), "payload": floaty}
        assert (await post(c, "register", raw)).status_code == 400
        beat = heartbeat_body(key, "n1.example", await nonce(c, key))
        assert (await post(c, "heartbeat", beat)).status_code == 200
        assert (await post(c, "heartbeat", beat)).status_code == 401  # replayed
        wrong_host = heartbeat_body(key, "n2.example", await nonce(c, key))
        assert (await post(c, "heartbeat", wrong_host)).status_code == 401
        impostor = heartbeat_body(other, "n1.example", await nonce(c, other))
        assert (await post(c, "heartbeat", impostor)).status_code == 401
    assert directory.nodes["n1.example"].status == "online"


# -- the HTTP client ----------------------------------------------------------------------------


def client_for(handler: Any, **options: Any) -> DirectoryClient:
    return DirectoryClient(
        "https://registry.test/base/",
        NodeKey.generate(),
        transport=httpx.MockTransport(handler),
        **options,
    )


async def test_calls_go_under_the_base_url_without_following_redirects() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(307, headers={"location": "https://elsewhere.test/"})

    async with client_for(handler) as client:
        with pytest.raises(ServerError) as raised:
            await client.challenge()
    assert raised.value.status == 307
    assert seen == ["https://registry.test/base/api/registry/challenge"]


async def test_error_answers_carry_status_code_message_and_retry_after() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        error = {"error": {"code": "RATE_LIMITED", "message": "rate limited \u00e9\n"}}
        return httpx.Response(429, json=error, headers={"retry-after": "7"})

    async with client_for(handler) as client:
        with pytest.raises(ServerError) as raised:
            await client.register(PAYLOAD)
    error = raised.value
    assert (error.status, error.code, error.retry_after) == (429, "RATE_LIMITED", "7")
    assert error.message == "rate limited ??"  # printable ASCII only


async def test_answers_are_capped() -> None:
    def declared(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 2048)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 1000

    def chunked(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())  # streamed, no content-length

    def gzipped(request: httpx.Request) -> httpx.Response:
        body = gzip.compress(b'{"nonce":"abc","expires_at":"x"}')
        return httpx.Response(200, content=body, headers={"content-encoding": "gzip"})

    for handler, match in ((declared, "2048 bytes"), (chunked, "exceeds"), (gzipped, "compre")):
        async with client_for(handler, max_response_bytes=1024) as client:
            with pytest.raises(ProtocolError, match=match):
                await client.challenge()


async def test_slow_and_unreachable_registries_are_transport_errors() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with client_for(slow, timeout=0.2) as client:
        with pytest.raises(TransportError, match=r"no answer within 0\.2 s"):
            await client.challenge()
    async with client_for(refused) as client:
        with pytest.raises(TransportError, match="connection refused"):
            await client.heartbeat("n1.example")


def test_safe_text_is_short_printable_ascii() -> None:
    assert safe_text(b"ok \xff\n\x1b[31m") == "ok ???[31m"
    assert safe_text("a" * 500) == "a" * 160 + "..."
    assert len(safe_text("\u00e9" * 1000).encode()) <= 163
