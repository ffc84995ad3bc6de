"""The agent's optional health endpoint (``health_listen``, extensions spec §3.5, §4).

The registry's prober sends ``GET {api_base_url}/health`` and counts any 2xx as ``online``. When
the node has no such route of its own, the agent answers it: ``200 {"status": "ok", "state":
<agent state>}`` while the agent runs (other paths 404, other methods 405). It is served by
Hypercorn (a library-grade server: header and keep-alive deadlines, HTTP/1.1 parsing) on a socket
bound only to the configured address, plain HTTP; put a TLS proxy in front for an ``https://``
``api_base_url``. No access log is written.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..sockets import MAX_HEADER_BYTES

HEADER_TIMEOUT_SECONDS = 10
GRACE_SECONDS = 2


def health_app(state: Callable[[], str]) -> Starlette:
    """The ASGI app answering ``GET /health`` (and ``HEAD``) with the agent's ``state()``."""

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "state": state()})

    return Starlette(routes=[Route("/health", health, methods=["GET"])])


async def serve_health(
    sock: socket.socket, state: Callable[[], str], shutdown: Callable[[], Awaitable[object]]
) -> None:
    """Serve :func:`health_app` on ``sock`` (taken over) until ``shutdown`` returns."""
    hc = HypercornConfig()
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.include_server_header = False
    hc.h11_max_incomplete_size = MAX_HEADER_BYTES
    hc.keep_alive_timeout = HEADER_TIMEOUT_SECONDS
    hc.graceful_timeout = GRACE_SECONDS
    hc.bind = [f"fd://{sock.detach()}"]
    app = health_app(state)
    # Starlette's ASGI signature is not structurally Hypercorn's TypedDict one; same protocol.
    await serve(app, hc, shutdown_trigger=shutdown)  # type: ignore[arg-type]


def address_of(sock: socket.socket) -> str:
    """``http://IP:port`` of a bound socket (IPv6 in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
