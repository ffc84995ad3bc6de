"""Strict JSON wire types (spec 3, 4.1, 4.5) and the one JSON decoding boundary.

serde_json strictness is copied: unknown and duplicate keys, floats where integers belong,
NaN/Infinity, byte values outside 0-255 and deep nesting are all :class:`InvalidInput`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

import msgspec

from .aead import NONCE_LEN
from .encoding import decode_b64, decode_hex, encode_b64
from .envelope import KID_LEN, X25519_LEN, Sealed
from .errors import ApiError, InvalidInput
from .identity import U64_MAX, NonNegative, PublicIdentity

T = TypeVar("T")

MAX_ADDR_BYTES = 256
MAX_BASE_URL_BYTES = 256


def documented(**schema: Any) -> msgspec.Meta:
    """JSON-schema facts for the OpenAPI document (:mod:`registryd.api.openapi`) that decoding
    does not enforce: the handlers check these fields themselves, so that a bad one is a 400
    naming the field (``invalid input: handle``), not msgspec's own message."""
    return msgspec.Meta(extra_json_schema=schema)


Hex16 = Annotated[str, documented(pattern="^[0-9a-fA-F]{16}$", description="8 bytes, hex")]
Hex48 = Annotated[str, documented(pattern="^[0-9a-fA-F]{48}$", description="24 bytes, hex")]
Hex64 = Annotated[str, documented(pattern="^[0-9a-fA-F]{64}$", description="32 bytes, hex")]
Hex128 = Annotated[str, documented(pattern="^[0-9a-fA-F]{128}$", description="64 bytes, hex")]
Base64 = Annotated[
    str, documented(pattern="^[A-Za-z0-9+/]*={0,2}$", description="standard base64, padded or not")
]


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        keys = [key for key, _ in pairs]
        dup = next(key for key in keys if keys.count(key) > 1)
        raise InvalidInput(f"duplicate field `{dup}`")
    return out


def _reject_constant(name: str) -> None:
    raise InvalidInput(f"invalid number {name}")


def _serde_int(text: str) -> int:
    """An integer literal as serde_json reads it: ``-0`` and integers outside i64/u64 become
    floats there, so they are refused here (extensions spec §3.2: no floats in signed JSON)."""
    value = int(text)
    if text == "-0" or not -(2**63) <= value < 2**64:
        raise InvalidInput(f"number {text[:24]} is not an i64/u64 integer")
    return value


def decode(raw: bytes, type_: type[T]) -> T:
    """Decode ``raw`` JSON into ``type_`` strictly; raises :class:`InvalidInput` with the reason."""
    obj = loads(raw)
    try:
        return msgspec.convert(obj, type_, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc)) from exc


