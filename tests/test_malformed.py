"""Malformed requests: always a 4xx with the structured error body, never a 5xx (DESIGN).

Each case goes through the in-process app on every backend. The app's exceptions are not
re-raised into the test (``raise_app_exceptions=False``), so a crash shows up as the 500 a real
client would get.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from registryd import config as config_mod
from registryd.config import Config
from registryd.envelope import seal, shared_key
from registryd.identity import user_id
from registryd.storage import Storage, open_storage
from registryd.timespec import now_ms
from tests.helpers import Clock, app_client, backend_of, config_text
from tests.spec_owner import H, Owner, canonical, sign_hex
from tests.vectors import (
    ALICE_HANDLE_HEX,
    CLIENT_PRIVATE,
    KID_HEX,
    PEPPER_HEX,
    SERVER_PUBLIC_HEX,
)
from tests.vectors import CIPHERTEXT_B64 as CIPHERTEXT
from tests.vectors import CLIENT_PUBLIC_HEX as CLIENT_PUBLIC
from tests.vectors import NONCE_HEX as NONCE

TOKEN = "malformed-peer-token"
TOKEN_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(TOKEN)
AUTH = ((b"authorization", f"Bearer {TOKEN}".encode()),)

ALICE = ALICE_HANDLE_HEX  # registered by the fixture
BOB = user_id("bob").hex()  # never registered
CAROL = user_id("carol")  # the handle of the sealed-identity cases
ZERO_KEY = "00" * 32
ORDER8_KEY = "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
MAX_BODY = 64 * 1024  # [server] max_body_bytes default

PREFIX = {
    "INVALID_INPUT": "invalid input",
    "UNAUTHORIZED": "unauthorized",
    "NOT_FOUND": "not found",
    "METHOD_NOT_ALLOWED": "method not allowed",
    "PAYLOAD_TOO_LARGE": "payload too large",
    "CONFLICT": "conflict",
}


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = "application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    stream: bool = False  # send the body as chunks without a Content-Length
    status: int = 400
    code: str = "INVALID_INPUT"
    message: str | None = None  # exact message when the spec fixes it, else the code's prefix
    extra: dict[str, Any] = field(default_factory=dict)


def dump(obj: object) -> bytes:
    return json.dumps(obj).encode()


def envelope(**overrides: object) -> dict[str, object]:
    env: dict[str, object] = {
        "kid": KID_HEX,
        "sender_pubkey": CLIENT_PUBLIC,
        "nonce": NONCE,
        "ciphertext": CIPHERTEXT,
    }
    env.update(overrides)
    return env


def register(handle: str = ALICE, **overrides: object) -> bytes:
    return dump({"handle": handle, "envelope": envelope(**overrides)})


def resolve(handle: str = ALICE, key: str = CLIENT_PUBLIC) -> bytes:
    return dump({"handle": handle, "requester_ephemeral_pubkey_hex": key})


def announce(user: object = ALICE, addr: object = "203.0.113.7:51820", ts: object = 1) -> bytes:
    return dump({"user_id": user, "addr": addr, "ts_ms": ts})


def identity_text(
    signing: str = "[1,2,3]",
    created: str = "1",
    hint: str = '"carol"',
    user: str | None = None,
    extra: str = "",
) -> bytes:
    uid = CAROL.hex() if user is None else user
    return (
        f'{{"user_id":"{uid}","username_hint":{hint},"signing_public_key":{signing},'
        f'"encryption_public_key":[4,5,6],"signature":[7,8,9],"created_at_ms":{created}{extra}}}'
    ).encode()


def sealed(plaintext: bytes, handle: bytes = CAROL) -> bytes:
    """A valid /register envelope (spec 7.2 client key) around ``plaintext``."""
    key = shared_key(
        bytes.fromhex(PEPPER_HEX), handle, CLIENT_PRIVATE, bytes.fromhex(SERVER_PUBLIC_HEX)
    )
    nonce, ciphertext = seal(key, handle, plaintext, bytes.fromhex(NONCE))
    return register(handle.hex(), nonce=nonce.hex(), ciphertext=b64(ciphertext))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def nodes(*urls: object) -> bytes:
    return dump({"nodes": [{"base_url": u} for u in urls]})


def identities(*items: bytes) -> bytes:
    return b'{"identities":[' + b",".join(items) + b"]}"


# -- ownership (extensions spec §1, §2). Alice has fixed keys; the fixture registers her and has
# one update and one presence accepted at NOW - 1 s, for replays and stale timestamps to be
# stale against. Messages are built from the spec's bytes (tests.spec_owner).
NOW = now_ms() // 1000 * 1000  # the wall clock's: Redis expires presences by its own clock
SKEW_MS = 300_000  # [identity] signed_op_skew_seconds default
ALICE_OWNER = Owner("alice", SigningKey(bytes([0x11] * 32)), PrivateKey(bytes([0x22] * 32)))
BOB_OWNER = Owner("bob", SigningKey(bytes([0x33] * 32)), PrivateKey(bytes([0x44] * 32)))
CAROL_OWNER = Owner("carol", SigningKey(bytes([0x66] * 32)), PrivateKey(bytes([0x77] * 32)))
MALLORY_KEY = SigningKey(bytes([0x55] * 32))
ALICE_H, BOB_H = ALICE_OWNER.handle, BOB_OWNER.handle
ACCEPTED_TS = NOW - 1_000
ACCEPTED_ADDR = "203.0.113.7:51820"
UPDATE, DELETE, PRESENCE_RESOLVE = "/identity/update", "/identity/delete", "/presence/resolve"
SIGNATURE = "invalid input: identity signature"
HINT = "invalid input: username_hint does not match user_id"
MISMATCH = "invalid input: handle does not match identity"
STALE = "conflict: stale timestamp"
SKEWED = "invalid input: ts_ms outside the allowed clock skew"
SIG_HEX = "invalid input: signature_hex"


def envelope_of(plaintext: bytes, handle: bytes) -> dict[str, object]:
    """A /register-style envelope (spec 7.2 client key) around ``plaintext`` for ``handle``."""
    key = shared_key(
        bytes.fromhex(PEPPER_HEX), handle, CLIENT_PRIVATE, bytes.fromhex(SERVER_PUBLIC_HEX)
    )
    nonce, ciphertext = seal(key, handle, plaintext, bytes.fromhex(NONCE))
    return envelope(nonce=nonce.hex(), ciphertext=b64(ciphertext))


def _signed_ts(ts: object) -> int:
    return ts if isinstance(ts, int) and 0 <= ts < 2**64 else NOW


def update(
    identity: dict[str, Any] | None = None,
    ts: object = NOW,
    *,
    owner: Owner = ALICE_OWNER,
    key: SigningKey | None = None,
    op: str = "update",
    signed_handle: bytes | None = None,
    signature_hex: str | None = None,
    created: int = 3,
    **fields: object,
) -> bytes:
    """A /identity/update body of ``owner``'s handle, valid unless told otherwise: at NOW, to
    ``owner``'s identity created at ``created``, signed by ``owner``."""
    plain = canonical(owner.identity(created) if identity is None else identity)
    if signature_hex is None:
        signed = owner.handle if signed_handle is None else signed_handle
        signer = owner.signing if key is None else key
        signature_hex = sign_hex(signer, op, signed, _signed_ts(ts), H(plain))
    body: dict[str, object] = {
        "handle": owner.handle.hex(),
        "envelope": envelope_of(plain, owner.handle),
        "ts_ms": ts,
        "signature_hex": signature_hex,
        **fields,
    }
    return dump(body)


