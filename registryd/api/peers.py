"""What peers call: ``POST /sync`` and ``POST /nodes``, and the open ``GET /nodes``.

A peer is a caller on the peer listener (its TLS layer accepted a certificate from the
peer-only CA) or one with a bearer token matching ``[peers] token_hashes``; anyone else gets
401. ``/sync`` answers 401 unless ``allow_sync`` too.

    POST /sync    {"identities": [PublicIdentity, ...]} -> {"merged": n}; invalid ones (and,
                  with [identity] verify_signatures, badly signed ones) skipped
    GET  /nodes   {"nodes": [{"base_url"}, ...]}
    POST /nodes   {"nodes": [{"base_url"}, ...]} -> {"merged": n}; all valid, or nothing stored
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import wire
from ..errors import InvalidInput, Unauthorized
from ..ownership import check_identity
from ..runtime import Runtime
from .auth import TokenVerifier, bearer_token, on_peer_listener
from .body import json_response, read_json


class PeerApi:
    """The peer routes over ``state``, with a token-check pool of their own (a flood of bad
    peer tokens cannot queue out the operator's admin calls, and back)."""

    def __init__(self, state: Runtime) -> None:
        self.state = state
        self.tokens = TokenVerifier()

    def routes(self) -> list[Route]:
        return [
            Route("/sync", self.sync, methods=["POST"]),
            Route("/nodes", self.get_nodes, methods=["GET"]),
            Route("/nodes", self.post_nodes, methods=["POST"]),
        ]

    async def require_peer(self, request: Request) -> None:
        """Pass authenticated peers: callers on the peer listener, or with a bearer token
        matching one of ``[peers] token_hashes`` (else 401)."""
        if on_peer_listener(request):
            return
        token = bearer_token(request)
        if not await self.tokens.verify(token, self.state.config.peers.token_hashes):
            raise Unauthorized()

    async def sync(self, request: Request) -> Response:
        state = self.state
        if not state.config.allow_sync:
            raise Unauthorized()
        await self.require_peer(request)
        req = await read_json(request, wire.SyncRequest, state.config.server)
        records = []
        for identity in req.identities:
            try:
                identity.validate()
                if state.config.identity.verify_signatures:
                    check_identity(identity)  # extensions spec §1
            except InvalidInput:
                continue  # the reference skips invalid identities silently
            records.append((identity.handle, identity.to_json()))
        return json_response({"merged": await state.storage.merge(records)})

    async def get_nodes(self, request: Request) -> Response:
        nodes = await self.state.storage.nodes()
        return json_response({"nodes": [{"base_url": url} for url in nodes]})

    async def post_nodes(self, request: Request) -> Response:
        state = self.state
        await self.require_peer(request)
        payload = await read_json(request, wire.NodesPayload, state.config.server)
        urls = [node.validated() for node in payload.nodes]  # all valid, or nothing stored
        added = await state.storage.add_nodes(urls, state.config.max_nodes)
        return json_response({"merged": added})