def loads(raw: bytes) -> Any:
    """Parse ``raw`` JSON as serde_json would accept it: UTF-8 only (no BOM, no UTF-16), no
    duplicate keys, NaN, lone surrogates, runaway nesting, ``-0`` or integers outside
    i64/u64 (floats to serde_json); :class:`InvalidInput` with why."""
    try:
        text = raw.decode("utf-8")  # json.loads(bytes) would also sniff UTF-16/32 and a BOM
    except UnicodeDecodeError as exc:
        raise InvalidInput("body is not UTF-8") from exc
    if text.startswith("\ufeff"):
        raise InvalidInput("byte order mark before the JSON")
    try:
        obj = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_int=_serde_int,
        )
    except RecursionError as exc:
        raise InvalidInput("json nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError is a ValueError
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput("malformed json") from exc
    try:
        msgspec.json.encode(obj)  # a lone surrogate ("\ud800") is not UTF-8; serde_json refuses it
    except UnicodeEncodeError as exc:
        raise InvalidInput("lone surrogate in string") from exc
    return obj


def encode(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


def error_body(exc: ApiError) -> bytes:
    """The wire error body of ``exc`` (spec 4.6): ``{"error":{"code":...,"message":...}}``."""
    return encode({"error": {"code": exc.code, "message": exc.message}})


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    """The error body (spec 4.6) as clients read it: leniently, only code and message matter
    (unknown fields are ignored); decode with ``msgspec.json.decode(raw, type=ErrorBody)``."""

    error: ErrorDetail


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """IdentityEnvelope (spec 4.1): hex ``kid`` (8 B), ``sender_pubkey`` (32 B), ``nonce`` (24 B);
    base64 ``ciphertext`` (plaintext + 16-byte tag)."""

    kid: Hex16
    sender_pubkey: Hex64
    nonce: Hex48
    ciphertext: Base64

    def sealed(self) -> Sealed:
        """The four fields as bytes, decoded here and nowhere else; :class:`InvalidInput`
        naming the first malformed one (``envelope.kid``, ``.sender_pubkey``, ``.nonce``,
        ``.ciphertext``)."""
        return Sealed(
            decode_hex(self.kid, KID_LEN, "envelope.kid"),
            decode_hex(self.sender_pubkey, X25519_LEN, "envelope.sender_pubkey"),
            decode_hex(self.nonce, NONCE_LEN, "envelope.nonce"),
            decode_b64(self.ciphertext, "envelope.ciphertext"),
        )

    @classmethod
    def build(cls, kid: bytes, sender_pubkey: bytes, nonce: bytes, ciphertext: bytes) -> Envelope:
        return cls(kid.hex(), sender_pubkey.hex(), nonce.hex(), encode_b64(ciphertext))


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    handle: Hex64
    envelope: Envelope


class ResolveRequest(msgspec.Struct, forbid_unknown_fields=True):
    handle: Hex64
    requester_ephemeral_pubkey_hex: Hex64


class ResolveResponse(msgspec.Struct, forbid_unknown_fields=True):
    """A resolve answer: ``handle`` as the request spelt it; ``envelope`` null on a miss (never
    with ``[privacy] constant_shape_resolve``, where a miss seals random bytes)."""

    handle: Hex64
    envelope: Envelope | None


class Presence(msgspec.Struct, forbid_unknown_fields=True):
    """Presence announcement (spec 3): ``addr`` ≤ 256 bytes trimmed, ``ts_ms`` Unix ms ≠ 0."""

    user_id: Hex64
    # no maxLength: the 256-byte bound applies after trimming, and the untrimmed value is stored
    addr: Annotated[str, documented(minLength=1, description="at most 256 UTF-8 bytes trimmed")]
    ts_ms: NonNegative

    def validate(self) -> None:
        addr = self.addr.strip()
        if not addr or len(addr.encode("utf-8")) > MAX_ADDR_BYTES or not 0 < self.ts_ms < 2**64:
            raise InvalidInput("presence")


class UpdateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /identity/update`` (extensions spec §2.1): ``handle`` (64 hex), the new identity
    sealed as for ``/register``, ``ts_ms`` (Unix ms, u64), ``signature_hex`` (128 hex)."""

    handle: Hex64
    envelope: Envelope
    ts_ms: NonNegative
    signature_hex: Hex128

    def __post_init__(self) -> None:
        if self.ts_ms > U64_MAX:
            raise ValueError("ts_ms: expected an integer that fits in u64")


class DeleteRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /identity/delete`` (extensions spec §2.2)."""

    handle: Hex64
    ts_ms: NonNegative
    signature_hex: Hex128

    def __post_init__(self) -> None:
        if self.ts_ms > U64_MAX:
            raise ValueError("ts_ms: expected an integer that fits in u64")


class NodeInfo(msgspec.Struct, forbid_unknown_fields=True):
    base_url: str

    def validated(self) -> str:
        """The trimmed ``base_url``; raises :class:`InvalidInput` "node" (spec 3 NodeInfo)."""
        url = self.base_url.strip()
        if (
            not url
            or len(url.encode("utf-8")) > MAX_BASE_URL_BYTES
            or not url.startswith(("http://", "https://"))
        ):
            raise InvalidInput("node")
        return url


class NodesPayload(msgspec.Struct, forbid_unknown_fields=True):
    nodes: list[NodeInfo]


class SyncRequest(msgspec.Struct, forbid_unknown_fields=True):
    identities: list[PublicIdentity]
