"""Rotating envelope keys on a running daemon: keystore, `keys rotate --grace`, SIGHUP."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from registryd.certs import DevCerts
from registryd.client import IdentityKeys, RegistryClient
from registryd.envelope import seal, shared_key, x25519_keypair
from registryd.errors import RegistrydError
from registryd.identity import user_id
from registryd.wire import Envelope
from tests.helpers import INDEX_KEY_HEX, Daemon, daemon, tls_table, write_config
from tests.vectors import PEPPER_HEX

pytestmark = pytest.mark.e2e
PEPPER = bytes.fromhex(PEPPER_HEX)
GRACE_S = 2


def registryd(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "registryd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def keystore_config(tmp_path: Path, certs: DevCerts, *, passphrase_env: str = "") -> Path:
    keystore = tmp_path / "keys.json"
    path = tmp_path / "registry.toml"
    envelope = f'[envelope]\npepper_hex = "{PEPPER_HEX}"\nkeystore_path = "{keystore}"\n'
    if passphrase_env:
        envelope += f'keystore_passphrase_env = "{passphrase_env}"\n'
    write_config(
        path,
        'address = "127.0.0.1:0"\nmode = "tls"\n'
        f'[storage]\nkind = "leveldb"\npath = "{tmp_path / "db"}"\n'
        f'index_key_hex = "{INDEX_KEY_HEX}"\n'
        + tls_table(certs)
        + "[rate_limit]\nenabled = false\n"
        + envelope,
    )
    return path


def opens_until(keystore: Path, kid_hex: str) -> int:
    """When the keystore says ``kid_hex`` stops opening registrations (Unix ms)."""
    keys = json.loads(keystore.read_text())["keys"]
    until: int = next(k["opens_until_ms"] for k in keys if k["kid"] == kid_hex)
    return until


def sealed_registration(name: str, keys: IdentityKeys, kid: bytes, public: bytes) -> Any:
    """A /register body sealed to the server key (kid, public), as an older client made it."""
    identity = keys.identity(name)
    private, ephemeral = x25519_keypair()
    aead_key = shared_key(PEPPER, identity.handle, private, public)
    nonce, ciphertext = seal(aead_key, identity.handle, identity.to_json())
    envelope = Envelope.build(kid, ephemeral, nonce, ciphertext)
    return {"handle": identity.handle.hex(), "envelope": msgspec.to_builtins(envelope)}


class Loop(threading.Thread):
    """A client resolving and checking in a loop, counting calls and errors."""

    def __init__(self, url: str, ca: Path) -> None:
        super().__init__(daemon=True)
        self.client = RegistryClient(url, PEPPER, cafile=str(ca))
        self.stop = threading.Event()
        self.calls = 0
        self.errors: list[Exception] = []

    def run(self) -> None:
        with self.client:
            while not self.stop.is_set():
                try:
                    assert self.client.resolve("alice") is not None
                    assert self.client.check_user("alice") is True
                    self.calls += 1
                except (RegistrydError, AssertionError) as exc:
                    self.errors.append(exc)


def test_rotate_with_grace_and_sighup_on_a_running_daemon(certs: DevCerts, tmp_path: Path) -> None:
    config = keystore_config(tmp_path, certs)
    registryd("keys", "generate", "--config", str(config), "--active")
    with daemon(config) as d:
        http = httpx.Client(base_url=d.url, verify=ssl.create_default_context(cafile=str(certs.ca)))
        key_a = http.get("/envelope_pubkey").json()
        kid_a, public_a = (
            bytes.fromhex(key_a["kid_hex"]),
            bytes.fromhex(key_a["x25519_public_key_hex"]),
        )
        with RegistryClient(d.url, PEPPER, cafile=str(certs.ca)) as client:
            client.register("alice", IdentityKeys.generate())  # sealed to key A

        loop = Loop(d.url, certs.ca)
        loop.start()
        try:
            registryd("keys", "rotate", "--config", str(config), "--grace", f"{GRACE_S}s")
            started = time.monotonic()
            while loop.calls == 0 and time.monotonic() - started < 10:
                time.sleep(0.01)
            calls_before_reload = loop.calls
            d.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while http.get("/envelope_pubkey").json()["kid_hex"] == key_a["kid_hex"]:
                assert time.monotonic() < deadline, "the reload never showed key B"
                time.sleep(0.05)
            key_b = http.get("/envelope_pubkey").json()
            grace_ends_ms = opens_until(tmp_path / "keys.json", key_a["kid_hex"])

            old_client = sealed_registration("bob", IdentityKeys.generate(), kid_a, public_a)
            in_grace = http.post("/register", json=old_client)
            assert time.time() * 1000 < grace_ends_ms, "too slow to test inside the grace"
            assert in_grace.status_code == 200

            time.sleep(max(0.0, grace_ends_ms / 1000 + 0.1 - time.time()))
            old_client = sealed_registration("carol", IdentityKeys.generate(), kid_a, public_a)
            late = http.post("/register", json=old_client)
            assert (late.status_code, late.json()) == (
                400,
                {
                    "error": {
                        "code": "INVALID_INPUT",
                        "message": "invalid input: unable to decrypt envelope",
                    }
                },
            )

            requester = x25519_keypair()[1].hex()
            answer = http.post(
                "/resolve",
                json={"handle": user_id("bob").hex(), "requester_ephemeral_pubkey_hex": requester},
            ).json()
            assert answer["envelope"]["kid"] == key_b["kid_hex"]
            assert answer["envelope"]["sender_pubkey"] == key_b["x25519_public_key_hex"]
        finally:
            loop.stop.set()
            loop.join(10)
            http.close()
    assert calls_before_reload > 0 and loop.calls > calls_before_reload  # ran across it
    assert loop.errors == []
    assert "reloaded" in d.log


def test_sighup_with_a_broken_keystore_keeps_serving(certs: DevCerts, tmp_path: Path) -> None:
    config = keystore_config(tmp_path, certs, passphrase_env="TEST_KEYSTORE_PASSPHRASE")
    env = {"TEST_KEYSTORE_PASSPHRASE": "correct horse"}
    keystore = tmp_path / "keys.json"
    registryd(
        "keys",
        "generate",
        "--keystore",
        str(keystore),
        "--active",
        "--passphrase-env",
        "TEST_KEYSTORE_PASSPHRASE",
        env={**os.environ, **env},
    )
    d: Daemon
    with daemon(config, env=env) as d:
        http = httpx.Client(base_url=d.url, verify=ssl.create_default_context(cafile=str(certs.ca)))
        kid = http.get("/envelope_pubkey").json()["kid_hex"]
        keystore.write_text("{ not json")
        keystore.chmod(0o600)
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reload failed" not in "".join(d.lines) and time.monotonic() < deadline:
            line = d.proc.stderr.readline() if d.proc.stderr else ""
            d.lines.append(line)
        assert http.get("/envelope_pubkey").json()["kid_hex"] == kid
        http.close()
    assert "reload failed, still serving the previous configuration" in d.log
    assert "correct horse" not in d.log
