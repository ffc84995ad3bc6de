"""Endpoint behaviour (spec 4.5, 4.6) through the in-process app, over every storage backend,
with the reference's behaviour (``[identity] verify_signatures = false``, ``[presence]
accept_unsigned = true``; tests/test_ownership*.py cover the extensions)."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from argon2 import PasswordHasher

from registryd import config as config_mod
from registryd.config import Config
from registryd.envelope import open_sealed, seal, shared_key, x25519_keypair, x25519_public
from registryd.identity import PublicIdentity, user_id
from registryd.wire import Envelope
from tests.helpers import Clock, app_client, backend_of, config_text, error
from tests.vectors import (
    ALICE_HANDLE_HEX,
    CLIENT_PRIVATE,
    CLIENT_PUBLIC_HEX,
    KID_HEX,
    PEPPER,
    SERVER_PUBLIC_HEX,
)
from tests.vectors import PLAINTEXT as SPEC_PLAINTEXT
from tests.vectors import REGISTER_BODY as SPEC_REGISTER_BODY

TOKEN = "peer-token-0123456789"
TOKEN_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(TOKEN)
AUTH = {"authorization": f"Bearer {TOKEN}"}

KID2_HEX = "1111111111111111"
SERVER2_PRIVATE = bytes(range(0x40, 0x60))


def identity(name: str, **overrides: Any) -> PublicIdentity:
    fields: dict[str, Any] = {
        "user_id": user_id(name).hex(),
        "signing_public_key": [1, 2, 3],
        "encryption_public_key": [4, 5, 6],
        "signature": [7, 8, 9],
        "created_at_ms": 1,
        "username_hint": name,
    }
    fields.update(overrides)
    return PublicIdentity(**fields)


def register_body(
    plaintext: bytes,
    handle: bytes,
    *,
    kid_hex: str = KID_HEX,
    server_public_hex: str = SERVER_PUBLIC_HEX,
) -> dict[str, Any]:
    """A /register body sealing ``plaintext`` to a server key from a fresh client key."""
    private, public = x25519_keypair()
    key = shared_key(PEPPER, handle, private, bytes.fromhex(server_public_hex))
    nonce, ciphertext = seal(key, handle, plaintext)
    envelope = Envelope.build(bytes.fromhex(kid_hex), public, nonce, ciphertext)
    return {"handle": handle.hex(), "envelope": msgspec.to_builtins(envelope)}


def open_padded(envelope: dict[str, Any], handle: bytes, requester_private: bytes) -> bytes:
    """The plaintext of a resolve envelope, padding included."""
    key = shared_key(PEPPER, handle, requester_private, bytes.fromhex(envelope["sender_pubkey"]))
    ciphertext = base64.b64decode(envelope["ciphertext"], validate=True)
    return open_sealed(key, handle, bytes.fromhex(envelope["nonce"]), ciphertext)


def open_resolution(envelope: dict[str, Any], handle: bytes, requester_private: bytes) -> bytes:
    """The identity JSON of a constant-shape resolve hit, after checking its padding."""
    plaintext = open_padded(envelope, handle, requester_private)
    assert len(plaintext) == 1024  # the first size bucket
    identity = plaintext.rstrip(b" ")
    assert plaintext == identity.ljust(1024, b" ")
    return identity


def config_for(backend: Config, *, extra: str = "", tail: str = "") -> str:
    return config_text(**backend_of(backend), extra=extra, reference=True) + tail


@pytest.fixture
def backend_config(backend_config: Config) -> Config:
    """These tests check the reference's behaviour with the spec's vectors (junk signatures,
    unsigned announces): extensions spec §1 and §2.3 are switched off."""
    return config_mod.parse(config_for(backend_config))


PEERS = f'[peers]\ntoken_hashes = ["{TOKEN_HASH}"]\n'


@contextlib.asynccontextmanager
async def serve(text: str, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client for an app built from config ``text`` (its own storage)."""
    async with app_client(config_mod.parse(text), clock=clock) as c:
        yield c


# -- register / resolve / check_user / announce ---------------------------------------------


