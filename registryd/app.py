"""The composition root: :func:`create_app` wires config, storage and keys into a Starlette app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import wire
from .admin import Admin
from .clientip import ClientKeys
from .config import Config
from .directory import Directory
from .directory.admin import admin_routes
from .directory.routes import directory_routes
from .drain import DrainMiddleware
from .errors import ApiError, MethodNotAllowed, NotFound, StorageError
from .keyring import KeyRing
from .keystore import load_keyring
from .presence import gc_loop
from .ratelimit import RateLimiter, RateLimitMiddleware
from .routes import Registry
from .storage import Storage
from .timespec import now_ms

log = logging.getLogger("registryd")


def error_response(exc: ApiError, headers: dict[str, str] | None = None) -> Response:
    """The wire error body (spec 4.6): ``{"error": {"code": ..., "message": ...}}``."""
    body = wire.error_body(exc)
    if exc.close_connection:
        headers = {**(headers or {}), "connection": "close"}
    return Response(body, exc.status_code, headers=headers, media_type="application/json")


async def _error_response(request: Request, exc: Exception) -> Response:
    """Every error becomes the wire error body; nothing else (no traceback) reaches a client."""
    if isinstance(exc, ApiError):
        return error_response(exc)
    if isinstance(exc, HTTPException):  # routing: unknown path, wrong method
        if exc.status_code == 405:
            return error_response(MethodNotAllowed(), headers=dict(exc.headers or {}))
        return error_response(NotFound() if exc.status_code == 404 else ApiError())
    if isinstance(exc, StorageError):
        log.error("storage failure: %s", exc)
    else:
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


def create_app(
    config: Config,
    storage: Storage,
    *,
    keyring: KeyRing | None = None,
    clock: Callable[[], int] = now_ms,
    run_gc: bool = True,
) -> Starlette:
    """Build the ASGI app over an open ``storage`` (see :func:`build_app`).

    ``clock`` returns Unix time in ms (tests pass a controllable one); ``keyring`` defaults to
    the config's own (:func:`~registryd.keystore.load_keyring`). The caller owns ``storage``
    and closes it.
    """
    keyring = keyring or load_keyring(config.envelope)
    return build_app(Registry(config, storage, keyring, clock), run_gc=run_gc)


def build_app(
    registry: Registry, *, run_gc: bool = True, directory: Directory | None = None
) -> Starlette:
    """The composition root: the Starlette app serving ``registry``, with the rate-limit
    middleware and the error handlers. With ``run_gc`` the lifespan runs the presence GC and
    the node directory's prober (``directory``: default, one over ``registry``)."""
    config = registry.config
    directory = directory or Directory(registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = None
        if run_gc:
            presence = lambda: registry.config.presence  # noqa: E731 - read anew after reloads
            task = asyncio.create_task(gc_loop(registry.storage, presence, registry.clock))
        try:
            async with directory.running(probe=run_gc):
                yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    clock = registry.clock
    limiter = RateLimiter(config.rate_limit, clock) if config.rate_limit.enabled else None
    keys = ClientKeys(config.trusted_proxies)
    app = Starlette(
        routes=registry.routes()
        + Admin(registry).routes()
        + directory_routes(directory)
        + admin_routes(directory),
        lifespan=lifespan,
        middleware=[
            # Outermost, so that every early answer (429s included) settles the unread body.
            Middleware(
                DrainMiddleware,
                max_bytes=config.server.max_body_bytes,
                timeout_s=config.server.body_timeout_seconds,
            ),
            # Outside routing, so unknown paths and wrong methods are limited too; it also puts
            # the client key in the scope for proof of work, so it is installed even when off.
            Middleware(RateLimitMiddleware, limiter=limiter, keys=keys),
        ],
        exception_handlers={
            ApiError: _error_response,
            HTTPException: _error_response,
            Exception: _error_response,
        },
    )
    # Starlette would answer "/resolve/" with a 307 to a URL built from the Host header
    app.router.redirect_slashes = False
    return app
