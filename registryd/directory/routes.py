"""The node directory's HTTP routes, HushNet Registry's paths and bodies (extensions spec §3).

    POST /api/registry/challenge  {"pubkey_b64"} -> {"nonce", "expires_at"}         §3.1
    POST /api/registry/register   {"payload", "nonce", "signature_b64", "pubkey_b64"}  §3.2
    POST /api/registry/heartbeat  {"host", "nonce", "signature_b64", "pubkey_b64"}     §3.3
    GET  /api/nodes               {"nodes": [...]}                                    §3.4

The three POSTs are charged to the ``register`` rate-limit bucket. Errors use the wire error
body; bodies are decoded as strictly as every other registryd body.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..routes import OK, json_response
from .payload import ChallengeBody, HeartbeatBody, RegisterBody, decode_pubkey
from .records import rfc3339
from .service import Directory


def directory_routes(directory: Directory) -> list[Route]:
    """The four §3 routes over ``directory``."""
    read_json = directory.registry.read_json

    async def challenge(request: Request) -> Response:
        body = await read_json(request, ChallengeBody)
        nonce, expires_at_ms = directory.challenges.issue(decode_pubkey(body.pubkey_b64))
        return json_response({"nonce": nonce, "expires_at": rfc3339(expires_at_ms)})

    async def register(request: Request) -> Response:
        await directory.register(await read_json(request, RegisterBody))
        return json_response(OK)

    async def heartbeat(request: Request) -> Response:
        await directory.heartbeat(await read_json(request, HeartbeatBody))
        return json_response(OK)

    async def nodes(request: Request) -> Response:
        return json_response(await directory.listing())

    return [
        Route("/api/registry/challenge", challenge, methods=["POST"]),
        Route("/api/registry/register", register, methods=["POST"]),
        Route("/api/registry/heartbeat", heartbeat, methods=["POST"]),
        Route("/api/nodes", nodes, methods=["GET"]),
    ]
