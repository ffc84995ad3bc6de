"""The node directory's routes: HushNet Registry's paths and bodies (extensions spec §3).

    POST /api/registry/challenge  {"pubkey_b64"} -> {"nonce", "expires_at"}         §3.1
    POST /api/registry/register   {"payload", "nonce", "signature_b64", "pubkey_b64"}  §3.2
    POST /api/registry/heartbeat  {"host", "nonce", "signature_b64", "pubkey_b64"}     §3.3
    GET  /api/nodes               {"nodes": [...]}                                    §3.4
    GET  /admin/directory         {"nodes": [...]}: every node with its contact email and dates
    POST /admin/directory/remove  {"host": str} -> {"removed": host}; 404 if there is none  §3.7

The three POSTs to ``/api/registry`` are charged to the ``register`` rate-limit bucket; the
``/admin`` routes sit behind the admin API's checks (:meth:`AdminApi.authorize`). Errors use the
wire error body; bodies are decoded as strictly as every other registryd body.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..directory.payload import (
    ChallengeBody,
    HeartbeatBody,
    RegisterBody,
    RemoveBody,
    decode_pubkey,
)
from ..directory.records import rfc3339
from ..errors import NotFound
from ..runtime import Runtime
from .admin import AdminApi
from .body import OK, json_response, read_json


def directory_routes(state: Runtime, admin: AdminApi) -> list[Route]:
    """The §3 routes over ``state.directory``, its ``/admin`` routes behind ``admin``."""
    directory = state.directory

    async def challenge(request: Request) -> Response:
        body = await read_json(request, ChallengeBody, state.config.server)
        nonce, expires_at_ms = directory.challenges.issue(decode_pubkey(body.pubkey_b64))
        return json_response({"nonce": nonce, "expires_at": rfc3339(expires_at_ms)})

    async def register(request: Request) -> Response:
        await directory.register(await read_json(request, RegisterBody, state.config.server))
        return json_response(OK)

    async def heartbeat(request: Request) -> Response:
        await directory.heartbeat(await read_json(request, HeartbeatBody, state.config.server))
        return json_response(OK)

    async def nodes(request: Request) -> Response:
        return json_response(await directory.listing())

    async def admin_listing(request: Request) -> Response:
        await admin.authorize(request)
        return json_response({"nodes": await directory.admin_listing()})

    async def admin_remove(request: Request) -> Response:
        await admin.authorize(request)
        body = await read_json(request, RemoveBody, state.config.server)
        request.state.audit = {"host": body.host}  # a node's public name, listed by /api/nodes
        if not await directory.remove(body.host):
            raise NotFound("no such node")
        return json_response({"removed": body.host})

    return [
        Route("/api/registry/challenge", challenge, methods=["POST"]),
        Route("/api/registry/register", register, methods=["POST"]),
        Route("/api/registry/heartbeat", heartbeat, methods=["POST"]),
        Route("/api/nodes", nodes, methods=["GET"]),
        Route("/admin/directory", admin.audited("directory.list", admin_listing), methods=["GET"]),
        Route(
            "/admin/directory/remove",
            admin.audited("directory.remove", admin_remove),
            methods=["POST"],
        ),
    ]