async def test_register_spec_body_then_conflict(api: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    response = await api.post("/register", content=SPEC_REGISTER_BODY, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"ok": True}

    # byte-for-byte the same identity: idempotent (extensions spec §1); another one: 409
    again = await api.post("/register", content=SPEC_REGISTER_BODY, headers=headers)
    assert again.status_code == 200 and again.json() == {"ok": True}
    other = register_body(identity("alice", created_at_ms=2).to_json(), user_id("alice"))
    taken = await api.post("/register", json=other)
    assert taken.status_code == 409
    assert taken.json() == error("CONFLICT", "conflict")


async def test_resolve_returns_sealed_identity(api: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    assert (
        await api.post("/register", content=SPEC_REGISTER_BODY, headers=headers)
    ).status_code == 200

    sent_handle = ALICE_HANDLE_HEX.upper()
    response = await api.post(
        "/resolve",
        json={"handle": sent_handle, "requester_ephemeral_pubkey_hex": CLIENT_PUBLIC_HEX},
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"handle", "envelope"}
    assert body["handle"] == sent_handle  # echoed as sent
    envelope = body["envelope"]
    assert set(envelope) == {"kid", "sender_pubkey", "nonce", "ciphertext"}
    assert envelope["sender_pubkey"] == SERVER_PUBLIC_HEX
    assert envelope["kid"] == KID_HEX
    assert len(bytes.fromhex(envelope["nonce"])) == 24
    plaintext = open_resolution(envelope, bytes.fromhex(ALICE_HANDLE_HEX), CLIENT_PRIVATE)
    assert plaintext == SPEC_PLAINTEXT


async def test_resolve_uses_a_fresh_nonce_each_time(api: httpx.AsyncClient) -> None:
    handle = bytes.fromhex(ALICE_HANDLE_HEX)
    assert (
        await api.post("/register", json=register_body(SPEC_PLAINTEXT, handle))
    ).status_code == 200
    request = {"handle": ALICE_HANDLE_HEX, "requester_ephemeral_pubkey_hex": CLIENT_PUBLIC_HEX}
    first = (await api.post("/resolve", json=request)).json()["envelope"]
    second = (await api.post("/resolve", json=request)).json()["envelope"]
    assert first["nonce"] != second["nonce"]
    assert open_resolution(first, handle, CLIENT_PRIVATE) == SPEC_PLAINTEXT
    assert open_resolution(second, handle, CLIENT_PRIVATE) == SPEC_PLAINTEXT


async def test_resolve_miss_is_shaped_like_a_hit(api: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    assert (await api.post("/register", content=SPEC_REGISTER_BODY, headers=headers)).is_success
    bob = user_id("bob").hex()
    hit, miss = [
        await api.post(
            "/resolve", json={"handle": h, "requester_ephemeral_pubkey_hex": CLIENT_PUBLIC_HEX}
        )
        for h in (ALICE_HANDLE_HEX, bob)
    ]
    assert hit.status_code == miss.status_code == 200
    assert dict(hit.headers) == dict(miss.headers)  # same header set and content-length
    assert len(hit.content) == len(miss.content)
    envelope = miss.json()["envelope"]
    assert set(envelope) == {"kid", "sender_pubkey", "nonce", "ciphertext"}
    plaintext = open_padded(envelope, bytes.fromhex(bob), CLIENT_PRIVATE)
    assert len(plaintext) == 1024  # the same bucket as the hit
    with pytest.raises(ValueError):
        msgspec.json.decode(plaintext)  # random bytes: a client reports "not found"


async def test_resolve_miss_is_null_without_constant_shape(
    backend_config: Config, clock: Clock
) -> None:
    text = config_for(backend_config, tail="[privacy]\nconstant_shape_resolve = false\n")
    async with serve(text, clock) as api:
        bob = user_id("bob").hex()
        response = await api.post(
            "/resolve", json={"handle": bob, "requester_ephemeral_pubkey_hex": CLIENT_PUBLIC_HEX}
        )
    assert response.status_code == 200
    assert response.json() == {"handle": bob, "envelope": None}


async def test_check_user_can_be_switched_off(backend_config: Config, clock: Clock) -> None:
    text = config_for(backend_config, tail="[privacy]\ncheck_user_enabled = false\n")
    async with serve(text, clock) as api:
        response = await api.get(f"/check_user/{ALICE_HANDLE_HEX}")
    assert response.status_code == 404
    assert response.json() == error("NOT_FOUND", "not found")


async def test_register_stores_canonical_json(api: httpx.AsyncClient) -> None:
    name = "Зоё"
    handle = user_id(name)
    sent = identity(name, user_id=handle.hex().upper())
    sent_json = msgspec.json.encode(msgspec.to_builtins(sent))  # upper-case id, other key order
    response = await api.post("/register", json=register_body(sent_json, handle))
    assert response.status_code == 200

    requester_private, requester_public = x25519_keypair()
    response = await api.post(
        "/resolve",
        json={"handle": handle.hex(), "requester_ephemeral_pubkey_hex": requester_public.hex()},
    )
    plaintext = open_resolution(response.json()["envelope"], handle, requester_private)
    expected = (
        '{"user_id":"' + handle.hex() + '","username_hint":"Зоё","signing_public_key":[1,2,3],'
        '"encryption_public_key":[4,5,6],"signature":[7,8,9],"created_at_ms":1}'
    ).encode()
    assert plaintext == expected


async def test_check_user(api: httpx.AsyncClient) -> None:
    assert (await api.get(f"/check_user/{ALICE_HANDLE_HEX}")).json() == {"exists": False}
    headers = {"content-type": "application/json"}
    assert (
        await api.post("/register", content=SPEC_REGISTER_BODY, headers=headers)
    ).status_code == 200
    for handle in (ALICE_HANDLE_HEX, ALICE_HANDLE_HEX.upper()):
        response = await api.get(f"/check_user/{handle}")
        assert response.status_code == 200
        assert response.json() == {"exists": True}
    assert (await api.get(f"/check_user/{user_id('bob').hex()}")).json() == {"exists": False}


async def test_announce_ok(api: httpx.AsyncClient, clock: Clock) -> None:
    response = await api.post(
        "/announce",
        json={
            "user_id": ALICE_HANDLE_HEX,
            "addr": "wss://alice.example.com",
            "ts_ms": clock.now_ms,
        },
    )
    assert response.status_code == 200
    assert response.json() == {"ok": True}


async def test_register_handle_mismatch(api: httpx.AsyncClient) -> None:
    alice = bytes.fromhex(ALICE_HANDLE_HEX)
    bob_json = identity("bob").to_json()  # valid, but for another handle
    response = await api.post("/register", json=register_body(bob_json, alice))
    assert response.status_code == 400
    assert response.json() == error(
        "INVALID_INPUT", "invalid input: handle does not match identity"
    )
    assert (await api.get(f"/check_user/{ALICE_HANDLE_HEX}")).json() == {"exists": False}


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"signing_public_key": []}, id="empty-signing-key"),
        pytest.param({"encryption_public_key": []}, id="empty-encryption-key"),
        pytest.param({"signature": []}, id="empty-signature"),
        pytest.param({"created_at_ms": 0}, id="created-at-zero"),
        pytest.param({"username_hint": "\talice"}, id="hint-control-char"),
        pytest.param({"username_hint": "   "}, id="hint-blank"),
        pytest.param({"username_hint": "a" * 65}, id="hint-65-bytes"),
    ],
)
async def test_register_invalid_identity(api: httpx.AsyncClient, overrides: dict[str, Any]) -> None:
    alice = bytes.fromhex(ALICE_HANDLE_HEX)
    plaintext = identity("alice", **overrides).to_json()
    response = await api.post("/register", json=register_body(plaintext, alice))
    assert response.status_code == 400
    assert response.json() == error("INVALID_INPUT", "invalid input: identity")
    assert (await api.get(f"/check_user/{ALICE_HANDLE_HEX}")).json() == {"exists": False}


