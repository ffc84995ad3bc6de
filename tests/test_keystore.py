"""The envelope keystore: file format, encryption at rest, tamper detection, key lifecycle."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest

from registryd import config as config_mod
from registryd.errors import InvalidInput, KeystoreError
from registryd.keyring import EnvelopeKey, describe_key
from registryd.keystore import (
    DEFAULT_KDF,
    KdfParams,
    Keystore,
    load_keyring,
    passphrase_from,
    read_passphrase,
)
from registryd.keystore_file import canonical
from registryd.secret import Secret
from tests.helpers import write_config
from tests.vectors import KID_HEX, PEPPER_HEX, SERVER_PRIVATE_HEX, SERVER_PUBLIC_HEX

CHEAP = KdfParams(time_cost=1, memory_cost=8, parallelism=1)
PASS = b"correct horse battery staple"
T0 = 1_700_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR
PEPPER = Secret(bytes.fromhex(PEPPER_HEX))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def privates(store: Keystore) -> list[str]:
    return [k.private.reveal().hex() for k in store.keys]


def secret_strings(store: Keystore) -> list[str]:
    """Every way a private key could leak into text: hex (both cases), base64, repr of bytes."""
    out: list[str] = []
    for key in store.keys:
        raw = key.private.reveal()
        out += [raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode(), repr(raw)]
    return out


def two_key_store(path: Path) -> Keystore:
    store = Keystore(path=path)
    store.generate(T0, active=True)
    store.generate(T0 + 1, not_after_ms=T0 + DAY)
    return store


@pytest.fixture
def log_all(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


# -- round trips -----------------------------------------------------------------------------


def test_plaintext_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = two_key_store(path)
    store.save()
    doc = json.loads(path.read_text())
    assert doc["format"] == "registryd-keystore" and doc["version"] == 1 and doc["kdf"] is None
    assert [k["kid"] for k in doc["keys"]] == [k.kid.hex() for k in store.keys]
    assert doc["checksum"] == blake3.blake3(canonical(doc["keys"])).hexdigest()
    loaded = Keystore.load(path, None)
    assert loaded.keys == store.keys
    assert loaded.kdf is None
    assert mode(path) == 0o600


def test_encrypted_round_trip_keeps_keys_and_hides_them(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = two_key_store(path)
    store.save(path, PASS, kdf=CHEAP)
    text = path.read_text()
    doc = json.loads(text)
    assert set(doc) == {"format", "version", "kdf", "nonce", "ciphertext"}
    assert doc["kdf"] | {"salt": ""} == {
        "name": "argon2id",
        "salt": "",
        "time_cost": 1,
        "memory_cost": 8,
        "parallelism": 1,
    }
    assert not any(s in text for s in secret_strings(store))
    for key in store.keys:
        assert key.kid.hex() not in text  # even the kids are sealed
    loaded = Keystore.load(path, PASS)
    assert loaded.keys == store.keys
    assert loaded.kdf == CHEAP


def test_saving_again_keeps_the_kdf_cost_and_uses_a_fresh_salt_and_nonce(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    two_key_store(path).save(path, PASS, kdf=CHEAP)
    first = json.loads(path.read_text())
    store = Keystore.load(path, PASS)
    store.generate(T0 + 2)
    store.save(None, PASS)
    second = json.loads(path.read_text())
    assert second["kdf"]["time_cost"] == 1 and second["kdf"]["memory_cost"] == 8
    assert second["kdf"]["salt"] != first["kdf"]["salt"]
    assert second["nonce"] != first["nonce"]
    assert len(Keystore.load(path, PASS).keys) == 3


def test_real_default_argon2id_parameters(tmp_path: Path) -> None:
    assert DEFAULT_KDF == KdfParams(time_cost=3, memory_cost=65536, parallelism=1)
    path = tmp_path / "keys.json"
    store = two_key_store(path)
    store.save(path, PASS)
    kdf = json.loads(path.read_text())["kdf"]
    assert (kdf["time_cost"], kdf["memory_cost"], kdf["parallelism"]) == (3, 65536, 1)
    assert len(bytes.fromhex(kdf["salt"])) == 16
    assert Keystore.load(path, PASS).keys == store.keys
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        Keystore.load(path, b"not it")


def test_encrypted_to_plaintext_and_back(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = two_key_store(path)
    store.save(path, PASS, kdf=CHEAP)
    loaded = Keystore.load(path, PASS)
    loaded.save(None, None)
    assert json.loads(path.read_text())["kdf"] is None
    assert Keystore.load(path, None).keys == store.keys


# -- refusals --------------------------------------------------------------------------------


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = two_key_store(path)
    store.save(path, PASS, kdf=CHEAP)
    with pytest.raises(KeystoreError) as info:
        Keystore.load(path, b"wrong")
    assert str(info.value) == f"{path}: cannot decrypt: wrong passphrase or the file was modified"
    assert info.value.path == str(path)


def test_encrypted_without_a_passphrase_asks_or_fails(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    two_key_store(path).save(path, PASS, kdf=CHEAP)
    with pytest.raises(KeystoreError, match="encrypted and no passphrase was given"):
        Keystore.load(path, None)
    asked: list[int] = []

    def ask() -> bytes:
        asked.append(1)
        return PASS

    assert len(Keystore.load(path, None, ask=ask).keys) == 2
    assert asked == [1]
    Keystore.load(path, PASS, ask=ask)
    assert asked == [1]  # not asked when a passphrase is given


@pytest.mark.parametrize(
    ("file_mode", "what"),
    [(0o644, "readable"), (0o640, "readable"), (0o604, "readable"), (0o620, "accessible")],
)
def test_group_or_world_accessible_keystore_is_refused(
    tmp_path: Path, file_mode: int, what: str
) -> None:
    path = tmp_path / "keys.json"
    two_key_store(path).save()
    path.chmod(file_mode)
    with pytest.raises(KeystoreError) as info:
        Keystore.load(path, None)
    assert str(info.value) == (
        f"{path}: is {what} by group or others (mode {file_mode:04o}); run chmod 600"
    )


def test_missing_file_and_non_keystores(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="no such keystore file"):
        Keystore.load(tmp_path / "absent.json", None)
    path = tmp_path / "other.json"
    for text, message in [
        ('{"hello": 1}', "not a registryd keystore"),
        ("[1, 2]", "not a registryd keystore"),
        ("not json", "invalid JSON"),
        ('{"format": "registryd-keystore", "version": 2}', "unknown keystore version 2"),
        ('{"format": "registryd-keystore", "version": 1, "kdf": null}', "not a keystore"),
    ]:
        path.write_text(text)
        path.chmod(0o600)
        with pytest.raises(KeystoreError, match=message):
            Keystore.load(path, None)
    with pytest.raises(KeystoreError, match="not a regular file"):
        Keystore.load(tmp_path, None)


def _edit(path: Path, change: Any) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    path.chmod(0o600)


def _flip_ciphertext(doc: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(doc["ciphertext"]))
    raw[10] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "change",
    [
        _flip_ciphertext,
        lambda doc: doc["kdf"].update(time_cost=2),
        lambda doc: doc["kdf"].update(memory_cost=16),
        lambda doc: doc["kdf"].update(salt="00" * 16),
        lambda doc: doc.update(nonce=base64.b64encode(bytes(24)).decode()),
        lambda doc: doc.update(ciphertext=doc["ciphertext"][:-8] + "A" * 8),
    ],
    ids=["ciphertext", "time_cost", "memory_cost", "salt", "nonce", "tag"],
)
def test_tampered_encrypted_keystore_is_refused(tmp_path: Path, change: Any) -> None:
    path = tmp_path / "keys.json"
    two_key_store(path).save(path, PASS, kdf=CHEAP)
    _edit(path, change)
    with pytest.raises(KeystoreError, match="cannot decrypt: wrong passphrase or the file was mod"):
        Keystore.load(path, PASS)


def test_edited_plaintext_keystore_fails_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = two_key_store(path)
    store.save()
    other_kid = "ff" * 8
    _edit(path, lambda doc: doc["keys"][0].update(kid=other_kid))
    with pytest.raises(KeystoreError, match="checksum mismatch: the file was modified"):
        Keystore.load(path, None)
    store.save()
    _edit(path, lambda doc: doc["keys"][1].update(active=not doc["keys"][1]["active"]))
    with pytest.raises(KeystoreError, match="checksum mismatch"):
        Keystore.load(path, None)


@pytest.mark.parametrize("encrypted", [False, True])
def test_truncated_keystore_is_refused(tmp_path: Path, encrypted: bool) -> None:
    path = tmp_path / "keys.json"
    store = two_key_store(path)
    store.save(path, PASS if encrypted else None, kdf=CHEAP)
    data = path.read_bytes()
    for cut in (0, 1, len(data) // 2, len(data) - 3):
        path.write_bytes(data[:cut])
        with pytest.raises(KeystoreError, match="invalid JSON") as info:
            Keystore.load(path, PASS)
        assert not any(s in str(info.value) for s in secret_strings(store))


def test_invalid_entries_with_a_recomputed_checksum_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = two_key_store(path)
    store.save()
    secrets = secret_strings(store)

    def rechecksum(doc: dict[str, Any]) -> None:
        doc["checksum"] = blake3.blake3(canonical(doc["keys"])).hexdigest()

    cases: list[tuple[Any, str]] = [
        (lambda d: d["keys"][0].update(x25519_private_key_hex="zz" * 32), "invalid key entry"),
        (lambda d: d["keys"][0].update(kid="abc"), "invalid key entry"),
        (lambda d: d["keys"][1].update(kid=d["keys"][0]["kid"]), "duplicate kid"),
        (lambda d: d["keys"][0].update(extra=1), "invalid key entry"),
        (lambda d: d["keys"][0].update(created_ms=-1), "invalid key entry"),
    ]
    for change, message in cases:
        store.save()
        doc = json.loads(path.read_text())
        change(doc)
        rechecksum(doc)
        path.write_text(json.dumps(doc))
        with pytest.raises(KeystoreError, match=message) as info:
            Keystore.load(path, None)
        assert not any(s in str(info.value) for s in secrets)


# -- secrecy and atomic writes ---------------------------------------------------------------


def test_private_keys_never_appear_in_reprs_errors_or_logs(
    tmp_path: Path, log_all: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.json"
    store = two_key_store(path)
    store.save(path, PASS, kdf=CHEAP)
    loaded = Keystore.load(path, PASS)
    loaded.rotate(T0 + HOUR, HOUR)
    loaded.save(None, PASS)
    loaded.save(None, None)
    store.keys += loaded.keys[:1]
    secrets = [*secret_strings(store), PASS.decode()]
    texts = [repr(loaded), str(loaded), repr(loaded.keyring(PEPPER))]
    texts += [repr(k) for k in loaded.keys] + [str(k) for k in loaded.keys]
    for attempt in (lambda: Keystore.load(path, b"bad"), lambda: loaded.get(b"\0" * 8)):
        try:
            attempt()
        except KeystoreError as exc:
            texts += [str(exc), repr(exc)]
    path.chmod(0o644)
    with pytest.raises(KeystoreError) as info:
        Keystore.load(path, None)
    texts.append(str(info.value))
    assert log_all.records, "load and save log at debug level"
    texts += [r.getMessage() for r in log_all.records]
    for text in texts:
        assert not any(s in text for s in secrets), text
    assert "kids=[" in repr(loaded) and "Secret('**********')" in repr(loaded.keys[0])


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_atomic_write_leaves_mode_0600_and_no_temporary_file(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "sub" / "keys.json"
    old = os.umask(umask)
    try:
        store = two_key_store(path)
        store.save()
        store.generate(T0 + 5)
        store.save(None, PASS, kdf=CHEAP)
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["keys.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.json"
    store = two_key_store(path)
    store.save()
    before = path.read_bytes()

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("registryd.keystore.os.replace", fail)
    store.generate(T0 + 5)
    with pytest.raises(KeystoreError, match="cannot write: No space left on device"):
        store.save()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]


# -- lifecycle -------------------------------------------------------------------------------


def test_new_keys_are_newest_first_even_within_one_millisecond(tmp_path: Path) -> None:
    store = Keystore(path=tmp_path / "k.json")
    a = store.generate(T0, active=True)
    b = store.generate(T0, active=True)
    c = store.generate(T0 - 5)  # a clock that went back still makes the newest key
    assert [k.kid for k in store.keys] == [c.kid, b.kid, a.kid]
    assert c.created_ms == T0
    store.save()
    assert [k.kid for k in Keystore.load(store.path or "", None).keys] == [c.kid, b.kid, a.kid]
    assert store.keyring(PEPPER).active(T0).kid == b.kid


def test_rotate_makes_a_new_active_key_and_a_grace_period(tmp_path: Path) -> None:
    store = Keystore(path=tmp_path / "k.json")
    old = store.generate(T0, active=True)
    t1 = T0 + DAY
    new, rotated = store.rotate(t1, 2 * HOUR)
    assert [k.kid for k in rotated] == [old.kid]
    assert store.keys[0] == new and new.active and new.created_ms == t1
    ring = store.keyring(PEPPER)
    assert ring.active(t1).kid == new.kid
    previous = store.get(old.kid)
    assert not previous.active and previous.opens_until_ms == t1 + 2 * HOUR
    assert previous.state(t1) == "grace"
    assert previous.state(t1 + 2 * HOUR - 1) == "grace"
    assert previous.state(t1 + 2 * HOUR) == "retired"
    assert ring.find(old.kid, t1 + 2 * HOUR - 1).kid == old.kid
    with pytest.raises(InvalidInput, match="unable to decrypt envelope"):
        ring.find(old.kid, t1 + 2 * HOUR)
    assert ring.active(t1 + 2 * HOUR).kid == new.kid  # resolves are always sealed by the new key
    store.save()
    assert Keystore.load(store.path or "", None).keys == store.keys


def test_rotate_twice_keeps_earlier_grace_and_rejects_negative_grace(tmp_path: Path) -> None:
    store = Keystore(path=tmp_path / "k.json")
    a = store.generate(T0, active=True)
    b, _ = store.rotate(T0 + 10, HOUR)
    c, rotated = store.rotate(T0 + 20, DAY)
    assert [k.kid for k in rotated] == [b.kid]
    assert store.get(a.kid).opens_until_ms == T0 + 10 + HOUR  # not extended
    assert store.get(b.kid).opens_until_ms == T0 + 20 + DAY
    assert store.keyring(PEPPER).active(T0 + 20).kid == c.kid
    with pytest.raises(KeystoreError, match="negative"):
        store.rotate(T0 + 30, -1)
    gone, _ = store.rotate(T0 + 40, 0)
    assert store.get(c.kid).state(T0 + 40) == "retired"
    assert store.keyring(PEPPER).active(T0 + 40).kid == gone.kid


def test_staged_key_is_pending_until_not_before(tmp_path: Path) -> None:
    store = Keystore(path=tmp_path / "k.json")
    current = store.generate(T0, active=True)
    staged = store.generate(T0 + 1, active=True, not_before_ms=T0 + DAY)
    assert store.keys[0] == staged
    assert staged.state(T0 + 1) == "pending"
    assert current.state(T0 + 1) == "active"
    ring = store.keyring(PEPPER)
    assert ring.active(T0 + DAY - 1).kid == current.kid
    assert ring.active(T0 + DAY).kid == staged.kid
    assert staged.state(T0 + DAY) == "active"
    with pytest.raises(InvalidInput):
        ring.find(staged.kid, T0 + DAY - 1)  # not valid yet: opens nothing either


def test_rotate_leaves_a_staged_key_pending(tmp_path: Path) -> None:
    store = Keystore(path=tmp_path / "k.json")
    current = store.generate(T0, active=True)
    staged = store.generate(T0, active=True, not_before_ms=T0 + 7 * DAY)
    new, rotated = store.rotate(T0 + 1000, HOUR)
    assert [k.kid for k in rotated] == [current.kid]  # only the key that was sealing
    assert store.get(staged.kid) == staged  # untouched: still active, no grace period
    assert store.get(staged.kid).state(T0 + 1000) == "pending"
    assert store.get(staged.kid).state(T0 + 8 * DAY) == "active"
    assert store.get(current.kid).state(T0 + 1000) == "grace"
    assert store.keyring(PEPPER).active(T0 + 1000).kid == new.kid
    # a later rotation, once the staged key is valid, rotates it out like any sealing key
    _, rotated = store.rotate(T0 + 8 * DAY, HOUR)
    assert sorted(k.kid for k in rotated) == sorted([new.kid, staged.kid])


def test_rotate_leaves_expired_and_grace_keys_alone(tmp_path: Path) -> None:
    store = Keystore(path=tmp_path / "k.json")
    expired = store.generate(T0, active=True, not_after_ms=T0 + HOUR)
    _, rotated = store.rotate(T0 + 2 * HOUR, DAY)
    assert rotated == []
    assert store.get(expired.kid) == expired


def test_describe_key_is_public_data_only(tmp_path: Path) -> None:
    store = Keystore(path=tmp_path / "k.json")
    old = store.generate(T0, active=True, not_after_ms=T0 + DAY)
    store.rotate(T0 + 5, HOUR)
    assert describe_key(store.get(old.kid), T0 + 10) == {
        "kid_hex": old.kid.hex(),
        "x25519_public_key_hex": old.public.hex(),
        "state": "grace",
        "created_ms": T0,
        "not_before_ms": None,
        "not_after_ms": T0 + DAY,
        "opens_until_ms": T0 + 5 + HOUR,
    }
    text = json.dumps([describe_key(k, T0) for k in store.keys])
    assert not any(s in text for s in secret_strings(store))


def test_retire(tmp_path: Path) -> None:
    store = Keystore(path=tmp_path / "k.json")
    a = store.generate(T0, active=True)
    b = store.generate(T0 + 1, active=True)
    retired = store.retire(b.kid)
    assert retired.retired and not retired.active
    assert store.get(b.kid).state(T0 + 2) == "retired"
    ring = store.keyring(PEPPER)
    assert ring.active(T0 + 2).kid == a.kid
    with pytest.raises(InvalidInput):
        ring.find(b.kid, T0 + 2)
    with pytest.raises(KeystoreError, match="no key with kid 0000000000000000"):
        store.retire(bytes(8))


def test_prune_drops_expired_retired_and_grace_ended_keys(tmp_path: Path) -> None:
    store = Keystore(path=tmp_path / "k.json")
    expired = store.generate(T0, not_after_ms=T0 + HOUR)
    retired = store.generate(T0 + 1)
    store.retire(retired.kid)
    grace_ended = store.generate(T0 + 2, active=True)
    in_grace, _ = store.rotate(T0 + 3, 10 * 60_000)
    current, _ = store.rotate(T0 + HOUR, DAY)
    removed = store.prune(T0 + 2 * HOUR)
    assert sorted(removed) == sorted([expired.kid, retired.kid, grace_ended.kid])
    assert [k.kid for k in store.keys] == [current.kid, in_grace.kid]
    assert store.prune(T0 + 2 * HOUR) == []


def test_prune_keeps_keys_still_in_grace(tmp_path: Path) -> None:
    store = Keystore(path=tmp_path / "k.json")
    old = store.generate(T0, active=True)
    new, _ = store.rotate(T0 + 1, HOUR)
    assert store.prune(T0 + HOUR) == []
    assert store.prune(T0 + 1 + HOUR) == [old.kid]
    assert [k.kid for k in store.keys] == [new.kid]


def test_add_refuses_a_duplicate_kid(tmp_path: Path) -> None:
    store = Keystore(path=tmp_path / "k.json")
    key = store.generate(T0)
    with pytest.raises(KeystoreError, match=f"duplicate kid {key.kid.hex()}"):
        store.add(key)


# -- passphrase sources and the config -------------------------------------------------------


def _envelope(env: str | None = None, file: str | None = None) -> config_mod.EnvelopeConfig:
    return config_mod.EnvelopeConfig(
        pepper_hex=PEPPER,
        keystore_path="k.json",
        keystore_passphrase_env=env,
        keystore_passphrase_file=file,
    )


def test_read_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_passphrase(_envelope()) is None
    monkeypatch.setenv("REGISTRYD_TEST_PASS", "s3cret")
    assert read_passphrase(_envelope(env="REGISTRYD_TEST_PASS")) == b"s3cret"
    monkeypatch.setenv("REGISTRYD_TEST_PASS", "")
    with pytest.raises(KeystoreError, match="REGISTRYD_TEST_PASS is not set"):
        read_passphrase(_envelope(env="REGISTRYD_TEST_PASS"))
    monkeypatch.delenv("REGISTRYD_TEST_PASS")
    with pytest.raises(KeystoreError, match="REGISTRYD_TEST_PASS is not set"):
        read_passphrase(_envelope(env="REGISTRYD_TEST_PASS"))
    file = tmp_path / "pass"
    file.write_bytes(b"pass phrase\n\n")
    file.chmod(0o600)
    assert read_passphrase(_envelope(file=str(file))) == b"pass phrase\n"
    file.write_bytes(b"\n")
    with pytest.raises(KeystoreError, match="is empty"):
        read_passphrase(_envelope(file=str(file)))
    with pytest.raises(KeystoreError, match="cannot read passphrase file"):
        read_passphrase(_envelope(file=str(tmp_path / "absent")))


def keystore_config(keystore: Path, passphrase_line: str) -> str:
    return (
        'address = "127.0.0.1:0"\nmode = "http"\n[storage]\nkind = "memory"\n'
        f'[envelope]\npepper_hex = "{PEPPER_HEX}"\nkeystore_path = "{keystore}"\n'
        f"{passphrase_line}\n"
    )


def test_config_keyring_reads_an_encrypted_keystore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.json"
    store = Keystore(path=path)
    spec_key = EnvelopeKey.from_private(
        bytes.fromhex(KID_HEX), bytes.fromhex(SERVER_PRIVATE_HEX), active=True, created_ms=T0
    )
    store.add(spec_key)
    new, _ = store.rotate(T0 + 1, HOUR)
    store.save(path, PASS, kdf=CHEAP)
    cfg_path = tmp_path / "registry.toml"
    write_config(cfg_path, keystore_config(path, 'keystore_passphrase_env = "REGISTRYD_KS_PASS"'))
    cfg = config_mod.load(cfg_path)
    with pytest.raises(KeystoreError, match="REGISTRYD_KS_PASS is not set"):
        load_keyring(cfg.envelope)
    monkeypatch.setenv("REGISTRYD_KS_PASS", PASS.decode())
    ring = load_keyring(cfg.envelope)
    assert [k.kid for k in ring.keys] == [k.kid for k in store.keys]
    assert ring.active(T0 + 2).kid == new.kid
    assert ring.find(bytes.fromhex(KID_HEX), T0 + 2).public.hex() == SERVER_PUBLIC_HEX
    assert ring.pepper == PEPPER
    monkeypatch.setenv("REGISTRYD_KS_PASS", "wrong")
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        load_keyring(cfg.envelope)


def test_config_keyring_with_a_passphrase_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = two_key_store(path)
    store.save(path, PASS, kdf=CHEAP)
    pass_file = tmp_path / "passphrase"
    pass_file.write_bytes(PASS + b"\n")
    pass_file.chmod(0o400)
    cfg_path = tmp_path / "registry.toml"
    write_config(cfg_path, keystore_config(path, f'keystore_passphrase_file = "{pass_file}"'))
    ring = load_keyring(config_mod.load(cfg_path).envelope)
    assert ring.keys == tuple(store.keys)
    assert privates(Keystore.load(path, PASS)) == privates(store)


@pytest.mark.parametrize(
    ("file_mode", "what"),
    [(0o644, "readable"), (0o640, "readable"), (0o604, "readable"), (0o620, "accessible")],
)
def test_group_or_world_accessible_passphrase_file_is_refused(
    tmp_path: Path, file_mode: int, what: str
) -> None:
    file = tmp_path / "pass"
    file.write_bytes(PASS)
    file.chmod(file_mode)
    with pytest.raises(KeystoreError) as info:
        passphrase_from(None, str(file), "k.json")
    assert str(info.value) == (
        f"k.json: passphrase file {file} is {what} by group or others (mode {file_mode:04o}); "
        "run chmod 600"
    )
    assert PASS.decode() not in str(info.value)
    with pytest.raises(KeystoreError, match=f"passphrase file .* is {what} by group"):
        read_passphrase(_envelope(file=str(file)))
    file.chmod(0o600)
    assert passphrase_from(None, str(file), "k.json") == PASS


# -- editing: the lock around load, change, save ---------------------------------------------


def plain_store(path: Path) -> Keystore:
    store = Keystore(path=path)
    store.generate(T0, active=True)
    store.save()
    return store


def test_editing_saves_changes_with_the_same_encryption(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    two_key_store(path).save(path, PASS, kdf=CHEAP)
    with Keystore.editing(path, PASS) as store:
        new, _ = store.rotate(T0 + HOUR, HOUR)
    loaded = Keystore.load(path, PASS)
    assert loaded.keys == store.keys and loaded.keys[0] == new
    assert loaded.kdf == CHEAP
    plain_store(path)
    with Keystore.editing(path, PASS) as store:  # a plaintext keystore stays plaintext
        store.generate(T0 + 1)
    assert json.loads(path.read_text())["kdf"] is None
    assert len(Keystore.load(path, None).keys) == 2


def test_editing_saves_nothing_when_the_block_fails_or_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    two_key_store(path).save(path, PASS, kdf=CHEAP)
    before = path.read_bytes()  # a save would change salt and nonce
    with pytest.raises(RuntimeError), Keystore.editing(path, PASS) as store:
        store.rotate(T0 + HOUR, HOUR)
        raise RuntimeError("changed my mind")
    with Keystore.editing(path, PASS) as store:
        assert store.prune(T0) == []
    assert path.read_bytes() == before
    with pytest.raises(KeystoreError, match="wrong passphrase"), Keystore.editing(path, b"no"):
        pass
    with pytest.raises(KeystoreError, match="no such keystore file"):
        with Keystore.editing(tmp_path / "absent.json", None):
            pass
    assert not (tmp_path / "absent.json.lock").exists()


def test_editing_can_create_a_keystore(tmp_path: Path) -> None:
    path = tmp_path / "new" / "keys.json"
    with Keystore.editing(path, PASS, create=True) as store:
        assert store.keys == []
        key = store.generate(T0, active=True)
    assert Keystore.load(path, PASS).keys == [key]
    with Keystore.editing(path, PASS, create=True) as store:  # exists now: loaded
        assert store.keys == [key]


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_the_lock_file_is_private(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "keys.json"
    plain_store(path)
    old = os.umask(umask)
    try:
        with Keystore.editing(path, None) as store:
            store.generate(T0 + 1)
    finally:
        os.umask(old)
    assert mode(tmp_path / "keys.json.lock") == 0o600
    assert mode(path) == 0o600


def test_editing_waits_for_the_lock_then_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    plain_store(path)
    with Keystore.editing(path, None):
        start = time.monotonic()
        with pytest.raises(KeystoreError) as info, Keystore.editing(path, None, timeout_s=0.2):
            pass
        assert time.monotonic() - start >= 0.2
    assert str(info.value) == f"{path}: busy: another change holds {path}.lock; try again"
    with Keystore.editing(path, None, timeout_s=0):  # released
        pass


def test_concurrent_rotations_in_threads_both_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.json"
    (original,) = plain_store(path).keys
    real_load = Keystore.load
    loaded = threading.Barrier(2, timeout=1)

    def slow_load(*args: Any, **kwargs: Any) -> Keystore:
        store = real_load(*args, **kwargs)
        try:  # without the lock both threads would get here before either saves
            loaded.wait()
        except threading.BrokenBarrierError:
            pass
        return store

    monkeypatch.setattr(Keystore, "load", slow_load)
    new: list[bytes] = []
    errors: list[BaseException] = []

    def rotate(now: int) -> None:
        try:
            with Keystore.editing(path, None) as store:
                new.append(store.rotate(now, HOUR)[0].kid)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=rotate, args=(T0 + i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    keys = Keystore.load(path, None).keys
    assert sorted(k.kid for k in keys) == sorted([original.kid, *new])
    assert [k.state(T0 + 3) for k in keys] == ["active", "grace", "grace"]


def test_a_rotation_in_another_process_waits_for_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    plain_store(path)
    argv = [sys.executable, "-m", "registryd", "keys", "rotate", "--keystore", str(path)]
    with Keystore.editing(path, None) as store:
        proc = subprocess.Popen(
            [*argv, "--grace", "1h"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(1.0)  # it starts, reads the keystore unlocked, then waits for the lock
        assert proc.poll() is None
        mine = store.generate(T0 + 5)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    keys = Keystore.load(path, None).keys
    assert len(keys) == 3 and mine in keys
    assert f"new active key {keys[0].kid.hex()}" in out