def forged_signature() -> dict[str, Any]:
    """Alice's next identity with a signature that does not verify over its keys."""
    return {**ALICE_OWNER.identity(3), "signature": list(bytes(64))}


def tampered_update() -> bytes:
    body = json.loads(update())
    body["envelope"]["ciphertext"] = "A" + body["envelope"]["ciphertext"][1:]
    return dump(body)


def delete(
    ts: object = NOW,
    *,
    owner: Owner = ALICE_OWNER,
    key: SigningKey | None = None,
    op: str = "delete",
    signature_hex: str | None = None,
) -> bytes:
    if signature_hex is None:
        signer = owner.signing if key is None else key
        signature_hex = sign_hex(signer, op, owner.handle, _signed_ts(ts), H(b""))
    return dump({"handle": owner.handle.hex(), "ts_ms": ts, "signature_hex": signature_hex})


def signed_announce(
    ts: int = NOW,
    addr: str = ACCEPTED_ADDR,
    *,
    owner: Owner = ALICE_OWNER,
    key: SigningKey | None = None,
    op: str = "presence",
    signed_addr: str | None = None,
    signature_hex: str | None = None,
) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]:
    """(body, headers) of an announce signed in ``x-registryd-signature`` (§2.3)."""
    body = {"user_id": owner.handle.hex(), "addr": addr, "ts_ms": ts}
    if signature_hex is None:
        signed = canonical({**body, "addr": addr if signed_addr is None else signed_addr})
        signer = owner.signing if key is None else key
        signature_hex = sign_hex(signer, op, owner.handle, ts, H(signed))
    return dump(body), ((b"x-registryd-signature", signature_hex.encode()),)


def presence_case(id: str, status: int, **kwargs: Any) -> Case:
    body, headers = signed_announce(**kwargs)
    code, message = {
        400: ("INVALID_INPUT", SKEWED),
        401: ("UNAUTHORIZED", "unauthorized"),
        409: ("CONFLICT", STALE),
    }[status]
    return post(id, "/announce", body, headers=headers, status=status, code=code, message=message)


