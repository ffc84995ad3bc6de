"""registryd.client: both clients against the real app in-process, and forged or broken servers."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from registryd import scaffold, wire
from registryd.cli.client_config import load_client_config
from registryd.client import (
    AsyncRegistryClient,
    IdentityKeys,
    RegistryClient,
    ServerKey,
)
from registryd.client import clients as client_mod
from registryd.config import Config
from registryd.errors import (
    ConfigError,
    InvalidInput,
    ProtocolError,
    ServerError,
    TransportError,
)
from registryd.identity import user_id
from registryd.storage import Storage
from tests.client_support import (
    URL,
    assert_identity_of,
    forging_server,
    in_process_app,
    sync_client,
)
from tests.helpers import Clock, app_transport
from tests.vectors import KID_HEX, PEPPER, PEPPER_HEX, SERVER_PUBLIC_HEX

Handler = Callable[[httpx.Request], httpx.Response]


def answering(body: object, status: int = 200) -> httpx.MockTransport:
    """A server that gives every request the same JSON (or raw bytes) answer."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.MockTransport(lambda request: httpx.Response(status, content=content))


# -- the real app -------------------------------------------------------------------------


@pytest.fixture
async def aclient(
    backend_config: Config, storage: Storage, clock: Clock
) -> AsyncIterator[AsyncRegistryClient]:
    transport = app_transport(backend_config, storage, clock=clock)
    async with AsyncRegistryClient(URL, PEPPER, transport=transport) as client:
        yield client


async def test_register_then_resolve_alice_and_bob(aclient: AsyncRegistryClient) -> None:
    keys = {name: IdentityKeys.generate() for name in ("alice", "bob")}
    for name, k in keys.items():
        assert await aclient.check_user(name) is False
        await aclient.register(name, k, created_at_ms=1234)
    for name, k in keys.items():
        identity = await aclient.resolve(name)
        assert_identity_of(identity, name, k)
        assert identity is not None and identity.created_at_ms == 1234
        assert await aclient.resolve(user_id(name)) == identity  # by raw handle
        assert await aclient.check_user(name) is True
        assert await aclient.check_user(user_id(name)) is True


async def test_unregistered_name_resolves_to_none(aclient: AsyncRegistryClient) -> None:
    assert await aclient.resolve("carol") is None
    assert await aclient.check_user("carol") is False


async def test_register_normalizes_the_username(aclient: AsyncRegistryClient) -> None:
    keys = IdentityKeys.generate()
    await aclient.register("  Bob ", keys)
    assert_identity_of(await aclient.resolve("Bob"), "Bob", keys)
    assert await aclient.check_user("bob") is False  # no case folding (spec 1)


async def test_second_registration_is_a_409_conflict(aclient: AsyncRegistryClient) -> None:
    await aclient.register("alice", IdentityKeys.generate())
    with pytest.raises(ServerError) as err:
        await aclient.register("alice", IdentityKeys.generate())
    assert (err.value.status, err.value.code, err.value.message) == (409, "CONFLICT", "conflict")
    assert str(err.value) == "409 CONFLICT: conflict"


async def test_announce_stores_presence(
    aclient: AsyncRegistryClient, storage: Storage, clock: Clock
) -> None:
    keys = IdentityKeys.generate()
    await aclient.register("alice", keys)
    await aclient.announce("alice", "203.0.113.7:51820", ts_ms=clock.now_ms, keys=keys)
    found = await storage.get_presence(user_id("alice"))
    assert found is not None
    presence = wire.Presence(user_id("alice").hex(), "203.0.113.7:51820", clock.now_ms)
    assert wire.decode(found[0], wire.Presence) == presence
    assert await aclient.presence("alice") == presence
    with pytest.raises(ServerError) as err:  # unsigned: refused by default
        await aclient.announce(user_id("alice"), "wss://alice.example.com", clock.now_ms + 1)
    assert err.value.status == 401
    await aclient.announce(user_id("alice"), "wss://a.example", clock.now_ms + 1, keys=keys)
    assert await aclient.presence(user_id("alice")) == wire.Presence(
        user_id("alice").hex(), "wss://a.example", clock.now_ms + 1
    )
    assert await aclient.presence("bob") is None


