"""Envelope crypto and the key ring (spec 4.2, 4.4) against the section 7.2 vectors."""

from __future__ import annotations

import pickle
import re
from typing import Any

import pytest
from nacl import bindings

from registryd import wire
from registryd.encoding import decode_b64
from registryd.envelope import (
    Sealed,
    open_sealed,
    seal,
    shared_key,
    x25519_keypair,
    x25519_public,
)
from registryd.errors import InvalidInput, KeyUnavailable
from registryd.identity import PublicIdentity, user_id
from registryd.keyring import EnvelopeKey, KeyRing
from registryd.secret import Secret
from tests.vectors import (
    AEAD_KEY_HEX,
    CIPHERTEXT_B64,
    CLIENT_PRIVATE,
    CLIENT_PUBLIC_HEX,
    KID,
    NONCE,
    PEPPER,
    PLAINTEXT,
    REGISTER_BODY,
    SERVER_PRIVATE,
    SERVER_PUBLIC_HEX,
    SHARED_SECRET_HEX,
)
from tests.vectors import ALICE_HANDLE_HEX as HANDLE_HEX

HANDLE = bytes.fromhex(HANDLE_HEX)


# Low-order (small-subgroup) X25519 public keys: the libsodium / cr.yp.to blacklist, in
# canonical form and with the ignored top bit set. Each gives an all-zero shared secret.
LOW_ORDER_POINTS = {
    "zero": "00" * 32,
    "one": "01" + "00" * 31,
    "order-8 a": "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "order-8 b": "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "p-1": "ec" + "ff" * 30 + "7f",
    "p": "ed" + "ff" * 30 + "7f",
    "p+1": "ee" + "ff" * 30 + "7f",
    "zero|2^255": "00" * 31 + "80",
    "one|2^255": "01" + "00" * 30 + "80",
    "order-8 a|2^255": "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
    "order-8 b|2^255": "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
    "p-1|2^255": "ec" + "ff" * 31,
    "p|2^255": "ed" + "ff" * 31,
    "p+1|2^255": "ee" + "ff" * 31,
}

NOW = 1_700_000_000_000


def vector_ring(**key_options: object) -> KeyRing:
    key = EnvelopeKey.from_private(KID, SERVER_PRIVATE, active=True, **key_options)
    return KeyRing(Secret(PEPPER), (key,))


def vector_envelope(**changes: str) -> Sealed:
    request = wire.decode(REGISTER_BODY, wire.RegisterRequest)
    fields = {
        "kid": request.envelope.kid,
        "sender_pubkey": request.envelope.sender_pubkey,
        "nonce": request.envelope.nonce,
        "ciphertext": request.envelope.ciphertext,
    }
    fields.update(changes)
    return wire.Envelope(**fields).sealed()


def key(kid: int, **fields: Any) -> EnvelopeKey:
    return EnvelopeKey.from_private(bytes([kid] * 8), bytes([kid] * 32), **fields)


# --- spec 7.2 vectors ------------------------------------------------------------------------


def test_public_keys() -> None:
    assert x25519_public(SERVER_PRIVATE).hex() == SERVER_PUBLIC_HEX
    assert x25519_public(CLIENT_PRIVATE).hex() == CLIENT_PUBLIC_HEX
    assert vector_ring().active(NOW).public.hex() == SERVER_PUBLIC_HEX


def test_shared_secret_and_aead_key_from_both_sides() -> None:
    client_public = bytes.fromhex(CLIENT_PUBLIC_HEX)
    server_public = bytes.fromhex(SERVER_PUBLIC_HEX)
    assert bindings.crypto_scalarmult(SERVER_PRIVATE, client_public).hex() == SHARED_SECRET_HEX
    assert bindings.crypto_scalarmult(CLIENT_PRIVATE, server_public).hex() == SHARED_SECRET_HEX
    assert shared_key(PEPPER, HANDLE, SERVER_PRIVATE, client_public).hex() == AEAD_KEY_HEX
    assert shared_key(PEPPER, HANDLE, CLIENT_PRIVATE, server_public).hex() == AEAD_KEY_HEX


