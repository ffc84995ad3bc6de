"""The metrics listener (``[metrics] address``): plain HTTP, ``GET /metrics`` only, in the
daemon's process and event loop, started and stopped with the public listener.

Served by ``prometheus_client``'s own ASGI app (its text format, content negotiation and gzip)
through the same accept loop as the other listeners (:func:`.listener.serve`: connection cap,
header deadline, graceful stop), rather than ``prometheus_client.start_http_server``, which
would serve from a thread of its own outside the event loop, with no connection cap and no way
to stop it with the daemon. A scrape is rendered on the event loop: ~1 ms for a registry that
has seen every route (``python -m bench.metrics_overhead`` prints it).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

from hypercorn.config import Config as HypercornConfig
from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.types import Receive, Scope, Send

from .. import wire
from ..abuse.clientip import ClientKeys
from ..errors import ApiError, MethodNotAllowed, NotFound
from . import listener

Trigger = Callable[[], Awaitable[object]]
MAX_CONNECTIONS = 16
"""Open connections the metrics listener admits (a scraper needs one or two)."""


class MetricsEndpoint:
    """ASGI app: ``GET``/``HEAD /metrics`` renders ``registry()`` (read at each scrape); every
    other path is 404 and every other method 405, with the wire error body; the lifespan is
    answered here (the public listener runs the registry app's own)."""

    def __init__(self, registry: Callable[[], CollectorRegistry]) -> None:
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] != "/metrics":
            await _error(send, NotFound())
        elif scope["method"] not in ("GET", "HEAD"):
            await _error(send, MethodNotAllowed(), ((b"allow", b"GET, HEAD"),))
        else:
            await make_asgi_app(self.registry())(scope, receive, send)


async def _error(send: Send, exc: ApiError, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = wire.error_body(exc)
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def metrics_hypercorn_config(base: HypercornConfig) -> HypercornConfig:
    """``base`` (a fresh public-listener config: deadlines, limits) without TLS."""
    base.certfile = base.keyfile = base.ca_certs = None
    base.verify_mode = None
    return base


@contextlib.asynccontextmanager
async def serving_metrics(
    registry: Callable[[], CollectorRegistry],
    served: tuple[HypercornConfig, socket.socket] | None,
    shutdown_trigger: Trigger,
) -> AsyncIterator[None]:
    """While the block runs, serve :class:`MetricsEndpoint` on ``served`` (its Hypercorn config
    and listening socket; None: nothing), until ``shutdown_trigger`` returns or the block ends;
    on exit, waits for its graceful stop."""
    if served is None:
        yield
        return
    hc, sock = served
    gate = listener.Gate(MAX_CONNECTIONS, MAX_CONNECTIONS, ClientKeys(()))
    # ASGI callables are not structurally Hypercorn's TypedDict framework type; same protocol.
    endpoint = MetricsEndpoint(registry)
    async with listener.alongside(endpoint, hc, sock, gate, shutdown_trigger):  # type: ignore[arg-type]
        yield
