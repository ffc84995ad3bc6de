"""Envelope key lifecycle in the app: reload, expiry (503, health), staged keys, admin API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

from registryd import config as config_mod
from registryd.errors import ConfigError
from registryd.keyring import key_warnings
from registryd.keystore import KdfParams, Keystore, load_keyring
from registryd.runtime import Runtime
from tests.helpers import Clock, app_with_state, config_text, write_config
from tests.vectors import KID_HEX, PEPPER_HEX, SERVER_PRIVATE_HEX

KID_B = "0b0b0b0b0b0b0b0b"
PRIVATE_B = "6f30cc7225bda1bf26a373bc4daab78732ddea2fbce1abcdfaac582aeeed0e04"
TOKEN = "admin-token-0123456789"
TOKEN_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(TOKEN)
ADMIN = {"authorization": f"Bearer {TOKEN}"}


def key_table(kid: str, private: str, *, active: bool = True, extra: str = "") -> str:
    return (
        f'[[envelope.keys]]\nkid_hex = "{kid}"\nx25519_private_key_hex = "{private}"\n'
        f"active = {'true' if active else 'false'}\n{extra}"
    )


def config_with(*keys: str, tables: str = "") -> str:
    """helpers' config with its spec key replaced by ``keys`` and extra ``tables``."""
    spec_key = key_table(KID_HEX, SERVER_PRIVATE_HEX)
    text = config_text(tables="[rate_limit]\nenabled = false\n" + tables)
    assert spec_key in text
    return text.replace(spec_key, "".join(keys))