def test_handle_is_user_id_of_alice() -> None:
    assert user_id("alice") == HANDLE


def test_seal_with_the_fixed_nonce_gives_the_vector_ciphertext() -> None:
    nonce, ciphertext = seal(bytes.fromhex(AEAD_KEY_HEX), HANDLE, PLAINTEXT, NONCE)
    assert nonce == NONCE
    assert len(ciphertext) == 217
    assert wire.Envelope.build(KID, bytes(32), nonce, ciphertext).ciphertext == CIPHERTEXT_B64


def test_open_registration_decrypts_the_vector_register_body() -> None:
    request = wire.decode(REGISTER_BODY, wire.RegisterRequest)
    handle = bytes.fromhex(request.handle)
    plaintext = vector_ring().open_registration(handle, request.envelope.sealed())
    assert plaintext == PLAINTEXT
    identity = wire.decode(plaintext, PublicIdentity)
    assert identity.user_id == request.handle
    identity.validate()


def test_open_registration_accepts_unpadded_and_uppercase_fields() -> None:
    envelope = vector_envelope(
        kid="0001020304050607".upper(),
        sender_pubkey=CLIENT_PUBLIC_HEX.upper(),
        ciphertext=CIPHERTEXT_B64.rstrip("="),
    )
    assert vector_ring().open_registration(HANDLE, envelope) == PLAINTEXT


def test_resolve_direction_with_the_same_nonce_is_byte_identical() -> None:
    # Spec 7.2: no direction separation, so the server's answer to requester 57db... with
    # this nonce is the same ciphertext; only sender_pubkey differs.
    aead_key = shared_key(PEPPER, HANDLE, SERVER_PRIVATE, bytes.fromhex(CLIENT_PUBLIC_HEX))
    _, ciphertext = seal(aead_key, HANDLE, PLAINTEXT, NONCE)
    assert ciphertext == decode_b64(CIPHERTEXT_B64, "ciphertext")


def test_resolution_sealer_round_trip_from_the_client_side() -> None:
    ring = vector_ring()
    sealed = ring.resolution_sealer(HANDLE, bytes.fromhex(CLIENT_PUBLIC_HEX), NOW)(PLAINTEXT)
    envelope = wire.Envelope.build(*sealed)
    assert envelope.kid == KID.hex()
    assert envelope.sender_pubkey == SERVER_PUBLIC_HEX
    assert envelope.nonce != NONCE.hex() and len(sealed.nonce) == 24
    client_key = shared_key(PEPPER, HANDLE, CLIENT_PRIVATE, sealed.sender_public)
    opened = open_sealed(client_key, HANDLE, sealed.nonce, sealed.ciphertext)
    assert opened == PLAINTEXT


def test_resolution_sealer_uses_a_fresh_nonce_every_time() -> None:
    ring = vector_ring()
    requester = bytes.fromhex(CLIENT_PUBLIC_HEX)
    sealer = ring.resolution_sealer(HANDLE, requester, NOW)
    first, second = sealer(PLAINTEXT), sealer(PLAINTEXT)
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext


def test_resolution_sealer_uses_the_active_key() -> None:
    inactive, active = key(1), key(2, active=True)
    ring = KeyRing(Secret(PEPPER), (inactive, active))
    requester_private, requester_public = x25519_keypair()
    sealed = ring.resolution_sealer(HANDLE, requester_public, NOW)(PLAINTEXT)
    envelope = wire.Envelope.build(*sealed)
    assert envelope.kid == active.kid.hex()
    assert sealed.sender_public == active.public
    aead_key = shared_key(PEPPER, HANDLE, requester_private, active.public)
    opened = open_sealed(aead_key, HANDLE, sealed.nonce, sealed.ciphertext)
    assert opened == PLAINTEXT


def test_resolution_sealer_without_an_active_key_is_key_unavailable() -> None:
    ring = KeyRing(Secret(PEPPER), (key(1), key(2, active=True, not_after_ms=NOW - 1)))
    with pytest.raises(KeyUnavailable):
        ring.resolution_sealer(HANDLE, bytes.fromhex(CLIENT_PUBLIC_HEX), NOW)


