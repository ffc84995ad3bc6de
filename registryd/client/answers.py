"""The answers of a registry as the client checks them (spec 4.5): their types, and the pure
steps that decode, check and open them. An answer that breaks the protocol is a
:class:`~registryd.errors.ProtocolError`; an error answer becomes a
:class:`~registryd.errors.ServerError` with printable, bounded text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple, TypeVar

import msgspec

from .. import wire
from ..encoding import decode_hex
from ..envelope import KID_LEN, X25519_LEN, open_sealed, shared_key
from ..errors import InvalidInput, ProtocolError, ServerError
from ..identity import NonNegative, PublicIdentity

T = TypeVar("T")
MAX_ERROR_TEXT = 200


class ServerKey(NamedTuple):
    """The server's active envelope key: ``kid`` (8 B), X25519 ``public_key`` (32 B) and
    ``not_after_ms`` (Unix ms, or None if it does not expire)."""

    kid: bytes
    public_key: bytes
    not_after_ms: int | None


class PublicKeyAnswer(msgspec.Struct, forbid_unknown_fields=True):
    kid_hex: str
    x25519_public_key_hex: str
    active: bool
    not_after_epoch_ms: NonNegative | None = None


class OkAnswer(msgspec.Struct, forbid_unknown_fields=True):
    ok: bool


class ExistsAnswer(msgspec.Struct, forbid_unknown_fields=True):
    exists: bool


class ChallengeAnswer(msgspec.Struct, forbid_unknown_fields=True):
    challenge: str
    difficulty: NonNegative
    expires_ms: NonNegative


@contextlib.contextmanager
def protocol(what: str) -> Iterator[None]:
    """Turn a decoding failure of a server answer into :class:`ProtocolError`."""
    try:
        yield
    except InvalidInput as exc:
        raise ProtocolError(f"bad {what}: {exc.detail or exc}") from exc


def decode(raw: bytes, type_: type[T], what: str) -> T:
    with protocol(what):
        return wire.decode(raw, type_)


def expect_ok(raw: bytes, what: str) -> None:
    if not decode(raw, OkAnswer, what).ok:
        raise ProtocolError(f"bad {what}: ok is false")


def server_key(raw: bytes) -> ServerKey:
    with protocol("/envelope_pubkey answer"):
        answer = wire.decode(raw, PublicKeyAnswer)
        return ServerKey(
            decode_hex(answer.kid_hex, KID_LEN, "kid_hex"),
            decode_hex(answer.x25519_public_key_hex, X25519_LEN, "x25519_public_key_hex"),
            answer.not_after_epoch_ms,
        )


def open_identity(
    pepper: bytes, handle: bytes, private: bytes, envelope: wire.Envelope
) -> PublicIdentity | None:
    """The identity sealed in ``envelope``, or None for a constant-shape miss.

    A server that hides misses answers them with an envelope like a hit's, sealed the same way
    around random bytes; a hit's plaintext is the identity JSON, maybe padded with spaces. So a
    plaintext that opens but is not an identity's JSON means "not found", while an envelope that
    does not open, an invalid identity or one of another handle is a :class:`ProtocolError`.
    """
    with protocol("/resolve envelope"):
        sealed = envelope.sealed()
        key = shared_key(pepper, handle, private, sealed.sender_public)
        plaintext = open_sealed(key, handle, sealed.nonce, sealed.ciphertext)
    try:
        identity = wire.decode(plaintext, PublicIdentity)
    except InvalidInput:
        return None
    with protocol("/resolve envelope"):
        identity.validate()
    if identity.handle != handle:
        raise ProtocolError("the server answered with the identity of another handle")
    return identity


def open_presence(
    pepper: bytes, handle: bytes, private: bytes, envelope: wire.Envelope
) -> wire.Presence | None:
    """The Presence sealed in a ``/presence/resolve`` answer (extensions spec §2.4), or None
    for a constant-shape miss; :class:`ProtocolError` as :func:`open_identity`."""
    with protocol("/presence/resolve envelope"):
        sealed = envelope.sealed()
        key = shared_key(pepper, handle, private, sealed.sender_public)
        plaintext = open_sealed(key, handle, sealed.nonce, sealed.ciphertext)
    try:
        presence = wire.decode(plaintext, wire.Presence)
    except InvalidInput:
        return None
    with protocol("/presence/resolve envelope"):
        presence.validate()
        if decode_hex(presence.user_id, 32, "user_id") != handle:
            raise ProtocolError("the server answered with the presence of another handle")
    return presence


def printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:MAX_ERROR_TEXT])


def server_error(status: int, reason: str, body: bytes) -> ServerError:
    try:
        error = msgspec.json.decode(body, type=wire.ErrorBody).error
    except msgspec.DecodeError:
        return ServerError(status, f"HTTP_{status}", printable(reason or "error"))
    return ServerError(status, printable(error.code), printable(error.message))
