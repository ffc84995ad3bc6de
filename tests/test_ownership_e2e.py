"""Ownership on a real TLS daemon (extensions spec §1, §2), on LevelDB and on memory.

Every request is built from the spec's bytes by :mod:`tests.spec_owner` (no registryd module
makes a message, a digest, an identity or an envelope here), and sent to ``python -m registryd
serve`` over TLS. One scenario walks the whole life of a handle: register, update, replay,
presence, delete, re-register.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from registryd.certs import DevCerts
from tests.helpers import INDEX_KEY_HEX, daemon, tls_table, write_config
from tests.spec_owner import (
    H,
    Owner,
    canonical,
    lookup_body,
    now_ms,
    open_answer,
    seal_envelope,
    sign_hex,
)
from tests.vectors import KID_HEX, PEPPER_HEX, SERVER_PRIVATE_HEX

pytestmark = pytest.mark.e2e
SKEW_MS = 300_000  # [identity] signed_op_skew_seconds default
SIG = "x-registryd-signature"


@pytest.fixture(params=["leveldb", "memory"])
def http(request: pytest.FixtureRequest, tmp_path: Path, certs: DevCerts) -> Iterator[httpx.Client]:
    kind = str(request.param)
    path = f'path = "{tmp_path / "db"}"\n' if kind == "leveldb" else ""
    config = write_config(
        tmp_path / "registry.toml",
        'address = "127.0.0.1:0"\nmode = "tls"\n'
        f'[storage]\nkind = "{kind}"\n{path}index_key_hex = "{INDEX_KEY_HEX}"\n'
        + tls_table(certs)
        + "[rate_limit]\nenabled = false\n"
        + f'[envelope]\npepper_hex = "{PEPPER_HEX}"\n[[envelope.keys]]\n'
        f'kid_hex = "{KID_HEX}"\nx25519_private_key_hex = "{SERVER_PRIVATE_HEX}"\nactive = true\n',
    )
    with (
        daemon(config) as d,
        httpx.Client(base_url=d.url, verify=ssl.create_default_context(cafile=certs.ca)) as client,
    ):
        yield client


class Registry:
    """The scenario's requests, each built by hand from the spec."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.server = http.get("/envelope_pubkey").json()

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(
            path, content=content, headers={"content-type": "application/json", **(headers or {})}
        )

    def register(self, owner: Owner, identity: dict[str, Any]) -> httpx.Response:
        envelope = seal_envelope(self.server, owner.handle, canonical(identity))
        return self.post("/register", {"handle": owner.handle.hex(), "envelope": envelope})

    def update(
        self, signer: Owner, new: Owner, identity: dict[str, Any], ts_ms: int
    ) -> dict[str, Any]:
        """The body of an update of ``new``'s handle to ``identity``, signed by ``signer``."""
        digest = H(canonical(identity))
        return {
            "handle": new.handle.hex(),
            "envelope": seal_envelope(self.server, new.handle, canonical(identity)),
            "ts_ms": ts_ms,
            "signature_hex": sign_hex(signer.signing, "update", new.handle, ts_ms, digest),
        }

    def delete(self, signer: Owner, ts_ms: int) -> dict[str, Any]:
        return {
            "handle": signer.handle.hex(),
            "ts_ms": ts_ms,
            "signature_hex": sign_hex(signer.signing, "delete", signer.handle, ts_ms, H(b"")),
        }

    def announce(self, signer: Owner, addr: str, ts_ms: int) -> httpx.Response:
        presence = {"user_id": signer.handle.hex(), "addr": addr, "ts_ms": ts_ms}
        pretty = json.dumps(presence, indent=2).encode()  # the digest is over the canonical form
        signature = sign_hex(
            signer.signing, "presence", signer.handle, ts_ms, H(canonical(presence))
        )
        return self.post("/announce", pretty, {SIG: signature})

    def lookup(self, path: str, owner: Owner) -> Any:
        private, body = lookup_body(owner.handle)
        response = self.post(path, body)
        assert response.status_code == 200, response.text
        assert response.json()["handle"] == owner.handle.hex()
        return open_answer(private, owner.handle, response.json())


