"""The envelope keystore: the server's X25519 keys in one JSON file, managed by ``registryd keys``.

The file (UTF-8 JSON, mode 0600, written atomically; optionally encrypted with a passphrase
through Argon2id and XChaCha20-Poly1305) is described in :mod:`registryd.keystore_file`.
:class:`Keystore` holds its keys and the operations on them (generate, rotate, retire, prune);
:func:`load_keyring` turns the config's ``[envelope]`` into the daemon's key ring.

Writers use :meth:`Keystore.editing`, which holds an exclusive ``flock`` on ``<keystore>.lock``
from load to save, so concurrent changes cannot lose each other; readers need no lock.

Every failure is a :class:`~registryd.errors.KeystoreError` naming the file; private keys and
passphrases never appear in reprs, messages or logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from . import keystore_file
from .config import EnvelopeConfig
from .envelope import KID_LEN
from .errors import ConfigError, KeystoreError
from .files import exposed, write_file
from .keyring import EnvelopeKey, KeyRing
from .keystore_file import DEFAULT_KDF, KdfParams
from .secret import Secret

__all__ = ["DEFAULT_KDF", "KdfParams", "Keystore", "load_keyring", "passphrase_from"]

log = logging.getLogger("registryd.keystore")

LOCK_TIMEOUT_S = 10.0  # how long Keystore.editing waits for another writer


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
        keys, store.kdf = keystore_file.read_keys(path, passphrase, ask)
        store.keys = _newest_first(keys)
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
        if passphrase is None:
            self.kdf = None
            data = keystore_file.encode(self.keys)
        else:
            self.kdf = kdf or self.kdf or DEFAULT_KDF  # read here: tests lower the default cost
            data = keystore_file.encode(self.keys, passphrase, self.kdf)
        try:
            write_file(target, data, replace=True)
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


def load_keyring(envelope: EnvelopeConfig) -> KeyRing:
    """The envelope keys of the config's ``[envelope]`` as a :class:`KeyRing`: the inline keys
    in configured order, or the keystore's newest first. Raises :class:`ConfigError` (or a
    :class:`KeystoreError`) when the keystore cannot be read or has no active key."""
    if envelope.keystore_path is not None:
        store = Keystore.load(envelope.keystore_path, read_passphrase(envelope))
        if not any(key.active for key in store.keys):
            raise ConfigError(
                "envelope.keystore_path",
                "the keystore has no active key (registryd keys generate --active)",
            )
        return store.keyring(envelope.pepper_hex)
    keys = tuple(
        EnvelopeKey.from_private(
            bytes.fromhex(k.kid_hex),
            k.x25519_private_key_hex.reveal(),
            active=k.active,
            not_after_ms=k.not_after_epoch_ms,
        )
        for k in envelope.keys
    )
    return KeyRing(envelope.pepper_hex, keys)