async def test_update_and_delete_are_signed_by_the_registered_keys(
    aclient: AsyncRegistryClient, clock: Clock
) -> None:
    keys, new_keys = IdentityKeys.generate(), IdentityKeys.generate()
    await aclient.register("alice", keys, created_at_ms=1)
    now = clock.now_ms
    await aclient.update("alice", keys, new_keys, created_at_ms=2, ts_ms=now)
    assert_identity_of(await aclient.resolve("alice"), "alice", new_keys)
    with pytest.raises(ServerError) as err:  # the superseded keys sign no more
        await aclient.update("alice", keys, keys, created_at_ms=3, ts_ms=now + 1)
    assert err.value.status == 401
    with pytest.raises(ServerError) as err:
        await aclient.delete("alice", keys, ts_ms=now + 2)
    assert err.value.status == 401
    await aclient.announce("alice", "203.0.113.7:1", now, keys=new_keys)
    await aclient.delete("alice", new_keys, ts_ms=now + 3)
    assert await aclient.resolve("alice") is None
    assert await aclient.presence("alice") is None
    await aclient.register("alice", keys, created_at_ms=4)  # free again


async def test_invalid_arguments_fail_before_any_request(aclient: AsyncRegistryClient) -> None:
    with pytest.raises(InvalidInput):
        await aclient.register("\talice", IdentityKeys.generate())
    with pytest.raises(InvalidInput):
        await aclient.register("alice", IdentityKeys.generate(), created_at_ms=0)
    with pytest.raises(InvalidInput):
        await aclient.announce("alice", "   ")
    for bad in (b"\x00" * 31, b"\x00" * 33):
        with pytest.raises(ValueError):
            await aclient.resolve(bad)


async def test_envelope_pubkey_is_the_servers_active_key(aclient: AsyncRegistryClient) -> None:
    key = await aclient.envelope_pubkey()
    assert key == ServerKey(bytes.fromhex(KID_HEX), bytes.fromhex(SERVER_PUBLIC_HEX), None)


def test_blocking_client_against_the_real_app() -> None:
    keys = IdentityKeys.generate()
    with in_process_app() as transport, sync_client(transport) as client:
        client.register("alice", keys, created_at_ms=1)  # so the update's (now) is after it
        assert_identity_of(client.resolve("alice"), "alice", keys)
        assert client.resolve("bob") is None
        assert client.check_user("alice") is True
        client.announce("alice", "203.0.113.7:51820", keys=keys)
        presence = client.presence("alice")
        assert presence is not None and presence.addr == "203.0.113.7:51820"
        with pytest.raises(ServerError) as err:
            client.register("alice", IdentityKeys.generate())
        assert err.value.status == 409
        new_keys = IdentityKeys.generate()
        client.update("alice", keys, new_keys)
        assert_identity_of(client.resolve("alice"), "alice", new_keys)
        client.delete("alice", new_keys)
        assert client.resolve("alice") is None and client.presence("alice") is None


# -- forged and broken servers ------------------------------------------------------------


def test_a_correctly_sealed_forgery_is_opened() -> None:
    keys = IdentityKeys.generate()
    alice = keys.identity("alice").to_json()
    with sync_client(forging_server(alice)) as client:
        assert_identity_of(client.resolve("alice"), "alice", keys)


def test_identity_of_another_handle_is_a_protocol_error() -> None:
    bob = IdentityKeys.generate().identity("bob").to_json()
    with sync_client(forging_server(bob)) as client, pytest.raises(ProtocolError) as err:
        client.resolve("alice")
    assert "another handle" in str(err.value)


def test_answer_for_another_handle_is_a_protocol_error() -> None:
    alice = IdentityKeys.generate().identity("alice").to_json()
    with sync_client(forging_server(alice, echo=user_id("bob").hex())) as client:
        with pytest.raises(ProtocolError):
            client.resolve("alice")


def test_envelope_sealed_with_another_pepper_is_a_protocol_error() -> None:
    alice = IdentityKeys.generate().identity("alice").to_json()
    transport = forging_server(alice)
    with RegistryClient(URL, b"\xff" * 32, transport=transport) as client:
        with pytest.raises(ProtocolError, match="unable to decrypt"):
            client.resolve("alice")


def test_each_request_uses_a_fresh_ephemeral_key() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        req = wire.decode(request.content, wire.ResolveRequest)
        seen.append(req.requester_ephemeral_pubkey_hex)
        return httpx.Response(200, content=wire.encode(wire.ResolveResponse(req.handle, None)))

    with sync_client(httpx.MockTransport(handler)) as client:
        assert client.resolve("alice") is None
        assert client.resolve("alice") is None
    assert len(set(seen)) == 2


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"exists":1}',
        b'{"exists":true,"exists":false}',
        b'{"exists":true,"extra":1}',
        b"{}",
    ],
)
def test_malformed_answer_is_a_protocol_error(body: bytes) -> None:
    with sync_client(answering(body)) as client, pytest.raises(ProtocolError):
        client.check_user("alice")


