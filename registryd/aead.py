"""XChaCha20-Poly1305 (IETF: 32-byte key, 24-byte nonce, 16-byte tag), straight into libsodium.

PyNaCl's ``nacl.bindings`` checks every argument in Python and costs ~6 µs a call more than
the cipher itself on a 1 KiB message; resolve seals twice per request. These call the same
libsodium functions through PyNaCl's own cffi handle, keeping only the checks that keep the C
call memory-safe: the key and nonce lengths (libsodium reads them at fixed sizes).
"""

from __future__ import annotations

from nacl._sodium import ffi, lib
from nacl.exceptions import CryptoError

KEY_LEN = 32
NONCE_LEN = 24
TAG_LEN = 16


def _check(key: bytes, nonce: bytes) -> None:
    if len(key) != KEY_LEN or len(nonce) != NONCE_LEN:
        raise ValueError("XChaCha20-Poly1305 needs a 32-byte key and a 24-byte nonce")


def encrypt(plaintext: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes:
    """``ciphertext || tag`` (len(plaintext) + 16 bytes). Raises ``ValueError`` for bad lengths."""
    _check(key, nonce)
    out = ffi.new("unsigned char[]", len(plaintext) + TAG_LEN)
    out_len = ffi.new("unsigned long long *")
    lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        out, out_len, plaintext, len(plaintext), aad, len(aad), ffi.NULL, nonce, key
    )
    return bytes(ffi.buffer(out, out_len[0]))


def decrypt(ciphertext: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes:
    """The plaintext of ``ciphertext || tag``; ``CryptoError`` if it does not authenticate
    (also when shorter than the tag), ``ValueError`` for bad key or nonce lengths."""
    _check(key, nonce)
    if len(ciphertext) < TAG_LEN:
        raise CryptoError("ciphertext shorter than its tag")
    out = ffi.new("unsigned char[]", max(len(ciphertext) - TAG_LEN, 1))
    out_len = ffi.new("unsigned long long *")
    failed = lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
        out, out_len, ffi.NULL, ciphertext, len(ciphertext), aad, len(aad), nonce, key
    )
    if failed:
        raise CryptoError("decryption failed")
    return bytes(ffi.buffer(out, out_len[0]))
