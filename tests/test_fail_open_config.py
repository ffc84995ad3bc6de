"""Configs that used to start a weakened daemon (issue 8, item 5): each is now an error naming
the key path, from ``config.load``, ``registryd check-config`` and ``registryd serve`` alike."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from registryd import config as config_mod
from registryd.certs import DevCerts
from registryd.cli import main
from registryd.errors import ConfigError
from registryd.keystore import Keystore
from registryd.timespec import iso
from tests.helpers import INDEX_KEY_HEX, Daemon, config_text, tls_table, write_config
from tests.vectors import PEPPER_HEX, SERVER_PRIVATE_HEX

SECRETS = (PEPPER_HEX, INDEX_KEY_HEX, SERVER_PRIVATE_HEX)
OTHER_PRIVATE_HEX = "9a3a301c6bab38dc5b5cadd3ffbf0a71acd977461fa4cdac0798d6a2adc9c393"


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check-config", str(path)])
    return code, capsys.readouterr().err


# -- tls.client_ca_pem_path = "" ------------------------------------------------------------


def test_an_empty_client_ca_is_an_error_not_mtls_off(
    tmp_path: Path, certs: DevCerts, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = tls_table(certs) + 'client_ca_pem_path = ""\n'
    path = write_config(tmp_path / "registry.toml", config_text(mode="tls", tls=tls))
    code, err = check_config(path, capsys)
    assert code == 1
    assert err == (
        "config error: tls.client_ca_pem_path: must not be empty; remove the key to serve "
        "without client certificates\n"
    )
    for blank in ('"  "', '"\\t"'):
        with pytest.raises(ConfigError) as info:
            config_mod.parse(
                config_text(mode="tls", tls=tls_table(certs)).replace(
                    "[tls]\n", f"[tls]\nclient_ca_pem_path = {blank}\n"
                )
            )
        assert info.value.path == "tls.client_ca_pem_path"
    write_config(path, config_text(mode="tls", tls=tls_table(certs)))  # absent: no mTLS, fine
    assert check_config(path, capsys)[0] == 0


# -- a config that group or others may read -------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_a_config_others_may_read_is_refused_naming_its_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    path = write_config(tmp_path / "registry.toml", config_text())
    path.chmod(mode)
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert info.value.path == "envelope.pepper_hex"
    assert f"held in {path}, which is " in str(info.value)
    assert f"by group or others (mode {mode:04o}); run chmod 600" in str(info.value)
    assert "also holds storage.index_key_hex, envelope.keys[0].x25519_private_key_hex" in str(
        info.value
    )
    code, err = check_config(path, capsys)
    assert code == 1 and err.startswith("config error: envelope.pepper_hex: held in ")
    for secret in SECRETS:
        assert secret not in err


@pytest.mark.parametrize("mode", [0o600, 0o400], ids=oct)
def test_a_private_config_loads(tmp_path: Path, mode: int) -> None:
    path = write_config(tmp_path / "registry.toml", config_text())
    path.chmod(mode)
    assert config_mod.load(path).envelope.pepper_hex.reveal().hex() == PEPPER_HEX


def test_the_daemon_does_not_start_from_a_world_readable_config(tmp_path: Path) -> None:
    path = write_config(tmp_path / "registry.toml", config_text())
    path.chmod(0o644)
    d = Daemon(path)
    try:
        assert not d.url, "the daemon started from a world-readable config"
        assert d.wait() == 1
    finally:
        d.stop()
    assert "config error: envelope.pepper_hex: held in" in d.log
    assert "(mode 0644); run chmod 600" in d.log


# -- placeholder secrets --------------------------------------------------------------------

PLACEHOLDERS = {
    "zero": "00" * 32,
    "ones": "11" * 32,
    "ff": "ff" * 32,
    "deadbeef": "deadbeef" * 8,
    "one-bit": "00" * 31 + "01",
    "8-byte-pattern": "0123456789abcdef" * 4,
}
SECRET_KEYS = {
    "envelope.pepper_hex": PEPPER_HEX,
    "storage.index_key_hex": INDEX_KEY_HEX,
    "envelope.keys[0].x25519_private_key_hex": SERVER_PRIVATE_HEX,
}


@pytest.mark.parametrize("value", PLACEHOLDERS.values(), ids=PLACEHOLDERS.keys())
@pytest.mark.parametrize("key", SECRET_KEYS)
def test_placeholder_secrets_are_refused(key: str, value: str) -> None:
    text = config_text().replace(SECRET_KEYS[key], value)
    with pytest.raises(ConfigError) as info:
        config_mod.parse(text)
    assert info.value.path == key
    assert "a placeholder, not a secret" in info.value.message
    assert "registryd init --out PATH" in info.value.message
    assert value not in str(info.value)


def test_spec_vector_secrets_are_not_placeholders() -> None:
    # 0x01..0x20 and 0x10..0x2f (spec 7.2) have 32 distinct bytes: a pattern, but not refused
    assert config_mod.parse(config_text()).envelope.pepper_hex.reveal().hex() == PEPPER_HEX


# -- no envelope key valid now --------------------------------------------------------------


def _expired(text: str, at_ms: int) -> str:
    return text.replace("active = true\n", f"active = true\nnot_after_epoch_ms = {at_ms}\n", 1)


def test_check_config_fails_when_the_only_key_has_expired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "registry.toml", _expired(config_text(), 1_700_000_000_000))
    code, err = check_config(path, capsys)
    assert code == 1
    assert err == (
        "config error: envelope.keys[0].not_after_epoch_ms: no active envelope key is valid now "
        "(active key 0001020304050607 expired at 2023-11-14T22:13:20Z): /resolve and "
        "/envelope_pubkey would answer 503 KEY_UNAVAILABLE; add or activate a key\n"
    )


def test_check_config_names_the_first_active_key_when_all_have_expired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = (
        '[[envelope.keys]]\nkid_hex = "1111111111111111"\n'
        f'x25519_private_key_hex = "{OTHER_PRIVATE_HEX}"\n'
        "active = true\nnot_after_epoch_ms = 1700000001000\n"
    )
    inactive_first = config_text().replace("active = true\n", "active = false\n")
    path = write_config(tmp_path / "registry.toml", inactive_first + second)
    code, err = check_config(path, capsys)
    assert code == 1
    assert err.startswith("config error: envelope.keys[1].not_after_epoch_ms: ")
    assert "(active key 1111111111111111 expired at 2023-11-14T22:13:21Z)" in err


def test_check_config_passes_while_a_key_is_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    later = int(time.time() * 1000) + 30 * 86_400_000
    path = write_config(tmp_path / "registry.toml", _expired(config_text(), later))
    code, err = check_config(path, capsys)
    assert code == 0 and err.endswith(": OK\n")


def test_check_config_fails_when_no_keystore_key_is_valid_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = int(time.time() * 1000)
    store = Keystore(path=tmp_path / "keys.json")
    old = store.generate(1_700_000_000_000, active=True, not_after_ms=1_700_000_001_000)
    staged = store.generate(now, active=True, not_before_ms=now + 86_400_000)
    store.save()
    text = config_text().split("[envelope]")[0] + (
        f'[envelope]\npepper_hex = "{PEPPER_HEX}"\nkeystore_path = "{store.path}"\n'
    )
    code, err = check_config(write_config(tmp_path / "registry.toml", text), capsys)
    assert code == 1
    assert err.startswith("config error: envelope.keystore_path: no active envelope key is valid")
    assert f"{staged.kid.hex()} is valid only from {iso(now + 86_400_000)}" in err
    assert f"{old.kid.hex()} expired at 2023-11-14T22:13:21Z" in err
