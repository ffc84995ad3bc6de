"""docs/protocol.md cannot drift (issue 14): its test vectors, read from the page, are recomputed
here from the primitives (BLAKE3, X25519 and XChaCha20-Poly1305 and Ed25519 through PyNaCl,
SHA-256), each checked against registryd's own implementation where one exists; and every
route the app serves and every error code it sends is on the page."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import unicodedata
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import blake3
import pytest
from nacl import bindings
from nacl.signing import SigningKey, VerifyKey
from starlette.routing import Route

from registryd import errors, signed_op, wire
from registryd.canonical import canonical_json
from registryd.identity import PublicIdentity, signed_payload, user_id
from registryd.ownership import verify
from registryd.storage.memory import MemoryStorage
from tests.helpers import make_app, make_config

DOC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
BLOCKS = re.findall(r"^```vector (\w+)\n(.*?)^```$", DOC, re.M | re.S)
KINDS = {
    "user_ids": 1,
    "user_ids_rejected": 1,
    "user_ids_at_the_bound": 1,
    "envelope": 1,
    "reference_blind_index": 1,
    "signed_payload": 1,
    "identity_signature": 1,
    "signed_op": 3,
    "canonical_json": 1,
    "node_signatures": 1,
    "pow": 2,
}


def fields(body: str) -> dict[str, str]:
    """A block's ``name = value`` lines."""
    return dict(line.split(" = ", 1) for line in body.splitlines())


def blocks(kind: str) -> list[str]:
    return [body for name, body in BLOCKS if name == kind]


def vectors(kind: str) -> Iterator[dict[str, str]]:
    return (fields(body) for body in blocks(kind))


def one(kind: str) -> dict[str, str]:
    [found] = vectors(kind)
    return found


def utf8_inputs(kind: str) -> list[bytes]:
    """Lines ``(empty)``, ``HEX`` or ``HEX * N`` as bytes."""
    out = []
    for line in blocks(kind)[0].splitlines():
        text, _, times = line.partition(" * ")
        out.append(b"" if text == "(empty)" else bytes.fromhex(text) * int(times or 1))
    return out


# -- written from the definitions, not from registryd ------------------------------------------


def uid(raw: bytes) -> bytes:
    """UserId of a username given as UTF-8 (wire spec 1): Cc refused, trimmed, 1..64 bytes."""
    name = raw.decode()
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise ValueError("control character")
    name = name.strip()
    if not name or len(name.encode()) > 64:
        raise ValueError("length")
    return blake3.blake3(b"enigma:user_id:v1" + name.encode()).digest()


def u32(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def wire_json(value: dict[str, Any]) -> bytes:
    """Canonical JSON of a wire type: compact, the dict's own key order, raw UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def sorted_json(value: Any) -> bytes:
    """canonical_json of the directory: compact, keys sorted by code point, raw UTF-8; Python's
    escapes are serde_json's (\\" \\\\ \\b \\f \\n \\r \\t, other controls as lowercase \\u00xx)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- the page holds every vector -----------------------------------------------------------------


def test_the_page_holds_every_kind_of_vector() -> None:
    found = {kind: len(blocks(kind)) for kind in {name for name, _ in BLOCKS}}
    assert found == KINDS
    assert {v["op"] for v in vectors("signed_op")} == {"update", "delete", "presence"}


def test_user_ids() -> None:
    rows = [line.split() for line in blocks("user_ids")[0].splitlines()]
    assert len(rows) == 7
    for raw_hex, expected in rows:
        raw = bytes.fromhex(raw_hex)
        assert uid(raw).hex() == expected
        assert user_id(raw.decode()).hex() == expected  # registryd agrees
    for raw in utf8_inputs("user_ids_rejected"):
        with pytest.raises(ValueError):
            uid(raw)
        with pytest.raises(ValueError):
            user_id(raw.decode())
    for raw in utf8_inputs("user_ids_at_the_bound"):
        assert len(raw) == 64 and uid(raw) == user_id(raw.decode())


def test_the_envelope() -> None:
    v = one("envelope")
    server_private, client_private = (
        bytes.fromhex(v["server_private"]),
        bytes.fromhex(v["client_private"]),
    )
    assert bindings.crypto_scalarmult_base(server_private).hex() == v["server_public"]
    assert bindings.crypto_scalarmult_base(client_private).hex() == v["client_public"]
    shared = bindings.crypto_scalarmult(client_private, bytes.fromhex(v["server_public"]))
    assert shared == bindings.crypto_scalarmult(server_private, bytes.fromhex(v["client_public"]))
    assert shared.hex() == v["shared_secret"]
    handle = bytes.fromhex(v["handle"])
    assert handle == uid(b"alice")
    kdf = b"enigma:registry:envelope:v1" + bytes.fromhex(v["pepper"]) + handle + shared
    key = blake3.blake3(kdf).digest()
    assert key.hex() == v["aead_key"]
    plaintext = v["plaintext_text"].encode()
    identity = {
        "user_id": handle.hex(),
        "username_hint": "alice",
        "signing_public_key": [1, 2, 3],
        "encryption_public_key": [4, 5, 6],
        "signature": [7, 8, 9],
        "created_at_ms": 1,
    }
    assert wire_json(identity) == plaintext and len(plaintext) == 201
    sealed = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, handle, bytes.fromhex(v["nonce"]), key
    )
    assert base64.b64encode(sealed).decode() == v["ciphertext_b64"]
    assert len(sealed) == len(plaintext) + 16


def test_the_reference_blind_index() -> None:
    v = one("reference_blind_index")
    data = b"enigma:registry:blind:v1" + bytes.fromhex(v["pepper"]) + bytes.fromhex(v["user_id"])
    assert blake3.blake3(data).hexdigest() == v["blind"]


