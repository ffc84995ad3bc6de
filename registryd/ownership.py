"""Proof of ownership (extensions spec §1, §2): identity signatures, and the signed operations
that update or delete an identity or announce a presence.

A signed operation is checked in this order (README "Ownership" says why):

1. ``|ts_ms - now| <= [identity] signed_op_skew_seconds``, else 400;
2. the Ed25519 signature of :func:`registryd.signed_op.message` under the handle's registered
   signing key. When it fails (or nobody is registered) the answer is 401, unless the request
   is byte for byte one of the last :data:`RECENT` accepted in its family (its *mark*,
   ``H(signature || msg)``, is kept): a replay, 409. So a caller without a valid signature
   learns nothing about the handle's counters;
3. ``ts_ms`` strictly above the family's last accepted one, else 409 ``conflict: stale
   timestamp`` (identity operations share one counter, presences have their own);
4. then the write: one compare-and-swap of the identity, presence and ops records
   (:meth:`registryd.storage.Storage.swap_owned`), retried from step 2 when another write
   won the race, so the operation with the greatest accepted ``ts_ms`` stands.

The ops record (sealed like the identity) is ``u64be(identity ts) || u64be(presence ts) ||``
:data:`RECENT` identity marks ``||`` :data:`RECENT` presence marks (32 bytes each, zeros when
unused). A delete leaves it behind as a tombstone until ``max(now, counters) + skew``: every
request accepted before the delete is outside the skew window by then.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from nacl import bindings
from nacl.exceptions import BadSignatureError
from nacl.exceptions import RuntimeError as NaclRuntimeError
from nacl.signing import VerifyKey

from . import signed_op, wire
from .errors import Conflict, InvalidInput, ServiceUnavailable, StorageError, Unauthorized
from .identity import PublicIdentity, user_id
from .presence import GC_BATCH
from .runtime import Runtime
from .storage import Storage
from .storage.records import SLOT_PRESENCE, Owned, Swapped

RECENT = 4
MARK_LEN = 32
IDENTITY_FAMILY, PRESENCE_FAMILY = 0, 1
MAX_ROUNDS = 256  # a round fails only when another write to the handle succeeded
_HEAD = struct.Struct(">QQ")
_RECORD_LEN = _HEAD.size + 2 * RECENT * MARK_LEN
_LOW_ORDER_PROBE = bytes([9] * 32)  # any scalar: clamping clears the cofactor bits
STALE = "stale timestamp"
Changes = dict[bytes, tuple[bytes | None, int]]


def check_identity(identity: PublicIdentity) -> None:
    """Extensions spec §1: 32-byte Ed25519 and X25519 keys (the latter not low-order), a
    64-byte signature verifying over ``signed_payload``, and a ``username_hint`` (if any)
    hashing to ``user_id``. Raises :class:`InvalidInput` ``identity signature`` or
    ``username_hint does not match user_id``."""
    signing = bytes(identity.signing_public_key)
    encryption = bytes(identity.encryption_public_key)
    if len(signing) != 32 or len(encryption) != 32 or len(identity.signature) != 64:
        raise InvalidInput("identity signature")
    try:
        bindings.crypto_scalarmult(_LOW_ORDER_PROBE, encryption)
    except NaclRuntimeError:  # libsodium refuses a low-order point (all-zero result)
        raise InvalidInput("identity signature") from None
    if not verify(signing, identity.payload(), bytes(identity.signature)):
        raise InvalidInput("identity signature")
    if identity.username_hint is not None and user_id(identity.username_hint) != identity.handle:
        raise InvalidInput("username_hint does not match user_id")


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` (64 B) is ``public_key``'s (32 B) Ed25519 signature of ``message``."""
    if len(public_key) != 32 or len(signature) != signed_op.SIGNATURE_LEN:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class OpsRecord:
    """The per-handle operation state: last accepted ``ts_ms`` per family, recent marks."""

    last: tuple[int, int] = (0, 0)
    marks: tuple[tuple[bytes, ...], tuple[bytes, ...]] = ((), ())

    @classmethod
    def decode(cls, raw: bytes | None) -> OpsRecord:
        if raw is None:
            return cls()
        if len(raw) != _RECORD_LEN:
            raise StorageError("an ops record has the wrong length")
        body = raw[_HEAD.size :]
        marks = [body[i : i + MARK_LEN] for i in range(0, len(body), MARK_LEN)]
        zero = bytes(MARK_LEN)
        identity = tuple(m for m in marks[:RECENT] if m != zero)
        presence = tuple(m for m in marks[RECENT:] if m != zero)
        return cls(_HEAD.unpack(raw[: _HEAD.size]), (identity, presence))

    def encode(self) -> bytes:
        out = bytearray(_HEAD.pack(*self.last))
        for marks in self.marks:
            out += b"".join(marks).ljust(RECENT * MARK_LEN, b"\0")
        return bytes(out)

    def accepted(self, family: int, ts_ms: int, mark: bytes) -> OpsRecord:
        last = list(self.last)
        marks = list(self.marks)
        last[family] = ts_ms
        marks[family] = (mark, *marks[family])[:RECENT]
        return OpsRecord((last[0], last[1]), (marks[0], marks[1]))


