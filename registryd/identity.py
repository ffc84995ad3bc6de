"""Usernames, handles (UserId) and PublicIdentity — spec sections 1 and 2.

A *handle* is the 32-byte ``UserId = BLAKE3(b"enigma:user_id:v1" || normalize_username(name))``;
on the wire it is 64 hex chars (lowercase out, any case in).
"""

from __future__ import annotations

import struct
import unicodedata
from typing import Annotated

import blake3
import msgspec

from .encoding import decode_hex
from .errors import InvalidInput

USER_ID_DOMAIN = b"enigma:user_id:v1"
USER_ID_LEN = 32
MAX_USERNAME_BYTES = 64
U64_MAX = 2**64 - 1

Byte = Annotated[int, msgspec.Meta(ge=0, le=255)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


def normalize_username(username: str) -> str:
    """Spec 1: reject control chars (Unicode Cc) anywhere, trim whitespace, 1..64 UTF-8 bytes.

    Raises :class:`InvalidInput` ("invalid input: username"). No case folding, no NFC.
    """
    if any(unicodedata.category(c) == "Cc" for c in username):
        raise InvalidInput("username")
    trimmed = username.strip()
    try:
        size = len(trimmed.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate is not UTF-8 (Rust strings cannot hold one)
        raise InvalidInput("username") from None
    if not trimmed or size > MAX_USERNAME_BYTES:
        raise InvalidInput("username")
    return trimmed


def user_id(username: str) -> bytes:
    """The 32-byte UserId (handle) of ``username``; raises :class:`InvalidInput` if invalid."""
    name = normalize_username(username).encode("utf-8")
    return blake3.blake3(USER_ID_DOMAIN + name).digest()


def parse_handle(value: object) -> bytes:
    """Decode a wire handle (64 hex chars, any case) to 32 bytes; :class:`InvalidInput` "handle"."""
    return decode_hex(value, USER_ID_LEN, "handle")


def signed_payload(
    username_hint: str | None, signing_public_key: bytes, encryption_public_key: bytes
) -> bytes:
    """Spec 2 ``signed_payload``: each part prefixed by its big-endian u32 byte length."""
    out = bytearray()
    for part in ((username_hint or "").encode("utf-8"), signing_public_key, encryption_public_key):
        out += struct.pack(">I", min(len(part), 0xFFFFFFFF)) + part
    return bytes(out)


class PublicIdentity(msgspec.Struct, forbid_unknown_fields=True):
    """A user's public identity (spec 2); byte fields are JSON arrays of integers 0-255.

    ``user_id`` is the 64-hex-char handle; ``created_at_ms`` is Unix time in milliseconds.
    """

    user_id: str
    signing_public_key: list[Byte]
    encryption_public_key: list[Byte]
    signature: list[Byte]
    created_at_ms: NonNegative
    username_hint: str | None = None

    def __post_init__(self) -> None:
        if self.created_at_ms > U64_MAX:  # msgspec cannot bound ints beyond int64 declaratively
            raise ValueError("created_at_ms: expected an integer that fits in u64")

    @property
    def handle(self) -> bytes:
        """The 32 raw bytes of ``user_id``; :class:`InvalidInput` unless it is 64 hex chars."""
        return parse_handle(self.user_id)

    def validate(self) -> None:
        """Spec 2 ``validate()``; raises :class:`InvalidInput` ("invalid input: identity")."""
        try:
            self.handle  # noqa: B018 - decoding is the check
            if not (self.signing_public_key and self.encryption_public_key and self.signature):
                raise InvalidInput("identity")
            if not 0 < self.created_at_ms <= U64_MAX:
                raise InvalidInput("identity")
            if self.username_hint is not None:
                normalize_username(self.username_hint)
        except InvalidInput as exc:
            raise InvalidInput("identity") from exc

    def to_json(self) -> bytes:
        """Canonical serialization: compact, keys in spec order, raw UTF-8 (what envelopes seal)."""
        return msgspec.json.encode(
            {
                "user_id": self.user_id.lower(),
                "username_hint": self.username_hint,
                "signing_public_key": self.signing_public_key,
                "encryption_public_key": self.encryption_public_key,
                "signature": self.signature,
                "created_at_ms": self.created_at_ms,
            }
        )

    def verify_signature(self) -> bool:
        """True if ``signature`` is a valid Ed25519 signature of :func:`signed_payload`."""
        from nacl.exceptions import BadSignatureError
        from nacl.exceptions import ValueError as NaclValueError
        from nacl.signing import VerifyKey

        try:
            key = VerifyKey(bytes(self.signing_public_key))
            key.verify(self.payload(), bytes(self.signature))
        except (BadSignatureError, NaclValueError, TypeError):
            return False
        return True

    def payload(self) -> bytes:
        return signed_payload(
            self.username_hint, bytes(self.signing_public_key), bytes(self.encryption_public_key)
        )
