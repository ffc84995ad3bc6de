"""The least a resolve can cost on Hypercorn: ``python -m bench.bare compare`` (issue 15).

``python -m bench.bare serve --config PATH`` serves ``POST /resolve`` from a raw ASGI app with
none of the daemon around it (no Starlette, no middleware, no metrics, no rate limit, no error
handling): only what the protocol makes every resolve do (spec 4.2) — the strict JSON decode,
the X25519 DH and KDF to the requester's key, the lookup under the blind index with its at-rest
open, the padding to ``[privacy] resolve_pad_bytes`` and the AEAD seal, JSON out. It answers
what the daemon answers (same fields, same envelope length) and is served exactly as
:mod:`bench.floor` is (Hypercorn's own ``serve``, ``registryd.server.hypercorn_config``), so its
ratio to the floor bounds what any resolve on this stack can reach: the framework's floor minus
nothing but the protocol's own work.

``python -m bench.bare compare`` preloads a LevelDB (10,000 identities), starts the floor, the
bare app and the daemon side by side (LevelDB, http) and drives each with wrk, A B B A twice;
prints each one's mean rps, server CPU µs per request, and the ratios to the floor (rps and CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from registryd import config as config_mod
from registryd import eventloop, wire
from registryd.certs import write_dev_certs
from registryd.encoding import decode_hex
from registryd.envelope import padded
from registryd.keystore import load_keyring
from registryd.storage import open_storage

from . import floor, loadgen, procs
from .compare import cpu_us_per_request, with_server_cpu
from .configs import Setup
from .matrix import Workspace
from .preload import preload_leveldb
from .settings import Settings


def build_app(cfg: config_mod.Config) -> Any:
    """The raw ASGI resolve app over ``cfg``'s storage and envelope keys."""
    storage = open_storage(cfg)
    keyring = load_keyring(cfg.envelope)
    pad = cfg.privacy.resolve_pad_bytes
    content_type = (b"content-type", b"application/json")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await storage.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = wire.decode(body, wire.ResolveRequest)
        handle = decode_hex(request.handle, 32, "handle")
        requester = decode_hex(request.requester_ephemeral_pubkey_hex, 32, "requester")
        seal_to_requester = keyring.resolution_sealer(handle, requester)
        found = await storage.get_identity(handle)
        sealed = seal_to_requester(padded(found or b"", pad))
        out = wire.encode(wire.ResolveResponse(request.handle, wire.Envelope.build(*sealed)))
        length = (b"content-length", str(len(out)).encode())
        await send(
            {"type": "http.response.start", "status": 200, "headers": [content_type, length]}
        )
        await send({"type": "http.response.body", "body": out})

    return app


def compare(duration_s: float, identities: int) -> dict[str, tuple[float, float]]:
    """``{name: (mean rps, server CPU µs per request)}`` for floor, bare and registryd."""
    settings = Settings(identities=identities, duration_s=duration_s, request_lines=5_000)
    with tempfile.TemporaryDirectory(prefix="registryd-bare-") as tmp, contextlib.ExitStack() as up:
        root = Path(tmp)
        ws = Workspace.create(root, settings, write_dev_certs(root / "certs"), print)
        preload_leveldb(root / "db-a", ws.secrets, identities, settings.seed)
        shutil.copytree(root / "db-a", root / "db-b")  # one LevelDB per process (its lock)
        setup = Setup(storage="leveldb", mode="http")
        config_a = ws.config(setup, root / "db-a", "a")
        sides = {
            "floor": (procs.floor_argv(config_a), "floor_post"),
            "bare": (
                procs.python_module("bench.bare", "serve", "--config", str(config_a)),
                "resolve_hit",
            ),
            "registryd": (procs.daemon_argv(ws.config(setup, root / "db-b", "b")), "resolve_hit"),
        }
        served = {
            name: up.enter_context(procs.started(argv, root / f"{name}.log"))
            for name, (argv, _) in sides.items()
        }
        runs: dict[str, list[loadgen.LoadResult]] = {name: [] for name in sides}
        for name in ("floor", "bare", "registryd", "registryd", "bare", "floor") * 2:
            (url, proc), requests = served[name], ws.requests(sides[name][1])
            peak = functools.partial(
                loadgen.wrk_peak,
                url,
                requests("peak", 0),
                duration_s=duration_s,
                connections=32,
                threads=1,
            )
            result = with_server_cpu(proc.pid, peak)
            if result.errors:
                raise RuntimeError(f"{name}: {result.errors} errors")
            runs[name].append(result)
    return {
        name: (statistics.fmean(r.rps for r in results), cpu_us_per_request(results))
        for name, results in runs.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serving = sub.add_parser("serve", help="serve the bare resolve app")
    serving.add_argument("--config", required=True, help="a registryd config (LevelDB or memory)")
    comparing = sub.add_parser("compare", help="floor, bare and registryd side by side")
    comparing.add_argument("--duration", type=float, default=8.0, help="s per wrk run")
    comparing.add_argument("--identities", type=int, default=10_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    if args.command == "serve":
        cfg = config_mod.load(args.config)
        eventloop.run(floor.serve(cfg, build_app(cfg), "bare resolve"), cfg.server.event_loop)
        return 0
    figures = compare(args.duration, args.identities)
    floor_rps, floor_cpu = figures["floor"]
    for name, (rps, cpu) in figures.items():
        print(
            f"{name:10} {rps:7.0f} rps ({rps / floor_rps:.2f}x floor)  "
            f"{cpu:6.1f} µs CPU/request ({floor_cpu / cpu:.2f}x floor)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
