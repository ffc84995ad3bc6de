"""The keystore file format: what :class:`registryd.keystore.Keystore` reads and writes.

The file (UTF-8 JSON, mode 0600, written atomically) is one of::

    {"format": "registryd-keystore", "version": 1, "kdf": null,
     "keys": [KEY, ...], "checksum": "<BLAKE3 hex of the canonical keys JSON>"}

    {"format": "registryd-keystore", "version": 1,
     "kdf": {"name": "argon2id", "salt": "<16 bytes hex>",
             "time_cost": 3, "memory_cost": 65536, "parallelism": 1},
     "nonce": "<24 bytes base64>", "ciphertext": "<base64>"}

``KEY`` is ``{"kid": "<8 bytes hex>", "x25519_private_key_hex": "<32 bytes hex>", "created_ms",
"not_before_ms", "not_after_ms", "opens_until_ms", "active", "retired"}`` (times are Unix ms or
null; see :class:`~registryd.keyring.EnvelopeKey` for what each means), newest first.
*Canonical JSON* is ``json.dumps(value, sort_keys=True, separators=(",", ":"))``.

Encrypted at rest: Argon2id (``argon2.low_level.hash_secret_raw``; defaults :data:`DEFAULT_KDF`:
time_cost 3, memory_cost 65536 KiB = 64 MiB, parallelism 1, a fresh 16-byte salt per save)
turns the passphrase into a 32-byte key for XChaCha20-Poly1305 over the canonical keys JSON,
with AAD = the canonical JSON of ``{"format", "version", "kdf"}``, so the KDF parameters cannot
be altered either. A plaintext keystore's checksum only detects accidental edits: anyone who
can write the file can recompute it.

Every failure is a :class:`~registryd.errors.KeystoreError` naming the file.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import blake3
import msgspec
import nacl.exceptions
from argon2.low_level import Type, hash_secret_raw

from . import aead, wire
from .aead import NONCE_LEN
from .errors import InvalidInput, KeystoreError
from .files import exposed
from .keyring import EnvelopeKey

log = logging.getLogger("registryd.keystore")

FORMAT = "registryd-keystore"
VERSION = 1
SALT_LEN = 16

Hex = Annotated[str, msgspec.Meta(pattern="^(?:[0-9a-f]{2})+\\Z")]
Ms = Annotated[int, msgspec.Meta(ge=0)]


@dataclasses.dataclass(frozen=True)
class KdfParams:
    """Argon2id cost: ``time_cost`` passes over ``memory_cost`` KiB with ``parallelism`` lanes."""

    time_cost: int = 3
    memory_cost: int = 64 * 1024
    parallelism: int = 1


DEFAULT_KDF = KdfParams()


class Kdf(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Literal["argon2id"]
    salt: Hex
    time_cost: Annotated[int, msgspec.Meta(ge=1, le=100)]
    memory_cost: Annotated[int, msgspec.Meta(ge=8, le=4 * 1024 * 1024)]  # KiB, up to 4 GiB
    parallelism: Annotated[int, msgspec.Meta(ge=1, le=64)]


class Document(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: str
    version: int
    kdf: Kdf | None
    keys: list[Any] | None = None
    checksum: str | None = None
    nonce: str | None = None
    ciphertext: str | None = None


class Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kid: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}\\Z")]
    x25519_private_key_hex: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}\\Z")]
    created_ms: Ms
    not_before_ms: Ms | None = None
    not_after_ms: Ms | None = None
    opens_until_ms: Ms | None = None
    active: bool = False
    retired: bool = False


def canonical(value: object) -> bytes:
    """The canonical JSON encoding of ``value`` (sorted keys, no spaces, ASCII)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def derive(passphrase: bytes, kdf: Kdf) -> bytes:
    salt = bytes.fromhex(kdf.salt)
    cost = (kdf.time_cost, kdf.memory_cost, kdf.parallelism)
    return hash_secret_raw(passphrase, salt, *cost, hash_len=32, type=Type.ID)


FIELDS = ("created_ms", "not_before_ms", "not_after_ms", "opens_until_ms", "active", "retired")


def record(key: EnvelopeKey) -> dict[str, Any]:
    secret = {"kid": key.kid.hex(), "x25519_private_key_hex": key.private.reveal().hex()}
    return secret | {name: getattr(key, name) for name in FIELDS}