def test_signed_payload() -> None:
    v = one("signed_payload")
    spk, epk = bytes.fromhex(v["signing_public_key"]), bytes.fromhex(v["encryption_public_key"])
    expected = u32(v["hint_text"].encode()) + u32(spk) + u32(epk)
    assert expected.hex() == v["signed_payload"]
    assert signed_payload(v["hint_text"], spk, epk) == expected


def test_an_identity_signature_and_its_canonical_json() -> None:
    v = one("identity_signature")
    key = SigningKey(bytes.fromhex(v["ed25519_seed"]))
    spk = bytes(key.verify_key)
    epk = bindings.crypto_scalarmult_base(bytes.fromhex(v["x25519_private"]))
    assert (spk.hex(), epk.hex()) == (v["signing_public_key"], v["encryption_public_key"])
    payload = u32(v["hint_text"].encode()) + u32(spk) + u32(epk)
    assert payload.hex() == v["signed_payload"]
    signature = key.sign(payload).signature
    assert signature.hex() == v["signature"]
    identity = {
        "user_id": uid(v["hint_text"].encode()).hex(),
        "username_hint": v["hint_text"],
        "signing_public_key": list(spk),
        "encryption_public_key": list(epk),
        "signature": list(signature),
        "created_at_ms": int(v["created_at_ms"]),
    }
    text = v["canonical_json_text"].encode()
    assert wire_json(identity) == text
    parsed = wire.decode(text, PublicIdentity)
    assert parsed.to_json() == text and parsed.verify_signature()  # registryd agrees


def digest_input(spec: str) -> bytes:
    if spec == "(empty)":
        return b""
    if spec == "identity_signature.canonical_json_text":
        return one("identity_signature")["canonical_json_text"].encode()
    return spec.encode()


def test_signed_operations() -> None:
    for v in vectors("signed_op"):
        data = digest_input(v["digest_of"])
        digest = blake3.blake3(data).digest()
        assert digest.hex() == v["digest"], v["op"]
        if v["op"] == "presence":  # the canonical JSON of the Presence, fields in wire order
            body = json.loads(data)
            assert list(body) == ["user_id", "addr", "ts_ms"] and wire_json(body) == data
        handle = bytes.fromhex(v["handle"])
        ts_ms = int(v["ts_ms"])
        message = (
            b"registryd:" + v["op"].encode() + b":v1" + b"\x00" + handle
            + struct.pack(">Q", ts_ms) + digest
        )  # fmt: skip
        assert message.hex() == v["message"], v["op"]
        assert len(message) == len(f"registryd:{v['op']}:v1") + 1 + 32 + 8 + 32
        key = SigningKey(bytes.fromhex(v["ed25519_seed"]))
        signature = key.sign(message).signature
        assert signature.hex() == v["signature_hex"], v["op"]
        VerifyKey(bytes(key.verify_key)).verify(message, signature)
        # registryd agrees: the client's signer and the daemon's check
        assert signed_op.sign(key, v["op"], handle, ts_ms, digest) == signature
        assert verify(
            bytes(key.verify_key), signed_op.message(v["op"], handle, ts_ms, digest), signature
        )


def test_canonical_json_sorts_and_escapes_as_serde_json() -> None:
    v = one("canonical_json")
    value = json.loads(v["value_json"])
    expected = bytes.fromhex(v["canonical"])
    assert sorted_json(value) == expected
    assert canonical_json(value) == expected  # registryd agrees
    assert b"\\u0001" in expected and b"\x7f" in expected and "é".encode() in expected


def test_node_signatures() -> None:
    v = one("node_signatures")
    key = SigningKey(bytes.fromhex(v["ed25519_seed"]))
    assert base64.b64encode(bytes(key.verify_key)).decode() == v["pubkey_b64"]
    nonce = v["nonce_text"].encode()
    canonical = bytes.fromhex(one("canonical_json")["canonical"])
    assert key.sign(canonical + nonce).signature.hex() == v["register_signature"]
    assert key.sign(v["host_text"].encode() + nonce).signature.hex() == v["heartbeat_signature"]


def zero_bits(digest: bytes, difficulty: int) -> bool:
    full, rest = divmod(difficulty, 8)
    return not any(digest[:full]) and (rest == 0 or digest[full] >> (8 - rest) == 0)


def test_proof_of_work() -> None:
    for v in vectors("pow"):
        challenge, difficulty = v["challenge"], int(v["difficulty"])
        digest = hashlib.sha256(challenge.encode() + v["solution_text"].encode()).digest()
        assert digest.hex().startswith(v["sha256"]) and zero_bits(digest, difficulty)
        first = next(
            f"{n:x}"
            for n in count()
            if zero_bits(hashlib.sha256(f"{challenge}{n:x}".encode()).digest(), difficulty)
        )
        assert first == v["solution_text"]  # the smallest counter, as the reference solver
        assert v["header_text"] == f"x-enigma-pow: {challenge}:{first}"


# -- the page covers what the app serves -------------------------------------------------------


def test_every_route_the_app_serves_is_on_the_page() -> None:
    token = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
    config = make_config(tables=f'[pow]\nenabled = true\n[admin]\ntoken_hashes = ["{token}"]\n')
    app = make_app(config, MemoryStorage(config.index_key()))
    served = {
        f"{method} {route.path}"
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert len(served) >= 20  # the public, peer, directory and admin routes were all built
    missing = [route for route in sorted(served) if f"`{route}" not in DOC]
    assert missing == []


def test_every_error_code_is_on_the_page() -> None:
    classes: list[type[errors.ApiError]] = [errors.ApiError, *errors.ApiError.__subclasses__()]
    for cls in classes:
        assert f"| `{cls.code}` | {cls.status_code} |" in DOC, cls.__name__
