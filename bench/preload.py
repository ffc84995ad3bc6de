"""Putting N identities into a store before a run, without going through ``/register``.

- LevelDB: the harness opens ``registryd.storage.leveldb.LevelDBStorage`` on the data directory
  *before* the daemon starts (one process owns a LevelDB) and stores the identities in-process
  with ``Storage.merge``, the batch form of ``Storage.register`` (same blind index, same
  sealing): one synced write batch per 10,000 identities instead of one synced write each,
  which at ~1 ms per fsync here would take over a quarter of an hour for 1,000,000.
- Memory: the store lives in the daemon, so the identities go over HTTP once it runs:
  ``POST /sync`` in batches of a few MiB, authenticated with the bench peer token (the config
  sets ``allow_sync = true``, a large ``max_body_bytes`` and the token's Argon2id hash).
- Presences (both storages): one unsigned ``POST /announce`` per preloaded identity once the
  daemon runs (the config sets ``[presence] accept_unsigned`` and a day's ``ttl_seconds``, so
  they outlive the run), :data:`ANNOUNCE_CONCURRENCY` at a time.
- Owners (``owners`` > 0, both ways): the identities with real keys that signed updates target
  (:func:`bench.signed_requests.owner_identities`), after the ``bench-user`` ones.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from registryd import wire
from registryd.identity import PublicIdentity
from registryd.secret import Secret
from registryd.storage.leveldb import LevelDBStorage

from .configs import Secrets
from .signed_requests import owner_identities
from .workload import preloaded_batches, preloaded_presence

LEVELDB_BATCH = 10_000
SYNC_BATCH = 8_000  # ~640 bytes of JSON each: ~5 MB per request, under max_body_bytes
SYNC_TIMEOUT_S = 300.0
ANNOUNCE_CONCURRENCY = 32


class PreloadError(RuntimeError):
    """The store did not take every identity."""


def _batches(count: int, owners: int, batch: int, seed: int) -> Iterator[list[PublicIdentity]]:
    """The ``count`` preloaded identities, then the ``owners`` owners, ``batch`` at a time."""
    owned = owner_identities(owners, seed)
    tail = (owned[i : i + batch] for i in range(0, owners, batch))
    return itertools.chain(preloaded_batches(count, batch, seed), tail)


async def _leveldb(path: Path, secrets: Secrets, count: int, owners: int, seed: int) -> None:
    storage = LevelDBStorage(Secret(secrets.index_key), path)
    try:
        for batch in _batches(count, owners, LEVELDB_BATCH, seed):
            records = [(identity.handle, identity.to_json()) for identity in batch]
            merged = await storage.merge(records)
            if merged != len(records):
                raise PreloadError(f"LevelDB merged {merged} of {len(records)} identities")
    finally:
        await storage.close()


def preload_leveldb(
    path: Path, secrets: Secrets, count: int, seed: int, *, owners: int = 0
) -> float:
    """Store ``count`` identities (and ``owners`` owners) in the LevelDB at ``path``; returns
    the seconds it took."""
    start = time.perf_counter()
    asyncio.run(_leveldb(path, secrets, count, owners, seed))
    return time.perf_counter() - start


def preload_sync(
    url: str, secrets: Secrets, count: int, seed: int, cafile: Path | None, *, owners: int = 0
) -> float:
    """``POST /sync`` ``count`` identities (and ``owners`` owners) to the daemon at ``url``;
    returns the seconds taken."""
    start = time.perf_counter()
    verify: ssl.SSLContext | bool = True
    if cafile is not None:
        verify = ssl.create_default_context(cafile=str(cafile))
    headers = {
        "authorization": f"Bearer {secrets.peer_token}",
        "content-type": "application/json",
    }
    with httpx.Client(base_url=url, verify=verify, timeout=SYNC_TIMEOUT_S) as client:
        for batch in _batches(count, owners, SYNC_BATCH, seed):
            body = wire.encode(wire.SyncRequest(identities=batch))
            response = client.post("/sync", content=body, headers=headers)
            if response.status_code != 200:
                raise PreloadError(f"/sync answered {response.status_code}: {response.text[:200]}")
            merged = response.json().get("merged")
            if merged != len(batch):
                raise PreloadError(f"/sync merged {merged} of {len(batch)} identities")
    return time.perf_counter() - start


async def _announce_all(url: str, count: int, verify: ssl.SSLContext | bool) -> None:
    headers = {"content-type": "application/json"}
    todo = iter(range(count))
    async with httpx.AsyncClient(base_url=url, verify=verify, timeout=SYNC_TIMEOUT_S) as client:

        async def worker() -> None:
            for i in todo:
                response = await client.post(
                    "/announce", content=preloaded_presence(i), headers=headers
                )
                if response.status_code != 200:
                    raise PreloadError(f"/announce answered {response.status_code}")

        await asyncio.gather(*(worker() for _ in range(ANNOUNCE_CONCURRENCY)))


def preload_presences(url: str, count: int, cafile: Path | None) -> float:
    """Announce a presence for each of the ``count`` preloaded identities at ``url``; returns
    the seconds it took."""
    start = time.perf_counter()
    verify: ssl.SSLContext | bool = True
    if cafile is not None:
        verify = ssl.create_default_context(cafile=str(cafile))
    asyncio.run(_announce_all(url, count, verify))
    return time.perf_counter() - start
