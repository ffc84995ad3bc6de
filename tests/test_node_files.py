"""The node key file (PKCS#8 PEM, 0600, never overwritten) and the atomic state file."""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import VerifyKey

from registryd.errors import ConfigError
from registryd.node import AgentState, NodeKey, State, read_state
from registryd.node.state import parse_rfc3339, rfc3339, write_state


def test_key_round_trip_mode_and_public_forms(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = tmp_path / "keys" / "node.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    loaded = NodeKey.load(path)
    assert loaded.public_key == key.public_key and len(key.public_key) == 32
    assert len(key.pubkey_b64) == 44 and key.pubkey_prefix == key.pubkey_b64[:16]
    VerifyKey(key.public_key).verify(b"m", loaded.sign(b"m"))


def test_key_file_is_standard_pkcs8(tmp_path: Path) -> None:
    """openssl reads the file, and a key made by another tool loads."""
    key = NodeKey.generate()
    key.save(tmp_path / "node.key")
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(tmp_path / "node.key"), "-pubout", "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    assert der[-32:] == key.public_key
    other = Ed25519PrivateKey.generate()
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "other.key").write_bytes(pem)
    (tmp_path / "other.key").chmod(0o600)
    assert NodeKey.load(tmp_path / "other.key").public_key == other.public_key().public_bytes_raw()


def test_a_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    NodeKey.generate().save(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        NodeKey.generate().save(path)
    assert path.read_bytes() == before


def test_exposed_or_foreign_key_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    NodeKey.generate().save(path)
    path.chmod(0o640)
    with pytest.raises(ConfigError, match=r"key_path: .* readable by group or others"):
        NodeKey.load(path)
    encrypted = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    for name, data in (("garbage.key", b"not a key"), ("enc.key", encrypted)):
        (tmp_path / name).write_bytes(data)
        (tmp_path / name).chmod(0o600)
        with pytest.raises(ConfigError, match="not an unencrypted PKCS#8 Ed25519 PEM key"):
            NodeKey.load(tmp_path / name)


def test_key_repr_and_pickle_keep_the_secret() -> None:
    key = NodeKey.generate()
    assert repr(key) == f"NodeKey(pubkey_b64={key.pubkey_b64[:16]!r}...)"
    with pytest.raises(TypeError):
        pickle.dumps(key)


def snapshot(state: State = State.REGISTERED, **fields: object) -> AgentState:
    base: dict[str, object] = {
        "state": state,
        "since": rfc3339(1_750_000_000.5),
        "updated_at": rfc3339(1_750_000_030.25),
        "registry_url": "https://r.example",
        "host": "n.example",
        "pubkey_prefix": "A" * 16,
        "pid": 42,
        "last_heartbeat_at": rfc3339(1_750_000_030.25),
    }
    return AgentState(**{**base, **fields})  # type: ignore[arg-type]


def test_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_state(path, snapshot())
    assert read_state(path) == snapshot()
    assert path.read_bytes().startswith(b'{"state":"registered","since":"2025-06-15T15:06:40.500Z"')
    write_state(path, snapshot(State.DISCONNECTED, last_error="register: HTTP 503"))
    assert read_state(path).state is State.DISCONNECTED
    assert os.listdir(tmp_path) == ["state.json"]  # no temporary file left behind
    assert parse_rfc3339(rfc3339(1_750_000_030.25)) == 1_750_000_030.25


def test_a_failed_write_leaves_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    write_state(path, snapshot())

    def broken(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        write_state(path, snapshot(State.DISCONNECTED))
    assert read_state(path).state is State.REGISTERED
    assert os.listdir(tmp_path) == ["state.json"]


@pytest.mark.parametrize(
    "content",
    [
        b"garbage",
        b'{"state":"flying"}',
        b'{"schema_version":2,"state":"registered","since":"x","updated_at":"x",'
        b'"registry_url":"u","host":"h","pubkey_prefix":"p","pid":1}',
        b'{"state":"registered","since":"x","updated_at":"yesterday",'
        b'"registry_url":"u","host":"h","pubkey_prefix":"p","pid":1}',
    ],
)
def test_a_foreign_state_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "state.json").write_bytes(content)
    with pytest.raises(ConfigError, match=r"state_path: .* is not a node agent state file"):
        read_state(tmp_path / "state.json")