# --- low-order and wrong-length keys -------------------------------------------------------


@pytest.mark.parametrize("point", LOW_ORDER_POINTS.values(), ids=LOW_ORDER_POINTS.keys())
def test_low_order_public_keys_are_invalid_input(point: str) -> None:
    peer = bytes.fromhex(point)
    with pytest.raises(InvalidInput, match=r"^invalid input: envelope key$"):
        shared_key(PEPPER, HANDLE, SERVER_PRIVATE, peer)
    with pytest.raises(InvalidInput):
        vector_ring().open_registration(HANDLE, vector_envelope(sender_pubkey=point))
    with pytest.raises(InvalidInput):
        vector_ring().resolution_sealer(HANDLE, peer, NOW)  # refused before any sealing


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_length_public_key_is_invalid_input(length: int) -> None:
    with pytest.raises(InvalidInput):
        shared_key(PEPPER, HANDLE, SERVER_PRIVATE, bytes([9]) * length)
    with pytest.raises(InvalidInput):
        vector_ring().resolution_sealer(HANDLE, bytes([9]) * length, NOW)


@pytest.mark.parametrize("length", [0, 31, 33])
def test_wrong_length_private_key_is_invalid_input(length: int) -> None:
    with pytest.raises(InvalidInput):
        shared_key(PEPPER, HANDLE, bytes([9]) * length, bytes.fromhex(CLIENT_PUBLIC_HEX))
    with pytest.raises(InvalidInput):
        x25519_public(bytes([9]) * length)
    with pytest.raises(InvalidInput):
        EnvelopeKey.from_private(KID, bytes([9]) * length)


@pytest.mark.parametrize("length", [0, 7, 9])
def test_wrong_length_kid_is_invalid_input(length: int) -> None:
    with pytest.raises(InvalidInput):
        EnvelopeKey.from_private(bytes(length), SERVER_PRIVATE)


@pytest.mark.parametrize(
    "changes",
    [
        {"sender_pubkey": CLIENT_PUBLIC_HEX[:-2]},
        {"sender_pubkey": CLIENT_PUBLIC_HEX + "00"},
        {"kid": "00010203040506"},
        {"kid": "000102030405060708"},
        {"nonce": NONCE.hex()[:-2]},
        {"nonce": NONCE.hex() + "18"},
    ],
)
def test_wrong_length_envelope_fields_are_invalid_input(changes: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        vector_ring().open_registration(HANDLE, vector_envelope(**changes))


# --- short and forged ciphertexts ----------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 15])
def test_ciphertext_shorter_than_the_tag_is_invalid_input(length: int) -> None:
    aead_key = bytes.fromhex(AEAD_KEY_HEX)
    with pytest.raises(InvalidInput, match=r"^invalid input: unable to decrypt envelope$"):
        open_sealed(aead_key, HANDLE, NONCE, bytes(length))
    short = wire.Envelope.build(KID, bytes.fromhex(CLIENT_PUBLIC_HEX), NONCE, bytes(length))
    with pytest.raises(InvalidInput, match="unable to decrypt envelope"):
        vector_ring().open_registration(HANDLE, short.sealed())


def test_bare_tag_of_empty_plaintext_opens() -> None:
    aead_key = bytes.fromhex(AEAD_KEY_HEX)
    _, ciphertext = seal(aead_key, HANDLE, b"", NONCE)
    assert len(ciphertext) == 16
    assert open_sealed(aead_key, HANDLE, NONCE, ciphertext) == b""


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("index", [0, 100, 200, 201, 216])  # body and tag bytes
def test_tampered_ciphertext_is_invalid_input(index: int) -> None:
    raw = decode_b64(CIPHERTEXT_B64, "ciphertext")
    tampered = wire.Envelope.build(KID, bytes.fromhex(CLIENT_PUBLIC_HEX), NONCE, _flip(raw, index))
    with pytest.raises(InvalidInput, match="unable to decrypt envelope"):
        vector_ring().open_registration(HANDLE, tampered.sealed())


def test_truncated_ciphertext_is_invalid_input() -> None:
    raw = decode_b64(CIPHERTEXT_B64, "ciphertext")
    with pytest.raises(InvalidInput, match="unable to decrypt envelope"):
        open_sealed(bytes.fromhex(AEAD_KEY_HEX), HANDLE, NONCE, raw[:-1])


def test_other_handle_as_aad_is_invalid_input() -> None:
    # The handle is both AAD and a KDF input; flip only the AAD to test the AEAD binding.
    raw = decode_b64(CIPHERTEXT_B64, "ciphertext")
    with pytest.raises(InvalidInput):
        open_sealed(bytes.fromhex(AEAD_KEY_HEX), _flip(HANDLE, 31), NONCE, raw)
    with pytest.raises(InvalidInput):
        vector_ring().open_registration(user_id("bob"), vector_envelope())


def test_other_nonce_pepper_or_sender_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        vector_ring().open_registration(HANDLE, vector_envelope(nonce=_flip(NONCE, 23).hex()))
    other_pepper = KeyRing(Secret(_flip(PEPPER, 0)), vector_ring().keys)
    with pytest.raises(InvalidInput):
        other_pepper.open_registration(HANDLE, vector_envelope())
    _, stranger = x25519_keypair()
    with pytest.raises(InvalidInput):
        vector_ring().open_registration(HANDLE, vector_envelope(sender_pubkey=stranger.hex()))


def test_bad_base64_ciphertext_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match=re.escape("invalid input: envelope.ciphertext")):
        vector_ring().open_registration(HANDLE, vector_envelope(ciphertext="*" + CIPHERTEXT_B64))


