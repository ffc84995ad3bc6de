"""The node's Ed25519 key (extensions spec §3, §4): its file, its public forms, its signatures.

The key file is an unencrypted PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``), mode 0600, written
once by ``registryd node init`` and never overwritten. PKCS#8 rather than a registryd-only JSON
file so that operators can inspect or make one with standard tools (``openssl pkey -in node.key
-pubout``, ``openssl genpkey -algorithm ed25519``); ``cryptography`` (already a dependency) reads
and writes the format, PyNaCl signs. The private key never leaves this module in any encoding:
the repr and every log line show only :attr:`NodeKey.pubkey_prefix`.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import SigningKey

from ..errors import ConfigError
from ..files import exposed, write_file

PUBKEY_PREFIX_CHARS = 16
MAX_KEY_FILE_BYTES = 16 * 1024


class NodeKey:
    """A node's Ed25519 key: 32-byte seed, 32-byte public key, 64-byte signatures.

    ``repr`` shows the first 16 characters of :attr:`pubkey_b64` only.
    """

    __slots__ = ("_signing_key",)

    def __init__(self, signing_key: SigningKey) -> None:
        self._signing_key = signing_key

    @classmethod
    def generate(cls) -> NodeKey:
        """A fresh random key."""
        return cls(SigningKey.generate())

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return bytes(self._signing_key.verify_key)

    @property
    def pubkey_b64(self) -> str:
        """The public key as standard padded base64 (44 characters), as ``pubkey_b64`` in §3."""
        return base64.b64encode(self.public_key).decode("ascii")

    @property
    def pubkey_prefix(self) -> str:
        """The first 16 characters of :attr:`pubkey_b64`: the only form logs may show."""
        return self.pubkey_b64[:PUBKEY_PREFIX_CHARS]

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._signing_key.sign(message).signature

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key to a fresh ``path`` (PKCS#8 PEM, mode 0600, synced).

        Raises ``FileExistsError`` if ``path`` exists (a node key is never overwritten) and
        ``OSError`` if it cannot be written.
        """
        seed = bytes(self._signing_key)
        pem = Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_file(path, pem)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeKey:
        """Read a key written by :meth:`save` (or any unencrypted PKCS#8 Ed25519 PEM).

        Raises :class:`ConfigError` (key path ``key_path``) if the file is accessible by group
        or others, or is not such a key; ``OSError`` if it cannot be read.
        """
        with open(path, "rb") as f:
            if problem := exposed(os.fstat(f.fileno())):
                raise ConfigError("key_path", f"{path} {problem}")
            data = f.read(MAX_KEY_FILE_BYTES)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # The library's message is dropped: nothing derived from the file reaches an error.
            key = None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("key_path", f"{path} is not an unencrypted PKCS#8 Ed25519 PEM key")
        return cls(SigningKey(key.private_bytes_raw()))

    def __repr__(self) -> str:
        return f"NodeKey(pubkey_b64={self.pubkey_prefix!r}...)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("node keys cannot be pickled")
