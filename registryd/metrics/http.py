"""The request metrics middleware: every HTTP request counted and timed by route template.

The route label is the matched route's template (``/check_user/{handle}``), never the request's
path, which may hold a handle. Starlette's router records the route in the scope
(``scope["route"]``); a request answered before routing (a 429 from the rate limiter) is
matched here against the same routes, and one that matches none is ``(unmatched)``. The method
is one of :data:`METHODS` or ``OTHER``. Cost: ``python -m bench.metrics_overhead``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import Metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "(unmatched)"


class RequestMetrics:
    """Pure ASGI middleware recording each ``http`` request into ``metrics``
    (:meth:`Metrics.request`) once its answer is sent or the app has raised (status 500 when no
    answer had started). ``routes`` are the app's routes, for requests answered before routing.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            route = scope.get("route")
            template = route.path if isinstance(route, Route) else self._match(scope)
            self.metrics.request(method, template, status, time.perf_counter() - started)

    def _match(self, scope: Scope) -> str:
        for route in self.routes:
            if isinstance(route, Route) and route.matches(scope)[0] != Match.NONE:
                return route.path
        return UNMATCHED