@contextlib.asynccontextmanager
async def registry_app(
    path: Path, clock: Clock, client: str = "127.0.0.1"
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    cfg = config_mod.load(path)
    async with app_with_state(
        cfg, clock=clock, config_path=str(path), client=(client, 5000), base_url="http://r"
    ) as (registry, http):
        yield registry, http


async def active_kid(http: httpx.AsyncClient) -> str:
    response = await http.get("/envelope_pubkey")
    assert response.status_code == 200
    kid: str = response.json()["kid_hex"]
    return kid


async def test_reload_swaps_keys_at_once_and_reports_restart_only_changes(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "registry.toml"
    write_config(path, config_with(key_table(KID_HEX, SERVER_PRIVATE_HEX)))
    async with registry_app(path, clock) as (registry, http):
        assert await active_kid(http) == KID_HEX
        new = config_with(
            key_table(KID_B, PRIVATE_B), key_table(KID_HEX, SERVER_PRIVATE_HEX, active=False)
        )
        write_config(path, new.replace('address = "127.0.0.1:0"', 'address = "127.0.0.1:9"'))
        assert await registry.reload() == ["address"]
        assert await active_kid(http) == KID_B
        listed = (await http.get("/envelope_pubkeys")).json()
        assert [k["kid_hex"] for k in listed] == [KID_B, KID_HEX]
        assert registry.config.address == "127.0.0.1:0"  # kept until a restart


async def test_a_failed_reload_keeps_the_running_keys(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "registry.toml"
    write_config(path, config_with(key_table(KID_HEX, SERVER_PRIVATE_HEX)))
    async with registry_app(path, clock) as (registry, http):
        write_config(path, config_with(key_table(KID_B, "zz")))
        with pytest.raises(ConfigError) as err:
            await registry.reload()
        assert err.value.path == "envelope.keys[0].x25519_private_key_hex"
        assert await active_kid(http) == KID_HEX


async def test_expired_key_degrades_with_503_not_500(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "registry.toml"
    not_after = f"not_after_epoch_ms = {clock.now_ms + 1000}\n"
    write_config(path, config_with(key_table(KID_HEX, SERVER_PRIVATE_HEX, extra=not_after)))
    async with registry_app(path, clock) as (_, http):
        assert (await http.get("/health")).json() == {"status": "ok", "active_kid": KID_HEX}
        clock.advance(1)
        unavailable = {"error": {"code": "KEY_UNAVAILABLE", "message": "no valid envelope key"}}
        for response in (
            await http.get("/envelope_pubkey"),
            await http.post(
                "/resolve",
                json={"handle": "00" * 32, "requester_ephemeral_pubkey_hex": "09" * 32},
            ),
        ):
            assert (response.status_code, response.json()) == (503, unavailable)
        health = await http.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert (await http.get("/check_user/" + "00" * 32)).status_code == 200


async def test_a_staged_successor_takes_over_at_its_not_before(
    tmp_path: Path, clock: Clock
) -> None:
    switch = clock.now_ms + 60_000
    path = tmp_path / "registry.toml"
    write_config(path, config_with(key_table(KID_HEX, SERVER_PRIVATE_HEX)))
    # the reference's inline schema has no not_before: stage through the key ring itself
    async with registry_app(path, clock) as (registry, http):
        ring = registry.keyring
        current = ring.keys[0]
        successor = type(current).from_private(
            bytes.fromhex(KID_B), bytes.fromhex(PRIVATE_B), active=True, not_before_ms=switch
        )
        registry.keyring = type(ring)(ring.pepper, (successor, current))
        assert await active_kid(http) == KID_HEX
        assert successor.state(clock.now_ms) == "pending"
        clock.advance(60)
        assert await active_kid(http) == KID_B


def test_key_warnings(clock: Clock) -> None:
    soon = f"not_after_epoch_ms = {clock.now_ms + 3 * 86_400_000}\n"
    cfg = config_mod.parse(config_with(key_table(KID_HEX, SERVER_PRIVATE_HEX, extra=soon)))
    ring = load_keyring(cfg.envelope)
    assert key_warnings(ring, clock.now_ms, warning_days=2) == []
    [warning] = key_warnings(ring, clock.now_ms, warning_days=7)
    assert KID_HEX in warning and "72.0 h" in warning
    [degraded] = key_warnings(ring, clock.now_ms + 3 * 86_400_000, warning_days=7)
    assert "503" in degraded


# -- admin API ---------------------------------------------------------------------------------


def admin_config(tmp_path: Path, token_hash: str = TOKEN_HASH) -> Path:
    path = tmp_path / "registry.toml"
    admin = f'[admin]\ntoken_hashes = ["{token_hash}"]\n'
    write_config(path, config_with(key_table(KID_HEX, SERVER_PRIVATE_HEX), tables=admin))
    return path


async def test_admin_api_is_absent_without_token_hashes(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "registry.toml"
    write_config(path, config_with(key_table(KID_HEX, SERVER_PRIVATE_HEX)))
    async with registry_app(path, clock) as (_, http):
        assert (await http.get("/admin/keys", headers=ADMIN)).status_code == 404


async def test_admin_needs_loopback_and_a_token(tmp_path: Path, clock: Clock) -> None:
    path = admin_config(tmp_path)
    async with registry_app(path, clock, client="203.0.113.7") as (_, remote):
        refused = await remote.get("/admin/keys", headers=ADMIN)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
    async with registry_app(path, clock) as (_, local):
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            response = await local.get("/admin/keys", headers=headers)
            assert (response.status_code, response.json()["error"]["code"]) == (
                401,
                "UNAUTHORIZED",
            )
        listing = await local.get("/admin/keys", headers=ADMIN)
        assert listing.status_code == 200
        assert [(k["kid_hex"], k["state"]) for k in listing.json()] == [(KID_HEX, "active")]
        assert SERVER_PRIVATE_HEX not in listing.text


async def test_admin_reload_and_rotate_without_keystore(tmp_path: Path, clock: Clock) -> None:
    path = admin_config(tmp_path)
    async with registry_app(path, clock) as (_, http):
        text = path.read_text().replace(KID_HEX, KID_B)
        write_config(path, text)
        reloaded = await http.post("/admin/reload", headers=ADMIN)
        assert reloaded.json() == {"reloaded": True, "restart_needed": []}
        assert await active_kid(http) == KID_B
        rotate = await http.post("/admin/keys/rotate", headers=ADMIN, json={"grace_seconds": 5})
        assert rotate.status_code == 400
        assert "keystore" in rotate.json()["error"]["message"]


async def test_a_flood_of_bad_admin_tokens_is_bounded(tmp_path: Path, clock: Clock) -> None:
    path = admin_config(tmp_path, PasswordHasher().hash(TOKEN))  # real cost: ~50 ms a check
    async with registry_app(path, clock) as (_, http):
        bad = {"authorization": "Bearer not-the-token"}
        responses = await asyncio.gather(*(http.get("/admin/keys", headers=bad) for _ in range(60)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [401] * 18 + [429] * 42  # 2 checking + 16 waiting; the rest refused


async def test_admin_rotate_with_an_encrypted_keystore(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_ADMIN_PASSPHRASE", "s3cret passphrase")
    store = Keystore(path=tmp_path / "keys.json")
    first = store.generate(clock.now_ms, active=True)
    store.save(None, b"s3cret passphrase", kdf=KdfParams(time_cost=1, memory_cost=8, parallelism=1))
    path = admin_config(tmp_path)
    text = path.read_text().replace(key_table(KID_HEX, SERVER_PRIVATE_HEX), "")
    text = text.replace(
        "[envelope]\n",
        f'[envelope]\nkeystore_path = "{tmp_path / "keys.json"}"\n'
        'keystore_passphrase_env = "TEST_ADMIN_PASSPHRASE"\n',
    )
    write_config(path, text)
    async with registry_app(path, clock) as (registry, http):
        assert await active_kid(http) == first.kid.hex()
        rotated = await http.post("/admin/keys/rotate", headers=ADMIN, json={"grace_seconds": 60})
        assert rotated.status_code == 200
        states = {k["kid_hex"]: k["state"] for k in rotated.json()}
        new_kid = await active_kid(http)
        assert states == {new_kid: "active", first.kid.hex(): "grace"}
        assert registry.keyring.find(first.kid, clock.now_ms + 59_999) is not None
        on_disk = Keystore.load(tmp_path / "keys.json", b"s3cret passphrase")
        assert [k.kid.hex() for k in on_disk.keys] == [new_kid, first.kid.hex()]
        assert "s3cret" not in rotated.text
        bad = await http.post("/admin/keys/rotate", headers=ADMIN, json={"grace_seconds": -1})
        assert bad.status_code == 400


async def test_admin_is_not_local_through_a_trusted_local_proxy(
    tmp_path: Path, clock: Clock
) -> None:
    path = admin_config(tmp_path)
    write_config(
        path,
        path.read_text().replace('mode = "http"', 'mode = "http"\ntrusted_proxies = ["127.0.0.1"]'),
    )
    async with registry_app(path, clock) as (_, proxied):
        headers = {**ADMIN, "x-forwarded-for": "198.51.100.7"}
        refused = await proxied.get("/admin/keys", headers=headers)
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "FORBIDDEN")


async def test_a_flood_of_bad_peer_tokens_does_not_lock_out_the_admin(
    tmp_path: Path, clock: Clock
) -> None:
    slow_hash = PasswordHasher().hash(TOKEN)  # real cost: ~50 ms a check
    path = tmp_path / "registry.toml"
    tables = f'[admin]\ntoken_hashes = ["{TOKEN_HASH}"]\n[peers]\ntoken_hashes = ["{slow_hash}"]\n'
    write_config(path, config_with(key_table(KID_HEX, SERVER_PRIVATE_HEX), tables=tables))
    async with registry_app(path, clock) as (_, http):
        junk = {"authorization": "Bearer junk"}
        flood = [http.post("/nodes", json={"nodes": []}, headers=junk) for _ in range(40)]
        results = await asyncio.gather(*flood, http.get("/admin/keys", headers=ADMIN))
    assert results[-1].status_code == 200
    assert {r.status_code for r in results[:-1]} == {401, 429}


async def test_overlapping_reloads_apply_the_newest_file(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "registry.toml"
    write_config(path, config_with(key_table(KID_HEX, SERVER_PRIVATE_HEX)))
    async with registry_app(path, clock) as (registry, http):
        real_load, first = config_mod.load, asyncio.Event()
        loop = asyncio.get_running_loop()

        def slow_first_load(p: str) -> config_mod.Config:
            cfg = real_load(p)  # reads the file as it is now...
            if not first.is_set():
                loop.call_soon_threadsafe(first.set)
                time.sleep(0.3)  # ...and, like an Argon2 keystore read, takes its time
            return cfg

        monkeypatch.setattr(config_mod, "load", slow_first_load)
        older = asyncio.create_task(registry.reload())
        await first.wait()
        write_config(path, config_with(key_table(KID_B, PRIVATE_B)))
        await asyncio.gather(older, registry.reload())
        assert await active_kid(http) == KID_B


def test_a_keystore_without_an_active_key_is_a_config_error(tmp_path: Path) -> None:
    store = Keystore(path=tmp_path / "keys.json")
    store.generate(1_700_000_000_000, active=False)
    store.save(None, None)
    cfg = config_mod.parse(
        f'mode = "http"\n[storage]\nkind = "memory"\n[envelope]\npepper_hex = "{PEPPER_HEX}"\n'
        f'keystore_path = "{tmp_path / "keys.json"}"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_keyring(cfg.envelope)
    assert err.value.path == "envelope.keystore_path" and "no active key" in err.value.message
