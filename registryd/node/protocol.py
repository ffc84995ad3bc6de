"""The node directory protocol as a client speaks it (extensions spec §3.1-3.3): pure functions.

    POST /api/registry/challenge  {"pubkey_b64"}                          -> {"nonce", "expires_at"}
    POST /api/registry/register   {"payload", "nonce", "signature_b64", "pubkey_b64"}
        signature = Ed25519(canonical_json(payload) || utf8(nonce))
    POST /api/registry/heartbeat  {"host", "nonce", "signature_b64", "pubkey_b64"}
        signature = Ed25519(utf8(host) || utf8(nonce))

``pubkey_b64`` is the 32-byte public key and ``signature_b64`` the 64-byte signature, both in
standard padded base64. The messages are built here and nowhere else, so the registry's tests
can check them against the same functions.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from ..canonical import canonical_json
from ..errors import ProtocolError
from .keys import NodeKey

CHALLENGE_PATH = "/api/registry/challenge"
REGISTER_PATH = "/api/registry/register"
HEARTBEAT_PATH = "/api/registry/heartbeat"
MAX_NONCE_CHARS = 64


def register_message(payload: dict[str, Any], nonce: str) -> bytes:
    """``canonical_json(payload) || utf8(nonce)``, the bytes a register signature covers."""
    return canonical_json(payload) + nonce.encode("utf-8")


def heartbeat_message(host: str, nonce: str) -> bytes:
    """``utf8(host) || utf8(nonce)``, the bytes a heartbeat signature covers."""
    return host.encode("utf-8") + nonce.encode("utf-8")


def challenge_body(key: NodeKey) -> dict[str, str]:
    """The body of ``POST /api/registry/challenge``."""
    return {"pubkey_b64": key.pubkey_b64}


def register_body(key: NodeKey, payload: dict[str, Any], nonce: str) -> dict[str, Any]:
    """The signed body of ``POST /api/registry/register`` for ``payload`` and ``nonce``.

    Raises :class:`~registryd.errors.InvalidInput` if ``payload`` has no canonical JSON (a
    float, for one).
    """
    return {
        "payload": payload,
        "nonce": nonce,
        "signature_b64": _b64(key.sign(register_message(payload, nonce))),
        "pubkey_b64": key.pubkey_b64,
    }


def heartbeat_body(key: NodeKey, host: str, nonce: str) -> dict[str, str]:
    """The signed body of ``POST /api/registry/heartbeat`` for ``host`` and ``nonce``."""
    return {
        "host": host,
        "nonce": nonce,
        "signature_b64": _b64(key.sign(heartbeat_message(host, nonce))),
        "pubkey_b64": key.pubkey_b64,
    }


class _Challenge(msgspec.Struct):  # unknown fields ignored: a registry may add some
    nonce: str
    expires_at: str


def parse_challenge(body: bytes) -> str:
    """The nonce of a challenge answer: 1 to 64 printable ASCII characters (space included).

    Raises :class:`~registryd.errors.ProtocolError` for any other answer.
    """
    try:
        answer = msgspec.json.decode(body, type=_Challenge)
    except msgspec.DecodeError:
        raise ProtocolError("challenge answer is not {nonce, expires_at}") from None
    nonce = answer.nonce
    if not 0 < len(nonce) <= MAX_NONCE_CHARS or not all(" " <= c <= "~" for c in nonce):
        raise ProtocolError(f"challenge nonce is not 1 to {MAX_NONCE_CHARS} ASCII characters")
    return nonce


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
