"""The framework floor: a bare Starlette JSON echo served by Hypercorn with the daemon's settings.

    python -m bench.floor --config PATH

``POST /echo`` answers the request body as ``application/json``; ``GET /json`` answers
``{"ok":true}``. No middleware, no validation, no crypto, no storage: the most a registryd
endpoint can possibly reach is this app's throughput, so endpoint figures are reported as a
ratio to it. The Hypercorn ``Config`` comes from ``registryd.server.hypercorn_config`` applied to
the same registryd config file the daemon reads (TLS, timeouts, header limits all match), and the
socket from ``registryd.sockets.bind_socket``. Logs ``floor listening on URL`` like the daemon and
stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registryd import config as config_mod
from registryd import eventloop
from registryd.server import hypercorn_config, url_of
from registryd.sockets import bind_socket

log = logging.getLogger("bench.floor")
SMALL_JSON = b'{"ok":true}'


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/json")


async def small_json(request: Request) -> Response:
    return Response(SMALL_JSON, media_type="application/json")


def build_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/echo", echo, methods=["POST"]),
            Route("/json", small_json, methods=["GET"]),
        ]
    )


async def serve(cfg: config_mod.Config, app: Any = None, name: str = "floor") -> None:
    """Serve ``app`` (default: the floor app) as the floor is served, until SIGINT or SIGTERM;
    logs ``<name> listening on URL``."""
    hc = hypercorn_config(cfg)
    sock = bind_socket(*cfg.host_port)
    url = url_of(cfg, sock)
    hc.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns the descriptor from here on
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log.info("%s listening on %s", name, url)
    # Starlette's ASGI signature is not structurally Hypercorn's TypedDict one; same protocol.
    await hypercorn_serve(app or build_app(), hc, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the framework floor app.")
    parser.add_argument("--config", required=True, help="the registryd config the daemon uses")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    cfg = config_mod.load(args.config)
    eventloop.run(serve(cfg), cfg.server.event_loop)  # the daemon's loop: the same floor
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
