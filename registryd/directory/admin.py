"""``/admin/directory`` (extensions spec §3.7), behind the admin API's checks.

GET  /admin/directory          {"nodes": [...]}: every node with its contact email and dates
POST /admin/directory/remove   {"host": str} -> {"removed": host}; 404 if there is none
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..admin import Admin
from ..errors import NotFound
from ..routes import json_response
from .payload import RemoveBody
from .service import Directory


def admin_routes(directory: Directory) -> list[Route]:
    admin = Admin(directory.registry)

    async def listing(request: Request) -> Response:
        await admin.authorize(request)
        return json_response({"nodes": await directory.admin_listing()})

    async def remove(request: Request) -> Response:
        await admin.authorize(request)
        body = await directory.registry.read_json(request, RemoveBody)
        if not await directory.remove(body.host):
            raise NotFound("no such node")
        return json_response({"removed": body.host})

    return [
        Route("/admin/directory", listing, methods=["GET"]),
        Route("/admin/directory/remove", remove, methods=["POST"]),
    ]
