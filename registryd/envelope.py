"""Envelope crypto (spec 4.2); the server's keys are :mod:`registryd.keyring`.

``aead_key = BLAKE3(b"enigma:registry:envelope:v1" || pepper[32] || handle[32] || X25519 DH[32])``;
the AEAD is XChaCha20-Poly1305 (24-byte nonce, 16-byte tag) with AAD = the 32 raw handle bytes.
Wrong-length, non-canonical or low-order X25519 keys and short or forged ciphertexts raise
:class:`InvalidInput`.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import blake3
import nacl.exceptions
from nacl import bindings

from . import aead
from .aead import NONCE_LEN, TAG_LEN
from .errors import InvalidInput

ENVELOPE_DOMAIN = b"enigma:registry:envelope:v1"
KID_LEN = 8
X25519_LEN = 32
PEPPER_LEN = 32
X25519_P = 2**255 - 19


class Sealed(NamedTuple):
    """An envelope's fields as bytes (spec 4.1): ``kid`` (8 B), the sender's X25519
    ``sender_public`` key (32 B), ``nonce`` (24 B) and ``ciphertext`` (plaintext + 16-byte
    tag). :meth:`registryd.wire.Envelope.sealed` decodes one, ``Envelope.build(*sealed)``
    encodes one."""

    kid: bytes
    sender_public: bytes
    nonce: bytes
    ciphertext: bytes


def padded(plaintext: bytes, minimum: int) -> bytes:
    """``plaintext`` padded with trailing spaces to its size bucket: the next power of two, and
    at least ``minimum`` bytes. JSON decoders ignore trailing whitespace."""
    size = max(minimum, 1 << (len(plaintext) - 1).bit_length())
    return plaintext.ljust(size, b" ")


def x25519_public(private: bytes) -> bytes:
    """The 32-byte X25519 public key of a 32-byte private key (RFC 7748 clamping)."""
    if len(private) != X25519_LEN:
        raise InvalidInput("x25519 private key")
    return bindings.crypto_scalarmult_base(private)


def x25519_keypair() -> tuple[bytes, bytes]:
    """A fresh random (private, public) X25519 key pair, 32 bytes each."""
    private = os.urandom(X25519_LEN)
    return private, x25519_public(private)


def canonical_x25519(public: bytes) -> bool:
    """Whether ``public`` is the one canonical encoding of its X25519 u-coordinate: 32 bytes,
    little-endian, below p = 2**255 - 19 (so bit 255 is clear).

    X25519 masks bit 255 and reduces u mod p (RFC 7748 section 5), so each non-canonical key
    is an alias that gives the same shared secret as a canonical one: accepting it would let
    anyone alter a sealed envelope without breaking it.
    """
    return len(public) == X25519_LEN and int.from_bytes(public, "little") < X25519_P


def shared_key(pepper: bytes, handle: bytes, private: bytes, peer_public: bytes) -> bytes:
    """The 32-byte AEAD key for (pepper, handle, our private key, their public key).

    Raises :class:`InvalidInput` "envelope key" for a wrong-length, non-canonical (see
    :func:`canonical_x25519`) or low-order public key.
    """
    if not canonical_x25519(peer_public) or len(private) != X25519_LEN:
        raise InvalidInput("envelope key")
    try:
        dh = bindings.crypto_scalarmult(private, peer_public)
    except nacl.exceptions.RuntimeError as exc:  # low-order point: all-zero shared secret
        raise InvalidInput("envelope key") from exc
    return blake3.blake3(ENVELOPE_DOMAIN + pepper + handle + dh).digest()


def seal(
    key: bytes, handle: bytes, plaintext: bytes, nonce: bytes | None = None
) -> tuple[bytes, bytes]:
    """Encrypt ``plaintext`` under ``key`` with AAD ``handle``; returns (nonce, ciphertext||tag)."""
    nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
    return nonce, aead.encrypt(plaintext, handle, nonce, key)


def open_sealed(key: bytes, handle: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    """Decrypt and authenticate; raises :class:`InvalidInput` "unable to decrypt envelope"."""
    if len(ciphertext) < TAG_LEN or len(nonce) != NONCE_LEN:
        raise InvalidInput("unable to decrypt envelope")
    try:
        return aead.decrypt(ciphertext, handle, nonce, key)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise InvalidInput("unable to decrypt envelope") from exc