async def test_register_hint_is_not_checked_against_user_id(api: httpx.AsyncClient) -> None:
    alice = bytes.fromhex(ALICE_HANDLE_HEX)
    plaintext = identity("alice", username_hint="somebody else").to_json()
    response = await api.post("/register", json=register_body(plaintext, alice))
    assert response.status_code == 200


async def test_register_unknown_kid(api: httpx.AsyncClient) -> None:
    alice = bytes.fromhex(ALICE_HANDLE_HEX)
    body = register_body(SPEC_PLAINTEXT, alice, kid_hex="0706050403020100")
    response = await api.post("/register", json=body)
    assert response.status_code == 400
    assert response.json() == error("INVALID_INPUT", "invalid input: unable to decrypt envelope")


async def test_register_sealed_to_another_key_fails_to_decrypt(api: httpx.AsyncClient) -> None:
    alice = bytes.fromhex(ALICE_HANDLE_HEX)
    other_public = x25519_keypair()[1].hex()
    body = register_body(SPEC_PLAINTEXT, alice, server_public_hex=other_public)
    response = await api.post("/register", json=body)
    assert response.status_code == 400
    assert response.json() == error("INVALID_INPUT", "invalid input: unable to decrypt envelope")


async def test_register_envelope_for_another_handle_fails_to_decrypt(
    api: httpx.AsyncClient,
) -> None:
    alice, bob = bytes.fromhex(ALICE_HANDLE_HEX), user_id("bob")
    body = register_body(identity("bob").to_json(), alice)  # sealed with AAD = alice
    body["handle"] = bob.hex()
    response = await api.post("/register", json=body)
    assert response.status_code == 400
    assert response.json() == error("INVALID_INPUT", "invalid input: unable to decrypt envelope")


