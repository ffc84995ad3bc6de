"""Resident memory per identity in the memory store, measured in a process of its own.

    python -m bench.memory_rss --identities 1000000

Opens a ``registryd.storage.memory.MemoryStorage``, makes N identities (realistic sizes, as
preloaded in the other scenarios) and keeps them alive throughout, reads this process's resident
set size (``/proc/self/statm``), stores the identities through ``Storage.merge`` in batches,
runs the garbage collector and reads the RSS again, so only the store's own growth counts.
Prints one JSON object: ``rss_before``, ``rss_after`` (bytes), ``bytes_per_identity``. The
figure includes everything the store keeps per identity (blind index key, sealed record, dict
slot) and the allocator's overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys

from registryd.identity import user_id
from registryd.secret import Secret
from registryd.storage.memory import MemoryStorage

from .workload import PRELOADED, preloaded_batches

BATCH = 10_000


def rss_bytes() -> int:
    """This process's resident set size in bytes (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


async def measure(identities: int, seed: int) -> dict[str, float]:
    # The inputs (handle, identity JSON) are made first and kept alive until the second
    # reading, so the difference is what the store itself added, not the generator's garbage
    # (freed memory that the allocator keeps would otherwise count, or be reused by the store).
    records = [
        (identity.handle, identity.to_json())
        for batch in preloaded_batches(identities, BATCH, seed)
        for identity in batch
    ]
    storage = MemoryStorage(Secret(os.urandom(32)))
    await storage.merge(records[:1])  # warm the code paths (one identity before the reading)
    gc.collect()
    before = rss_bytes()
    for start in range(1, identities, BATCH):
        await storage.merge(records[start : start + BATCH])
    gc.collect()
    after = rss_bytes()
    for i in (0, identities // 2, identities - 1):  # spot-check that the store kept them
        if not await storage.exists(user_id(PRELOADED.format(i))):
            raise SystemExit(f"identity {i} is missing from the memory store")
    await storage.close()
    return {
        "identities": identities,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_identity": (after - before) / identities,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Resident memory per identity, memory store.")
    parser.add_argument("--identities", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.identities, args.seed))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