def unauthorized(id: str, path: str, body: bytes) -> Case:
    return post(id, path, body, status=401, code="UNAUTHORIZED", message="unauthorized")


def stale(id: str, path: str, body: bytes) -> Case:
    return post(id, path, body, status=409, code="CONFLICT", message=STALE)


def carol(
    *,
    signing: bytes | None = None,
    enc: bytes | None = None,
    sig: bytes | None = None,
    hint: str = "carol",
    signed_hint: str | None = None,
) -> bytes:
    """CAROL's identity JSON with real keys and signature, each part replaceable (§1)."""
    spk = bytes(CAROL_OWNER.signing.verify_key) if signing is None else signing
    epk = bytes(CAROL_OWNER.encryption.public_key) if enc is None else enc
    payload_hint = (hint if signed_hint is None else signed_hint).encode()
    payload = b"".join(len(p).to_bytes(4, "big") + p for p in (payload_hint, spk, epk))
    signature = CAROL_OWNER.signing.sign(payload).signature if sig is None else sig
    fields = {
        "user_id": CAROL.hex(),
        "username_hint": hint,
        "signing_public_key": list(spk),
        "encryption_public_key": list(epk),
        "signature": list(signature),
        "created_at_ms": 1,
    }
    return canonical(fields)


REQUESTER = "invalid input: requester_ephemeral_pubkey_hex"
HANDLE = "invalid input: handle"
DECRYPT = "invalid input: unable to decrypt envelope"
IDENTITY = "invalid input: identity"
PRESENCE = "invalid input: presence"
NODE = "invalid input: node"


def post(id: str, path: str, body: bytes | None, **kwargs: Any) -> Case:
    return Case(id, "POST", path, body, **kwargs)


def get(id: str, path: str, **kwargs: Any) -> Case:
    return Case(id, "GET", path, None, content_type=None, **kwargs)