def test_ok_false_is_a_protocol_error() -> None:
    with sync_client(answering({"ok": False})) as client, pytest.raises(ProtocolError):
        client.announce("alice", "203.0.113.7:51820")


@pytest.mark.parametrize(
    "key",
    [
        {"kid_hex": "00", "x25519_public_key_hex": SERVER_PUBLIC_HEX, "active": True},
        {"kid_hex": KID_HEX, "x25519_public_key_hex": "00" * 32, "active": True},  # low order
        {  # non-canonical: bit 255 set (an alias of the real key, RFC 7748 section 5)
            "kid_hex": KID_HEX,
            "x25519_public_key_hex": SERVER_PUBLIC_HEX[:62] + "e6",
            "active": True,
        },
    ],
)
def test_bad_server_key_is_a_protocol_error(key: dict[str, object]) -> None:
    with sync_client(answering(key)) as client, pytest.raises(ProtocolError):
        client.register("alice", IdentityKeys.generate())


def test_oversized_answer_with_content_length_is_refused() -> None:
    with sync_client(answering(b"x" * 101), max_response_bytes=100) as client:
        with pytest.raises(ProtocolError, match="100-byte limit"):
            client.check_user("alice")


def test_endless_streamed_answer_is_cut_at_the_limit() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=itertools.repeat(b"x" * 1000))  # no Content-Length

    with sync_client(httpx.MockTransport(handler), max_response_bytes=5000) as client:
        with pytest.raises(ProtocolError, match="5000-byte limit"):
            client.check_user("alice")


def test_compressed_answer_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-encoding": "gzip"}
        return httpx.Response(200, headers=headers, content=gzip.compress(b'{"exists":true}'))

    with sync_client(httpx.MockTransport(handler)) as client, pytest.raises(ProtocolError):
        client.check_user("alice")


def test_slow_answer_is_cut_at_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter([0.0, 5.0, 11.0])  # deadline = 0 + 10 s; the second chunk arrives at 11 s
    monkeypatch.setattr(client_mod, "monotonic", lambda: next(ticks))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b'{"exists":', b"true}"]))

    with sync_client(httpx.MockTransport(handler)) as client:
        with pytest.raises(TransportError, match="timed out"):
            client.check_user("alice")


def test_structured_error_body_becomes_server_error() -> None:
    body = {"error": {"code": "INVALID_INPUT", "message": "invalid input: handle"}}
    with sync_client(answering(body, 400)) as client, pytest.raises(ServerError) as err:
        client.check_user("alice")
    assert (err.value.status, err.value.code, err.value.message) == (
        400,
        "INVALID_INPUT",
        "invalid input: handle",
    )


def test_unstructured_error_body_uses_the_status() -> None:
    with sync_client(answering(b"<html>bad gateway</html>", 502)) as client:
        with pytest.raises(ServerError) as err:
            client.check_user("alice")
    assert (err.value.status, err.value.code, err.value.message) == (502, "HTTP_502", "Bad Gateway")


def test_error_text_is_made_printable_and_short() -> None:
    body = {"error": {"code": "X\n", "message": "\x1b[31mred\n" + "y" * 500}}
    with sync_client(answering(body, 500)) as client, pytest.raises(ServerError) as err:
        client.check_user("alice")
    assert err.value.code == "X?"
    assert err.value.message.startswith("?[31mred?y")
    assert len(err.value.message) == 200


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
def test_httpx_transport_errors_become_transport_error(exc: httpx.TransportError) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with sync_client(httpx.MockTransport(handler)) as client:
        with pytest.raises(TransportError) as err:
            client.check_user("alice")
    assert err.value.__cause__ is exc
    assert str(err.value).startswith(f"GET {URL}/check_user/")


def test_connection_refused_is_a_transport_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with RegistryClient(url, PEPPER, timeout=5) as client, pytest.raises(TransportError):
            client.check_user("alice")


async def test_async_client_maps_errors_the_same_way() -> None:
    body = {"error": {"code": "RATE_LIMITED", "message": "rate limited"}}
    async with AsyncRegistryClient(URL, PEPPER, transport=answering(body, 429)) as client:
        with pytest.raises(ServerError) as err:
            await client.check_user("alice")
    assert err.value.code == "RATE_LIMITED"


