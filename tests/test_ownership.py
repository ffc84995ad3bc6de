"""Ownership through the in-process app (extensions spec §1, §2), over every backend: the
races, the flags and the bounds. Requests are built from the spec's bytes
(:mod:`tests.spec_owner`); the life of a handle on a real daemon is tests/test_ownership_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from registryd import config as config_mod
from registryd import presence as presence_mod
from registryd.config import Config
from registryd.storage import Storage, open_storage
from registryd.storage.records import SLOT_OPS, Owned, Swapped
from registryd.timespec import now_ms
from tests.helpers import IN_PROCESS_EXPIRY, Clock, app_client, backend_of, config_text
from tests.spec_owner import H, Owner, canonical, lookup_body, open_answer, seal_envelope, sign_hex

NOW = now_ms() // 1000 * 1000  # the wall clock's: Redis expires presences by its own clock
SIG = "x-registryd-signature"


def config_for(backend: Config, tables: str = "") -> Config:
    text = config_text(**backend_of(backend), extra="allow_sync = true")
    return config_mod.parse(text + tables)


@pytest.fixture
async def opened(backend_config: Config) -> AsyncIterator[Storage]:
    store = open_storage(backend_config)
    try:
        yield store
    finally:
        await store.close()


Serve = Callable[..., Any]


@pytest.fixture
def serve(backend_config: Config, opened: Storage, clock: Clock) -> Serve:
    """``serve(tables)``: an in-process client over ``opened`` with extra config tables."""

    def make(tables: str = "") -> Any:
        return app_client(config_for(backend_config, tables), storage=opened, clock=clock)

    return make


class Api:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def server(self) -> dict[str, Any]:
        answer: dict[str, Any] = (await self.http.get("/envelope_pubkey")).json()
        return answer

    async def register(self, owner: Owner, created: int) -> httpx.Response:
        plain = canonical(owner.identity(created))
        envelope = seal_envelope(await self.server(), owner.handle, plain)
        return await self.http.post(
            "/register", json={"handle": owner.handle.hex(), "envelope": envelope}
        )

    async def update_body(self, signer: Owner, identity: dict[str, Any], ts: int) -> dict[str, Any]:
        plain = canonical(identity)
        return {
            "handle": signer.handle.hex(),
            "envelope": seal_envelope(await self.server(), signer.handle, plain),
            "ts_ms": ts,
            "signature_hex": sign_hex(signer.signing, "update", signer.handle, ts, H(plain)),
        }

    async def announce(
        self, owner: Owner, addr: str, ts: int, *, signed: bool = True
    ) -> httpx.Response:
        body = {"user_id": owner.handle.hex(), "addr": addr, "ts_ms": ts}
        headers = {}
        if signed:
            digest = H(canonical(body))
            headers[SIG] = sign_hex(owner.signing, "presence", owner.handle, ts, digest)
        return await self.http.post("/announce", json=body, headers=headers)

    async def delete(self, owner: Owner, ts: int) -> httpx.Response:
        signature = sign_hex(owner.signing, "delete", owner.handle, ts, H(b""))
        body = {"handle": owner.handle.hex(), "ts_ms": ts, "signature_hex": signature}
        return await self.http.post("/identity/delete", json=body)

    async def lookup(self, path: str, owner: Owner) -> Any:
        private, body = lookup_body(owner.handle)
        response = await self.http.post(path, json=body)
        assert response.status_code == 200, response.text
        return open_answer(private, owner.handle, response.json())


def recording(storage: Storage) -> list[int]:
    """Record the identity ``ts_ms`` of every swap that succeeds, in the order they commit
    (the ops record's first 8 bytes, extensions spec §2 / registryd.ownership)."""
    accepted: list[int] = []
    swap: Callable[..., Awaitable[Swapped]] = storage.swap_owned

    async def recorded(owned: Owned, changes: Any, cap: int) -> Swapped:
        result = await swap(owned, changes, cap)
        if result is Swapped.DONE and SLOT_OPS in changes:
            accepted.append(struct.unpack(">Q", changes[SLOT_OPS][0][:8])[0])
        return result

    storage.swap_owned = recorded  # type: ignore[method-assign, assignment]
    return accepted


async def test_fifty_concurrent_updates_the_greatest_ts_stands(
    serve: Serve, opened: Storage, clock: Clock
) -> None:
    alice = Owner("alice")
    async with serve() as http:
        api = Api(http)
        assert (await api.register(alice, 1)).status_code == 200
        stamps = list(range(clock.now_ms - 50, clock.now_ms))
        random.Random(7).shuffle(stamps)  # noqa: S311 - a fixed order, not a secret
        # same signing key, a new identity each (created_at = ts, so every one is newer)
        bodies = [await api.update_body(alice, alice.identity(ts), ts) for ts in stamps]
        accepted = recording(opened)
        answers = await asyncio.gather(*(http.post("/identity/update", json=b) for b in bodies))
    statuses = {ts: a.status_code for ts, a in zip(stamps, answers, strict=True)}
    assert set(statuses.values()) <= {200, 409}
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["error"]["message"] == "conflict: stale timestamp"
    # every 200 was newer than everything accepted before it, and only 200s were accepted
    assert accepted == sorted(accepted) and len(set(accepted)) == len(accepted)
    assert set(accepted) == {ts for ts, code in statuses.items() if code == 200}
    assert statuses[max(stamps)] == 200
    stored = await opened.get_identity(alice.handle)  # opens: no torn write
    assert stored is not None and json.loads(stored) == alice.identity(max(stamps))


async def test_accept_unsigned_keeps_the_reference_announce(serve: Serve, clock: Clock) -> None:
    alice, bob = Owner("alice"), Owner("bob")
    async with serve("[presence]\naccept_unsigned = true\n") as http:
        api = Api(http)
        now = clock.now_ms
        assert (await api.announce(bob, "198.51.100.1:1", now, signed=False)).status_code == 200
        # last write wins, as in the reference, even with an older ts_ms
        assert (await api.announce(bob, "198.51.100.1:2", now - 1, signed=False)).status_code == 200
        assert (await api.lookup("/presence/resolve", bob))["addr"] == "198.51.100.1:2"
        # signed ones are still checked: bob is not registered
        assert (await api.announce(bob, "198.51.100.1:3", clock.now_ms)).status_code == 401
        assert (await api.register(alice, 1)).status_code == 200
        assert (await api.announce(alice, "198.51.100.9:9", clock.now_ms)).status_code == 200
        stale = await api.announce(alice, "198.51.100.9:8", clock.now_ms - 1)
        assert stale.status_code == 409


async def test_a_full_presence_store_refuses_new_handles_with_503(
    serve: Serve, clock: Clock, backend_config: Config
) -> None:
    owners = [Owner(f"user{i}") for i in range(3)]
    async with serve("[presence]\nmax_entries = 2\n") as http:
        api = Api(http)
        for owner in owners:
            assert (await api.register(owner, 1)).status_code == 200
        for owner in owners[:2]:
            assert (await api.announce(owner, "192.0.2.1:1", clock.now_ms)).status_code == 200
        full = await api.announce(owners[2], "192.0.2.1:1", clock.now_ms)
        assert full.status_code == 503
        assert full.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        refresh = await api.announce(owners[0], "192.0.2.1:2", clock.now_ms + 1)
        assert refresh.status_code == 200  # existing ones still refresh
        if backend_config.storage.kind == "redis":
            return  # Redis expires them by its own clock, not this one: test_storage_redis.py
        clock.advance(301)  # both expire; the next new announce collects them first
        late = await api.announce(owners[2], "192.0.2.1:3", clock.now_ms)
        assert late.status_code == 200


async def test_an_expired_presence_is_never_answered(serve: Serve, clock: Clock) -> None:
    alice = Owner("alice")
    async with serve() as http:
        api = Api(http)
        assert (await api.register(alice, 1)).status_code == 200
        assert (await api.announce(alice, "192.0.2.1:1", clock.now_ms)).status_code == 200
        assert (await api.lookup("/presence/resolve", alice)) is not None
        clock.advance(300)  # [presence] ttl_seconds: expired now, though the GC has not run
        assert (await api.lookup("/presence/resolve", alice)) is None


async def test_presence_misses_are_shaped_like_hits(serve: Serve, clock: Clock) -> None:
    alice, bob = Owner("alice"), Owner("bob")
    async with serve() as http:
        api = Api(http)
        assert (await api.register(alice, 1)).status_code == 200
        assert (await api.announce(alice, "192.0.2.1:1", clock.now_ms)).status_code == 200
        hit = await http.post("/presence/resolve", json=lookup_body(alice.handle)[1])
        miss = await http.post("/presence/resolve", json=lookup_body(bob.handle)[1])
    assert hit.status_code == miss.status_code == 200
    assert len(hit.content) == len(miss.content)
    assert miss.json()["envelope"] is not None
    async with serve("[privacy]\nconstant_shape_resolve = false\n") as http:
        miss = await http.post("/presence/resolve", json=lookup_body(bob.handle)[1])
    assert miss.json() == {"handle": bob.handle.hex(), "envelope": None}


@IN_PROCESS_EXPIRY
async def test_a_tombstone_outlives_the_skew_window_then_goes(
    serve: Serve, opened: Storage, clock: Clock
) -> None:
    alice = Owner("alice")
    async with serve() as http:
        api = Api(http)
        assert (await api.register(alice, 1)).status_code == 200
        assert (await api.delete(alice, clock.now_ms)).status_code == 200
        assert (await opened.owned(alice.handle)).ops is not None  # the tombstone
        clock.advance(299)
        assert await presence_mod.collect_tombstones(opened, clock.now_ms) == 0
        clock.advance(2)
        assert await presence_mod.collect_tombstones(opened, clock.now_ms) == 1
        assert (await opened.owned(alice.handle)).ops is None


async def test_sync_skips_identities_that_fail_the_signature_checks(
    backend_config: Config, opened: Storage, clock: Clock
) -> None:
    from argon2 import PasswordHasher

    token = "ownership-peer-token"
    digest = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(token)
    config = config_for(backend_config, f'[peers]\ntoken_hashes = ["{digest}"]\n')
    good, bad = Owner("good"), Owner("bad")
    forged = {**bad.identity(1), "signature": [0] * 64}
    async with app_client(config, storage=opened, clock=clock) as http:
        response = await http.post(
            "/sync",
            content=b'{"identities":['
            + canonical(good.identity(1))
            + b","
            + canonical(forged)
            + b"]}",
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        )
    assert response.json() == {"merged": 1}
    assert await opened.exists(good.handle) and not await opened.exists(bad.handle)
