"""Single-bit tampering of a sealed /register envelope (issue 8, item 4).

Every bit of the spec 7.2 envelope's fields is flipped in turn and the altered body is sent to
the app: none may register, and the answers may not tell the checks apart beyond the kid
(see :meth:`registryd.keyring.KeyRing.open_registration`).
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from registryd.encoding import decode_b64, decode_hex
from registryd.envelope import X25519_P, canonical_x25519
from registryd.storage import open_storage
from tests.helpers import Clock, app_transport, error, make_config
from tests.vectors import ALICE_HANDLE_HEX, CLIENT_PUBLIC_HEX
from tests.vectors import REGISTER_BODY as SPEC_REGISTER_BODY

UNDECRYPTABLE = "invalid input: unable to decrypt envelope"
FIELDS = ("kid", "sender_pubkey", "nonce", "ciphertext")


def _decode(field: str, text: str) -> bytes:
    """As the server decodes it (strict base64, any-case hex); ValueError if malformed."""
    return (
        decode_b64(text, field)
        if field == "ciphertext"
        else decode_hex(text, len(text) // 2, field)
    )


def _encode(field: str, raw: bytes) -> str:
    return base64.b64encode(raw).decode() if field == "ciphertext" else raw.hex()


def byte_flips() -> Iterator[tuple[str, dict[str, object]]]:
    """(field, body) for every bit of every envelope field's bytes, re-encoded canonically."""
    for field in FIELDS:
        raw = _decode(field, json.loads(SPEC_REGISTER_BODY)["envelope"][field])
        for bit in range(len(raw) * 8):
            body = json.loads(SPEC_REGISTER_BODY)
            flipped = bytearray(raw)
            flipped[bit // 8] ^= 1 << (bit % 8)
            body["envelope"][field] = _encode(field, bytes(flipped))
            yield field, body


def text_flips() -> Iterator[tuple[str, dict[str, object], bool]]:
    """(field, body, same_bytes) for each of the 7 low bits of every character of the fields
    as sent (JSON strings); ``same_bytes`` marks a flip that decodes to the original bytes
    (hex is case-insensitive, spec 1), which is the same envelope, not a tampering."""
    for field in FIELDS:
        text = json.loads(SPEC_REGISTER_BODY)["envelope"][field]
        for i, char in enumerate(text):
            for bit in range(7):
                altered = text[:i] + chr(ord(char) ^ (1 << bit)) + text[i + 1 :]
                try:
                    same = _decode(field, altered) == _decode(field, text)
                except ValueError:
                    same = False
                body = json.loads(SPEC_REGISTER_BODY)
                body["envelope"][field] = altered
                yield field, body, same


@pytest.fixture
async def fresh_api(clock: Clock) -> AsyncIterator[Callable[[], httpx.AsyncClient]]:
    """In-process clients over one memory-backed app, rate limits off."""
    config = make_config(reference=True)  # the spec 7.2 identity's signature is junk
    storage = open_storage(config)
    transport = app_transport(config, storage, clock=clock)
    try:
        yield lambda: httpx.AsyncClient(transport=transport, base_url="http://registry.test")
    finally:
        await storage.close()


def _message(response: httpx.Response) -> str:
    if response.status_code in (200, 409):  # 409: it opened, but alice was already in
        return "accepted"
    message: str = response.json()["error"]["message"]
    return message


async def test_no_single_bit_tampering_of_the_envelope_bytes_registers(
    fresh_api: Callable[[], httpx.AsyncClient],
) -> None:
    """Flipping each of the 512 + 8 x 217 = 2,248 bits of kid, sender key, nonce and
    ciphertext: 0 accepted (main accepted 1, bit 255 of the sender key) and one message per
    message, "unable to decrypt envelope", whichever field was changed."""
    messages: dict[str, Counter[str]] = {field: Counter() for field in FIELDS}
    async with fresh_api() as api:
        for field, body in byte_flips():
            messages[field][_message(await api.post("/register", json=body))] += 1
    total = sum(sum(counts.values()) for counts in messages.values())
    accepted = sum(counts["accepted"] for counts in messages.values())
    assert (total, accepted) == (512 + 8 * 217, 0), messages
    assert messages["kid"] == Counter({UNDECRYPTABLE: 64})
    assert messages["sender_pubkey"] == Counter({UNDECRYPTABLE: 256})
    assert messages["nonce"] == Counter({UNDECRYPTABLE: 192})
    assert messages["ciphertext"] == Counter({UNDECRYPTABLE: 8 * 217})


async def test_no_single_bit_tampering_of_the_envelope_text_registers(
    fresh_api: Callable[[], httpx.AsyncClient],
) -> None:
    """The same at the level of the characters sent (7 bits each): only the flips that
    decode to the very same bytes (a hex letter's case) are accepted; a flip that leaves the
    field well-formed gets the message of the bytes' test; the rest name the malformed field,
    which says what the client sent, not what any check found."""
    same_bytes = Counter[str]()
    accepted: list[tuple[str, dict[str, object]]] = []
    well_formed = Counter[str]()
    async with fresh_api() as api:
        for field, body, same in text_flips():
            message = _message(await api.post("/register", json=body))
            if same:
                same_bytes[message] += 1
            elif message == "accepted":
                accepted.append((field, body))
            elif not message.startswith("invalid input: envelope."):
                well_formed[f"{field}: {message}"] += 1
    assert accepted == []
    assert set(same_bytes) == {"accepted"}
    assert set(well_formed) == {
        f"kid: {UNDECRYPTABLE}",
        f"sender_pubkey: {UNDECRYPTABLE}",
        f"nonce: {UNDECRYPTABLE}",
        f"ciphertext: {UNDECRYPTABLE}",
    }


# -- non-canonical X25519 keys (RFC 7748 section 5) ------------------------------------------

CLIENT_PUBLIC = bytes.fromhex(CLIENT_PUBLIC_HEX)
BIT_255 = CLIENT_PUBLIC[:31] + bytes([CLIENT_PUBLIC[31] | 0x80])
# u + p for a small u still fits in 255 bits: the alias of 9 (the base point) is p + 9
P_PLUS_9 = (X25519_P + 9).to_bytes(32, "little")
NON_CANONICAL = {"bit-255": BIT_255, "p-plus-9": P_PLUS_9, "p": X25519_P.to_bytes(32, "little")}


def test_canonical_x25519() -> None:
    assert canonical_x25519(CLIENT_PUBLIC)
    assert canonical_x25519((X25519_P - 1).to_bytes(32, "little"))
    assert not any(canonical_x25519(key) for key in NON_CANONICAL.values())
    assert not canonical_x25519(CLIENT_PUBLIC[:31])


@pytest.mark.parametrize("key", NON_CANONICAL.values(), ids=NON_CANONICAL.keys())
async def test_non_canonical_sender_key_is_refused_with_the_decrypt_message(
    fresh_api: Callable[[], httpx.AsyncClient], key: bytes
) -> None:
    body = json.loads(SPEC_REGISTER_BODY)
    body["envelope"]["sender_pubkey"] = key.hex()
    async with fresh_api() as api:
        response = await api.post("/register", json=body)
        assert (response.status_code, response.json()) == (
            400,
            error("INVALID_INPUT", UNDECRYPTABLE),
        )
        assert (await api.get(f"/check_user/{ALICE_HANDLE_HEX}")).json() == {"exists": False}


@pytest.mark.parametrize("key", NON_CANONICAL.values(), ids=NON_CANONICAL.keys())
async def test_non_canonical_requester_key_is_refused(
    fresh_api: Callable[[], httpx.AsyncClient], key: bytes
) -> None:
    body = {"handle": ALICE_HANDLE_HEX, "requester_ephemeral_pubkey_hex": key.hex()}
    async with fresh_api() as api:
        response = await api.post("/resolve", json=body)
    assert (response.status_code, response.json()) == (
        400,
        error("INVALID_INPUT", "invalid input: requester_ephemeral_pubkey_hex"),
    )