CASES = [
    # /resolve: low-order requester keys are refused alike for registered and unknown handles
    post(
        "resolve-requester-zero-registered", "/resolve", resolve(ALICE, ZERO_KEY), message=REQUESTER
    ),
    post(
        "resolve-requester-zero-unregistered", "/resolve", resolve(BOB, ZERO_KEY), message=REQUESTER
    ),
    post(
        "resolve-requester-order8-registered",
        "/resolve",
        resolve(ALICE, ORDER8_KEY),
        message=REQUESTER,
    ),
    post(
        "resolve-requester-order8-unregistered",
        "/resolve",
        resolve(BOB, ORDER8_KEY),
        message=REQUESTER,
    ),
    post(
        "resolve-requester-short", "/resolve", resolve(ALICE, CLIENT_PUBLIC[:62]), message=REQUESTER
    ),
    post(
        "resolve-requester-odd", "/resolve", resolve(ALICE, CLIENT_PUBLIC[:63]), message=REQUESTER
    ),
    post("resolve-requester-non-hex", "/resolve", resolve(ALICE, "zz" * 32), message=REQUESTER),
    post("resolve-handle-odd", "/resolve", resolve(ALICE[:63]), message=HANDLE),
    post("resolve-handle-short", "/resolve", resolve(ALICE[:62]), message=HANDLE),
    post("resolve-handle-long", "/resolve", resolve(ALICE + "00"), message=HANDLE),
    post("resolve-handle-0x-prefix", "/resolve", resolve("0x" + ALICE[:62]), message=HANDLE),
    post("resolve-handle-0x-prefix-full", "/resolve", resolve("0x" + ALICE), message=HANDLE),
    post("resolve-handle-non-hex", "/resolve", resolve("g" + ALICE[1:]), message=HANDLE),
    post("resolve-handle-whitespace", "/resolve", resolve(" " + ALICE[1:]), message=HANDLE),
    post(
        "resolve-handle-not-string",
        "/resolve",
        b'{"handle":1,"requester_ephemeral_pubkey_hex":"' + CLIENT_PUBLIC.encode() + b'"}',
    ),
    post("resolve-missing-field", "/resolve", dump({"handle": ALICE})),
    # /register: envelope fields
    # a low-order sender key gets the message of any other altered envelope
    post("register-sender-zero", "/register", register(sender_pubkey=ZERO_KEY), message=DECRYPT),
    post(
        "register-sender-order8", "/register", register(sender_pubkey=ORDER8_KEY), message=DECRYPT
    ),
    post(
        "register-ciphertext-short",
        "/register",
        register(ciphertext=b64(bytes(15))),
        message=DECRYPT,
    ),
    post("register-ciphertext-empty", "/register", register(ciphertext=""), message=DECRYPT),
    post(
        "register-ciphertext-tampered",
        "/register",
        register(ciphertext="A" + CIPHERTEXT[1:]),
        message=DECRYPT,
    ),
    post("register-kid-odd", "/register", register(kid=KID_HEX[:15])),
    post("register-kid-short", "/register", register(kid=KID_HEX[:14])),
    post("register-kid-long", "/register", register(kid=KID_HEX + "08")),
    post("register-kid-non-hex", "/register", register(kid="000102030405060x")),
    post(
        "register-kid-unknown",
        "/register",
        register(kid="0706050403020100"),
        message="invalid input: unable to decrypt envelope",
    ),
    post("register-nonce-short", "/register", register(nonce=NONCE[:46])),
    post("register-nonce-long", "/register", register(nonce=NONCE + "18")),
    post("register-nonce-odd", "/register", register(nonce=NONCE[:47])),
    post("register-sender-odd", "/register", register(sender_pubkey=CLIENT_PUBLIC[:63])),
    post("register-sender-short", "/register", register(sender_pubkey=CLIENT_PUBLIC[:62])),
    post(
        "register-sender-0x-prefix", "/register", register(sender_pubkey="0x" + CLIENT_PUBLIC[:62])
    ),
    post("register-handle-short", "/register", register(ALICE[:62]), message=HANDLE),
    post("register-handle-non-hex", "/register", register("z" * 64), message=HANDLE),
    post("register-ciphertext-bad-base64", "/register", register(ciphertext="!!!!")),
    post(
        "register-ciphertext-url-safe",
        "/register",
        register(ciphertext=CIPHERTEXT.replace("+", "-").replace("/", "_")),
    ),
    post(
        "register-ciphertext-noncanonical-bits",
        "/register",
        register(ciphertext=CIPHERTEXT[:-3] + "B=="),
    ),
    post("register-ciphertext-bad-padding", "/register", register(ciphertext=CIPHERTEXT[:-1])),
    post("register-ciphertext-inner-padding", "/register", register(ciphertext="QQ==QQ==")),
    post("register-ciphertext-not-string", "/register", register(ciphertext=[1, 2, 3])),
    post(
        "register-unknown-top-level-key",
        "/register",
        dump({"handle": ALICE, "envelope": envelope(), "pow": "x"}),
    ),
    post("register-unknown-envelope-key", "/register", register(aad="")),
    post(
        "register-missing-envelope-key",
        "/register",
        dump({"handle": ALICE, "envelope": {"kid": KID_HEX}}),
    ),
    post("register-envelope-null", "/register", dump({"handle": ALICE, "envelope": None})),
    post(
        "register-duplicate-top-level-key",
        "/register",
        b'{"handle":"' + BOB.encode() + b'",' + register()[1:],
    ),
    post(
        "register-duplicate-envelope-key",
        "/register",
        register().replace(b'"kid": ', b'"kid": "' + KID_HEX.encode() + b'", "kid": ', 1),
    ),
    # /register: a valid envelope around malformed identity JSON reaches the inner parser
    post("identity-float-byte", "/register", sealed(identity_text(signing="[1.0,2,3]"))),
    post("identity-exponent-byte", "/register", sealed(identity_text(signing="[1e0,2,3]"))),
    post("identity-negative-byte", "/register", sealed(identity_text(signing="[-1,2,3]"))),
    post("identity-byte-256", "/register", sealed(identity_text(signing="[1,256,3]"))),
    post("identity-string-byte", "/register", sealed(identity_text(signing='["1",2,3]'))),
    post("identity-bytes-as-base64", "/register", sealed(identity_text(signing='"AQID"'))),
    post("identity-created-float", "/register", sealed(identity_text(created="1.0"))),
    post("identity-created-negative", "/register", sealed(identity_text(created="-1"))),
    post("identity-created-over-u64", "/register", sealed(identity_text(created=str(2**64)))),
    post("identity-unknown-field", "/register", sealed(identity_text(extra=',"nickname":"c"'))),
    post(
        "identity-duplicate-field", "/register", sealed(identity_text(extra=',"created_at_ms":2'))
    ),
    post("identity-not-object", "/register", sealed(b"[]")),
    post(
        "identity-invalid-utf8",
        "/register",
        sealed(identity_text(hint='"\xff"').replace(b"\xc3\xbf", b"\xff")),
    ),
    post("identity-nan", "/register", sealed(identity_text(created="NaN"))),
    post(
        "identity-empty-signing-key",
        "/register",
        sealed(identity_text(signing="[]")),
        message=IDENTITY,
    ),
    post(
        "identity-created-zero", "/register", sealed(identity_text(created="0")), message=IDENTITY
    ),
    post(
        "identity-hint-control-char",
        "/register",
        sealed(identity_text(hint='"carol\\n"')),
        message=IDENTITY,
    ),
    post("identity-hint-lone-surrogate", "/register", sealed(identity_text(hint='"\\ud800"'))),
    post(
        "identity-user-id-mismatch",
        "/register",
        sealed(identity_text(user=BOB)),
        message="invalid input: handle does not match identity",
    ),
    post("identity-user-id-not-hex", "/register", sealed(identity_text(user="zz" * 32))),
    # whole-body problems
    post("body-deep-nesting", "/register", b"[" * 10_000),
    post("body-deep-nesting-closed", "/resolve", b"[" * 5_000 + b"]" * 5_000),
    post(
        "body-oversized-content-length",
        "/register",
        b" " * (MAX_BODY + 1),
        status=413,
        code="PAYLOAD_TOO_LARGE",
    ),
    post(
        "body-oversized-streamed",
        "/register",
        b" " * (4 * MAX_BODY),
        stream=True,
        status=413,
        code="PAYLOAD_TOO_LARGE",
    ),
    post(
        "body-oversized-declared-only",
        "/resolve",
        resolve(),
        headers=((b"content-length", str(MAX_BODY + 1).encode()),),
        status=413,
        code="PAYLOAD_TOO_LARGE",
    ),
    post("content-type-text-plain", "/resolve", resolve(), content_type="text/plain"),
    post("content-type-missing", "/resolve", resolve(), content_type=None),
    post(
        "content-type-form",
        "/resolve",
        b"handle=" + ALICE.encode(),
        content_type="application/x-www-form-urlencoded",
    ),
    post(
        "content-type-multipart",
        "/announce",
        announce(),
        content_type="multipart/form-data; boundary=x",
    ),
    post(
        "content-length-not-a-number", "/resolve", resolve(), headers=((b"content-length", b"12a"),)
    ),
    post(
        "content-length-non-ascii-digit",
        "/resolve",
        resolve(),
        headers=((b"content-length", "\u00b2".encode("latin-1")),),
    ),
    post(
        "content-length-5000-digits",
        "/resolve",
        resolve(),
        headers=((b"content-length", b"9" * 5000),),
        status=413,
        code="PAYLOAD_TOO_LARGE",
    ),
    post("body-empty", "/register", b""),
    post("body-whitespace", "/register", b" \n "),
    post("body-invalid-utf8", "/resolve", resolve().replace(b'"handle"', b'"hand\xffle"')),
    post("body-utf16", "/resolve", resolve().decode().encode("utf-16")),
    post("body-utf8-bom", "/resolve", b"\xef\xbb\xbf" + resolve()),
    post("resolve-trailing-slash", "/resolve/", resolve(), status=404, code="NOT_FOUND"),
    post("body-json-array", "/register", b"[]"),
    post("body-json-string", "/register", b'"register"'),
    post("body-json-number", "/register", b"42"),
    post("body-json-null", "/resolve", b"null"),
    post("body-nan", "/announce", announce(ts=1).replace(b"1}", b"NaN}")),
    post("body-infinity", "/announce", announce(ts=1).replace(b"1}", b"Infinity}")),
    post("body-trailing-garbage", "/resolve", resolve() + b" {}"),
    post("body-truncated", "/resolve", resolve()[:-5]),
    # routing
    get("unknown-route", "/does-not-exist", status=404, code="NOT_FOUND"),
    post("unknown-subroute", "/register/extra", register(), status=404, code="NOT_FOUND"),
    get("check-user-without-handle", "/check_user/", status=404, code="NOT_FOUND"),
    get("wrong-method-get-register", "/register", status=405, code="METHOD_NOT_ALLOWED"),
    Case(
        "wrong-method-delete-nodes",
        "DELETE",
        "/nodes",
        None,
        content_type=None,
        status=405,
        code="METHOD_NOT_ALLOWED",
    ),
    post(
        "wrong-method-post-check-user",
        f"/check_user/{ALICE}",
        b"{}",
        status=405,
        code="METHOD_NOT_ALLOWED",
    ),
    Case(
        "wrong-method-put-envelope-pubkey",
        "PUT",
        "/envelope_pubkey",
        b"{}",
        status=405,
        code="METHOD_NOT_ALLOWED",
    ),
    # GET /check_user/{handle}
    get("check-user-short", f"/check_user/{ALICE[:62]}", message=HANDLE),
    get("check-user-odd", f"/check_user/{ALICE[:63]}", message=HANDLE),
    get("check-user-non-hex", "/check_user/" + "zz" * 32, message=HANDLE),
    get("check-user-0x-prefix", f"/check_user/0x{ALICE[:62]}", message=HANDLE),
    get("check-user-encoded-space", f"/check_user/%20{ALICE[1:]}", message=HANDLE),
    # /announce
    post("announce-empty-addr", "/announce", announce(addr=""), message=PRESENCE),
    post("announce-blank-addr", "/announce", announce(addr="   \t"), message=PRESENCE),
    post("announce-addr-257-bytes", "/announce", announce(addr="a" * 257), message=PRESENCE),
    post(
        "announce-addr-257-bytes-multibyte",
        "/announce",
        announce(addr="é" * 128 + "a"),
        message=PRESENCE,
    ),
    post("announce-addr-not-string", "/announce", announce(addr=7)),
    post("announce-addr-lone-surrogate", "/announce", announce(addr="\ud800")),
    post("announce-ts-zero", "/announce", announce(ts=0), message=PRESENCE),
    post("announce-ts-float", "/announce", announce(ts=1.5)),
    post("announce-ts-float-integral", "/announce", announce(ts=1.0)),
    post("announce-ts-negative", "/announce", announce(ts=-1)),
    post("announce-ts-over-u64", "/announce", announce(ts=2**64)),
    post("announce-ts-huge-exponent", "/announce", announce(ts=1).replace(b"1}", b"1e400}")),
    post("announce-ts-string", "/announce", announce(ts="1")),
    post("announce-user-id-short", "/announce", announce(user=ALICE[:62])),
    post("announce-user-id-non-hex", "/announce", announce(user="x" * 64)),
    post("announce-user-id-number", "/announce", announce(user=5)),
    post("announce-missing-ts", "/announce", dump({"user_id": ALICE, "addr": "a"})),
    post(
        "announce-unknown-key",
        "/announce",
        dump({"user_id": ALICE, "addr": "a", "ts_ms": 1, "port": 1}),
    ),
    # POST /nodes (authenticated, so the body is validated)
    post(
        "nodes-unauthenticated",
        "/nodes",
        nodes("https://a.example"),
        status=401,
        code="UNAUTHORIZED",
        message="unauthorized",
    ),
    post("nodes-ftp-url", "/nodes", nodes("ftp://a.example"), headers=AUTH, message=NODE),
    post(
        "nodes-upper-case-scheme", "/nodes", nodes("HTTPS://a.example"), headers=AUTH, message=NODE
    ),
    post("nodes-empty-url", "/nodes", nodes(""), headers=AUTH, message=NODE),
    post("nodes-blank-url", "/nodes", nodes("   "), headers=AUTH, message=NODE),
    post(
        "nodes-url-257-bytes", "/nodes", nodes("https://" + "a" * 249), headers=AUTH, message=NODE
    ),
    post(
        "nodes-one-bad-of-two",
        "/nodes",
        nodes("https://ok.example", "gopher://x"),
        headers=AUTH,
        message=NODE,
    ),
    post("nodes-url-not-string", "/nodes", nodes(1), headers=AUTH),
    post(
        "nodes-not-a-list",
        "/nodes",
        dump({"nodes": {"base_url": "https://a.example"}}),
        headers=AUTH,
    ),
    post("nodes-url-lone-surrogate", "/nodes", nodes("https://\udc00"), headers=AUTH),
    # POST /sync (authenticated)
    post(
        "sync-unauthenticated",
        "/sync",
        identities(),
        status=401,
        code="UNAUTHORIZED",
        message="unauthorized",
    ),
    post(
        "sync-wrong-token",
        "/sync",
        identities(),
        headers=((b"authorization", b"Bearer nope"),),
        status=401,
        code="UNAUTHORIZED",
        message="unauthorized",
    ),
    post("sync-byte-256", "/sync", identities(identity_text(signing="[256]")), headers=AUTH),
    post("sync-float-created", "/sync", identities(identity_text(created="1.5")), headers=AUTH),
    post("sync-identities-not-list", "/sync", dump({"identities": {}}), headers=AUTH),
    post(
        "sync-hint-lone-surrogate",
        "/sync",
        identities(identity_text(hint='"\\ud800"')),
        headers=AUTH,
    ),
    # -- extensions spec §1: identity signatures on /register ----------------------------
    post("sig-junk-lengths", "/register", sealed(identity_text()), message=SIGNATURE),
    post("sig-signing-key-31", "/register", sealed(carol(signing=bytes(31))), message=SIGNATURE),
    post("sig-signing-key-33", "/register", sealed(carol(signing=bytes(33))), message=SIGNATURE),
    post("sig-enc-key-31", "/register", sealed(carol(enc=bytes(31))), message=SIGNATURE),
    post("sig-signature-63", "/register", sealed(carol(sig=bytes(63))), message=SIGNATURE),
    post("sig-signature-65", "/register", sealed(carol(sig=bytes(65))), message=SIGNATURE),
    post("sig-enc-key-low-order", "/register", sealed(carol(enc=bytes(32))), message=SIGNATURE),
    post(
        "sig-over-another-hint", "/register", sealed(carol(signed_hint="carl")), message=SIGNATURE
    ),
    post("sig-hint-not-the-handle", "/register", sealed(carol(hint="mallory")), message=HINT),
    # -- §2.1 /identity/update -------------------------------------------------------------
    post("update-sig-63-bytes", UPDATE, update(signature_hex="ab" * 63), message=SIG_HEX),
    post("update-sig-65-bytes", UPDATE, update(signature_hex="ab" * 65), message=SIG_HEX),
    post("update-sig-non-hex", UPDATE, update(signature_hex="zz" * 64), message=SIG_HEX),
    post("update-sig-missing", UPDATE, update().replace(b'"signature_hex"', b'"sig"')),
    post("update-ts-negative", UPDATE, update(ts=-1)),
    post("update-ts-float", UPDATE, update(ts=1.5)),
    post("update-ts-float-integral", UPDATE, update(ts=float(NOW))),
    post("update-ts-over-u64", UPDATE, update(ts=2**64)),
    post("update-ts-string", UPDATE, update(ts=str(NOW))),
    post("update-ts-null", UPDATE, update(ts=None)),
    post("update-ts-future-beyond-skew", UPDATE, update(ts=NOW + SKEW_MS + 1), message=SKEWED),
    post("update-ts-past-beyond-skew", UPDATE, update(ts=NOW - SKEW_MS - 1), message=SKEWED),
    stale("update-ts-replayed", UPDATE, update(ts=ACCEPTED_TS, created=2)),
    stale("update-ts-stale", UPDATE, update(ts=ACCEPTED_TS - 1)),
    stale("update-ts-equal-other-body", UPDATE, update(ts=ACCEPTED_TS, created=4)),
    unauthorized("update-signed-for-another-handle", UPDATE, update(signed_handle=BOB_H)),
    unauthorized("update-signed-as-delete", UPDATE, update(op="delete")),
    unauthorized("update-signed-as-presence", UPDATE, update(op="presence")),
    unauthorized("update-signed-by-another-key", UPDATE, update(key=MALLORY_KEY)),
    unauthorized(
        "update-unregistered-handle", UPDATE, update(BOB_OWNER.identity(2), owner=BOB_OWNER)
    ),
    post(
        "update-new-identity-self-inconsistent",
        UPDATE,
        update(forged_signature()),
        message=SIGNATURE,
    ),
    post(
        "update-new-identity-hint-mismatch",
        UPDATE,
        update(ALICE_OWNER.identity(3, hint="mallory")),
        message=HINT,
    ),
    post(
        "update-new-identity-of-another-user",
        UPDATE,
        update(BOB_OWNER.identity(3)),
        message=MISMATCH,
    ),
    post("update-created-at-not-greater", UPDATE, update(created=2)),
    post("update-created-at-older", UPDATE, update(created=1)),
    post(
        "update-sealed-to-unknown-key",
        UPDATE,
        update().replace(KID_HEX.encode(), b"0706050403020100"),
        message=DECRYPT,
    ),
    post("update-envelope-tampered", UPDATE, tampered_update(), message=DECRYPT),
    post(
        "update-handle-non-hex",
        UPDATE,
        update().replace(ALICE.encode(), b"zz" * 32, 1),
        message=HANDLE,
    ),
    post("update-unknown-field", UPDATE, update(nonce=1)),
    # -- §2.2 /identity/delete -------------------------------------------------------------
    post("delete-sig-32-bytes", DELETE, delete(signature_hex="00" * 32), message=SIG_HEX),
    post("delete-ts-exponent", DELETE, delete().replace(str(NOW).encode(), b"1.7e12")),
    post("delete-ts-beyond-skew", DELETE, delete(ts=NOW + SKEW_MS + 1), message=SKEWED),
    stale("delete-ts-stale", DELETE, delete(ts=ACCEPTED_TS)),
    unauthorized("delete-signed-as-update", DELETE, delete(op="update")),
    unauthorized("delete-signed-by-another-key", DELETE, delete(key=MALLORY_KEY)),
    unauthorized("delete-unregistered-handle", DELETE, delete(owner=BOB_OWNER)),
    # -- §2.3 signed /announce -------------------------------------------------------------
    unauthorized("announce-unsigned", "/announce", announce(ALICE, ts=NOW)),
    presence_case("announce-sig-63-bytes", 401, signature_hex="ab" * 63),
    presence_case("announce-sig-non-hex", 401, signature_hex="xy" * 64),
    presence_case("announce-signed-over-another-body", 401, signed_addr="198.51.100.1:1"),
    presence_case("announce-signed-as-update", 401, op="update"),
    presence_case("announce-signed-by-another-key", 401, key=MALLORY_KEY),
    presence_case("announce-unregistered-handle", 401, owner=BOB_OWNER),
    presence_case("announce-replayed", 409, ts=ACCEPTED_TS),
    presence_case("announce-stale", 409, ts=ACCEPTED_TS - 1, addr="198.51.100.2:2"),
    presence_case("announce-signed-beyond-skew", 400, ts=NOW - SKEW_MS - 1),
    # -- §2.4 /presence/resolve ------------------------------------------------------------
    post(
        "presence-resolve-requester-zero",
        PRESENCE_RESOLVE,
        resolve(ALICE, ZERO_KEY),
        message=REQUESTER,
    ),
    post("presence-resolve-handle-short", PRESENCE_RESOLVE, resolve(ALICE[:62]), message=HANDLE),
    post("presence-resolve-unknown-field", PRESENCE_RESOLVE, resolve()[:-1] + b', "x": 1}'),
]


