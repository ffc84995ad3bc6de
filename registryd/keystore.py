"""The envelope keystore: the server's X25519 keys in one JSON file, managed by ``registryd keys``.

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

Writers use :meth:`Keystore.editing`, which holds an exclusive ``flock`` on ``<keystore>.lock``
from load to save, so concurrent changes cannot lose each other; readers need no lock.

Every failure is a :class:`~registryd.errors.KeystoreError` naming the file; private keys and
passphrases never appear in reprs, messages or logs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import blake3
import msgspec
import nacl.exceptions
from argon2.low_level import Type, hash_secret_raw

from . import aead, wire
from .aead import NONCE_LEN
from .envelope import KID_LEN
from .errors import InvalidInput, KeystoreError
from .files import exposed, write_file
from .keyring import EnvelopeKey, KeyRing
from .secret import Secret

if TYPE_CHECKING:  # config imports this module lazily; this one needs config only for types
    from .config import EnvelopeConfig

log = logging.getLogger("registryd.keystore")

FORMAT = "registryd-keystore"
VERSION = 1
SALT_LEN = 16
LOCK_TIMEOUT_S = 10.0  # how long Keystore.editing waits for another writer

Hex = Annotated[str, msgspec.Meta(pattern="^(?:[0-9a-f]{2})+\\Z")]
Ms = Annotated[int, msgspec.Meta(ge=0)]


@dataclasses.dataclass(frozen=True)
class KdfParams:
    """Argon2id cost: ``time_cost`` passes over ``memory_cost`` KiB with ``parallelism`` lanes."""

    time_cost: int = 3
    memory_cost: int = 64 * 1024
    parallelism: int = 1


DEFAULT_KDF = KdfParams()


class _Kdf(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Literal["argon2id"]
    salt: Hex
    time_cost: Annotated[int, msgspec.Meta(ge=1, le=100)]
    memory_cost: Annotated[int, msgspec.Meta(ge=8, le=4 * 1024 * 1024)]  # KiB, up to 4 GiB
    parallelism: Annotated[int, msgspec.Meta(ge=1, le=64)]


class _File(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: str
    version: int
    kdf: _Kdf | None
    keys: list[Any] | None = None
    checksum: str | None = None
    nonce: str | None = None
    ciphertext: str | None = None


class _Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
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


def _derive(passphrase: bytes, kdf: _Kdf) -> bytes:
    salt = bytes.fromhex(kdf.salt)
    cost = (kdf.time_cost, kdf.memory_cost, kdf.parallelism)
    return hash_secret_raw(passphrase, salt, *cost, hash_len=32, type=Type.ID)


_FIELDS = ("created_ms", "not_before_ms", "not_after_ms", "opens_until_ms", "active", "retired")


def _record(key: EnvelopeKey) -> dict[str, Any]:
    secret = {"kid": key.kid.hex(), "x25519_private_key_hex": key.private.reveal().hex()}
    return secret | {name: getattr(key, name) for name in _FIELDS}


def _newest_first(keys: list[EnvelopeKey]) -> list[EnvelopeKey]:
    # Stable: keys created in the same millisecond keep their order (the newer one in front).
    return sorted(keys, key=lambda k: -(k.created_ms or 0))


class Keystore:
    """The keystore's keys, newest first (``keys``), as :class:`EnvelopeKey` objects.

    ``kdf`` is the Argon2id cost it was loaded with (None: it was not encrypted); :meth:`save`
    keeps it unless told otherwise. The operations change the keys in memory; :meth:`save`
    writes them.
    """

    def __init__(
        self, keys: list[EnvelopeKey] | None = None, *, path: str | os.PathLike[str] | None = None
    ) -> None:
        self.keys = _newest_first(list(keys or []))
        self.path = None if path is None else Path(path)
        self.kdf: KdfParams | None = None

    def __repr__(self) -> str:
        kids = [k.kid.hex() for k in self.keys]
        return f"Keystore(path={str(self.path)!r}, kids={kids}, encrypted={self.kdf is not None})"

    def _error(self, message: str) -> KeystoreError:
        return KeystoreError(str(self.path or "keystore"), message)

    # -- reading and writing -------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        passphrase: bytes | None,
        *,
        ask: Callable[[], bytes] | None = None,
    ) -> Keystore:
        """Read and check the keystore at ``path``.

        ``passphrase`` opens an encrypted keystore; if it is None and the file is encrypted,
        ``ask()`` (when given) is called for it. Raises :class:`KeystoreError` when the file is
        missing, readable or writable by group or others, not a keystore, of an unknown
        version, encrypted without a passphrase, undecryptable (wrong passphrase or modified)
        or fails its checksum.
        """
        store = cls(path=path)
        doc = store._read_document()
        if doc.kdf is None:
            if doc.keys is None or doc.checksum is None or doc.nonce or doc.ciphertext:
                raise store._error("not a keystore: a plaintext keystore has keys and checksum")
            if passphrase is not None:
                log.warning("keystore %s is not encrypted; the passphrase is not used", path)
            if blake3.blake3(canonical(doc.keys)).hexdigest() != doc.checksum:
                raise store._error("checksum mismatch: the file was modified")
            raw_keys: object = doc.keys
        else:
            if doc.nonce is None or doc.ciphertext is None or doc.keys is not None:
                raise store._error("not a keystore: an encrypted keystore has nonce and ciphertext")
            if passphrase is None and ask is not None:
                passphrase = ask()
            if passphrase is None:
                raise store._error("the keystore is encrypted and no passphrase was given")
            raw_keys = store._decrypt(doc.kdf, doc.nonce, doc.ciphertext, passphrase)
            store.kdf = KdfParams(doc.kdf.time_cost, doc.kdf.memory_cost, doc.kdf.parallelism)
        store.keys = _newest_first(store._keys_from(raw_keys))
        log.debug("loaded keystore %s: %d keys", path, len(store.keys))
        return store

    @classmethod
    @contextlib.contextmanager
    def editing(
        cls,
        path: str | os.PathLike[str],
        passphrase: bytes | None,
        *,
        create: bool = False,
        timeout_s: float = LOCK_TIMEOUT_S,
    ) -> Iterator[Keystore]:
        """Lock, load, yield and save: ``with Keystore.editing(path, passphrase) as store:``.

        Holds an exclusive ``flock`` on ``<path>.lock`` (created 0600) throughout, waiting up to
        ``timeout_s`` for another holder (then :class:`KeystoreError` "busy"). With ``create`` a
        missing keystore starts empty. A normal exit saves the keystore if its keys changed, as
        it was (encrypted with ``passphrase`` or not; a new one is encrypted if ``passphrase``
        is given); to re-encrypt, :meth:`save` inside the block. An exception saves nothing.
        """
        target = Path(path)
        if not create and not target.exists():
            raise KeystoreError(str(path), "no such keystore file")
        with _locked(target, timeout_s):
            if create and not target.exists():
                store = cls(path=target)
            else:
                store = cls.load(target, passphrase)
                passphrase = passphrase if store.kdf is not None else None
            before = list(store.keys)
            yield store
            if store.keys != before:
                store.save(target, passphrase)

    def _read_document(self) -> _File:
        try:
            fd = os.open(self.path or "", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise self._error("no such keystore file") from None
        except OSError as exc:
            raise self._error(f"cannot open: {exc.strerror}") from None
        try:  # checked on the open file, so a swapped-in file cannot slip past
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._error("not a regular file")
            if problem := exposed(st):
                raise self._error(problem)
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as f:
            data = f.read()
        try:
            obj = wire.loads(data)
        except InvalidInput:
            raise self._error("not a keystore: invalid JSON (truncated?)") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise self._error("not a registryd keystore")
        if obj.get("version") != VERSION:
            raise self._error(
                f"unknown keystore version {obj.get('version')!r} (this registryd reads {VERSION})"
            )
        try:
            return msgspec.convert(obj, _File, strict=True)
        except msgspec.ValidationError as exc:
            raise self._error(f"not a keystore: {exc}") from None

    def _decrypt(self, kdf: _Kdf, nonce_b64: str, ciphertext_b64: str, passphrase: bytes) -> object:
        try:
            nonce = base64.b64decode(nonce_b64, validate=True)
            ciphertext = base64.b64decode(ciphertext_b64, validate=True)
        except binascii.Error:
            raise self._error("not a keystore: nonce or ciphertext is not base64") from None
        if len(nonce) != NONCE_LEN or len(bytes.fromhex(kdf.salt)) < SALT_LEN:
            raise self._error("not a keystore: bad nonce or salt length")
        aad = canonical({"format": FORMAT, "version": VERSION, "kdf": msgspec.structs.asdict(kdf)})
        key = _derive(passphrase, kdf)
        try:
            plain = aead.decrypt(ciphertext, aad, nonce, key)
            return wire.loads(plain)
        except (nacl.exceptions.CryptoError, ValueError):  # InvalidInput is a ValueError
            raise self._error("cannot decrypt: wrong passphrase or the file was modified") from None

    def _keys_from(self, raw: object) -> list[EnvelopeKey]:
        try:
            records = msgspec.convert(raw, list[_Record], strict=True)
        except msgspec.ValidationError as exc:
            raise self._error(f"invalid key entry: {exc}") from None
        keys: list[EnvelopeKey] = []
        for r in records:
            if any(k.kid.hex() == r.kid for k in keys):
                raise self._error(f"duplicate kid {r.kid}")
            fields = {name: getattr(r, name) for name in _FIELDS}
            private = bytes.fromhex(r.x25519_private_key_hex)
            keys.append(EnvelopeKey.from_private(bytes.fromhex(r.kid), private, **fields))
        return keys

    def save(
        self,
        path: str | os.PathLike[str] | None = None,
        passphrase: bytes | None = None,
        *,
        kdf: KdfParams | None = None,
    ) -> None:
        """Write the keystore atomically to ``path`` (default: where it was loaded), mode 0600.

        With a ``passphrase`` the keys are encrypted with Argon2id cost ``kdf`` (default: the
        cost it was loaded with, else :data:`DEFAULT_KDF`); without one they are stored in the
        clear with a checksum. A temporary file in the same directory is written, fsynced and
        renamed over ``path``, then the directory is fsynced.
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise KeystoreError("keystore", "no path to save to")
        self.path = target
        keys = [_record(k) for k in self.keys]
        doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kdf": None}
        if passphrase is None:
            self.kdf = None
            doc |= {"keys": keys, "checksum": blake3.blake3(canonical(keys)).hexdigest()}
        else:
            self.kdf = kdf or self.kdf or DEFAULT_KDF
            params = _Kdf("argon2id", os.urandom(SALT_LEN).hex(), **dataclasses.asdict(self.kdf))
            doc["kdf"] = msgspec.structs.asdict(params)
            nonce = os.urandom(NONCE_LEN)
            sealed = aead.encrypt(
                canonical(keys), canonical(doc), nonce, _derive(passphrase, params)
            )
            doc |= {
                "nonce": base64.b64encode(nonce).decode(),
                "ciphertext": base64.b64encode(sealed).decode(),
            }
        try:
            write_file(target, json.dumps(doc, indent=2).encode() + b"\n", replace=True)
        except OSError as exc:
            raise self._error(f"cannot write: {exc.strerror or exc}") from None
        log.debug("saved keystore %s: %d keys", target, len(self.keys))

    def keyring(self, pepper: Secret) -> KeyRing:
        """The keys as a :class:`KeyRing`, newest first."""
        return KeyRing(pepper, tuple(self.keys))

    # -- operations ----------------------------------------------------------------------------

    def get(self, kid: bytes) -> EnvelopeKey:
        """The key with ``kid``; :class:`KeystoreError` if there is none."""
        for key in self.keys:
            if key.kid == kid:
                return key
        raise self._error(f"no key with kid {kid.hex()}")

    def add(self, key: EnvelopeKey) -> None:
        """Add ``key`` (its ``created_ms`` places it); :class:`KeystoreError` on a duplicate kid."""
        if any(k.kid == key.kid for k in self.keys):
            raise self._error(f"duplicate kid {key.kid.hex()}")
        self.keys = _newest_first([key, *self.keys])

    def generate(
        self,
        now_ms: int,
        *,
        active: bool = False,
        not_before_ms: int | None = None,
        not_after_ms: int | None = None,
    ) -> EnvelopeKey:
        """Add a new random key created at ``now_ms`` (never before the newest key) and return
        it. An ``active`` key with a future ``not_before_ms`` is *pending*: the current key keeps
        sealing until then."""
        kid = os.urandom(KID_LEN)
        while any(k.kid == kid for k in self.keys):
            kid = os.urandom(KID_LEN)
        created = max([now_ms, *(k.created_ms or 0 for k in self.keys)])
        times = {"not_before_ms": not_before_ms, "not_after_ms": not_after_ms}
        key = EnvelopeKey.from_private(
            kid, os.urandom(32), active=active, created_ms=created, **times
        )
        self.add(key)
        return key

    def rotate(
        self, now_ms: int, grace_ms: int, *, not_after_ms: int | None = None
    ) -> tuple[EnvelopeKey, list[EnvelopeKey]]:
        """Make a new active key. The keys that seal or could seal at ``now_ms`` (active and
        valid then) become inactive and keep opening registrations until ``now_ms + grace_ms``;
        a staged key (active, valid only later: pending) is left as it is. Returns (new key, the
        keys rotated out)."""
        if grace_ms < 0:
            raise self._error("the grace period cannot be negative")
        ended = {k.kid for k in self.keys if k.active and k.valid_at(now_ms)}
        self.keys = [
            dataclasses.replace(k, active=False, opens_until_ms=now_ms + grace_ms)
            if k.kid in ended
            else k
            for k in self.keys
        ]
        new = self.generate(now_ms, active=True, not_after_ms=not_after_ms)
        return new, [self.get(kid) for kid in ended]

    def retire(self, kid: bytes) -> EnvelopeKey:
        """Retire the key ``kid``: it no longer seals nor opens anything."""
        key = dataclasses.replace(self.get(kid), active=False, retired=True)
        self.keys = [key if k.kid == kid else k for k in self.keys]
        return key

    def prune(self, now_ms: int) -> list[bytes]:
        """Drop expired and retired keys (retired includes a grace period that has ended);
        returns the kids removed."""
        gone = [k.kid for k in self.keys if k.state(now_ms) in ("expired", "retired")]
        self.keys = [k for k in self.keys if k.kid not in gone]
        return gone


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def _locked(path: Path, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<path>.lock`` (created 0600) for the block."""
    lock = path.with_name(path.name + ".lock")
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, flags, 0o600)
    except OSError as exc:
        raise KeystoreError(str(path), f"cannot open lock file {lock}: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + timeout_s
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                raise KeystoreError(str(path), f"busy: another change holds {lock}; try again")
            time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # and with it the lock


def passphrase_from(env: str | None, file: str | None, keystore: str) -> bytes | None:
    """The passphrase from environment variable ``env`` or file ``file`` (one trailing newline
    stripped), or None if neither is named. :class:`KeystoreError` (naming ``keystore``) when
    the variable is unset or empty, or the file is unreadable, empty or accessible by group or
    others (like the keystore, it must be mode 0600 or 0400)."""
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise KeystoreError(keystore, f"passphrase environment variable {env} is not set")
        return value.encode()
    if file:
        try:
            with open(file, "rb") as f:  # checked on the open file, like the keystore
                problem = exposed(os.fstat(f.fileno()))
                data = b"" if problem else f.read()
        except OSError as exc:
            raise KeystoreError(
                keystore, f"cannot read passphrase file {file}: {exc.strerror}"
            ) from None
        if problem:
            raise KeystoreError(keystore, f"passphrase file {file} {problem}")
        data = data.removesuffix(b"\n").removesuffix(b"\r")
        if not data:
            raise KeystoreError(keystore, f"passphrase file {file} is empty")
        return data
    return None


def read_passphrase(envelope: EnvelopeConfig) -> bytes | None:
    """The keystore passphrase named by ``[envelope]``: the value of the environment variable
    ``keystore_passphrase_env``, else the contents of ``keystore_passphrase_file``, else None."""
    return passphrase_from(
        envelope.keystore_passphrase_env,
        envelope.keystore_passphrase_file,
        envelope.keystore_path or "keystore",
    )
