"""The public endpoints (spec 4.5): the reference's methods, paths, bodies and status codes.

POST /register            {"handle", "envelope"} -> {"ok": true}; 409 if taken by another
                          identity, 200 again for the same one (extensions spec §1)
POST /resolve             {"handle", "requester_ephemeral_pubkey_hex"} -> {"handle", "envelope"}
GET  /check_user/{handle} {"exists": bool}
GET  /envelope_pubkey     the active key; /envelope_pubkeys: every key
GET  /health              {"status": "ok", "active_kid"}, or 503 {"status": "degraded"}
GET  /pow/challenge       with [pow] enabled (spec 4.7)
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import wire
from ..abuse.pow import ProofOfWork
from ..abuse.ratelimit import client_key
from ..encoding import decode_hex
from ..envelope import padded
from ..errors import Conflict, InvalidInput, KeyUnavailable, NotFound, PowRequired, StorageError
from ..hashcash import HEADER as POW_HEADER
from ..identity import PublicIdentity, parse_handle
from ..ownership import check_identity
from ..runtime import Runtime
from .body import OK, json_response, read_json


class PublicApi:
    """The public routes over ``state``; ``pow`` checks proofs of work (None: ``[pow]`` off)."""

    def __init__(self, state: Runtime, pow: ProofOfWork | None) -> None:
        self.state = state
        self.pow = pow
        self._pad = 0
        self._miss = bytearray()  # what a constant-shape miss seals: resolve_pad_bytes random

    def routes(self) -> list[Route]:
        routes = [
            Route("/register", self.register, methods=["POST"]),
            Route("/resolve", self.resolve, methods=["POST"]),
            Route("/check_user/{handle}", self.check_user, methods=["GET"]),
            Route("/envelope_pubkey", self.envelope_pubkey, methods=["GET"]),
            Route("/envelope_pubkeys", self.envelope_pubkeys, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
        ]
        if self.pow is not None:
            routes.append(Route("/pow/challenge", self._challenge(self.pow), methods=["GET"]))
        return routes

    async def health(self, request: Request) -> Response:
        """200 ``{"status": "ok", "active_kid"}``, or 503 ``{"status": "degraded", "reason"}``
        when no envelope key is valid (resolves and ``/envelope_pubkey`` then answer 503 too) or
        the storage cannot answer (Redis unreachable: every storage call answers 503 too)."""
        try:
            key = self.state.keyring.active(self.state.clock())
        except KeyUnavailable:
            reason = "no valid active envelope key"
            return json_response({"status": "degraded", "reason": reason}, 503)
        try:
            await self.state.storage.ping()
        except StorageError:
            reason = "storage unavailable"
            return json_response({"status": "degraded", "reason": reason}, 503)
        return json_response({"status": "ok", "active_kid": key.kid.hex()})

    async def require_pow(self, request: Request) -> None:
        """Spec 4.7: with ``[pow] enabled``, a fresh proof in ``x-enigma-pow`` (400 otherwise)."""
        if self.pow is not None:
            proofs = self.state.metrics.pow_proofs
            try:
                await self.pow.averify(request.headers.get(POW_HEADER), client_key(request))
            except PowRequired:
                proofs.labels("refused").inc()
                raise
            proofs.labels("accepted").inc()

    def _challenge(self, pow: ProofOfWork) -> Callable[[Request], Awaitable[Response]]:
        issued = self.state.metrics.pow_issued

        async def pow_challenge(request: Request) -> Response:
            challenge = await pow.aissue(client_key(request))
            issued.inc()
            return json_response(challenge)

        return pow_challenge

    async def register(self, request: Request) -> Response:
        state = self.state
        req = await read_json(request, wire.RegisterRequest, state.config.server)
        handle = parse_handle(req.handle)
        stored = self.open_identity(handle, req.envelope).to_json()
        if not await state.storage.register(handle, stored):
            if await state.storage.get_identity(handle) != stored:  # equal: idempotent
                raise Conflict()
        return json_response(OK)

    def open_identity(self, handle: bytes, envelope: wire.Envelope) -> PublicIdentity:
        """The PublicIdentity sealed in a registration or update ``envelope`` (wire spec §4.2)
        for the 32-byte ``handle``, checked: its own handle, its fields and, with
        ``[identity] verify_signatures``, its keys and signature (extensions spec §1).
        Raises InvalidInput (400) or KeyUnavailable (503)."""
        state = self.state
        plaintext = state.keyring.open_registration(handle, envelope.sealed(), state.clock())
        identity = wire.decode(plaintext, PublicIdentity)
        if identity.handle != handle:
            raise InvalidInput("handle does not match identity")
        identity.validate()
        if state.config.identity.verify_signatures:
            check_identity(identity)
        return identity

    async def resolve(self, request: Request) -> Response:
        return await self.sealed_lookup(request, self.state.storage.get_identity)

    async def sealed_lookup(
        self, request: Request, lookup: Callable[[bytes], Awaitable[bytes | None]]
    ) -> Response:
        """Answer a resolve-shaped request (spec 4.2, 4.5; extensions spec §2.4): proof of
        work, then ``lookup(handle)`` sealed to the requester, a miss constant-shape when
        ``[privacy] constant_shape_resolve``."""
        state = self.state
        await self.require_pow(request)
        req = await read_json(request, wire.ResolveRequest, state.config.server)
        handle = parse_handle(req.handle)
        field = "requester_ephemeral_pubkey_hex"
        requester = decode_hex(req.requester_ephemeral_pubkey_hex, 32, field)
        try:  # before the lookup, so a bad key is refused alike for hits and misses
            seal_to_requester = state.keyring.resolution_sealer(handle, requester, state.clock())
        except InvalidInput:
            raise InvalidInput(field) from None
        found = await lookup(handle)
        privacy = state.config.privacy
        if not privacy.constant_shape_resolve:
            sealed = None if found is None else seal_to_requester(found)
        else:  # a miss looks like a hit: same length bucket, same DH and AEAD work
            pad = privacy.resolve_pad_bytes
            if pad != self._pad:  # at start-up, and after a reload that changed it
                self._pad, self._miss = pad, bytearray(os.urandom(pad))
            # bytes(...) copies, as padded() does: both paths allocate and fill one bucket
            plaintext = bytes(self._miss) if found is None else padded(found, pad)
            sealed = seal_to_requester(plaintext)
        envelope = None if sealed is None else wire.Envelope.build(*sealed)
        return json_response(wire.ResolveResponse(req.handle, envelope))

    async def check_user(self, request: Request) -> Response:
        if not self.state.config.privacy.check_user_enabled:
            raise NotFound()
        await self.require_pow(request)
        handle = parse_handle(request.path_params["handle"])
        exists = await self.state.storage.exists(handle)
        return json_response(b'{"exists":true}' if exists else b'{"exists":false}')

    async def envelope_pubkey(self, request: Request) -> Response:
        now = self.state.clock()
        return json_response(self.state.keyring.active(now).describe(now))

    async def envelope_pubkeys(self, request: Request) -> Response:
        now = self.state.clock()
        return json_response([key.describe(now) for key in self.state.keyring.keys])
