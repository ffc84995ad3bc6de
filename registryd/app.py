"""The composition root: :func:`create_app` builds the Starlette app over a :class:`Runtime`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .abuse.clientip import ClientKeys
from .abuse.pow import ProofOfWork
from .abuse.ratelimit import RateLimiter, RateLimitMiddleware, Shared
from .api.admin import AdminApi
from .api.body import error_response
from .api.directory import directory_routes
from .api.openapi import openapi_route
from .api.ownership import OwnershipApi
from .api.peers import PeerApi
from .api.public import PublicApi
from .config import Config
from .errors import ApiError, MethodNotAllowed, NotFound, ServiceUnavailable, StorageError
from .metrics.http import RequestMetrics
from .presence import gc_loop
from .runtime import Runtime
from .tasks import background
from .transport.drain import DrainMiddleware

log = logging.getLogger("registryd")

STORAGE_RETRY_S = "1"
"""``Retry-After`` (seconds) of the 503 answered when the storage fails (Redis unreachable)."""


async def _error_response(request: Request, exc: Exception) -> Response:
    """Every error becomes the wire error body; nothing else (no traceback) reaches a client."""
    if isinstance(exc, ApiError):
        return error_response(exc)
    if isinstance(exc, HTTPException):  # routing: unknown path, wrong method
        if exc.status_code == 405:
            return error_response(MethodNotAllowed(), headers=dict(exc.headers or {}))
        return error_response(NotFound() if exc.status_code == 404 else ApiError())
    if isinstance(exc, StorageError):  # a backend down (Redis): retry shortly, never a 500
        log.error("storage failure: %s", exc)
        return error_response(
            ServiceUnavailable("storage unavailable"), headers={"retry-after": STORAGE_RETRY_S}
        )
    log.error("unhandled %s in %s", type(exc).__name__, route_of(request))
    return error_response(ApiError())


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(request: Request) -> str:
    """``METHOD /route/{template}`` for logs: our route's template, never the request's path
    (it may hold a handle, or control characters to forge log lines) nor its Host header
    (which ``request.url`` would mix into the path); an unknown method is ``OTHER``."""
    route = request.scope.get("route")
    method = request.method if request.method in METHODS else "OTHER"
    return f"{method} {route.path if isinstance(route, Route) else '(no route)'}"


def make_limiter(config: Config, clock: Callable[[], int]) -> RateLimiter | Shared | None:
    """The ``[rate_limit]`` limiter: in this process (``memory://``), shared in the Redis of
    ``storage_uri`` (its TLS CA: ``storage.ca_file``), or None when disabled."""
    limits = config.rate_limit
    if not limits.enabled:
        return None
    if limits.storage_uri == "memory://":
        return RateLimiter(limits, clock)
    from .abuse.stores import SharedRateLimiter  # the redis extra

    storage = config.storage
    return SharedRateLimiter(
        limits, clock, config.index_key(), ca_file=storage.ca_file, timeout_ms=storage.timeout_ms
    )


def make_pow(config: Config, clock: Callable[[], int]) -> ProofOfWork | None:
    """The ``[pow]`` checker: in this process, or with its key, spent set and meter shared in
    the Redis of ``[rate_limit] storage_uri``; None when disabled."""
    if not config.pow.enabled:
        return None
    uri = config.rate_limit.storage_uri
    if uri == "memory://":
        return ProofOfWork(config.pow, clock)
    from .abuse.stores import SharedProofOfWork  # the redis extra
    from .storage.redis_conn import async_client

    timeout_ms = config.storage.timeout_ms
    client = async_client(uri, config.storage.ca_file, timeout_ms / 1000)
    return SharedProofOfWork(config.pow, clock, config.index_key(), client, timeout_ms=timeout_ms)


def create_app(state: Runtime, *, run_gc: bool = True) -> Starlette:
    """The composition root: the Starlette app serving ``state`` (the public, peer, admin and
    node directory routes), behind the drain and rate-limit middleware, with the error
    handlers. With ``run_gc`` the lifespan runs the presence GC and the node directory's
    prober; the node directory's GeoIP database is opened either way. The caller owns
    ``state.storage`` and closes it.
    """
    config = state.config

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        presence = lambda: state.config.presence  # noqa: E731 - read anew after reloads
        gc = gc_loop(state.storage, presence, state.clock, state.metrics) if run_gc else None
        try:
            async with background(gc), state.directory.running(probe=run_gc):
                yield
        finally:
            for shared in (limiter, pow):  # the Redis pools of the shared ones
                close = getattr(shared, "close", None)
                if close is not None:
                    await close()

    clock = state.clock
    pow = make_pow(config, clock)
    limiter = make_limiter(config, clock)
    keys = ClientKeys(config.trusted_proxies)
    admin = AdminApi(state)
    public = PublicApi(state, pow)
    routes = (
        public.routes()
        + OwnershipApi(state, public).routes()
        + PeerApi(state).routes()
        + admin.routes()
        + directory_routes(state, admin)
        + [openapi_route()]
    )
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            # Outermost, so that every request is measured, the 429s and the drain included.
            Middleware(RequestMetrics, metrics=state.metrics, routes=routes),
            # So that every early answer (429s included) settles the unread body.
            Middleware(
                DrainMiddleware,
                max_bytes=config.server.max_body_bytes,
                timeout_s=config.server.body_timeout_seconds,
            ),
            # Outside routing, so unknown paths and wrong methods are limited too; it also puts
            # the client key in the scope for proof of work, so it is installed even when off.
            Middleware(
                RateLimitMiddleware,
                limiter=limiter,
                keys=keys,
                on_refusal=lambda r: state.metrics.rate_limited(r.bucket, r.ban_started),
            ),
        ],
        exception_handlers={
            ApiError: _error_response,
            HTTPException: _error_response,
            # its own entry, so the exception middleware answers it (an ``Exception`` handler
            # answers too, but the error is then re-raised to the server, which logs it)
            StorageError: _error_response,
            Exception: _error_response,
        },
    )
    # Starlette would answer "/resolve/" with a 307 to a URL built from the Host header
    app.router.redirect_slashes = False
    return app
