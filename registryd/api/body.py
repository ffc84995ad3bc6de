"""Request bodies in and JSON out: the one body reader and the response helpers of every route.

A body is read only with a JSON content type (``application/json`` or ``application/*+json``),
at most ``[server] max_body_bytes`` (413 beyond, also when ``content-length`` says so), within
``[server] body_timeout_seconds`` of the first read (408), and decoded strictly
(:func:`registryd.wire.decode`: 400 on unknown or duplicate keys, wrong types ...).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .. import wire
from ..config import ServerConfig
from ..errors import ApiError, InvalidInput, PayloadTooLarge, RequestTimeout

T = TypeVar("T")

OK = b'{"ok":true}'


def json_response(body: Any, status: int = 200) -> Response:
    """``body`` (bytes as they are, anything else through :func:`registryd.wire.encode`)."""
    content = body if isinstance(body, bytes) else wire.encode(body)
    return Response(content, status, media_type="application/json")


def error_response(exc: ApiError, headers: dict[str, str] | None = None) -> Response:
    """The wire error body (spec 4.6): ``{"error": {"code": ..., "message": ...}}``."""
    if exc.close_connection:
        headers = {**(headers or {}), "connection": "close"}
    return Response(
        wire.error_body(exc), exc.status_code, headers=headers, media_type="application/json"
    )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(request: Request, type_: type[T], server: ServerConfig) -> T:
    """The body decoded strictly as ``type_`` (see the module docstring for the limits)."""
    if not _is_json(request.headers.get("content-type", "")):
        raise InvalidInput("Content type error: expected application/json")
    limit = server.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise InvalidInput("bad content-length")
        if len(declared) > 20 or int(declared) > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
    body = bytearray()
    # Hypercorn's read timeout is per read: a body trickled a byte at a time needs a deadline.
    # (asyncio.timeout: a fraction of anyio's cancel-scope cost; Hypercorn serves asyncio)
    try:
        async with asyncio.timeout(server.body_timeout_seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise PayloadTooLarge(f"body exceeds {limit} bytes")
    except TimeoutError:
        raise RequestTimeout("body not received in time") from None
    except ClientDisconnect:
        raise InvalidInput("client disconnected before the body was complete") from None
    return wire.decode(bytes(body), type_)
