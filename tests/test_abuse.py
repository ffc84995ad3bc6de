"""Rate limits, proof of work and constant-shape resolve wired together in the real app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from registryd import config as config_mod
from registryd.client import AsyncRegistryClient, IdentityKeys
from registryd.envelope import x25519_keypair
from registryd.errors import ServerError
from registryd.hashcash import solve
from registryd.identity import user_id
from registryd.storage import open_storage
from tests.helpers import Clock, app_transport, config_text
from tests.vectors import PEPPER_HEX

POW = "[rate_limit]\nenabled = false\n[pow]\nenabled = true\ndifficulty = 8\n"
RESOLVE = {
    "handle": user_id("alice").hex(),
    "requester_ephemeral_pubkey_hex": x25519_keypair()[1].hex(),
}
POW_REQUIRED = {"error": {"code": "POW_REQUIRED", "message": "pow required"}}


def transport(tables: str, clock: Clock, client: str = "203.0.113.9") -> httpx.ASGITransport:
    cfg = config_mod.parse(config_text(tables=tables))
    return app_transport(cfg, open_storage(cfg), clock=clock, client=(client, 40000))


@pytest.fixture
async def pow_api(clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=transport(POW, clock), base_url="http://r") as c:
        yield c


async def proof(api: httpx.AsyncClient) -> str:
    challenge = (await api.get("/pow/challenge")).json()
    assert challenge["difficulty"] == 8 and len(challenge["challenge"]) == 32
    return f"{challenge['challenge']}:{solve(challenge['challenge'], 8)}"


async def test_pow_guards_resolve_and_check_user(pow_api: httpx.AsyncClient) -> None:
    no_proof = await pow_api.post("/resolve", json=RESOLVE)
    assert (no_proof.status_code, no_proof.json()) == (400, POW_REQUIRED)
    check = await pow_api.get(f"/check_user/{RESOLVE['handle']}")
    assert (check.status_code, check.json()) == (400, POW_REQUIRED)

    header = await proof(pow_api)
    accepted = await pow_api.post("/resolve", json=RESOLVE, headers={"x-enigma-pow": header})
    assert accepted.status_code == 200
    replayed = await pow_api.post("/resolve", json=RESOLVE, headers={"x-enigma-pow": header})
    assert (replayed.status_code, replayed.json()) == (400, POW_REQUIRED)

    header = await proof(pow_api)
    check = await pow_api.get(f"/check_user/{RESOLVE['handle']}", headers={"x-enigma-pow": header})
    assert check.json() == {"exists": False}


async def test_pow_is_checked_before_the_body_is_parsed(pow_api: httpx.AsyncClient) -> None:
    response = await pow_api.post("/resolve", content=b"not json", headers={"content-type": "x"})
    assert (response.status_code, response.json()) == (400, POW_REQUIRED)


async def test_one_solved_challenge_100_times_concurrently_is_accepted_once(
    pow_api: httpx.AsyncClient,
) -> None:
    header = {"x-enigma-pow": await proof(pow_api)}
    responses = await asyncio.gather(
        *(pow_api.post("/resolve", json=RESOLVE, headers=header) for _ in range(100))
    )
    assert sorted(r.status_code for r in responses) == [200] + [400] * 99


async def test_a_challenge_is_bound_to_its_client(clock: Clock) -> None:
    app_transport = transport(POW, clock, client="198.51.100.1")
    async with httpx.AsyncClient(transport=app_transport, base_url="http://r") as first:
        header = await proof(first)
    app_transport.client = ("198.51.100.2", 40000)  # same server, another client
    async with httpx.AsyncClient(transport=app_transport, base_url="http://r") as second:
        stolen = await second.post("/resolve", json=RESOLVE, headers={"x-enigma-pow": header})
    assert (stolen.status_code, stolen.json()) == (400, POW_REQUIRED)


async def test_client_library_solves_pow_transparently(clock: Clock) -> None:
    pepper = bytes.fromhex(PEPPER_HEX)
    async with AsyncRegistryClient("http://r", pepper, transport=transport(POW, clock)) as c:
        keys = IdentityKeys.generate()
        await c.register("alice", keys)  # register needs no proof
        identity = await c.resolve("alice")
        assert identity is not None and identity.handle == user_id("alice")
        assert await c.resolve("nobody") is None  # a constant-shape miss reads as not found
        assert await c.check_user("alice") is True


async def test_pow_challenge_is_absent_when_pow_is_off(api: httpx.AsyncClient) -> None:
    response = await api.get("/pow/challenge")
    assert response.status_code == 404
    assert (await api.post("/resolve", json=RESOLVE)).status_code == 200


async def test_pow_challenge_has_its_own_bucket(clock: Clock) -> None:
    tables = (
        "[rate_limit]\nburst = 3\nper_ip_rps = 100\nban_seconds = 0\n"
        "[rate_limit.endpoints]\npow_challenge_rps = 1\n[pow]\nenabled = true\ndifficulty = 8\n"
    )
    async with httpx.AsyncClient(transport=transport(tables, clock), base_url="http://r") as c:
        assert [(await c.get("/pow/challenge")).status_code for _ in range(3)] == [200] * 3
        clock.advance(0.05)  # the global bucket (100/s) refills; the challenge bucket (1/s) not
        assert (await c.get("/pow/challenge")).status_code == 429
        assert (await c.get("/envelope_pubkey")).status_code == 200
        clock.advance(1)
        assert (await c.get("/pow/challenge")).status_code == 200


async def test_rate_limit_then_ban_through_the_client_library(clock: Clock) -> None:
    tables = "[rate_limit]\nburst = 2\nper_ip_rps = 1\nban_seconds = 60\n"
    pepper = bytes.fromhex(PEPPER_HEX)
    async with AsyncRegistryClient("http://r", pepper, transport=transport(tables, clock)) as c:
        assert await c.check_user("alice") is False
        assert await c.check_user("alice") is False
        with pytest.raises(ServerError) as refused:
            await c.check_user("alice")
        assert (refused.value.status, refused.value.code) == (429, "RATE_LIMITED")
        clock.advance(59.999)
        with pytest.raises(ServerError):
            await c.check_user("alice")  # still banned, though the bucket has refilled
        clock.advance(0.001)
        assert await c.check_user("alice") is False
