"""An owner's client written from the spec pages alone (extensions spec §1, §2; wire spec §1,
§2, §4.2), for the ownership tests: it imports no registryd module, so those tests check the
daemon against the spec's bytes rather than against its own code.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import blake3
from nacl import bindings
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from tests.vectors import PEPPER


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def H(data: bytes) -> bytes:
    """The spec's ``H``: 32-byte unkeyed BLAKE3."""
    return blake3.blake3(data).digest()


def handle_of(name: str) -> bytes:
    """Wire spec §1 for an already normalized name."""
    return H(b"enigma:user_id:v1" + name.encode())


def canonical(obj: dict[str, Any]) -> bytes:
    """serde_json's compact form, keys in the given order, raw UTF-8 (wire spec §2)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def u32be_len(part: bytes) -> bytes:
    return struct.pack(">I", len(part)) + part


def op_message(op: str, handle: bytes, ts_ms: int, digest: bytes) -> bytes:
    """Extensions spec §2, byte for byte."""
    return (
        b"registryd:"
        + op.encode("ascii")
        + b":v1"
        + b"\x00"
        + handle
        + struct.pack(">Q", ts_ms)
        + digest
    )


def sign_hex(key: SigningKey, op: str, handle: bytes, ts_ms: int, digest: bytes) -> str:
    return key.sign(op_message(op, handle, ts_ms, digest)).signature.hex()


@dataclass
class Owner:
    """One user's keys; :meth:`identity` is its PublicIdentity as an ordered dict."""

    name: str
    signing: SigningKey = field(default_factory=SigningKey.generate)
    encryption: PrivateKey = field(default_factory=PrivateKey.generate)

    @property
    def handle(self) -> bytes:
        return handle_of(self.name)

    def identity(self, created_at_ms: int, *, hint: str | None = None) -> dict[str, Any]:
        hint = self.name if hint is None else hint
        spk = bytes(self.signing.verify_key)
        epk = bytes(self.encryption.public_key)
        payload = u32be_len(hint.encode()) + u32be_len(spk) + u32be_len(epk)  # wire spec §2
        return {
            "user_id": self.handle.hex(),
            "username_hint": hint,
            "signing_public_key": list(spk),
            "encryption_public_key": list(epk),
            "signature": list(self.signing.sign(payload).signature),
            "created_at_ms": created_at_ms,
        }

    def rotated(self) -> Owner:
        """The same name with fresh keys."""
        return Owner(self.name)


def aead_key(handle: bytes, private: bytes, public: bytes) -> bytes:
    shared = bindings.crypto_scalarmult(private, public)
    return H(b"enigma:registry:envelope:v1" + PEPPER + handle + shared)


def seal_envelope(server: dict[str, Any], handle: bytes, plaintext: bytes) -> dict[str, str]:
    """Wire spec §4.2, client to server, to ``server`` (a ``/envelope_pubkey`` answer)."""
    private = os.urandom(32)
    public = bindings.crypto_scalarmult_base(private)
    key = aead_key(handle, private, bytes.fromhex(server["x25519_public_key_hex"]))
    nonce = os.urandom(24)
    ciphertext = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, handle, nonce, key)
    return {
        "kid": server["kid_hex"],
        "sender_pubkey": public.hex(),
        "nonce": nonce.hex(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }


def lookup_body(handle: bytes) -> tuple[bytes, dict[str, str]]:
    """(requester private key, a /resolve or /presence/resolve body)."""
    private = os.urandom(32)
    public = bindings.crypto_scalarmult_base(private)
    return private, {"handle": handle.hex(), "requester_ephemeral_pubkey_hex": public.hex()}


def open_answer(private: bytes, handle: bytes, answer: dict[str, Any]) -> Any:
    """The JSON sealed in a resolve-shaped answer (wire spec §4.2, server to client), or None
    when the envelope is null or holds a constant-shape miss (not JSON)."""
    envelope = answer["envelope"]
    if envelope is None:
        return None
    key = aead_key(handle, private, bytes.fromhex(envelope["sender_pubkey"]))
    plaintext = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        base64.b64decode(envelope["ciphertext"]), handle, bytes.fromhex(envelope["nonce"]), key
    )
    try:
        return json.loads(plaintext)
    except ValueError:
        return None