# -- envelope keys --------------------------------------------------------------------------


async def test_envelope_pubkey_shapes(api: httpx.AsyncClient) -> None:
    expected = {"kid_hex": KID_HEX, "x25519_public_key_hex": SERVER_PUBLIC_HEX, "active": True}
    one = await api.get("/envelope_pubkey")
    assert one.status_code == 200
    assert one.json() == expected
    all_keys = await api.get("/envelope_pubkeys")
    assert all_keys.status_code == 200
    assert all_keys.json() == [expected]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _two_key_config(
    backend: Config, not_after: int, *, second_active: bool, extra: str = ""
) -> str:
    text = config_for(backend, extra=extra).replace(
        "active = true\n", f"active = true\nnot_after_epoch_ms = {not_after}\n", 1
    )
    return text + (
        f'[[envelope.keys]]\nkid_hex = "{KID2_HEX}"\n'
        f'x25519_private_key_hex = "{SERVER2_PRIVATE.hex()}"\n'
        f"active = {'true' if second_active else 'false'}\n"
    )


async def test_envelope_pubkeys_with_expiry_and_inactive_key(
    backend_config: Config, clock: Clock
) -> None:
    not_after = _wall_ms() + 86_400_000
    async with serve(_two_key_config(backend_config, not_after, second_active=False), clock) as api:
        assert (await api.get("/envelope_pubkey")).json() == {
            "kid_hex": KID_HEX,
            "x25519_public_key_hex": SERVER_PUBLIC_HEX,
            "active": True,
            "not_after_epoch_ms": not_after,
        }
        assert (await api.get("/envelope_pubkeys")).json() == [
            {
                "kid_hex": KID_HEX,
                "x25519_public_key_hex": SERVER_PUBLIC_HEX,
                "active": True,
                "not_after_epoch_ms": not_after,
            },
            {
                "kid_hex": KID2_HEX,
                "x25519_public_key_hex": x25519_public(SERVER2_PRIVATE).hex(),
                "active": False,
            },
        ]
        # An inactive, unexpired key still decrypts registrations (spec 4.4).
        alice = bytes.fromhex(ALICE_HANDLE_HEX)
        body = register_body(
            SPEC_PLAINTEXT,
            alice,
            kid_hex=KID2_HEX,
            server_public_hex=x25519_public(SERVER2_PRIVATE).hex(),
        )
        assert (await api.post("/register", json=body)).status_code == 200


async def test_key_rotation_follows_the_app_clock(backend_config: Config, clock: Clock) -> None:
    """Every endpoint judges key expiry by the app's clock, so they agree on the active key."""
    not_after = _wall_ms() + 86_400_000
    second_public = x25519_public(SERVER2_PRIVATE).hex()
    resolve = {"handle": ALICE_HANDLE_HEX, "requester_ephemeral_pubkey_hex": CLIENT_PUBLIC_HEX}
    async with serve(_two_key_config(backend_config, not_after, second_active=True), clock) as api:
        clock.now_ms = not_after - 1_000
        assert (await api.get("/envelope_pubkey")).json()["kid_hex"] == KID_HEX
        first = register_body(SPEC_PLAINTEXT, bytes.fromhex(ALICE_HANDLE_HEX))
        assert (await api.post("/register", json=first)).status_code == 200
        assert (await api.post("/resolve", json=resolve)).json()["envelope"]["kid"] == KID_HEX

        clock.now_ms = not_after + 1  # the first key has expired
        assert (await api.get("/envelope_pubkey")).json()["kid_hex"] == KID2_HEX
        envelope = (await api.post("/resolve", json=resolve)).json()["envelope"]
        assert (envelope["kid"], envelope["sender_pubkey"]) == (KID2_HEX, second_public)
        bob = user_id("bob")
        late = register_body(identity("bob").to_json(), bob)  # sealed to the expired key
        response = await api.post("/register", json=late)
        message = "invalid input: unable to decrypt envelope"
        assert response.json() == error("INVALID_INPUT", message)
        fresh = register_body(
            identity("bob").to_json(), bob, kid_hex=KID2_HEX, server_public_hex=second_public
        )
        assert (await api.post("/register", json=fresh)).status_code == 200


