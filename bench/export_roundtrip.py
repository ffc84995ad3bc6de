"""A round trip of N identities through ``registryd storage export`` and ``import``.

    python -m bench.export_roundtrip --identities 1000000 [--via CONFIG] [--dir DIR]

1. A LevelDB store in a temporary directory gets N identities of realistic size
   (:func:`bench.workload.preloaded_batches`) with ``Storage.merge``, 10,000 a batch.
2. ``registryd storage export`` (the command's own code, in this process) writes them to a
   file; ``registryd storage import`` fills a second, empty LevelDB from it. With ``--via
   CONFIG`` (an empty store of any kind, e.g. Redis; the run takes its index key) the records
   go source → file → that store → file → the second LevelDB (that store keeps them: wipe it
   before another run). Each step is timed.
3. Nothing lost: the final store's records (count and an order-independent digest: the sum of
   the BLAKE3 of each record, mod 2^256) must equal the source's, and 1,000 sampled handles
   must open to the identities stored.

The process runs at ``nice 10`` (the machine is shared). Prints one JSON object: seconds per
step, the file size, bytes per identity, the peak anonymous RSS during each step (MiB: export
and import stream, so it does not grow with N) and ``foreign_cpu``, the cores other work kept busy
(:mod:`bench.cpu`). Exits 1 if anything was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import blake3
import msgspec

from registryd import config as config_mod
from registryd.cli import main as registryd
from registryd.identity import user_id
from registryd.secret import Secret
from registryd.storage import Storage, open_storage
from registryd.storage.leveldb import LevelDBStorage

from .configs import Secrets, Setup, write_config
from .cpu import ForeignCpu
from .workload import PRELOADED, preloaded_batches

BATCH = 10_000
SAMPLES = 1_000
SEED = 14


async def _fill(path: Path, index_key: bytes, count: int) -> None:
    storage = LevelDBStorage(Secret(index_key), path)
    try:
        for batch in preloaded_batches(count, BATCH, SEED):
            merged = await storage.merge([(i.handle, i.to_json()) for i in batch])
            if merged != len(batch):
                raise SystemExit(f"merged {merged} of {len(batch)}")
    finally:
        await storage.close()


async def _digest(storage: Storage) -> tuple[int, int]:
    """(records, order-independent digest of them) of ``storage``."""
    count, total = 0, 0
    async for record in storage.export_records(0):
        encoded = msgspec.msgpack.encode(record)  # a NamedTuple: an array of its fields
        total += int.from_bytes(blake3.blake3(encoded).digest(), "big")
        count += 1
    return count, total % 2**256


async def _check(config: Path, count: int) -> dict[str, Any]:
    """Digest the store of ``config`` and open ``SAMPLES`` sampled identities from it."""
    storage = open_storage(config_mod.load(config))
    try:
        records, digest = await _digest(storage)
        rng = random.Random(SEED)
        wrong = 0
        for i in rng.sample(range(count), min(SAMPLES, count)):
            stored = await storage.get_identity(user_id(PRELOADED.format(i)))
            wrong += stored is None or f'"{PRELOADED.format(i)}"'.encode() not in stored
    finally:
        await storage.close()
    return {"records": records, "digest": digest, "samples_wrong": wrong}


def _anon_kib() -> int:
    """This process's anonymous resident memory (heap, not mapped files), KiB."""
    found = re.search(r"RssAnon:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(found.group(1)) if found else 0


def _timed(*args: str) -> tuple[float, float]:
    """(seconds ``registryd storage ARGS`` took in this process, its peak anonymous RSS in MiB,
    sampled every 50 ms). File-backed RSS is left out: LevelDB maps its table files while it
    reads them, pages the kernel reclaims at will."""
    peak, done = _anon_kib(), threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, _anon_kib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        if registryd(["storage", *args]) != 0:
            raise SystemExit("a registryd storage command failed (its error is above)")
    finally:
        done.set()
        sampler.join()
    return round(time.perf_counter() - start, 2), round(peak / 1024, 1)


def measure(count: int, work: Path, via: Path | None) -> dict[str, Any]:
    secrets = Secrets.generate()
    if via is not None:  # the intermediate store's index key is the one the run uses
        secrets = replace(secrets, index_key=config_mod.load(via).index_key().reveal())
    setup = Setup("leveldb", "http")
    source = write_config(work / "a.toml", secrets, setup, data_dir=work / "a", certs=None)
    target = write_config(work / "b.toml", secrets, setup, data_dir=work / "b", certs=None)
    foreign = ForeignCpu()
    start = time.perf_counter()
    asyncio.run(_fill(work / "a", secrets.index_key, count))
    result: dict[str, Any] = {"identities": count, "fill_s": round(time.perf_counter() - start, 2)}
    first = work / "a.rex"
    hops = [(source, first)]
    if via is not None:
        hops.append((via, work / "via.rex"))
    for n, (config, file) in enumerate(hops):
        into = hops[n + 1][0] if n + 1 < len(hops) else target
        took, peak = _timed("export", "--config", str(config), "--out", str(file))
        result[f"export_{n}_s"], result[f"export_{n}_anon_mib"] = took, peak
        took, peak = _timed("import", "--config", str(into), "--in", str(file))
        result[f"import_{n}_s"], result[f"import_{n}_anon_mib"] = took, peak
        result[f"file_{n}_bytes"] = file.stat().st_size
        file.unlink()
    result["bytes_per_identity"] = round(result["file_0_bytes"] / max(count, 1), 1)
    before = asyncio.run(_check(source, count))
    after = asyncio.run(_check(target, count))
    result["lost_nothing"] = (
        before["records"] == after["records"] == count
        and before["digest"] == after["digest"]
        and after["samples_wrong"] == 0
    )
    result["foreign_cpu"] = round(foreign.cores(), 3)

    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export/import round trip of N identities.")
    parser.add_argument("--identities", type=int, default=1_000_000)
    parser.add_argument(
        "--via",
        type=Path,
        metavar="CONFIG",
        help="a config whose (empty) store the records pass through, e.g. Redis",
    )
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    os.nice(10)  # other work shares the machine's cores
    with tempfile.TemporaryDirectory(prefix="registryd-bench-export-", dir=args.dir) as tmp:
        result = measure(args.identities, Path(tmp), args.via)
    json.dump(result, sys.stdout)
    print()
    return 0 if result["lost_nothing"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
