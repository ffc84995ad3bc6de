"""Signed operations (extensions spec §2): the message an owner signs, shared by the daemon
(:mod:`registryd.ownership`) and the client library.

``msg = b"registryd:" || OP || b":v1" || 0x00 || handle (32 B) || u64be(ts_ms) || digest (32 B)``
with ``OP`` one of ``update``, ``delete``, ``presence`` (ASCII) and ``digest`` the 32-byte
unkeyed BLAKE3 of the operation's canonical JSON (update: the new identity; delete: ``b""``;
presence: the Presence). The signature is Ed25519 (64 bytes) under the signing key of the
identity registered for the handle; ``ts_ms`` is Unix milliseconds.
"""

from __future__ import annotations

import struct

import blake3
from nacl.signing import SigningKey

from .errors import InvalidInput

UPDATE, DELETE, PRESENCE = "update", "delete", "presence"
OPS = (UPDATE, DELETE, PRESENCE)
SIGNATURE_HEADER = "x-registryd-signature"
SIGNATURE_LEN = 64
U64_MAX = 2**64 - 1
_U64 = struct.Struct(">Q")


def digest(data: bytes) -> bytes:
    """``H(data)``: the 32-byte unkeyed BLAKE3 hash."""
    return blake3.blake3(data).digest()


def message(op: str, handle: bytes, ts_ms: int, body_digest: bytes) -> bytes:
    """The bytes signed for ``op`` on the 32-byte ``handle`` at ``ts_ms`` (Unix ms, u64) over
    the 32-byte ``body_digest``; :class:`InvalidInput` for anything out of range."""
    if op not in OPS or len(handle) != 32 or len(body_digest) != 32 or not 0 <= ts_ms <= U64_MAX:
        raise InvalidInput("signed operation")
    return b"registryd:" + op.encode() + b":v1\x00" + handle + _U64.pack(ts_ms) + body_digest


def sign(key: SigningKey, op: str, handle: bytes, ts_ms: int, body_digest: bytes) -> bytes:
    """The 64-byte Ed25519 signature of :func:`message` under ``key``."""
    return key.sign(message(op, handle, ts_ms, body_digest)).signature