def status(response: httpx.Response, code: int, message: str | None = None) -> None:
    assert response.status_code == code, response.text
    if code != 200:
        error = response.json()["error"]
        assert sorted(error) == ["code", "message"]
        if message is not None:
            assert error["message"] == message
    else:
        assert response.json() == {"ok": True}


def test_the_life_of_a_handle(http: httpx.Client) -> None:
    reg = Registry(http)
    alice, bob = Owner("alice"), Owner("bob")
    t = now_ms()

    # §1: identity signatures
    bad = alice.identity(t)
    bad["signature"] = [7] * 64
    status(reg.register(alice, bad), 400, "invalid input: identity signature")
    status(
        reg.register(alice, alice.identity(t, hint="mallory")),
        400,
        "invalid input: username_hint does not match user_id",
    )
    first = alice.identity(t)
    status(reg.register(alice, first), 200)
    status(reg.register(alice, first), 200)  # idempotent
    status(reg.register(alice, Owner("alice").identity(t)), 409)

    # §2.1: update signed by the registered key
    alice2 = alice.rotated()
    second = alice2.identity(t + 1)
    update = reg.update(alice, alice2, second, t + 10)
    status(reg.post("/identity/update", update), 200)
    assert reg.lookup("/resolve", alice) == second
    status(reg.post("/identity/update", update), 409, "conflict: stale timestamp")  # replay
    fresh = reg.update(alice, alice, alice.identity(t + 2), t + 11)  # superseded key
    status(reg.post("/identity/update", fresh), 401, "unauthorized")
    status(reg.post("/identity/update", reg.update(bob, bob, bob.identity(t), t + 12)), 401)
    skewed = reg.update(alice2, alice2, alice2.identity(t + 3), t - SKEW_MS - 60_000)
    status(
        reg.post("/identity/update", skewed),
        400,
        "invalid input: ts_ms outside the allowed clock skew",
    )
    older = reg.update(alice2, alice2, alice2.identity(t + 1), t + 13)  # created_at not greater
    status(reg.post("/identity/update", older), 400)
    assert reg.lookup("/resolve", alice) == second

    # §2.3, §2.4: presence
    unsigned = {"user_id": alice.handle.hex(), "addr": "203.0.113.7:51820", "ts_ms": t + 20}
    status(reg.post("/announce", unsigned), 401, "unauthorized")
    status(reg.announce(alice2, "203.0.113.7:51820", t + 20), 200)
    newest = {"user_id": alice.handle.hex(), "addr": "203.0.113.7:51820", "ts_ms": t + 20}
    assert reg.lookup("/presence/resolve", alice) == newest
    status(reg.announce(alice2, "198.51.100.1:1", t + 19), 409, "conflict: stale timestamp")
    assert reg.lookup("/presence/resolve", alice) == newest
    status(reg.announce(bob, "198.51.100.1:1", t + 21), 401, "unauthorized")
    assert reg.lookup("/presence/resolve", bob) is None

    # §2.2: delete
    status(reg.post("/identity/delete", reg.delete(alice, t + 30)), 401)  # superseded key
    delete = reg.delete(alice2, t + 31)
    status(reg.post("/identity/delete", delete), 200)
    assert reg.lookup("/resolve", alice) is None
    assert reg.lookup("/presence/resolve", alice) is None
    assert http.get(f"/check_user/{alice.handle.hex()}").json() == {"exists": False}

    # re-register, and the old delete replayed
    alice3 = alice.rotated()
    third = alice3.identity(t + 40)
    status(reg.register(alice3, third), 200)
    replayed = reg.post("/identity/delete", delete)
    assert replayed.status_code in (401, 409), replayed.text
    assert reg.lookup("/resolve", alice) == third