@pytest.fixture
async def app(backend_config: Config) -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    """The app over each backend with a peer token and ``allow_sync``; alice is registered and
    has one update and one presence accepted (at ``ACCEPTED_TS``)."""
    text = config_text(**backend_of(backend_config), extra="allow_sync = true")
    config = config_mod.parse(text + f'[peers]\ntoken_hashes = ["{TOKEN_HASH}"]\n')
    storage: Storage = open_storage(config)
    try:
        assert await storage.register(ALICE_H, canonical(ALICE_OWNER.identity(1)))
        async with app_client(
            config, storage=storage, clock=Clock(NOW), raise_app_exceptions=False
        ) as c:
            json_type = ((b"content-type", b"application/json"),)
            done = await c.post(
                UPDATE, content=update(ts=ACCEPTED_TS, created=2), headers=json_type
            )
            assert done.status_code == 200, done.text
            body, headers = signed_announce(ts=ACCEPTED_TS)
            done = await c.post("/announce", content=body, headers=headers + json_type)
            assert done.status_code == 200, done.text
            yield c, storage
    finally:
        await storage.close()


@pytest.fixture
def client(app: tuple[httpx.AsyncClient, Storage]) -> httpx.AsyncClient:
    return app[0]


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 4096):
        yield body[start : start + 4096]


