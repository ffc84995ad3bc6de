"""Presence TTL, the batched GC and the GC task the app lifespan runs (spec 4.10, DESIGN)."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest

from registryd import presence
from registryd.config import Config
from registryd.identity import user_id
from registryd.storage import Storage
from tests.helpers import IN_PROCESS_EXPIRY, Clock, backend_of, make_app, make_config
from tests.vectors import ALICE_HANDLE_HEX

TTL_MS = 300_000  # helpers' configs use the default [presence] ttl_seconds = 300


@pytest.fixture
def backend_config(backend_config: Config) -> Config:
    """The reference's unsigned announces (``[presence] accept_unsigned``); signed ones are in
    tests/test_ownership*.py."""
    return make_config(**backend_of(backend_config), reference=True)


@pytest.mark.parametrize(
    ("ts_ms", "now_ms", "ttl_seconds", "expected"),
    [
        pytest.param(1_000_000, 1_000_000, 300, 1_300_000, id="now"),
        pytest.param(900_000, 1_000_000, 300, 1_200_000, id="past"),
        pytest.param(1_000_001, 1_000_000, 300, 1_300_000, id="1ms-in-future"),
        pytest.param(2**64 - 1, 1_000_000, 300, 1_300_000, id="far-future-capped"),
        pytest.param(1, 1_000_000, 1, 1_001, id="ancient"),
    ],
)
def test_expiry_ms(ts_ms: int, now_ms: int, ttl_seconds: int, expected: int) -> None:
    assert presence.expiry_ms(ts_ms, now_ms, ttl_seconds) == expected


@IN_PROCESS_EXPIRY
async def test_collect_purges_in_batches(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1_700_000_000_000
    for i in range(2_500):
        await storage.announce(i.to_bytes(32, "big"), b"p", now - 1 - i)
    fresh = [user_id(f"fresh{i}") for i in range(10)]
    for handle in fresh:
        await storage.announce(handle, b"fresh", now + 60_000)

    calls: list[tuple[int, int]] = []
    purge = storage.purge_expired

    async def spy(now_ms: int, limit: int) -> int:
        purged = await purge(now_ms, limit)
        calls.append((limit, purged))
        return purged

    monkeypatch.setattr(storage, "purge_expired", spy)

    assert await presence.collect(storage, now, batch=1_000) == 2_500
    assert calls == [(1_000, 1_000), (1_000, 1_000), (1_000, 500)]
    for handle in fresh:
        assert await storage.get_presence(handle) == (b"fresh", now + 60_000)
    assert await storage.get_presence((0).to_bytes(32, "big")) is None
    assert await presence.collect(storage, now, batch=1_000) == 0


@IN_PROCESS_EXPIRY
async def test_collect_exact_multiple_of_batch_stops(storage: Storage) -> None:
    now = 1_700_000_000_000
    for i in range(6):
        await storage.announce(i.to_bytes(32, "big"), b"p", now - 1)
    assert await presence.collect(storage, now, batch=3) == 6
    assert await presence.collect(storage, now, batch=3) == 0


def _gc_tasks() -> list[asyncio.Task[object]]:
    return [
        t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "gc_loop"
    ]


@IN_PROCESS_EXPIRY
async def test_lifespan_gc_deletes_expired_at_startup(
    backend_config: Config, storage: Storage, clock: Clock
) -> None:
    expired = [user_id(f"gone{i}") for i in range(5)]
    fresh = user_id("fresh")
    for handle in expired:
        await storage.announce(handle, b"old", clock.now_ms - 1)
    await storage.announce(fresh, b"new", clock.now_ms + TTL_MS)

    app = make_app(backend_config, storage, clock=clock, run_gc=True)
    async with app.router.lifespan_context(app):
        assert len(_gc_tasks()) == 1
        for _ in range(500):  # the first tick runs at start-up (in a worker thread for LevelDB)
            if await storage.get_presence(expired[-1]) is None:
                break
            await asyncio.sleep(0.01)
        for handle in expired:
            assert await storage.get_presence(handle) is None
        assert await storage.get_presence(fresh) == (b"new", clock.now_ms + TTL_MS)
    assert _gc_tasks() == []  # cancelled on shutdown
    assert await storage.get_presence(fresh) == (b"new", clock.now_ms + TTL_MS)


@IN_PROCESS_EXPIRY
async def test_lifespan_without_gc_starts_no_task(
    backend_config: Config, storage: Storage, clock: Clock
) -> None:
    await storage.announce(user_id("old"), b"old", clock.now_ms - 1)
    app = make_app(backend_config, storage, clock=clock)
    async with app.router.lifespan_context(app):
        for _ in range(5):
            await asyncio.sleep(0)
        assert _gc_tasks() == []
    assert await storage.get_presence(user_id("old")) == (b"old", clock.now_ms - 1)


def _announce_body(
    handle_hex: str, ts_ms: int, addr: str = "203.0.113.7:51820"
) -> dict[str, object]:
    return {"user_id": handle_hex, "addr": addr, "ts_ms": ts_ms}


async def test_announce_stores_presence_with_expiry(
    api: httpx.AsyncClient, storage: Storage, clock: Clock
) -> None:
    handle = bytes.fromhex(ALICE_HANDLE_HEX)
    ts = clock.now_ms - 10_000
    response = await api.post("/announce", json=_announce_body(ALICE_HANDLE_HEX.upper(), ts))
    assert response.status_code == 200
    assert response.json() == {"ok": True}

    found = await storage.get_presence(handle)
    assert found is not None
    body, expires = found
    assert expires == ts + TTL_MS
    assert msgspec.json.decode(body) == _announce_body(ALICE_HANDLE_HEX, ts)


async def test_announce_from_the_future_is_capped_at_now(
    api: httpx.AsyncClient, storage: Storage, clock: Clock
) -> None:
    handle = bytes.fromhex(ALICE_HANDLE_HEX)
    future = clock.now_ms + 86_400_000
    response = await api.post("/announce", json=_announce_body(ALICE_HANDLE_HEX, future))
    assert response.status_code == 200
    found = await storage.get_presence(handle)
    assert found is not None
    assert found[1] == clock.now_ms + TTL_MS


@IN_PROCESS_EXPIRY
async def test_announce_again_replaces_and_gc_honours_the_latest(
    api: httpx.AsyncClient, storage: Storage, clock: Clock
) -> None:
    handle = bytes.fromhex(ALICE_HANDLE_HEX)
    first_ts = clock.now_ms
    await api.post("/announce", json=_announce_body(ALICE_HANDLE_HEX, first_ts, "10.0.0.1:1"))
    clock.advance(200)
    second_ts = clock.now_ms
    await api.post("/announce", json=_announce_body(ALICE_HANDLE_HEX, second_ts, "10.0.0.2:2"))

    found = await storage.get_presence(handle)
    assert found is not None
    assert msgspec.json.decode(found[0])["addr"] == "10.0.0.2:2"
    assert found[1] == second_ts + TTL_MS

    clock.advance(200)  # past the first announcement's expiry, not the second's
    assert await presence.collect(storage, clock()) == 0
    assert await storage.get_presence(handle) is not None
    clock.advance(200)
    assert await presence.collect(storage, clock()) == 1
    assert await storage.get_presence(handle) is None


@IN_PROCESS_EXPIRY
async def test_collect_lets_the_loop_run_between_slices(storage: Storage) -> None:
    """GC in slices of 5: another coroutine runs between every two slices, an announce it makes
    for a presence still queued for deletion wins, and at the end every expired presence is
    gone and the fresh ones stay (spec 4.10; P7)."""
    now = 1_700_000_000_000
    expired = [user_id(f"gone{i}") for i in range(23)]
    for i, handle in enumerate(expired):
        await storage.announce(handle, b"old", now - 1_000 + i)  # purged oldest first
    fresh = [user_id(f"fresh{i}") for i in range(3)]
    for handle in fresh:
        await storage.announce(handle, b"fresh", now + 60_000)
    revived = expired[-1]  # the last one the slices reach

    events: list[str] = []
    purge = storage.purge_expired

    async def slice_(now_ms: int, limit: int) -> int:
        events.append("start")
        purged = await purge(now_ms, limit)
        events.append("end")
        return purged

    storage.purge_expired = slice_  # type: ignore[method-assign]
    done = asyncio.Event()

    async def other() -> None:
        while not done.is_set():
            if events[-1:] == ["end"]:
                events.append("other")
                if events.count("end") == 1:
                    await storage.announce(revived, b"again", now + 60_000)
            await asyncio.sleep(0)

    running = asyncio.create_task(other())
    try:
        purged = await presence.collect(storage, now, batch=5)
    finally:
        done.set()
        await running

    assert purged == len(expired) - 1
    starts = [i for i, event in enumerate(events) if event == "start"]
    assert len(starts) == 5  # 22 in slices of 5: 5, 5, 5, 5, 2
    for i in starts[1:]:
        assert events[i - 1] == "other", events  # the loop ran something else in between
    for handle in expired[:-1]:
        assert await storage.get_presence(handle) is None
    assert await storage.get_presence(revived) == (b"again", now + 60_000)
    for handle in fresh:
        assert await storage.get_presence(handle) == (b"fresh", now + 60_000)