def read_keys(
    path: str | os.PathLike[str],
    passphrase: bytes | None,
    ask: Callable[[], bytes] | None = None,
) -> tuple[list[EnvelopeKey], KdfParams | None]:
    """The keys in the keystore file at ``path`` (in file order) and the Argon2id cost it is
    encrypted with (None: not encrypted); see :meth:`registryd.keystore.Keystore.load`."""
    target = Path(path)
    doc = _read_document(target)
    if doc.kdf is None:
        if doc.keys is None or doc.checksum is None or doc.nonce or doc.ciphertext:
            raise _error(target, "not a keystore: a plaintext keystore has keys and checksum")
        if passphrase is not None:
            log.warning("keystore %s is not encrypted; the passphrase is not used", path)
        if blake3.blake3(canonical(doc.keys)).hexdigest() != doc.checksum:
            raise _error(target, "checksum mismatch: the file was modified")
        return _keys_from(target, doc.keys), None
    if doc.nonce is None or doc.ciphertext is None or doc.keys is not None:
        raise _error(target, "not a keystore: an encrypted keystore has nonce and ciphertext")
    if passphrase is None and ask is not None:
        passphrase = ask()
    if passphrase is None:
        raise _error(target, "the keystore is encrypted and no passphrase was given")
    raw_keys = _decrypt(target, doc.kdf, doc.nonce, doc.ciphertext, passphrase)
    kdf = KdfParams(doc.kdf.time_cost, doc.kdf.memory_cost, doc.kdf.parallelism)
    return _keys_from(target, raw_keys), kdf


def encode(
    keys: list[EnvelopeKey], passphrase: bytes | None = None, kdf: KdfParams = DEFAULT_KDF
) -> bytes:
    """The file holding ``keys``: in the clear with a checksum, or, with a ``passphrase``,
    encrypted under Argon2id cost ``kdf`` with a fresh salt and nonce."""
    records = [record(k) for k in keys]
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kdf": None}
    if passphrase is None:
        doc |= {"keys": records, "checksum": blake3.blake3(canonical(records)).hexdigest()}
    else:
        params = Kdf("argon2id", os.urandom(SALT_LEN).hex(), **dataclasses.asdict(kdf))
        doc["kdf"] = msgspec.structs.asdict(params)
        nonce = os.urandom(NONCE_LEN)
        sealed = aead.encrypt(canonical(records), canonical(doc), nonce, derive(passphrase, params))
        doc |= {
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(sealed).decode(),
        }
    return json.dumps(doc, indent=2).encode() + b"\n"


def _error(path: Path, message: str) -> KeystoreError:
    return KeystoreError(str(path), message)


def _read_document(path: Path) -> Document:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _error(path, "no such keystore file") from None
    except OSError as exc:
        raise _error(path, f"cannot open: {exc.strerror}") from None
    try:  # checked on the open file, so a swapped-in file cannot slip past
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _error(path, "not a regular file")
        if problem := exposed(st):
            raise _error(path, problem)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    try:
        obj = wire.loads(data)
    except InvalidInput:
        raise _error(path, "not a keystore: invalid JSON (truncated?)") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise _error(path, "not a registryd keystore")
    if obj.get("version") != VERSION:
        raise _error(
            path,
            f"unknown keystore version {obj.get('version')!r} (this registryd reads {VERSION})",
        )
    try:
        return msgspec.convert(obj, Document, strict=True)
    except msgspec.ValidationError as exc:
        raise _error(path, f"not a keystore: {exc}") from None


def _decrypt(
    path: Path, kdf: Kdf, nonce_b64: str, ciphertext_b64: str, passphrase: bytes
) -> object:
    try:
        nonce = base64.b64decode(nonce_b64, validate=True)
        ciphertext = base64.b64decode(ciphertext_b64, validate=True)
    except binascii.Error:
        raise _error(path, "not a keystore: nonce or ciphertext is not base64") from None
    if len(nonce) != NONCE_LEN or len(bytes.fromhex(kdf.salt)) < SALT_LEN:
        raise _error(path, "not a keystore: bad nonce or salt length")
    aad = canonical({"format": FORMAT, "version": VERSION, "kdf": msgspec.structs.asdict(kdf)})
    key = derive(passphrase, kdf)
    try:
        plain = aead.decrypt(ciphertext, aad, nonce, key)
        return wire.loads(plain)
    except (nacl.exceptions.CryptoError, ValueError):  # InvalidInput is a ValueError
        raise _error(path, "cannot decrypt: wrong passphrase or the file was modified") from None


def _keys_from(path: Path, raw: object) -> list[EnvelopeKey]:
    try:
        records = msgspec.convert(raw, list[Record], strict=True)
    except msgspec.ValidationError as exc:
        raise _error(path, f"invalid key entry: {exc}") from None
    keys: list[EnvelopeKey] = []
    for r in records:
        if any(k.kid.hex() == r.kid for k in keys):
            raise _error(path, f"duplicate kid {r.kid}")
        fields = {name: getattr(r, name) for name in FIELDS}
        private = bytes.fromhex(r.x25519_private_key_hex)
        keys.append(EnvelopeKey.from_private(bytes.fromhex(r.kid), private, **fields))
    return keys
