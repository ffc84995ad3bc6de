"""Timing of constant-shape resolve: hits and misses, interleaved, measured at the handler.

    .venv/bin/python -m bench.constant_shape [--requests 20000] [--storage memory|leveldb]

Registers identities with realistic key sizes (32-byte keys, 64-byte signature), then sends
``--requests`` resolves in random order, half for registered handles and half for unregistered
ones, straight into the ASGI app (no network, so only the handler's own work is timed). Reports
per-class mean and median in microseconds and Welch's t for the difference of the means; a
|t| below 4.5 means the two timing distributions cannot be told apart at that sample size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import tempfile
import time
from typing import Any

from registryd import config as config_mod
from registryd.app import create_app
from registryd.envelope import x25519_keypair
from registryd.identity import PublicIdentity, user_id
from registryd.keystore import load_keyring
from registryd.runtime import Runtime
from registryd.storage import open_storage

CONFIG = """
address = "127.0.0.1:0"
mode = "http"
[rate_limit]
enabled = false
[storage]
kind = "{kind}"
path = "{path}"
index_key_hex = "{index_key}"
[envelope]
pepper_hex = "{pepper}"
[[envelope.keys]]
kid_hex = "0001020304050607"
x25519_private_key_hex = "{server_key}"
active = true
"""


def welch_t(a: list[float], b: list[float]) -> float:
    """Welch's t statistic for the difference of the means of ``a`` and ``b``."""
    va, vb = statistics.variance(a), statistics.variance(b)
    return (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va / len(a) + vb / len(b))


def identity(name: str) -> PublicIdentity:
    return PublicIdentity(
        user_id=user_id(name).hex(),
        username_hint=name,
        signing_public_key=list(os.urandom(32)),
        encryption_public_key=list(os.urandom(32)),
        signature=list(os.urandom(64)),
        created_at_ms=1_700_000_000_000,
    )


async def resolve_once(app: Any, body: bytes) -> int:
    """One POST /resolve through the ASGI interface; returns the response status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/resolve",
        "raw_path": b"/resolve",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8443),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def run(requests: int, kind: str, identities: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        text = CONFIG.format(
            kind=kind,
            path=f"{tmp}/db",
            index_key=os.urandom(32).hex(),
            pepper=os.urandom(32).hex(),
            server_key=os.urandom(32).hex(),
        )
        cfg = config_mod.parse(text)
        storage = open_storage(cfg)
        app = create_app(Runtime(cfg, storage, load_keyring(cfg.envelope)), run_gc=False)
        names = [f"user-{i}" for i in range(identities)]
        for name in names:
            ident = identity(name)
            await storage.register(ident.handle, ident.to_json())
        requester_keys = [x25519_keypair()[1].hex() for _ in range(256)]
        plan = [rng.random() < 0.5 for _ in range(requests)]  # True = hit
        bodies = []
        for hit in plan:
            name = rng.choice(names) if hit else f"absent-{rng.getrandbits(64)}"
            bodies.append(
                json.dumps(
                    {
                        "handle": user_id(name).hex(),
                        "requester_ephemeral_pubkey_hex": rng.choice(requester_keys),
                    }
                ).encode()
            )
        for body in bodies[:500]:  # warm up caches and the allocator
            await resolve_once(app, body)
        timings: dict[bool, list[float]] = {True: [], False: []}
        for hit, body in zip(plan, bodies, strict=True):
            start = time.perf_counter_ns()
            status = await resolve_once(app, body)
            timings[hit].append((time.perf_counter_ns() - start) / 1000)
            if status != 200:
                raise SystemExit(f"resolve answered {status}")
        await storage.close()
    hits, misses = timings[True], timings[False]
    return {
        "storage": kind,
        "requests": requests,
        "identities": identities,
        "hits": len(hits),
        "misses": len(misses),
        "hit_mean_us": round(statistics.fmean(hits), 2),
        "miss_mean_us": round(statistics.fmean(misses), 2),
        "hit_median_us": round(statistics.median(hits), 2),
        "miss_median_us": round(statistics.median(misses), 2),
        "welch_t": round(welch_t(hits, misses), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="resolves to time")
    parser.add_argument("--identities", type=int, default=1_000, help="registered identities")
    parser.add_argument("--storage", choices=["memory", "leveldb"], default="memory")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the request order")
    args = parser.parse_args()
    result = asyncio.run(run(args.requests, args.storage, args.identities, args.seed))
    for key, value in result.items():
        print(f"{key:>16}: {value}")
    verdict = "indistinguishable" if abs(result["welch_t"]) < 4.5 else "DISTINGUISHABLE"
    print(f"{'verdict':>16}: |t| {'<' if verdict[0] == 'i' else '>='} 4.5, {verdict}")


if __name__ == "__main__":
    main()