# -- construction and secrets -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": URL, "pepper": b"\x01" * 31},
        {"base_url": "registry.test", "pepper": PEPPER},
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RegistryClient(**kwargs)  # type: ignore[arg-type]


async def test_reprs_hide_the_pepper_and_private_keys() -> None:
    keys = IdentityKeys.generate()
    private = (keys.signing_private_hex(), keys.encryption_private_hex())
    assert keys.signing_public_key.hex() in repr(keys)
    with RegistryClient(URL, PEPPER) as client:
        shown = [repr(keys), str(keys), repr(client), str(client)]
    async with AsyncRegistryClient(URL, PEPPER) as aclient:
        shown.append(repr(aclient))
    for text in shown:
        assert PEPPER_HEX not in text
        assert not any(secret in text for secret in private)


def test_identity_is_signed_and_bound_to_the_handle() -> None:
    keys = IdentityKeys.generate()
    identity = keys.identity(" José ", created_at_ms=7)
    assert identity.username_hint == "José"
    assert identity.handle == user_id("José")
    assert identity.created_at_ms == 7
    assert identity.verify_signature()


# -- keys files ---------------------------------------------------------------------------


def test_keys_file_round_trip_with_mode_0600(tmp_path: Path) -> None:
    keys = IdentityKeys.generate()
    path = tmp_path / "alice.json"
    keys.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["alice.json"]  # no temporary file left behind
    assert set(json.loads(path.read_text())) == {
        "signing_private_key_hex",
        "encryption_private_key_hex",
        "created_at_ms",
    }
    loaded = IdentityKeys.load(path)
    assert repr(loaded) == repr(keys)
    assert loaded.signing_private_hex() == keys.signing_private_hex()
    assert loaded.created_at_ms == keys.created_at_ms


def test_keys_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    IdentityKeys.generate().save(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        IdentityKeys.generate().save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["alice.json"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_keys_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "alice.json"
    IdentityKeys.generate().save(path)
    path.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        IdentityKeys.load(path)


@pytest.mark.parametrize(
    "content",
    [
        b"{}",
        b'{"signing_private_key_hex":"00","encryption_private_key_hex":"00","created_at_ms":1}',
        json.dumps(
            {
                "signing_private_key_hex": "11" * 32,
                "encryption_private_key_hex": "22" * 32,
                "created_at_ms": 1,
                "extra": 1,
            }
        ).encode(),
    ],
)
def test_malformed_keys_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "alice.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(ConfigError, match="not a keys file") as err:
        IdentityKeys.load(path)
    assert "11" * 32 not in str(err.value)


# -- client config ------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_client_config_written_by_init_dev_loads(tmp_path: Path) -> None:
    cfg = load_client_config(write(tmp_path / "client.toml", scaffold.client_config(PEPPER_HEX)))
    assert cfg.url == "https://127.0.0.1:8443"
    assert cfg.ca_file == "certs/ca.pem"
    assert cfg.keys_dir == "data/client-keys"
    assert cfg.cert_file is None and cfg.key_file is None
    assert cfg.pepper_hex is not None and cfg.pepper_hex.reveal() == PEPPER
    assert PEPPER_HEX not in repr(cfg)


def test_client_config_defaults(tmp_path: Path) -> None:
    cfg = load_client_config(write(tmp_path / "c.toml", "[client]\n"))
    assert (cfg.url, cfg.pepper_hex, cfg.keys_dir) == (None, None, "./data/client-keys")


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ('[client]\nurll = "x"\n', "client.urll", "unknown key"),
        ('[client]\nurl = "x"\n[server]\n', "server", "unknown key"),
        ('[client]\npepper_hex = "abcd"\n', "client.pepper_hex", "expected 64 hex characters"),
        ("[client]\nurl = 3\n", "client.url", "expected str"),
        ('[client]\ncert_file = "c.pem"\n', "client.cert_file", "set together"),
        ("", "client", "required key is missing"),
        ("[client\n", "", "invalid TOML"),
    ],
)
def test_client_config_errors_name_the_key(
    tmp_path: Path, text: str, path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_client_config(write(tmp_path / "c.toml", text))
    assert err.value.path == path
    assert message.lower() in err.value.message.lower()


def test_missing_client_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read client config"):
        load_client_config(tmp_path / "nope.toml")
