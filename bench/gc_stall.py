"""Presence GC of N expired presences in LevelDB while serving: total time and longest stall.

    python -m bench.gc_stall --presences 1000000

In one process and one event loop:

1. A ``LevelDBStorage`` in a temporary directory gets N presences that expired in the last hour.
   They are written straight into LevelDB in the key layout ``registryd/storage/leveldb.py``
   documents (sealed with the storage's own sealing), in unsynced batches: ``announce()`` does a
   synced write each, ~1 ms here, which would take a quarter of an hour for 1,000,000. The
   layout is checked afterwards: ``get_presence`` must find them, and GC must remove exactly N.
2. The real app (``registryd.app.create_app`` over that storage, its own GC task off) is served
   by Hypercorn with ``registryd.server.hypercorn_config`` on 127.0.0.1:0, and ``hey`` drives
   light constant load at it (resolve misses, :data:`LOAD_RPS` requests/s).
3. A loop-lag probe runs beside it: a task that sleeps 5 ms and records how late it wakes. The
   longest lateness is the longest time the event loop could not run anything: no request was
   read, answered or even accepted then.
4. After a baseline window with load but no GC, ``registryd.presence.collect`` deletes every
   expired presence; its wall time is the GC time and the probe's maximum over it the stall.

Prints one JSON object (times in ms). The request latencies seen by ``hey`` during the GC are
included (``load``), as the stall a client experiences, and so is ``foreign_cpu``, the cores
other work on the machine kept busy during the GC (:mod:`bench.cpu`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve

from registryd import config as config_mod
from registryd import wire
from registryd.app import create_app
from registryd.identity import user_id
from registryd.keystore import load_keyring
from registryd.presence import collect
from registryd.runtime import Runtime
from registryd.server import hypercorn_config, url_of
from registryd.sockets import bind_socket
from registryd.storage.base import PRESENCE
from registryd.storage.leveldb import LevelDBStorage
from registryd.timespec import now_ms

from .configs import Secrets, Setup, config_text
from .cpu import ForeignCpu
from .loadgen import hey_result, parse_hey_csv
from .workload import ABSENT, resolve_body

PROBE_INTERVAL_S = 0.005
BASELINE_S = 2.0
LOAD_RPS = 200
POPULATE_BATCH = 10_000
HEY_MAX_S = 900
BE64 = struct.Struct(">Q")
NAME = "bench-presence-{}"


class LagProbe:
    """Sleeps :data:`PROBE_INTERVAL_S` in a loop and records how late each wake-up is (ms)."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(PROBE_INTERVAL_S)
            self.lags_ms.append((time.perf_counter() - start - PROBE_INTERVAL_S) * 1000)

    def window(self) -> list[float]:
        """The lags recorded since the last call."""
        lags, self.lags_ms = self.lags_ms, []
        return lags


def summary(lags: list[float]) -> dict[str, float]:
    ordered = sorted(lags)
    if not ordered:
        return {"samples": 0, "max_ms": 0.0, "p99_ms": 0.0}
    return {
        "samples": len(ordered),
        "max_ms": round(ordered[-1], 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
    }


async def populate(storage: LevelDBStorage, count: int, now: int) -> float:
    """Write ``count`` presences that expired within the last hour; returns seconds taken."""
    start = time.perf_counter()
    db: Any = storage._db  # bulk load in the documented layout (see the module docstring)
    for first in range(0, count, POPULATE_BATCH):
        with db.write_batch() as batch:
            for i in range(first, min(first + POPULATE_BATCH, count)):
                handle = user_id(NAME.format(i))
                blind = storage.blind(handle)
                expires = now - 60_000 - (i * 7919) % 3_600_000
                presence = wire.encode(wire.Presence(handle.hex(), "198.51.100.7:4000", expires))
                sealed = storage._seal(PRESENCE, handle, blind, presence)
                batch.put(b"p" + blind, BE64.pack(expires) + sealed)
                batch.put(b"x" + BE64.pack(expires) + blind, b"")
    for i in (0, count - 1):
        if await storage.get_presence(user_id(NAME.format(i))) is None:
            raise SystemExit("bulk-loaded presences are not found: the LevelDB layout changed")
    return time.perf_counter() - start


def start_load(url: str, work: Path) -> tuple[subprocess.Popen[bytes], Path]:
    body = work / "resolve.body"
    body.write_bytes(resolve_body(user_id(ABSENT.format(0)).hex(), os.urandom(32).hex()))
    out = work / "hey.csv"
    argv = ["hey", "-z", f"{HEY_MAX_S}s", "-c", "2", "-q", str(LOAD_RPS / 2), "-o", "csv"]
    argv += ["-m", "POST", "-T", "application/json", "-D", str(body), f"{url}/resolve"]
    with open(out, "wb") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT), out  # noqa: S603


async def stop_load(load: subprocess.Popen[bytes]) -> None:
    """SIGINT ``hey`` (it then prints what it measured) and wait for it without blocking the
    loop, which still has to answer its last requests; SIGKILL after 30 s."""
    if load.poll() is None:
        load.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 30
    while load.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if load.poll() is None:
        load.kill()
        load.wait(10)


async def measure(presences: int, work: Path) -> dict[str, object]:
    secrets = Secrets.generate()
    text = config_text(secrets, Setup("leveldb", "http"), data_dir=work / "db")
    cfg = config_mod.parse(text)
    storage = LevelDBStorage(cfg.index_key(), work / "db")
    try:
        now = now_ms()
        populate_s = await populate(storage, presences, now)
        hc = hypercorn_config(cfg)
        sock = bind_socket("127.0.0.1", 0)
        url = url_of(cfg, sock)
        hc.bind = [f"fd://{sock.detach()}"]
        stop = asyncio.Event()
        app = create_app(Runtime(cfg, storage, load_keyring(cfg.envelope)), run_gc=False)
        server = asyncio.create_task(
            hypercorn_serve(app, hc, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
        )
        probe = LagProbe()
        probe_task = asyncio.create_task(probe.run())
        load_started = time.perf_counter()
        load, load_out = start_load(url, work)
        try:
            await asyncio.sleep(BASELINE_S)
            baseline = summary(probe.window())
            started = time.perf_counter()
            others = ForeignCpu()
            purged = await collect(storage, now)
            gc_s = time.perf_counter() - started
            foreign = others.cores()
            window = (started - load_started, started - load_started + gc_s)
            during = summary(probe.window())
        finally:
            await stop_load(load)
            probe_task.cancel()
            stop.set()
            await asyncio.wait_for(server, 30)
        if purged != presences:
            raise SystemExit(f"GC removed {purged} presences, expected {presences}")
        rows = [
            row
            for row in parse_hey_csv(load_out.read_text())
            if window[0] <= row.offset_s <= window[1]  # the requests sent while GC ran
        ]
        load_result = hey_result(rows, gc_s, 2, LOAD_RPS) if rows else None
    finally:
        await storage.close()
    return {
        "presences": presences,
        "populate_s": round(populate_s, 2),
        "gc_total_ms": round(gc_s * 1000, 1),
        "purged": purged,
        "max_stall_ms": during["max_ms"],
        "stall_p99_ms": during["p99_ms"],
        "probe_samples": during["samples"],
        "baseline_max_stall_ms": baseline["max_ms"],
        "baseline_stall_p99_ms": baseline["p99_ms"],
        "foreign_cpu": round(foreign, 3),
        "load": None if load_result is None else load_result.to_json(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Presence GC time and event-loop stall.")
    parser.add_argument("--presences", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="registryd-bench-gc-") as tmp:
        result = asyncio.run(measure(args.presences, Path(tmp)))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
