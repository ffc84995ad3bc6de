"""The owner's routes (extensions spec §2): signed updates, deletes and presences, and the
sealed presence lookup.

POST /identity/update    {"handle", "envelope", "ts_ms", "signature_hex"} -> {"ok": true}
POST /identity/delete    {"handle", "ts_ms", "signature_hex"} -> {"ok": true}
POST /announce           Presence, signed in ``x-registryd-signature`` -> {"ok": true}
POST /presence/resolve   {"handle", "requester_ephemeral_pubkey_hex"} -> {"handle", "envelope"}

Errors: 400 malformed or outside the clock skew, 401 unknown handle or bad signature (the
same answer), 409 ``conflict: stale timestamp``, 503 when the presence store is full.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import signed_op, wire
from ..encoding import decode_hex
from ..errors import InvalidInput, Unauthorized
from ..identity import PublicIdentity, parse_handle
from ..ownership import Changes, Owners, SignedOp
from ..presence import expiry_ms
from ..runtime import Runtime
from ..storage.records import SLOT_IDENTITY, SLOT_OPS, SLOT_PRESENCE, Owned
from .body import OK, json_response, read_json
from .public import PublicApi


class OwnershipApi:
    """The owner's routes over ``state``; ``public`` seals presence lookups as resolves."""

    def __init__(self, state: Runtime, public: PublicApi) -> None:
        self.state = state
        self.public = public
        self.owners = Owners(state)

    def routes(self) -> list[Route]:
        return [
            Route("/identity/update", self.update, methods=["POST"]),
            Route("/identity/delete", self.delete, methods=["POST"]),
            Route("/announce", self.announce, methods=["POST"]),
            Route("/presence/resolve", self.presence_resolve, methods=["POST"]),
        ]

    async def update(self, request: Request) -> Response:
        state = self.state
        req = await read_json(request, wire.UpdateRequest, state.config.server)
        handle = parse_handle(req.handle)
        signature = decode_hex(req.signature_hex, signed_op.SIGNATURE_LEN, "signature_hex")
        identity = self.public.open_identity(handle, req.envelope)
        new = identity.to_json()
        op = SignedOp(signed_op.UPDATE, handle, req.ts_ms, signed_op.digest(new), signature)

        def write(owned: Owned, ops: bytes) -> Changes:
            if owned.identity is None:  # run() found a registered key: never taken
                raise Unauthorized()
            stored = wire.decode(owned.identity, PublicIdentity)
            if identity.created_at_ms <= stored.created_at_ms:
                raise InvalidInput("created_at_ms is not after the stored identity's")
            return {SLOT_IDENTITY: (new, 0), SLOT_OPS: (ops, 0)}

        await self.owners.run(op, write)
        return json_response(OK)

    async def delete(self, request: Request) -> Response:
        state = self.state
        req = await read_json(request, wire.DeleteRequest, state.config.server)
        handle = parse_handle(req.handle)
        signature = decode_hex(req.signature_hex, signed_op.SIGNATURE_LEN, "signature_hex")
        op = SignedOp(signed_op.DELETE, handle, req.ts_ms, signed_op.digest(b""), signature)

        def write(owned: Owned, ops: bytes) -> Changes:
            tombstone = (ops, self.owners.tombstone_expiry(ops))
            return {SLOT_IDENTITY: (None, 0), SLOT_PRESENCE: (None, 0), SLOT_OPS: tombstone}

        await self.owners.run(op, write)
        return json_response(OK)

    async def announce(self, request: Request) -> Response:
        """Spec 4.5 ``/announce``, signed (extensions spec §2.3): the body is validated first
        (400), then the ``x-registryd-signature`` header (401 without one unless
        ``[presence] accept_unsigned``)."""
        state = self.state
        presence = await read_json(request, wire.Presence, state.config.server)
        handle = decode_hex(presence.user_id, 32, "user_id")
        presence.validate()
        presence.user_id = handle.hex()
        body = wire.encode(presence)  # the canonical JSON, stored and signed
        expires = expiry_ms(presence.ts_ms, state.clock(), state.config.presence.ttl_seconds)
        header = request.headers.get(signed_op.SIGNATURE_HEADER)
        if header is None and state.config.presence.accept_unsigned:
            await self.owners.unsigned_presence(handle, body, expires)
            return json_response(OK)
        try:
            signature = decode_hex(header, signed_op.SIGNATURE_LEN, signed_op.SIGNATURE_HEADER)
        except InvalidInput:
            raise Unauthorized() from None
        op = SignedOp(signed_op.PRESENCE, handle, presence.ts_ms, signed_op.digest(body), signature)

        def write(owned: Owned, ops: bytes) -> Changes:
            return {SLOT_PRESENCE: (body, expires), SLOT_OPS: (ops, 0)}

        await self.owners.run(op, write)
        return json_response(OK)

    async def presence_resolve(self, request: Request) -> Response:
        """Extensions spec §2.4: the stored Presence JSON sealed as a resolve answer; an
        expired presence is a miss whether or not the GC has run."""
        state = self.state

        async def lookup(handle: bytes) -> bytes | None:
            found = await state.storage.get_presence(handle)
            if found is None or found[1] <= state.clock():
                return None
            return found[0]

        return await self.public.sealed_lookup(request, lookup)
