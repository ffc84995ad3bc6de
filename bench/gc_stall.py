"""Presence GC of N expired presences in LevelDB while serving resolves: the event-loop stall
it adds over a no-GC baseline measured in the same run.

    python -m bench.gc_stall --presences 1000000

In one process and one event loop:

1. A ``LevelDBStorage`` in a temporary directory gets N presences that expired in the last hour.
   They are written straight into LevelDB in the key layout ``registryd/storage/leveldb.py``
   documents (sealed with the storage's own sealing), in unsynced batches: ``announce()`` does a
   synced write each, ~1 ms here, which would take a quarter of an hour for 1,000,000. The
   layout is checked afterwards: ``get_presence`` must find them, and GC must remove exactly N.
   One identity is registered, the one the load resolves.
2. The real app (``registryd.app.create_app`` over that storage, its own GC task off), its heap
   settled as the daemon's is (:func:`registryd.server.settle_heap`), is served by Hypercorn
   with ``registryd.server.hypercorn_config`` on 127.0.0.1:0, and ``hey`` drives resolve load at
   it: ``POST /resolve`` hits (a stored identity, sealed to the requester's
   X25519 key: the full resolve path), ``--rps`` requests/s at a constant rate.
3. A loop-lag probe runs beside it: a task that sleeps 5 ms and records how late it wakes. The
   longest lateness is the longest time the event loop could not run anything: no request was
   read, answered or even accepted then.
4. After a warm-up (discarded), the probe records a *baseline* window of ``--baseline-s``
   seconds with load and no GC; then ``registryd.presence.collect`` deletes every expired
   presence, load still running, and the probe records the *GC* window (the GC's wall time).

Prints one JSON object (times in ms): per window the probe's samples, max and p99 lateness, the
resolve latencies ``hey`` saw (``load``) and ``foreign_cpu``, the cores other work on the machine
kept busy meanwhile (:mod:`bench.cpu`); then the GC's max stall and p99 lag above the baseline's
and ``pass`` against the targets (:data:`~bench.settings.GC_MAX_STALL_MS`,
:data:`~bench.settings.GC_P99_LAG_MS` above the baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
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
from registryd.envelope import x25519_keypair
from registryd.identity import user_id
from registryd.keystore import load_keyring
from registryd.presence import collect
from registryd.runtime import Runtime
from registryd.server import hypercorn_config, settle_heap, url_of
from registryd.sockets import bind_socket
from registryd.storage.base import PRESENCE
from registryd.storage.leveldb import LevelDBStorage
from registryd.timespec import now_ms

from .configs import Secrets, Setup, config_text
from .cpu import ForeignCpu
from .loadgen import HeyRow, hey_result, hey_workers, parse_hey_csv
from .settings import GC_MAX_STALL_MS, GC_P99_LAG_MS
from .workload import preloaded_identity, resolve_body

PROBE_INTERVAL_S = 0.005
WARMUP_S = 2.0
BASELINE_S = 60.0  # near the ~100 s the GC of 1,000,000 takes here: maxima of like windows
LOAD_RPS = 500
POPULATE_BATCH = 10_000
HEY_MAX_S = 1800
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


async def resolved_identity(storage: LevelDBStorage) -> bytes:
    """Register the identity the load resolves; returns the ``/resolve`` body that hits it."""
    identity = preloaded_identity(0, random.Random(1))
    if not await storage.register(identity.handle, identity.to_json()):
        raise SystemExit("the resolved identity was already registered")
    return resolve_body(identity.user_id, x25519_keypair()[1].hex())


def start_load(
    url: str, body: bytes, rps: float, work: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    """``hey`` POSTing ``body`` to ``/resolve`` at ``rps`` until stopped; its CSV goes to the
    returned path."""
    body_file = work / "resolve.body"
    body_file.write_bytes(body)
    out = work / "hey.csv"
    workers, qps = hey_workers(rps)
    argv = ["hey", "-z", f"{HEY_MAX_S}s", "-c", str(workers), "-q", f"{qps:.3f}", "-o", "csv"]
    argv += ["-m", "POST", "-T", "application/json", "-D", str(body_file), f"{url}/resolve"]
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


class Window:
    """One measured stretch of the run: its probe lags, foreign CPU and the requests sent in it
    (offsets in seconds from the load's start)."""

    def __init__(self, probe: LagProbe, load_started: float) -> None:
        probe.window()  # what came before is not this window's
        self.probe = probe
        self.load_started = load_started
        self.start = time.perf_counter()
        self.others = ForeignCpu()

    def close(self) -> None:
        self.seconds = time.perf_counter() - self.start
        self.foreign = self.others.cores()
        self.lags = summary(self.probe.window())

    def to_json(self, rows: list[HeyRow], rps: float) -> dict[str, object]:
        begin = self.start - self.load_started
        sent = [row for row in rows if begin <= row.offset_s <= begin + self.seconds]
        load = hey_result(sent, self.seconds, hey_workers(rps)[0], rps) if sent else None
        return {
            "duration_s": round(self.seconds, 2),
            **self.lags,
            "foreign_cpu": round(self.foreign, 3),
            "load": None if load is None else load.to_json(),
        }


async def measure(presences: int, rps: float, baseline_s: float, work: Path) -> dict[str, object]:
    secrets = Secrets.generate()
    text = config_text(secrets, Setup("leveldb", "http"), data_dir=work / "db")
    cfg = config_mod.parse(text)
    storage = LevelDBStorage(cfg.index_key(), work / "db")
    try:
        now = now_ms()
        populate_s = await populate(storage, presences, now)
        body = await resolved_identity(storage)
        hc = hypercorn_config(cfg)
        sock = bind_socket("127.0.0.1", 0)
        url = url_of(cfg, sock)
        hc.bind = [f"fd://{sock.detach()}"]
        stop = asyncio.Event()
        app = create_app(Runtime(cfg, storage, load_keyring(cfg.envelope)), run_gc=False)
        settle_heap()  # as registryd.server.serve does before it serves
        server = asyncio.create_task(
            hypercorn_serve(app, hc, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
        )
        probe = LagProbe()
        probe_task = asyncio.create_task(probe.run())
        load_started = time.perf_counter()
        load, load_out = start_load(url, body, rps, work)
        try:
            await asyncio.sleep(WARMUP_S)
            baseline = Window(probe, load_started)
            await asyncio.sleep(baseline_s)
            baseline.close()
            gc = Window(probe, load_started)
            purged = await collect(storage, now)
            gc.close()
        finally:
            await stop_load(load)
            probe_task.cancel()
            stop.set()
            await asyncio.wait_for(server, 30)
        if purged != presences:
            raise SystemExit(f"GC removed {purged} presences, expected {presences}")
        rows = parse_hey_csv(load_out.read_text())
    finally:
        await storage.close()
    max_above = round(gc.lags["max_ms"] - baseline.lags["max_ms"], 3)
    p99_above = round(gc.lags["p99_ms"] - baseline.lags["p99_ms"], 3)
    return {
        "presences": presences,
        "populate_s": round(populate_s, 2),
        "load_rps": rps,
        "gc_total_ms": round(gc.seconds * 1000, 1),
        "purged": purged,
        "baseline": baseline.to_json(rows, rps),
        "gc": gc.to_json(rows, rps),
        "max_stall_ms": gc.lags["max_ms"],
        "p99_lag_ms": gc.lags["p99_ms"],
        "max_stall_above_baseline_ms": max_above,
        "p99_lag_above_baseline_ms": p99_above,
        "target_max_stall_above_baseline_ms": GC_MAX_STALL_MS,
        "target_p99_lag_above_baseline_ms": GC_P99_LAG_MS,
        "pass": max_above <= GC_MAX_STALL_MS and p99_above <= GC_P99_LAG_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Presence GC: event-loop stall over a baseline.")
    parser.add_argument("--presences", type=int, default=1_000_000)
    parser.add_argument("--rps", type=float, default=LOAD_RPS, help="resolve requests/s")
    parser.add_argument("--baseline-s", type=float, default=BASELINE_S)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="registryd-bench-gc-") as tmp:
        result = asyncio.run(measure(args.presences, args.rps, args.baseline_s, Path(tmp)))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