# -- nodes and sync: peers only -------------------------------------------------------------


async def test_get_nodes_empty(api: httpx.AsyncClient) -> None:
    response = await api.get("/nodes")
    assert response.status_code == 200
    assert response.json() == {"nodes": []}


async def test_peer_endpoints_refuse_without_authentication(api: httpx.AsyncClient) -> None:
    nodes = await api.post("/nodes", json={"nodes": [{"base_url": "https://a.example"}]})
    assert nodes.status_code == 401
    assert nodes.json() == error("UNAUTHORIZED", "unauthorized")
    sync = await api.post("/sync", json={"identities": []})
    assert sync.status_code == 401
    assert sync.json() == error("UNAUTHORIZED", "unauthorized")
    assert (await api.get("/nodes")).json() == {"nodes": []}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"authorization": "Bearer wrong-token"}, id="wrong-token"),
        pytest.param({"authorization": f"Basic {TOKEN}"}, id="wrong-scheme"),
        pytest.param({"authorization": f"Bearer {TOKEN}x"}, id="token-suffix"),
        pytest.param({"authorization": "Bearer "}, id="empty-token"),
        pytest.param({"authorization": TOKEN}, id="no-scheme"),
    ],
)
async def test_peer_token_rejected(
    backend_config: Config, clock: Clock, headers: dict[str, str]
) -> None:
    text = config_for(backend_config, extra="allow_sync = true", tail=PEERS)
    async with serve(text, clock) as api:
        bodies: list[tuple[str, dict[str, list[object]]]] = [
            ("/nodes", {"nodes": []}),
            ("/sync", {"identities": []}),
        ]
        for path, body in bodies:
            response = await api.post(path, json=body, headers=headers)
            assert response.status_code == 401, path
            assert response.json() == error("UNAUTHORIZED", "unauthorized")


async def test_peer_token_accepted(backend_config: Config, clock: Clock) -> None:
    text = config_for(backend_config, extra="allow_sync = true", tail=PEERS)
    async with serve(text, clock) as api:
        nodes = await api.post(
            "/nodes", json={"nodes": [{"base_url": "https://a.example"}]}, headers=AUTH
        )
        assert nodes.status_code == 200
        assert nodes.json() == {"merged": 1}
        sync = await api.post("/sync", json={"identities": []}, headers=AUTH)
        assert sync.status_code == 200
        assert sync.json() == {"merged": 0}
        lower = {"authorization": f"bearer {TOKEN}"}
        assert (await api.post("/sync", json={"identities": []}, headers=lower)).status_code == 200


async def test_sync_needs_allow_sync_even_with_a_token(
    backend_config: Config, clock: Clock
) -> None:
    async with serve(config_for(backend_config, tail=PEERS), clock) as api:
        response = await api.post("/sync", json={"identities": []}, headers=AUTH)
        assert response.status_code == 401
        assert response.json() == error("UNAUTHORIZED", "unauthorized")


async def test_sync_merges_valid_new_identities(backend_config: Config, clock: Clock) -> None:
    text = config_for(backend_config, extra="allow_sync = true", tail=PEERS)
    async with serve(text, clock) as api:
        headers = {"content-type": "application/json"}
        assert (
            await api.post("/register", content=SPEC_REGISTER_BODY, headers=headers)
        ).status_code == 200
        bob = identity("bob", user_id=user_id("bob").hex().upper())
        identities = [
            identity("alice", signature=[42]),  # exists already: skipped, original kept
            bob,
            identity("carol", signature=[]),  # invalid: skipped silently
            identity("dave", created_at_ms=0),  # invalid: skipped silently
            identity("erin"),
        ]
        payload = {"identities": [msgspec.to_builtins(i) for i in identities]}
        response = await api.post("/sync", json=payload, headers=AUTH)
        assert response.status_code == 200
        assert response.json() == {"merged": 2}

        for name, exists in [
            ("alice", True),
            ("bob", True),
            ("carol", False),
            ("dave", False),
            ("erin", True),
        ]:
            check = await api.get(f"/check_user/{user_id(name).hex()}")
            assert check.json() == {"exists": exists}, name

        requester_private, requester_public = x25519_keypair()
        for name, expected in [("alice", SPEC_PLAINTEXT), ("bob", identity("bob").to_json())]:
            handle = user_id(name)
            resolved = await api.post(
                "/resolve",
                json={
                    "handle": handle.hex(),
                    "requester_ephemeral_pubkey_hex": requester_public.hex(),
                },
            )
            assert (
                open_resolution(resolved.json()["envelope"], handle, requester_private) == expected
            )

        again = await api.post("/sync", json=payload, headers=AUTH)
        assert again.json() == {"merged": 0}


