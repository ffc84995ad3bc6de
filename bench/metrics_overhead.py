"""What metrics cost (issue 14): the request middleware and the storage wrapper, in µs per call,
and the time to render one scrape. ``python -m bench.metrics_overhead [--calls N]``.

Each figure is the best of five runs of N calls in one event loop (the best, because a shared
machine only ever adds time), with and without the instrumentation, over the real app's routes:

- middleware, routed: :class:`~registryd.metrics.http.RequestMetrics` around an ASGI app that
  answers at once and sets ``scope["route"]`` as Starlette's router does;
- middleware, unrouted: the same without ``scope["route"]`` (a 429 from the rate limiter), so
  the middleware matches the path against the routes itself (``/health``, near the end);
- storage: ``MemoryStorage.exists`` bare and timed (:func:`registryd.metrics.storage.instrument`);
- scrape: ``generate_latest`` after every route has been seen with four statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable

from prometheus_client import generate_latest
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from registryd import config as config_mod
from registryd.app import create_app
from registryd.keystore import load_keyring
from registryd.metrics import Metrics
from registryd.metrics.http import RequestMetrics
from registryd.metrics.storage import instrument
from registryd.runtime import Runtime
from registryd.secret import Secret
from registryd.storage.memory import MemoryStorage

CONFIG = """address = "127.0.0.1:0"
mode = "http"
[storage]
kind = "memory"
index_key_hex = "{index}"
[pow]
enabled = true
[envelope]
pepper_hex = "{pepper}"
[[envelope.keys]]
kid_hex = "0102030405060708"
x25519_private_key_hex = "{private}"
active = true
"""


def best_us(calls: int, run: Callable[[int], Awaitable[None]]) -> float:
    """Best of five runs of ``run(calls)``, in µs per call."""
    loop = asyncio.new_event_loop()
    try:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            loop.run_until_complete(run(calls))
            best = min(best, time.perf_counter() - started)
        return best / calls * 1e6
    finally:
        loop.close()


def routes() -> list[Route]:
    text = CONFIG.format(
        index=os.urandom(32).hex(), pepper=os.urandom(32).hex(), private=os.urandom(32).hex()
    )
    cfg = config_mod.parse(text)
    state = Runtime(cfg, MemoryStorage(cfg.index_key()), load_keyring(cfg.envelope))
    return [r for r in create_app(state).routes if isinstance(r, Route)]


def requests(
    calls: int, app: Callable[[Scope, Receive, Send], Awaitable[None]], path: str
) -> Callable[[int], Awaitable[None]]:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    async def run(n: int) -> None:
        for _ in range(n):
            scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
            await app(scope, receive, send)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    calls = parser.parse_args().calls
    table = routes()
    health = next(r for r in table if r.path == "/health")

    async def answer(scope: Scope, receive: Receive, send: Send, route: Route | None) -> None:
        if route is not None:
            scope["route"] = route
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def routed(scope: Scope, receive: Receive, send: Send) -> None:
        await answer(scope, receive, send, health)

    async def unrouted(scope: Scope, receive: Receive, send: Send) -> None:
        await answer(scope, receive, send, None)

    metrics = Metrics()
    figures = {}
    for name, app in (("routed", routed), ("unrouted", unrouted)):
        bare = best_us(calls, requests(calls, app, "/health"))
        measured = RequestMetrics(app, metrics=metrics, routes=table)
        timed = best_us(calls, requests(calls, measured, "/health"))
        figures[f"middleware, {name}"] = (bare, timed)

    store = MemoryStorage(Secret(os.urandom(32)))
    handle = os.urandom(32)

    async def exists(n: int) -> None:
        for _ in range(n):
            await store.exists(handle)

    bare = best_us(calls, exists)
    instrument(store, Metrics())
    figures["storage exists"] = (bare, best_us(calls, exists))

    for route in table:
        for status in (200, 400, 404, 429):
            metrics.request("GET", route.path, status, 0.001)
    started = time.perf_counter()
    rendered = generate_latest(metrics.registry)
    scrape_ms = (time.perf_counter() - started) * 1000

    print(f"{'':<22}{'bare µs':>10}{'measured µs':>14}{'overhead µs':>14}")
    for name, (bare, timed) in figures.items():
        print(f"{name:<22}{bare:>10.2f}{timed:>14.2f}{timed - bare:>14.2f}")
    print(f"scrape: {len(table)} routes x 4 statuses, {len(rendered)} bytes in {scrape_ms:.1f} ms")


if __name__ == "__main__":
    main()