# --- key ring semantics (spec 4.4) ---------------------------------------------------------


def test_active_is_the_first_active_unexpired_key() -> None:
    expired_active = key(1, active=True, not_after_ms=NOW - 1)
    inactive = key(2)
    first_good, second_good = key(3, active=True), key(4, active=True, not_after_ms=NOW + 10)
    ring = KeyRing(Secret(PEPPER), (expired_active, inactive, first_good, second_good))
    assert ring.active(NOW) is first_good
    ring = KeyRing(Secret(PEPPER), (expired_active, inactive, second_good, first_good))
    assert ring.active(NOW) is second_good


def test_active_without_a_usable_key_is_key_unavailable() -> None:
    with pytest.raises(KeyUnavailable):
        KeyRing(Secret(PEPPER), (key(1), key(2))).active(NOW)
    with pytest.raises(KeyUnavailable):
        KeyRing(Secret(PEPPER), (key(1, active=True, not_after_ms=NOW - 1),)).active(NOW)
    with pytest.raises(KeyUnavailable):
        KeyRing(Secret(PEPPER), ()).active(NOW)


def test_validity_window_is_not_before_inclusive_not_after_exclusive() -> None:
    k = key(1, active=True, not_before_ms=NOW - 10, not_after_ms=NOW)
    ring = KeyRing(Secret(PEPPER), (k,))
    assert not k.expired(NOW - 1) and k.expired(NOW)
    assert ring.active(NOW - 1) is k and ring.active(NOW - 10) is k
    assert ring.find(k.kid, NOW - 1) is k
    for outside in (NOW - 11, NOW):
        with pytest.raises(KeyUnavailable):
            ring.active(outside)
        with pytest.raises(InvalidInput, match=r"^invalid input: unable to decrypt envelope$"):
            ring.find(k.kid, outside)


def test_keys_without_not_after_never_expire() -> None:
    k = key(1, active=True)
    assert not k.expired(2**63)
    assert KeyRing(Secret(PEPPER), (k,)).active(2**63) is k


def test_find_ignores_active_and_skips_expired() -> None:
    old_expired = EnvelopeKey.from_private(KID, bytes([1] * 32), not_after_ms=NOW - 1)
    inactive = EnvelopeKey.from_private(KID, bytes([2] * 32))
    later = EnvelopeKey.from_private(KID, bytes([3] * 32), active=True)
    ring = KeyRing(Secret(PEPPER), (old_expired, inactive, later))
    assert ring.find(KID, NOW) is inactive  # first unexpired with the kid, active or not
    assert ring.find(KID, NOW - 2) is old_expired
    with pytest.raises(InvalidInput, match="unable to decrypt envelope"):
        ring.find(bytes(8), NOW)