async def test_post_nodes_is_all_or_nothing(backend_config: Config, clock: Clock) -> None:
    async with serve(config_for(backend_config, tail=PEERS), clock) as api:
        payload = {"nodes": [{"base_url": "https://ok.example"}, {"base_url": "ftp://bad.example"}]}
        response = await api.post("/nodes", json=payload, headers=AUTH)
        assert response.status_code == 400
        assert response.json() == error("INVALID_INPUT", "invalid input: node")
        assert (await api.get("/nodes")).json() == {"nodes": []}


async def test_post_nodes_dedupes_and_trims(backend_config: Config, clock: Clock) -> None:
    async with serve(config_for(backend_config, tail=PEERS), clock) as api:
        urls = [" https://a.example ", "https://a.example", "http://b.example\n", "http://"]
        payload = {"nodes": [{"base_url": url} for url in urls]}
        response = await api.post("/nodes", json=payload, headers=AUTH)
        assert response.status_code == 200
        assert response.json() == {"merged": 3}
        expected = ["https://a.example", "http://b.example", "http://"]
        assert (await api.get("/nodes")).json() == {"nodes": [{"base_url": u} for u in expected]}
        again = await api.post(
            "/nodes", json={"nodes": [{"base_url": "https://a.example"}]}, headers=AUTH
        )
        assert again.json() == {"merged": 0}


@pytest.mark.parametrize(("max_nodes", "cap"), [(2, 2), (0, 1)])
async def test_post_nodes_caps_at_max_nodes(
    backend_config: Config, clock: Clock, max_nodes: int, cap: int
) -> None:
    text = config_for(backend_config, extra=f"max_nodes = {max_nodes}", tail=PEERS)
    async with serve(text, clock) as api:
        urls = ["https://1.example", "https://2.example", "https://3.example"]
        response = await api.post(
            "/nodes", json={"nodes": [{"base_url": u} for u in urls]}, headers=AUTH
        )
        assert response.json() == {"merged": cap}
        more = await api.post(
            "/nodes", json={"nodes": [{"base_url": "https://4.example"}]}, headers=AUTH
        )
        assert more.json() == {"merged": 0}
        assert (await api.get("/nodes")).json() == {"nodes": [{"base_url": u} for u in urls[:cap]]}


@pytest.mark.parametrize("pad", [1024, 4096])
async def test_hits_and_misses_share_length_over_the_size_buckets(
    backend_config: Config, clock: Clock, pad: int
) -> None:
    """Identities of every size up to the bucket answer exactly like a miss: same status,
    header set and body length. An identity past it lands in a larger bucket."""
    text = config_for(backend_config, tail=f"[privacy]\nresolve_pad_bytes = {pad}\n")
    requester_private, requester_public = x25519_keypair()
    ask = {"requester_ephemeral_pubkey_hex": requester_public.hex()}
    async with serve(text, clock) as api:
        sizes = {}
        for n, key_len in enumerate([1, 32, 100, (pad - 300) // 8, (pad - 200) // 4]):
            name = f"sized-{n}"
            ident = identity(name, signing_public_key=[255] * key_len)
            response = await api.post(
                "/register", json=register_body(ident.to_json(), ident.handle)
            )
            assert response.status_code == 200
            sizes[name] = len(ident.to_json())
        assert max(sizes.values()) <= pad < 2 * max(sizes.values())  # the sizes span the bucket
        miss = await api.post("/resolve", json={**ask, "handle": user_id("absent").hex()})
        for name in sizes:
            hit = await api.post("/resolve", json={**ask, "handle": user_id(name).hex()})
            assert hit.status_code == miss.status_code == 200
            assert dict(hit.headers) == dict(miss.headers)
            assert len(hit.content) == len(miss.content)
            plaintext = open_padded(hit.json()["envelope"], user_id(name), requester_private)
            assert len(plaintext) == pad and len(plaintext.rstrip(b" ")) == sizes[name]
        big = identity("too-big", signing_public_key=[255] * pad)
        assert (
            await api.post("/register", json=register_body(big.to_json(), big.handle))
        ).is_success
        hit = await api.post("/resolve", json={**ask, "handle": big.user_id})
        assert len(hit.content) > len(miss.content)
