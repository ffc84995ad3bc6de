"""A user's long-term identity keys and their keys file (mode 0600).

Ed25519 signs the identity (spec 2 ``signed_payload``); X25519 is the key others encrypt to.
"""

from __future__ import annotations

import json
import os

import msgspec
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from .. import wire
from ..encoding import decode_hex
from ..errors import ConfigError, InvalidInput
from ..files import exposed, write_file
from ..identity import NonNegative, PublicIdentity, normalize_username, signed_payload, user_id
from ..timespec import now_ms

KEY_LEN = 32
MAX_KEYS_FILE_BYTES = 64 * 1024


class IdentityKeys:
    """A user's long-term keys: Ed25519 signing key and X25519 encryption key, 32 bytes each.

    ``created_at_ms`` is when the keys were generated (Unix ms). The repr shows public keys only.
    Keys files are JSON ``{"signing_private_key_hex", "encryption_private_key_hex",
    "created_at_ms"}`` (the Ed25519 seed and the X25519 private key, 64 hex chars each).
    """

    def __init__(self, signing_key: SigningKey, encryption_key: PrivateKey, created_at_ms: int):
        self.signing_key = signing_key
        self.encryption_key = encryption_key
        self.created_at_ms = created_at_ms

    @classmethod
    def generate(cls) -> IdentityKeys:
        """Fresh random keys, stamped with the current time."""
        return cls(SigningKey.generate(), PrivateKey.generate(), now_ms())

    @property
    def signing_public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return bytes(self.signing_key.verify_key)

    @property
    def encryption_public_key(self) -> bytes:
        """The 32-byte X25519 public key."""
        return bytes(self.encryption_key.public_key)

    def signing_private_hex(self) -> str:
        """The Ed25519 seed as 64 hex chars. Secret: never print or log it."""
        return bytes(self.signing_key).hex()

    def encryption_private_hex(self) -> str:
        """The X25519 private key as 64 hex chars. Secret: never print or log it."""
        return bytes(self.encryption_key).hex()

    def identity(self, username: str, *, created_at_ms: int | None = None) -> PublicIdentity:
        """The signed :class:`PublicIdentity` of ``username`` with these keys (spec 1, 2).

        ``user_id`` is the handle of the normalized name, ``username_hint`` the normalized name,
        ``signature`` Ed25519 over ``signed_payload``; ``created_at_ms`` (Unix ms) defaults to
        now. Raises :class:`InvalidInput` for an invalid username or ``created_at_ms == 0``.
        """
        name = normalize_username(username)
        signing, encryption = self.signing_public_key, self.encryption_public_key
        signature = self.signing_key.sign(signed_payload(name, signing, encryption)).signature
        identity = PublicIdentity(
            user_id=user_id(name).hex(),
            username_hint=name,
            signing_public_key=list(signing),
            encryption_public_key=list(encryption),
            signature=list(signature),
            created_at_ms=now_ms() if created_at_ms is None else created_at_ms,
        )
        identity.validate()
        return identity

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a keys file at ``path`` with mode 0600, atomically and durably.

        Raises ``FileExistsError`` if ``path`` exists (keys are never overwritten), ``OSError``
        if it cannot be written.
        """
        data = {
            "signing_private_key_hex": self.signing_private_hex(),
            "encryption_private_key_hex": self.encryption_private_hex(),
            "created_at_ms": self.created_at_ms,
        }
        write_file(path, json.dumps(data).encode())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> IdentityKeys:
        """Read a keys file written by :meth:`save`.

        Raises :class:`ConfigError` if the file is accessible by group or others (it must be
        0600 or stricter) or is not a valid keys file; ``OSError`` if it cannot be read.
        """
        with open(path, "rb") as f:
            if problem := exposed(os.fstat(f.fileno())):
                raise ConfigError(str(path), f"keys file {problem}")
            raw = f.read(MAX_KEYS_FILE_BYTES)
        try:
            data = wire.decode(raw, _KeyFile)
            signing = decode_hex(data.signing_private_key_hex, KEY_LEN, "signing_private_key_hex")
            encryption = decode_hex(
                data.encryption_private_key_hex, KEY_LEN, "encryption_private_key_hex"
            )
        except InvalidInput as exc:
            raise ConfigError(str(path), f"not a keys file ({exc.detail})") from exc
        return cls(SigningKey(signing), PrivateKey(encryption), data.created_at_ms)

    def __repr__(self) -> str:
        return (
            f"IdentityKeys(signing_public_key={self.signing_public_key.hex()!r}, "
            f"encryption_public_key={self.encryption_public_key.hex()!r})"
        )


class _KeyFile(msgspec.Struct, forbid_unknown_fields=True):
    signing_private_key_hex: str
    encryption_private_key_hex: str
    created_at_ms: NonNegative
