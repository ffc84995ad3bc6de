"""The server's envelope keys (spec 4.4): each key's validity and state, and the key ring that
opens registrations and seals resolves with them (spec 4.2).

Times are Unix milliseconds. Keys come from the config's inline ``[[envelope.keys]]`` or the
keystore (:func:`registryd.keystore.load_keyring`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .envelope import KID_LEN, Sealed, open_sealed, seal, shared_key, x25519_public
from .errors import InvalidInput, KeyUnavailable
from .secret import Secret
from .timespec import now_ms


@dataclass(frozen=True)
class EnvelopeKey:
    """A server envelope key: ``kid`` (8 B), X25519 ``private`` (32 B, secret), ``public`` (32 B).

    Times are Unix milliseconds. The key is valid from ``not_before_ms`` (inclusive) until
    ``not_after_ms`` (exclusive), either open-ended when None. ``active`` keys seal resolves; a
    key rotated out keeps opening registrations until ``opens_until_ms`` (its grace period);
    ``retired`` keys open nothing. ``created_ms`` orders keystore keys (newest first).
    """

    kid: bytes
    private: Secret
    public: bytes
    active: bool = False
    not_after_ms: int | None = None
    not_before_ms: int | None = None
    opens_until_ms: int | None = None
    created_ms: int | None = None
    retired: bool = False

    @classmethod
    def from_private(cls, kid: bytes, private: bytes, **fields: Any) -> EnvelopeKey:
        """A key from its 8-byte ``kid`` and 32-byte X25519 private key; ``InvalidInput`` else."""
        if len(kid) != KID_LEN:
            raise InvalidInput("kid")
        return cls(kid, Secret(private), x25519_public(private), **fields)

    def expired(self, now_ms: int) -> bool:
        return self.not_after_ms is not None and now_ms >= self.not_after_ms

    def valid_at(self, now_ms: int) -> bool:
        """Inside its validity window: ``not_before_ms <= now_ms < not_after_ms``."""
        started = self.not_before_ms is None or self.not_before_ms <= now_ms
        return started and not self.expired(now_ms)

    def can_open(self, now_ms: int) -> bool:
        """Whether a registration sealed to this key is accepted at ``now_ms``."""
        in_grace = self.opens_until_ms is None or now_ms < self.opens_until_ms
        return self.valid_at(now_ms) and not self.retired and in_grace

    def state(self, now_ms: int) -> str:
        """``active``, ``pending`` (active, not yet valid), ``grace``, ``inactive`` (an inline
        key that is not active: it still opens registrations, as in the reference),
        ``retired`` or ``expired``."""
        if self.expired(now_ms):
            return "expired"
        if self.retired or (self.opens_until_ms is not None and now_ms >= self.opens_until_ms):
            return "retired"
        if self.active:
            return "active" if self.valid_at(now_ms) else "pending"
        return "grace" if self.opens_until_ms is not None else "inactive"

    def describe(self, now_ms: int) -> dict[str, object]:
        """The public wire description (spec 4.5 ``/envelope_pubkey``); ``active`` only while
        the key may seal at ``now_ms`` (a staged key is not advertised as active early)."""
        out: dict[str, object] = {
            "kid_hex": self.kid.hex(),
            "x25519_public_key_hex": self.public.hex(),
            "active": self.active and self.valid_at(now_ms),
        }
        if self.not_after_ms is not None:
            out["not_after_epoch_ms"] = self.not_after_ms
        return out


def describe_key(key: EnvelopeKey, now_ms: int) -> dict[str, object]:
    """A key's public facts for operators (``keys list --json``, ``GET /admin/keys``,
    ``check-config``): kid, public key, state at ``now_ms`` and times. Never the private key."""
    return {
        "kid_hex": key.kid.hex(),
        "x25519_public_key_hex": key.public.hex(),
        "state": key.state(now_ms),
        "created_ms": key.created_ms,
        "not_before_ms": key.not_before_ms,
        "not_after_ms": key.not_after_ms,
        "opens_until_ms": key.opens_until_ms,
    }


def key_warnings(keyring: KeyRing, at_ms: int, warning_days: int) -> list[str]:
    """What an operator should hear about the keys at ``at_ms``: no valid active key (the
    registry is degraded), or the active key expiring within ``warning_days``."""
    try:
        key = keyring.active(at_ms)
    except KeyUnavailable:
        return ["no valid active envelope key: /resolve and /envelope_pubkey answer 503"]
    if key.not_after_ms is None or key.not_after_ms - at_ms > warning_days * 86_400_000:
        return []
    hours = (key.not_after_ms - at_ms) / 3_600_000
    return [
        f"the active envelope key {key.kid.hex()} expires in {hours:.1f} h; stage a successor "
        "(registryd keys generate --active --not-before ...) or rotate (registryd keys rotate)"
    ]


class KeyRing:
    """The server's envelope keys in configured order, with the pepper (spec 4.4)."""

    def __init__(self, pepper: Secret, keys: tuple[EnvelopeKey, ...]) -> None:
        self.pepper = pepper
        self.keys = keys

    def __repr__(self) -> str:
        return f"KeyRing(kids={[k.kid.hex() for k in self.keys]})"

    def active(self, at_ms: int | None = None) -> EnvelopeKey:
        """The first active key valid at ``at_ms``, in ring order (a keystore ring is newest
        first; inline keys keep config order); :class:`KeyUnavailable` if there is none."""
        at_ms = now_ms() if at_ms is None else at_ms
        for key in self.keys:
            if key.active and key.valid_at(at_ms):
                return key
        raise KeyUnavailable()

    def find(self, kid: bytes, at_ms: int | None = None) -> EnvelopeKey:
        """The first key with ``kid`` that may open a registration at ``at_ms`` (see
        :meth:`EnvelopeKey.can_open`); :class:`InvalidInput` "unable to decrypt envelope" otherwise
        (the message of every envelope that does not open, see :meth:`open_registration`)."""
        at_ms = now_ms() if at_ms is None else at_ms
        for key in self.keys:
            if key.kid == kid and key.can_open(at_ms):
                return key
        raise InvalidInput("unable to decrypt envelope")

    def open_registration(self, handle: bytes, sealed: Sealed, at_ms: int | None = None) -> bytes:
        """Decrypt a ``/register`` envelope sealed by a client to one of our keys (spec 4.2);
        ``sealed`` is its four fields as bytes (:meth:`registryd.wire.Envelope.sealed`, which
        names a malformed field).

        Raises :class:`InvalidInput`: every envelope that does not open, whichever part was
        altered (kid, sender key, nonce, ciphertext, tag) or whether its key is unknown, past
        its grace or retired, gets one message, "unable to decrypt envelope" (the reference says
        "unknown envelope key" for the kid; one message tells a tamperer nothing about which
        check failed).
        """
        key = self.find(sealed.kid, at_ms)
        try:
            aead_key = shared_key(
                self.pepper.reveal(), handle, key.private.reveal(), sealed.sender_public
            )
        except InvalidInput:  # non-canonical or low-order: told apart from a forged tag by no one
            raise InvalidInput("unable to decrypt envelope") from None
        return open_sealed(aead_key, handle, sealed.nonce, sealed.ciphertext)

    def resolution_sealer(
        self, handle: bytes, requester_public: bytes, at_ms: int | None = None
    ) -> Callable[[bytes], Sealed]:
        """Prepare to seal a ``/resolve`` answer to a requester's ephemeral key (spec 4.2).

        The DH with the active key happens now, so a bad requester key (wrong length, low order:
        :class:`InvalidInput`) is refused before anything is looked up. The returned function
        seals a plaintext with a fresh random nonce (the wire form is
        ``wire.Envelope.build(*sealed)``). :class:`KeyUnavailable` if no key is active.
        """
        key = self.active(at_ms)
        aead_key = shared_key(self.pepper.reveal(), handle, key.private.reveal(), requester_public)

        def seal_to_requester(plaintext: bytes) -> Sealed:
            nonce, ciphertext = seal(aead_key, handle, plaintext)
            return Sealed(key.kid, key.public, nonce, ciphertext)

        return seal_to_requester