@dataclass(frozen=True, slots=True)
class SignedOp:
    """An operation as received: ``op`` (:data:`registryd.signed_op.OPS`), the 32-byte
    ``handle``, ``ts_ms`` (Unix ms), the 32-byte body ``digest`` and the ``signature``."""

    op: str
    handle: bytes
    ts_ms: int
    digest: bytes
    signature: bytes

    @property
    def family(self) -> int:
        return PRESENCE_FAMILY if self.op == signed_op.PRESENCE else IDENTITY_FAMILY

    def message(self) -> bytes:
        return signed_op.message(self.op, self.handle, self.ts_ms, self.digest)


def registered_key(identity: bytes | None) -> bytes | None:
    """The signing key of a stored identity; None when absent or unreadable (a registration
    made with ``verify_signatures = false`` may hold anything)."""
    if identity is None:
        return None
    try:
        return bytes(wire.decode(identity, PublicIdentity).signing_public_key)
    except InvalidInput:
        return None


class Owners:
    """Runs signed operations against ``state`` (its storage, clock and current config)."""

    def __init__(self, state: Runtime) -> None:
        self.state = state

    def check_skew(self, ts_ms: int) -> None:
        """Rule 1: 400 ``ts_ms outside the allowed clock skew``."""
        skew_ms = self.state.config.identity.signed_op_skew_seconds * 1000
        if abs(ts_ms - self.state.clock()) > skew_ms:
            raise InvalidInput("ts_ms outside the allowed clock skew")

    async def run(self, op: SignedOp, write: Callable[[Owned, bytes], Changes]) -> None:
        """Check ``op`` (rules 1-3) and store what ``write(owned, new ops record)`` returns,
        atomically; raises 400, 401, 409, or 503 when the presence store is full."""
        self.check_skew(op.ts_ms)
        storage = self.state.storage
        msg = op.message()
        mark = signed_op.digest(op.signature + msg)
        for _ in range(MAX_ROUNDS):
            owned = await storage.owned(op.handle)
            ops = OpsRecord.decode(owned.ops)
            key = registered_key(owned.identity)
            if key is None or not verify(key, msg, op.signature):
                if mark in ops.marks[op.family]:
                    raise Conflict(STALE)
                raise Unauthorized()
            if op.ts_ms <= ops.last[op.family]:
                raise Conflict(STALE)
            changes = write(owned, ops.accepted(op.family, op.ts_ms, mark).encode())
            if await self.swap(owned, changes):
                return
        raise ServiceUnavailable("too many concurrent writes to one handle; retry")

    async def unsigned_presence(self, handle: bytes, presence: bytes, expires_at_ms: int) -> None:
        """The reference's unsigned announce (``[presence] accept_unsigned``): last write wins,
        within ``[presence] max_entries`` (503 when full)."""
        for _ in range(MAX_ROUNDS):
            owned = await self.state.storage.owned(handle)
            if await self.swap(owned, {SLOT_PRESENCE: (presence, expires_at_ms)}):
                return
        raise ServiceUnavailable("too many concurrent writes to one handle; retry")

    async def swap(self, owned: Owned, changes: Changes) -> bool:
        """One compare-and-swap; False if another write came first. When the presence store is
        full, one GC slice (:data:`~registryd.presence.GC_BATCH` expired presences, oldest
        first) is collected before a 503: room for this one, without this request waiting for
        a whole pass (1,000,000 expired presences: ~100 s paced); the GC task does the rest."""
        storage: Storage = self.state.storage
        cap = self.state.config.presence.max_entries
        swapped = await storage.swap_owned(owned, changes, cap)
        if swapped is Swapped.FULL:
            await storage.purge_expired(self.state.clock(), GC_BATCH)
            swapped = await storage.swap_owned(owned, changes, cap)
        if swapped is Swapped.FULL:
            raise ServiceUnavailable("presence store full")
        return swapped is Swapped.DONE

    def tombstone_expiry(self, ops: bytes) -> int:
        """When a delete's tombstone may go: the skew window after the later of now and the
        last accepted ``ts_ms`` of either family (Unix ms)."""
        record = OpsRecord.decode(ops)
        skew_ms = self.state.config.identity.signed_op_skew_seconds * 1000
        return max(self.state.clock(), *record.last) + skew_ms
