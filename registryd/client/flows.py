"""The operations, each written once as a *flow* that both clients run (spec 4.2, 4.5, 4.7).

A flow is a generator that yields the HTTP calls (:class:`Call`) it needs and receives their
response bodies, or has the :class:`~registryd.errors.ServerError` of an error answer thrown
in (the pattern of httpx's ``Auth.auth_flow``); :mod:`registryd.client.clients` runs flows over
``httpx.Client`` or ``httpx.AsyncClient``. :class:`Flows` holds what the flows share: the
pepper and whether the server wants proof of work.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import NamedTuple, TypeAlias, TypeVar

from .. import signed_op, wire
from ..envelope import seal, shared_key, x25519_keypair
from ..errors import InvalidInput, ProtocolError, ServerError
from ..hashcash import HEADER as POW_HEADER
from ..identity import USER_ID_LEN, PublicIdentity, user_id
from ..secret import Secret
from ..signed_op import SIGNATURE_HEADER
from ..timespec import now_ms
from .answers import (
    ChallengeAnswer,
    ExistsAnswer,
    ServerKey,
    decode,
    expect_ok,
    open_identity,
    open_presence,
    protocol,
    server_key,
)
from .identity_keys import IdentityKeys

T = TypeVar("T")
JSON_CONTENT = {"content-type": "application/json"}
POW_REQUIRED = "POW_REQUIRED"
# Opaque to the client, but it goes into a header before the first ':': visible ASCII, no ':'.
_CHALLENGE_TEXT = re.compile(r"[!-9;-~]{1,256}")


class Work(NamedTuple):
    """A proof of work to attach to a call: solve ``challenge`` to ``difficulty`` bits."""

    challenge: str
    difficulty: int

    def header(self, solution: str) -> dict[str, str]:
        return {POW_HEADER: f"{self.challenge}:{solution}"}


class Call(NamedTuple):
    method: str
    path: str
    body: bytes | None = None
    work: Work | None = None
    signature: bytes | None = None  # extensions spec §2.3: x-registryd-signature

    def headers(self, solution: str | None) -> dict[str, str] | None:
        """The request headers, with the proof of work header once ``work`` is solved."""
        content = JSON_CONTENT if self.body is not None else {}
        proof = self.work.header(solution) if self.work is not None and solution else {}
        signed = {} if self.signature is None else {SIGNATURE_HEADER: self.signature.hex()}
        return {**content, **proof, **signed} or None


Flow: TypeAlias = Generator[Call, bytes, T]


def post(path: str, payload: object) -> Call:
    return Call("POST", path, wire.encode(payload))


def work_of(raw: bytes, max_difficulty: int) -> Work:
    answer = decode(raw, ChallengeAnswer, "/pow/challenge answer")
    if not _CHALLENGE_TEXT.fullmatch(answer.challenge):
        raise ProtocolError("bad /pow/challenge answer: challenge")
    if answer.difficulty > max_difficulty:
        raise ProtocolError(
            f"the server asks for {answer.difficulty} bits of proof of work; "
            f"this client stops at max_pow_difficulty={max_difficulty}"
        )
    return Work(answer.challenge, answer.difficulty)


def handle_of(who: str | bytes) -> bytes:
    if isinstance(who, str):
        return user_id(who)
    if isinstance(who, bytes) and len(who) == USER_ID_LEN:
        return who
    raise InvalidInput("handle: expected a username (str) or 32 raw bytes")


def resume(flow: Flow[T], answer: bytes | ServerError) -> Call:
    """Send ``answer`` into ``flow``, or throw it in if it is an error; the next call."""
    return flow.throw(answer) if isinstance(answer, ServerError) else flow.send(answer)


class Flows:
    """The flows of both clients over the server's 32-byte ``pepper`` (spec 4.2); a proof of
    work above ``max_pow_difficulty`` bits is a :class:`ProtocolError`."""

    def __init__(self, pepper: bytes, max_pow_difficulty: int) -> None:
        self._pepper = Secret(pepper)
        self._max_pow_difficulty = max_pow_difficulty
        self._pow_wanted = False  # the server asked for proof of work: prove up front
        self._last_ts_ms = 0

    def _ts(self, ts_ms: int | None) -> int:
        """``ts_ms``, or now; defaults strictly increase, so this client's signed operations in
        one millisecond are not refused as replays (extensions spec §2 rule 2)."""
        if ts_ms is None:
            ts_ms = max(now_ms(), self._last_ts_ms + 1)
        self._last_ts_ms = max(self._last_ts_ms, ts_ms)
        return ts_ms

    def _proven(self, call: Call) -> Flow[bytes]:
        """``call`` with proof of work if the server wants it (spec 4.7): up front once it has
        asked, else after its first ``POW_REQUIRED``, retrying once."""
        if self._pow_wanted:
            try:
                work = yield from self._challenge()
            except ServerError as exc:
                if exc.status != 404:
                    raise
                self._pow_wanted = False  # the server has switched proof of work off
            else:
                return (yield call._replace(work=work))
        try:
            return (yield call)
        except ServerError as exc:
            if exc.code != POW_REQUIRED:
                raise
        self._pow_wanted = True
        work = yield from self._challenge()
        return (yield call._replace(work=work))

    def _challenge(self) -> Flow[Work]:
        return work_of((yield Call("GET", "/pow/challenge")), self._max_pow_difficulty)

    def _envelope_pubkey(self) -> Flow[ServerKey]:
        return server_key((yield Call("GET", "/envelope_pubkey")))

    def _register(self, identity: PublicIdentity) -> Flow[None]:
        envelope = yield from self._sealed_to_server(identity)
        raw = yield post("/register", wire.RegisterRequest(identity.handle.hex(), envelope))
        expect_ok(raw, "/register answer")

    def _resolve(self, handle: bytes) -> Flow[PublicIdentity | None]:
        private, public = x25519_keypair()
        raw = yield from self._proven(
            post("/resolve", wire.ResolveRequest(handle.hex(), public.hex()))
        )
        answer = decode(raw, wire.ResolveResponse, "/resolve answer")
        if answer.handle != handle.hex():
            raise ProtocolError("the /resolve answer echoes another handle")
        if answer.envelope is None:
            return None
        return open_identity(self._pepper.reveal(), handle, private, answer.envelope)

    def _check_user(self, handle: bytes) -> Flow[bool]:
        raw = yield from self._proven(Call("GET", f"/check_user/{handle.hex()}"))
        return decode(raw, ExistsAnswer, "/check_user answer").exists

    def _announce(
        self, handle: bytes, addr: str, ts_ms: int | None, keys: IdentityKeys | None
    ) -> Flow[None]:
        presence = wire.Presence(handle.hex(), addr, self._ts(ts_ms))
        presence.validate()
        body = wire.encode(presence)  # canonical: what the signature's digest covers
        signature = None
        if keys is not None:
            digest = signed_op.digest(body)
            signature = signed_op.sign(
                keys.signing_key, signed_op.PRESENCE, handle, presence.ts_ms, digest
            )
        call = Call("POST", "/announce", body, signature=signature)
        expect_ok((yield call), "/announce answer")

    def _sealed_to_server(self, identity: PublicIdentity) -> Flow[wire.Envelope]:
        server = yield from self._envelope_pubkey()
        handle = identity.handle
        private, public = x25519_keypair()
        with protocol("server envelope key"):
            key = shared_key(self._pepper.reveal(), handle, private, server.public_key)
        nonce, ciphertext = seal(key, handle, identity.to_json())
        return wire.Envelope.build(server.kid, public, nonce, ciphertext)

    def _update(self, keys: IdentityKeys, identity: PublicIdentity, ts_ms: int) -> Flow[None]:
        envelope = yield from self._sealed_to_server(identity)
        handle = identity.handle
        digest = signed_op.digest(identity.to_json())
        signature = signed_op.sign(keys.signing_key, signed_op.UPDATE, handle, ts_ms, digest)
        body = wire.UpdateRequest(handle.hex(), envelope, ts_ms, signature.hex())
        expect_ok((yield post("/identity/update", body)), "/identity/update answer")

    def _delete(self, keys: IdentityKeys, handle: bytes, ts_ms: int) -> Flow[None]:
        digest = signed_op.digest(b"")
        signature = signed_op.sign(keys.signing_key, signed_op.DELETE, handle, ts_ms, digest)
        body = wire.DeleteRequest(handle.hex(), ts_ms, signature.hex())
        expect_ok((yield post("/identity/delete", body)), "/identity/delete answer")

    def _presence(self, handle: bytes) -> Flow[wire.Presence | None]:
        private, public = x25519_keypair()
        raw = yield from self._proven(
            post("/presence/resolve", wire.ResolveRequest(handle.hex(), public.hex()))
        )
        answer = decode(raw, wire.ResolveResponse, "/presence/resolve answer")
        if answer.handle != handle.hex():
            raise ProtocolError("the /presence/resolve answer echoes another handle")
        if answer.envelope is None:
            return None
        return open_presence(self._pepper.reveal(), handle, private, answer.envelope)