async def send(client: httpx.AsyncClient, case: Case) -> httpx.Response:
    headers = list(case.headers)
    if case.content_type is not None:
        headers.append((b"content-type", case.content_type.encode()))
    content = _chunks(case.body or b"") if case.stream else case.body
    return await client.request(case.method, case.path, content=content, headers=headers)


def problems(case: Case, response: httpx.Response) -> list[str]:
    """Everything wrong with ``response`` as an answer to ``case`` (empty if all is well)."""
    found = []
    text = response.text
    if "Traceback" in text or 'File "' in text:
        found.append("traceback in body")
    if not 400 <= response.status_code < 500:
        found.append(f"status {response.status_code}")
    elif response.status_code != case.status:
        found.append(f"status {response.status_code}, expected {case.status}")
    if response.headers.get("content-type", "").split(";")[0] != "application/json":
        found.append(f"content-type {response.headers.get('content-type')!r}")
    try:
        body = response.json()
    except ValueError:
        return [*found, f"body is not JSON: {text[:80]!r}"]
    shape_ok = (
        isinstance(body, dict)
        and list(body) == ["error"]
        and isinstance(body["error"], dict)
        and sorted(body["error"]) == ["code", "message"]
        and isinstance(body["error"]["code"], str)
        and isinstance(body["error"]["message"], str)
    )
    if not shape_ok:
        return [*found, f"body shape: {text[:120]!r}"]
    code, message = body["error"]["code"], body["error"]["message"]
    if code != case.code:
        found.append(f"code {code}, expected {case.code}")
    if case.message is not None and message != case.message:
        found.append(f"message {message!r}, expected {case.message!r}")
    elif case.message is None and not message.startswith(PREFIX[case.code]):
        found.append(f"message {message!r} does not start with {PREFIX[case.code]!r}")
    return found


