"""Usernames, UserId and PublicIdentity (spec sections 1, 2, 7.1, 7.2, 7.3)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from functools import partial

import pytest
from nacl.signing import SigningKey

from registryd import wire
from registryd.errors import InvalidInput
from registryd.identity import (
    PublicIdentity,
    normalize_username,
    parse_handle,
    signed_payload,
    user_id,
)
from tests.vectors import ALICE_HANDLE_HEX as ALICE_HEX
from tests.vectors import PLAINTEXT as PLAINTEXT_7_2
from tests.vectors import USER_ID_VECTORS


def alice(**changes: object) -> PublicIdentity:
    fields: dict[str, object] = {
        "user_id": ALICE_HEX,
        "username_hint": "alice",
        "signing_public_key": [1, 2, 3],
        "encryption_public_key": [4, 5, 6],
        "signature": [7, 8, 9],
        "created_at_ms": 1,
    }
    fields.update(changes)
    return PublicIdentity(**fields)  # type: ignore[arg-type]


# --- UserId (spec 1, 7.1) -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "utf8_hex", "expected"), USER_ID_VECTORS)
def test_user_id_vectors(name: str, utf8_hex: str, expected: str) -> None:
    assert name.encode("utf-8").hex() == utf8_hex  # the vector's input is what we think it is
    assert user_id(name).hex() == expected
    assert len(user_id(name)) == 32


def test_no_lowercasing() -> None:
    assert user_id("Bob") != user_id("bob")
    assert normalize_username("Bob") == "Bob"


def test_no_unicode_normalization() -> None:
    nfc, nfd = "Jos\u00e9", "Jose\u0301"
    assert unicodedata.normalize("NFC", nfd) == nfc
    assert normalize_username(nfd) == nfd
    assert user_id(nfc) != user_id(nfd)


def test_inner_whitespace_is_kept_and_outer_unicode_whitespace_trimmed() -> None:
    assert normalize_username("  al ice  ") == "al ice"
    assert normalize_username("\u3000alice\u00a0") == "alice"  # White_Space, not Cc
    assert user_id("\u2003alice\u2029") == user_id("alice")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "\u3000",  # ideographic space only: empty after trim
        "\talice",  # control char even though trim would remove it
        "alice\n",
        "al\x00ice",
        "ali\x7fce",
        "alice\x85",  # NEL: Cc (and whitespace), still rejected
        "a" * 65,  # 65 bytes
        "é" * 33,  # 66 bytes
        "€" * 22,  # 66 bytes in 22 chars
    ],
)
def test_rejected_usernames(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        user_id(name)
    assert str(info.value) == "invalid input: username"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["a" * 64, "é" * 32, " " + "a" * 64 + " ", "x"])
def test_accepted_usernames_up_to_64_bytes(name: str) -> None:
    normalized = normalize_username(name)
    assert len(normalized.encode("utf-8")) <= 64
    assert len(user_id(name)) == 32


def _raised(call: Callable[[], object]) -> Exception | None:
    try:
        call()
    except Exception as exc:
        return exc
    return None


def test_lone_surrogate_username_is_invalid_input() -> None:
    # Lone surrogates reach here from a \ud800 JSON escape or from argv (surrogateescape).
    for name in ("al\ud800ice", "\udcff", "alice\udfff"):
        exc = _raised(partial(normalize_username, name))
        assert isinstance(exc, InvalidInput), (
            f"BUG in registryd/identity.py: normalize_username({name!r}) raised {exc!r}, "
            "which becomes a 500. Fix: in normalize_username replace "
            '`len(trimmed.encode("utf-8")) > MAX_USERNAME_BYTES` with a size computed in '
            '`try: size = len(trimmed.encode("utf-8")) except UnicodeEncodeError: raise '
            'InvalidInput("username") from None`'
        )


def test_64_byte_bound_counts_bytes_not_chars() -> None:
    assert len("é" * 32) == 32 and len(("é" * 32).encode()) == 64
    normalize_username("é" * 32)
    with pytest.raises(InvalidInput):
        normalize_username("é" * 32 + "a")  # 33 chars, 65 bytes


@pytest.mark.parametrize(
    "value", [ALICE_HEX, ALICE_HEX.upper(), ALICE_HEX[:32] + ALICE_HEX[32:].upper()]
)
def test_parse_handle_accepts_any_case(value: str) -> None:
    assert parse_handle(value) == bytes.fromhex(ALICE_HEX)


@pytest.mark.parametrize(
    "value", [ALICE_HEX[:-2], ALICE_HEX + "00", "0x" + ALICE_HEX[2:], " " + ALICE_HEX[1:], 42, None]
)
def test_parse_handle_rejects(value: object) -> None:
    with pytest.raises(InvalidInput, match=r"^invalid input: handle$"):
        parse_handle(value)


# --- signed_payload (spec 2, 7.3) ----------------------------------------------------------


def test_signed_payload_vector() -> None:
    payload = signed_payload("alice", bytes([1, 2, 3]), bytes([4, 5, 6]))
    assert payload.hex() == "00000005616c6963650000000301020300000003040506"


def test_signed_payload_without_hint_and_with_non_ascii_hint() -> None:
    assert signed_payload(None, b"\x01", b"").hex() == "00000000" + "0000000101" + "00000000"
    assert signed_payload("é", b"", b"").hex() == "00000002c3a9" + "00000000" * 2  # byte length


def test_signed_payload_length_prefix_is_big_endian() -> None:
    payload = signed_payload(None, bytes(300), b"")
    assert payload[4:8] == (300).to_bytes(4, "big")


# --- canonical JSON (spec 2, 7.2) ----------------------------------------------------------


def test_canonical_json_is_the_7_2_plaintext() -> None:
    assert len(PLAINTEXT_7_2) == 201
    assert alice().to_json() == PLAINTEXT_7_2


def test_canonical_json_round_trips_through_the_strict_decoder() -> None:
    decoded = wire.decode(PLAINTEXT_7_2, PublicIdentity)
    assert decoded == alice()
    assert decoded.to_json() == PLAINTEXT_7_2


def test_canonical_json_lowercases_user_id_and_writes_null_hint() -> None:
    identity = alice(user_id=ALICE_HEX.upper(), username_hint=None)
    out = identity.to_json()
    assert out.startswith(b'{"user_id":"' + ALICE_HEX.encode() + b'","username_hint":null,')


def test_canonical_json_emits_raw_utf8() -> None:
    out = alice(username_hint="José").to_json()
    assert b'"username_hint":"Jos\xc3\xa9"' in out
    assert b"\\u" not in out


# --- strict decoding (spec 2 serde_json rules) ---------------------------------------------


def test_missing_username_hint_is_none() -> None:
    raw = PLAINTEXT_7_2.replace(b'"username_hint":"alice",', b"")
    assert wire.decode(raw, PublicIdentity).username_hint is None


@pytest.mark.parametrize(
    "raw",
    [
        PLAINTEXT_7_2[:-1] + b',"extra":1}',  # unknown key
        PLAINTEXT_7_2[:-1] + b',"created_at_ms":2}',  # duplicate key
        PLAINTEXT_7_2.replace(b"[1,2,3]", b"[1.0,2,3]"),  # float in a byte array
        PLAINTEXT_7_2.replace(b"[1,2,3]", b"[1,2,256]"),  # > 255
        PLAINTEXT_7_2.replace(b"[1,2,3]", b"[-1,2,3]"),  # negative
        PLAINTEXT_7_2.replace(b"[1,2,3]", b'"AQID"'),  # base64 string instead of an array
        PLAINTEXT_7_2.replace(b'"created_at_ms":1', b'"created_at_ms":1e3'),
        PLAINTEXT_7_2.replace(b'"created_at_ms":1', b'"created_at_ms":-1'),
        PLAINTEXT_7_2.replace(b'"created_at_ms":1', b'"created_at_ms":"1"'),
        PLAINTEXT_7_2.replace(b'"signature":[7,8,9],', b""),  # missing required key
    ],
)
def test_strict_decoding_rejects(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        wire.decode(raw, PublicIdentity)


def test_created_at_ms_beyond_u64_is_a_decoding_error() -> None:
    # Spec 2: serde_json rejects a created_at_ms that does not fit u64 while *decoding*, so a
    # /sync body carrying one is a 400, not an identity silently skipped by validate().
    raw = PLAINTEXT_7_2.replace(b'"created_at_ms":1', b'"created_at_ms":18446744073709551616')
    try:
        decoded: PublicIdentity | None = wire.decode(raw, PublicIdentity)
    except InvalidInput:
        decoded = None
    assert decoded is None, (
        "BUG in registryd/identity.py: PublicIdentity accepts created_at_ms = 2**64 at decode "
        "time (msgspec Meta cannot bound ints beyond int64). Fix: add to PublicIdentity "
        "`def __post_init__(self) -> None: if self.created_at_ms > U64_MAX: raise "
        "ValueError('created_at_ms: expected an integer that fits in u64')`"
    )


def test_lone_surrogate_escape_in_identity_json_is_invalid_input() -> None:
    # serde_json refuses "\ud800" (lone surrogate) while parsing; Python's json accepts it and
    # the str then cannot be encoded as UTF-8 by validate()/to_json().
    raw = PLAINTEXT_7_2.replace(b'"username_hint":"alice"', b'"username_hint":"al\\ud800ice"')
    exc = _raised(lambda: wire.decode(raw, PublicIdentity).validate())
    assert isinstance(exc, InvalidInput), (
        f"BUG in registryd/wire.py: a lone-surrogate JSON escape gave {exc!r} (a 500 on "
        "/register, /sync, /announce, POST /nodes); wire.decode must refuse it as serde_json does"
    )


def test_u64_max_created_at_ms_is_accepted() -> None:
    raw = PLAINTEXT_7_2.replace(b'"created_at_ms":1', b'"created_at_ms":18446744073709551615')
    identity = wire.decode(raw, PublicIdentity)
    assert identity.created_at_ms == 2**64 - 1
    identity.validate()


# --- validate() (spec 2) -------------------------------------------------------------------


def test_the_7_2_identity_is_valid() -> None:
    alice().validate()


@pytest.mark.parametrize(
    "changes",
    [
        {"signing_public_key": []},
        {"encryption_public_key": []},
        {"signature": []},
        {"created_at_ms": 0},
        {"username_hint": ""},
        {"username_hint": "   "},
        {"username_hint": "\talice"},
        {"username_hint": "alice\n"},
        {"username_hint": "a" * 65},
        {"username_hint": "é" * 33},
        {"user_id": ALICE_HEX[:-1]},  # not a 32-byte handle
        {"user_id": "zz" + ALICE_HEX[2:]},
    ],
    ids=lambda changes: "-".join(f"{k}={v!r:.12}" for k, v in changes.items()),
)
def test_validate_rejects(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidInput) as info:
        alice(**changes).validate()
    assert str(info.value) == "invalid input: identity"


@pytest.mark.parametrize(
    "changes",
    [
        {"username_hint": None},
        {"username_hint": "  bob  "},  # hint not checked against user_id, trimmed value fine
        {"username_hint": "a" * 64},
        {"username_hint": "é" * 32},
        {"created_at_ms": 2**64 - 1},  # no upper bound, no "not in the future"
        {"signing_public_key": [0] * 1000},  # no key-size check
        {"signature": [1]},  # no signature verification
        {"user_id": ALICE_HEX.upper()},
    ],
)
def test_validate_accepts(changes: dict[str, object]) -> None:
    alice(**changes).validate()


# --- Ed25519 signatures (client-side helper) -----------------------------------------------


def signed_alice(key: SigningKey, hint: str | None = "alice") -> PublicIdentity:
    signing = list(bytes(key.verify_key))
    encryption = list(range(32))
    payload = signed_payload(hint, bytes(signing), bytes(encryption))
    return alice(
        username_hint=hint,
        signing_public_key=signing,
        encryption_public_key=encryption,
        signature=list(key.sign(payload).signature),
    )


@pytest.mark.parametrize("hint", ["alice", None, "José"])
def test_verify_signature_valid(hint: str | None) -> None:
    identity = signed_alice(SigningKey(bytes(range(32))), hint)
    assert identity.verify_signature() is True
    identity.validate()


def _flip(values: list[int], index: int = 0) -> list[int]:
    out = list(values)
    out[index] ^= 0x01
    return out


def test_verify_signature_rejects_tampering() -> None:
    good = signed_alice(SigningKey(bytes(range(32))))
    tampered = [
        alice(**{**_fields(good), "signature": _flip(good.signature)}),
        alice(**{**_fields(good), "encryption_public_key": _flip(good.encryption_public_key, 5)}),
        alice(**{**_fields(good), "username_hint": "alicf"}),
        alice(**{**_fields(good), "username_hint": None}),
        alice(**{**_fields(good), "signing_public_key": _flip(good.signing_public_key)}),
        alice(**{**_fields(good), "signature": good.signature[:-1]}),  # wrong length
        alice(**{**_fields(good), "signing_public_key": good.signing_public_key[:31]}),
        alice(**{**_fields(good), "signature": []}),
    ]
    for identity in tampered:
        assert identity.verify_signature() is False, identity


def test_signature_does_not_cover_user_id_or_created_at() -> None:
    good = signed_alice(SigningKey(bytes(range(32))))
    moved = alice(**{**_fields(good), "user_id": "00" * 32, "created_at_ms": 99})
    assert moved.verify_signature() is True  # spec 2: only hint and the two keys are signed


def test_signature_by_another_key_is_rejected() -> None:
    good = signed_alice(SigningKey(bytes(range(32))))
    other = signed_alice(SigningKey(bytes(range(1, 33))))
    swapped = alice(**{**_fields(good), "signature": other.signature})
    assert swapped.verify_signature() is False


def _fields(identity: PublicIdentity) -> dict[str, object]:
    return {name: getattr(identity, name) for name in identity.__struct_fields__}