def test_grace_and_retired_keys() -> None:
    grace = EnvelopeKey.from_private(KID, SERVER_PRIVATE, opens_until_ms=NOW)
    retired = EnvelopeKey.from_private(KID, SERVER_PRIVATE, retired=True)
    assert KeyRing(Secret(PEPPER), (grace,)).open_registration(HANDLE, vector_envelope(), NOW - 1)
    assert [grace.state(NOW - 1), grace.state(NOW), retired.state(NOW)] == [
        "grace",
        "retired",
        "retired",
    ]
    for k, at in ((grace, NOW), (retired, NOW - 1)):
        with pytest.raises(InvalidInput, match="unable to decrypt envelope"):
            KeyRing(Secret(PEPPER), (k,)).open_registration(HANDLE, vector_envelope(), at)


def test_inactive_key_still_decrypts_registrations() -> None:
    inactive = EnvelopeKey.from_private(KID, SERVER_PRIVATE, active=False)
    ring = KeyRing(Secret(PEPPER), (key(9, active=True), inactive))
    assert ring.open_registration(HANDLE, vector_envelope()) == PLAINTEXT


def test_expired_key_no_longer_decrypts_registrations() -> None:
    expiring = EnvelopeKey.from_private(KID, SERVER_PRIVATE, active=True, not_after_ms=NOW)
    ring = KeyRing(Secret(PEPPER), (expiring,))
    assert ring.open_registration(HANDLE, vector_envelope(), NOW - 1) == PLAINTEXT
    with pytest.raises(InvalidInput, match="unable to decrypt envelope"):
        ring.open_registration(HANDLE, vector_envelope(), NOW)
    with pytest.raises(InvalidInput, match="unable to decrypt envelope"):
        ring.open_registration(HANDLE, vector_envelope())  # default: the real clock


def test_unknown_kid_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="unable to decrypt envelope"):
        vector_ring().open_registration(HANDLE, vector_envelope(kid="0001020304050608"))


def test_describe() -> None:
    assert vector_ring().active(NOW).describe(NOW) == {
        "kid_hex": "0001020304050607",
        "x25519_public_key_hex": SERVER_PUBLIC_HEX,
        "active": True,
    }
    assert key(1, not_after_ms=NOW).describe(NOW - 1)["not_after_epoch_ms"] == NOW
    staged = key(2, active=True, not_before_ms=NOW + 1)
    assert [staged.describe(NOW)["active"], staged.describe(NOW + 1)["active"]] == [False, True]


# --- secrets stay secret -------------------------------------------------------------------


def test_reprs_never_show_private_material() -> None:
    ring = vector_ring()
    texts = [repr(ring), str(ring), repr(ring.keys[0]), str(ring.keys[0]), repr(ring.keys)]
    texts += [repr(ring.pepper), str(ring.keys[0].private), f"{ring.keys[0].private}"]
    for text in texts:
        for secret in (SERVER_PRIVATE, PEPPER):
            assert secret.hex() not in text
            assert secret.hex().upper() not in text
            assert repr(secret) not in text
    assert repr(Secret(SERVER_PRIVATE)) == "Secret('**********')"
    assert "0001020304050607" in repr(ring)  # kids are public and useful in logs


def test_secrets_cannot_be_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secret(SERVER_PRIVATE))
    with pytest.raises(TypeError):
        pickle.dumps(vector_ring().keys[0])


def test_secret_equality_and_reveal() -> None:
    assert Secret(PEPPER) == Secret(bytes(PEPPER))
    assert Secret(PEPPER) != Secret(SERVER_PRIVATE)
    assert Secret(PEPPER) != PEPPER  # never equal to the raw bytes
    assert Secret(PEPPER).reveal() == PEPPER