def test_table_is_large_and_ids_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_malformed_request(client: httpx.AsyncClient, case: Case) -> None:
    response = await send(client, case)
    assert problems(case, response) == []


async def test_no_response_in_the_table_leaks_a_traceback_or_5xx(
    app: tuple[httpx.AsyncClient, Storage],
) -> None:
    """The whole table against one app: one list of every offender, for an overview."""
    client, storage = app
    offenders = {}
    for case in CASES:
        response = await send(client, case)
        text = response.text
        if response.status_code >= 500 or "Traceback" in text or 'File "' in text:
            offenders[case.id] = f"{response.status_code} {text[:80]}"
    assert offenders == {}
    # Nothing in the table registered anything or stored a node.
    assert (await client.get(f"/check_user/{CAROL.hex()}")).json() == {"exists": False}
    assert (await client.get("/nodes")).json() == {"nodes": []}
    # ... and lost nothing: alice is the accepted update's, her presence the accepted one's.
    assert await storage.get_identity(ALICE_H) == canonical(ALICE_OWNER.identity(2))
    assert (await client.get(f"/check_user/{BOB}")).json() == {"exists": False}
    found = await storage.get_presence(ALICE_H)
    assert found is not None
    assert found[0] == canonical({"user_id": ALICE, "addr": ACCEPTED_ADDR, "ts_ms": ACCEPTED_TS})
