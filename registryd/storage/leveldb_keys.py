"""The LevelDB backend's key layout (:mod:`registryd.storage.leveldb`), and the decoding of
one entry into an export record (P20).

Key layout (every key after its one-byte prefix is binary):

    b"\\x00schema_version"        → SCHEMA_VERSION
    b"i" + blind                  → sealed identity
    b"p" + blind                  → expiry_be64 + sealed presence
    b"x" + expiry_be64 + blind    → b""   (expiry index: GC walks it in order, O(expired))
    b"n" + seq_be64               → node base URL (UTF-8; public data)
    b"o" + blind                  → expiry_be64 (0: none) + sealed ops (extensions spec §2)
    b"t" + expiry_be64 + blind    → b""   (ops expiry index: tombstones, purged in order)

Node directory (extensions spec §3; public data except the sealed contact email):

    b"Dn" + host (UTF-8)          → pubkey (32) + record_len_be32 + record + sealed contact
    b"Dk" + pubkey (32)           → host (UTF-8)   (one host per key)
    b"Ds" + nonce_id (16)         → expiry_be64    (challenge spent set)
    b"De" + expiry_be64 + nonce_id → b""           (spent-set expiry index, purged in order)
"""

from __future__ import annotations

import struct

from .records import (
    DNODE_RECORD,
    IDENTITY_RECORD,
    NODE_RECORD,
    NONCE_RECORD,
    OPS_RECORD,
    PRESENCE_RECORD,
    Record,
)

SCHEMA_KEY = b"\x00schema_version"
IDENT, PRES, EXPIRY, NODE = b"i", b"p", b"x", b"n"
OPS, TOMB = b"o", b"t"
BE64 = struct.Struct(">Q")
DNODE, DKEY, DSPENT, DSPENT_EXPIRY = b"Dn", b"Dk", b"Ds", b"De"


def record_of(key: bytes, value: bytes, now_ms: int) -> Record | None:
    """The export record of one LevelDB entry, or None (indexes, schema, expired)."""
    prefix = key[:1]
    if prefix == IDENT:
        return Record(IDENTITY_RECORD, key[1:], value)
    if prefix == PRES:
        expiry = BE64.unpack(value[:8])[0]
        return Record(PRESENCE_RECORD, key[1:], value[8:], expiry) if expiry > now_ms else None
    if prefix == NODE:
        return Record(NODE_RECORD, value, b"")
    if key[:2] == DNODE:
        return Record(DNODE_RECORD, key[2:], value)
    if prefix == OPS:
        expiry = BE64.unpack(value[:8])[0]
        if expiry and expiry <= now_ms:
            return None
        return Record(OPS_RECORD, key[1:], value[8:], expiry or None)
    if key[:2] == DSPENT:
        expiry = BE64.unpack(value)[0]
        return Record(NONCE_RECORD, key[2:], b"", expiry) if expiry > now_ms else None
    return None
