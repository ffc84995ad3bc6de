"""The value types of the storage interface (:mod:`registryd.storage.base`): node directory
entries and spend results (extensions spec §3), the records export and import move (P20, P21),
and the slots, swaps and reads of a handle's owned records (extensions spec §2, P15-P19)."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import NamedTuple

SLOT_IDENTITY, SLOT_PRESENCE, SLOT_OPS = b"i", b"p", b"o"
SLOTS = (SLOT_IDENTITY, SLOT_PRESENCE, SLOT_OPS)

# -- node directory (extensions spec §3) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DirectoryNode:
    """A node directory entry: its ``host`` (the unique key), its 32-byte Ed25519 ``pubkey``,
    the public ``record`` (opaque bytes, JSON from :mod:`registryd.directory`) and the
    ``contact`` email (UTF-8; ``b""`` when listed without contacts)."""

    host: str
    pubkey: bytes
    record: bytes
    contact: bytes = b""


class Spend(enum.Enum):
    """What :meth:`Storage.spend_nonce` did: spent it now, found it spent, or found no room."""

    SPENT = "spent"
    REPLAYED = "replayed"
    FULL = "full"


# -- end of node directory --------------------------------------------------------------------

# -- export and import (P20, P21) ---------------------------------------------------------------

IDENTITY_RECORD = "identity"  # key: blind (32), value: sealed identity
PRESENCE_RECORD = "presence"  # key: blind (32), value: sealed presence; expiry
NODE_RECORD = "node"  # key: base URL (UTF-8), value: b""; yielded in insertion order
DNODE_RECORD = "directory-node"  # key: host (UTF-8), value: pack_dnode(...)
NONCE_RECORD = "spent-nonce"  # key: nonce id (16), value: b""; expiry
OPS_RECORD = "ops"  # key: blind (32), value: sealed ops (P15); expiry, None if it never expires
RECORD_KINDS = (
    IDENTITY_RECORD,
    PRESENCE_RECORD,
    NODE_RECORD,
    DNODE_RECORD,
    NONCE_RECORD,
    OPS_RECORD,
)
_BE32 = struct.Struct(">I")


class Record(NamedTuple):
    """One stored record, backend-neutral, as export and import move it (P20, P21): ``kind``
    (one of :data:`RECORD_KINDS`), ``key`` and ``value`` bytes (see the kinds' comments;
    sealed values stay sealed) and ``expires_at_ms`` (Unix ms) for presences and spent
    nonces, None otherwise."""

    kind: str
    key: bytes
    value: bytes
    expires_at_ms: int | None = None


def pack_dnode(pubkey: bytes, record: bytes, sealed: bytes) -> bytes:
    """A directory node's value: ``pubkey (32) || len(record) (be32) || record || sealed``."""
    return pubkey + _BE32.pack(len(record)) + record + sealed


def unpack_dnode(value: bytes) -> tuple[bytes, bytes, bytes]:
    """(pubkey, record, sealed contact) from :func:`pack_dnode`'s bytes; ValueError if short."""
    if len(value) < 36 or len(value) < 36 + _BE32.unpack(value[32:36])[0]:
        raise ValueError("a directory node value is shorter than its lengths say")
    end = 36 + _BE32.unpack(value[32:36])[0]
    return value[:32], value[36:end], value[end:]


@dataclass(frozen=True, slots=True)
class Swap:
    """One slot of a :meth:`Storage._swap` (P16): ``slot`` is ``SLOT_IDENTITY``,
    ``SLOT_PRESENCE`` or ``SLOT_OPS``; ``expected`` the sealed bytes that must be there now
    (None: nothing); ``new`` the sealed bytes to leave (None: delete; equal to ``expected``:
    check only). ``expires_at_ms`` (Unix ms) indexes a new presence or ops value for
    :meth:`Storage.purge_expired` / :meth:`Storage.purge_tombstones` (ops: 0 never expires;
    ignored for identities)."""

    slot: bytes
    expected: bytes | None
    new: bytes | None
    expires_at_ms: int = 0


class Swapped(enum.Enum):
    """What :meth:`Storage._swap` did: wrote everything, found a slot changed, or found the
    presence store full (P16, P17); in the last two cases it wrote nothing."""

    DONE = "done"
    STALE = "stale"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Owned:
    """A handle's three records as read by :meth:`Storage.owned`: the opened ``identity``,
    ``ops`` and ``presence`` bytes (None when absent), the presence's expiry (Unix ms, 0 when
    absent), and ``sealed``, the bytes read per slot, which guard :meth:`Storage.swap_owned`."""

    user_id: bytes
    identity: bytes | None
    ops: bytes | None
    presence: bytes | None
    presence_expires_at_ms: int
    sealed: dict[bytes, bytes | None]
