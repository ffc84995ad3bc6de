"""The ``registryd`` command line, run in-process through ``main(argv)``."""

from __future__ import annotations

import secrets
import stat
import time
from pathlib import Path

import pytest

from registryd import config as config_mod
from registryd.cli import main
from registryd.cli.client_config import load_client_config
from tests.helpers import INDEX_KEY_HEX, config_text, write_config
from tests.vectors import PEPPER_HEX, SERVER_PRIVATE_HEX


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_valid_private_config_with_fresh_secrets(tmp_path: Path) -> None:
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    assert main(["init", "--out", str(first)]) == 0
    assert main(["init", "--out", str(second)]) == 0
    assert mode(first) == 0o600
    a, b = config_mod.load(first), config_mod.load(second)
    assert a.mode == "tls" and a.storage.kind == "leveldb"
    assert [k.active for k in a.envelope.keys] == [True]
    assert a.envelope.pepper_hex != b.envelope.pepper_hex
    assert (
        a.storage.index_key_hex is not None and a.storage.index_key_hex != b.storage.index_key_hex
    )
    assert a.envelope.keys[0].kid_hex != b.envelope.keys[0].kid_hex
    assert a.envelope.keys[0].x25519_private_key_hex != b.envelope.keys[0].x25519_private_key_hex


def test_init_refuses_to_overwrite_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "registry.toml"
    assert main(["init", "--out", str(out)]) == 0
    before = out.read_text()
    assert main(["init", "--out", str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    assert out.read_text() == before
    assert main(["init", "--out", str(out), "--force"]) == 0
    assert out.read_text() != before
    assert mode(out) == 0o600


def test_init_dev_writes_a_matching_client_config(tmp_path: Path) -> None:
    out = tmp_path / "registry.toml"
    assert main(["init", "--dev", "--out", str(out)]) == 0
    server = config_mod.load(out)
    client_path = tmp_path / "client.toml"
    assert mode(client_path) == 0o600
    client = load_client_config(client_path)
    assert server.address == "127.0.0.1:8443"
    assert server.tls is not None and server.tls.cert_pem_path == "certs/server.pem"
    assert server.storage.path == "./data/db"
    assert client.url == "https://127.0.0.1:8443"
    assert client.ca_file == "certs/ca.pem"
    assert client.pepper_hex == server.envelope.pepper_hex


def test_check_config_prints_a_redacted_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "registry.toml"
    write_config(path, config_text())
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert '"kid_hex": "0001020304050607"' in out
    assert "<redacted>" in out and "OK" in err
    for secret in (PEPPER_HEX, INDEX_KEY_HEX, SERVER_PRIVATE_HEX):
        assert secret not in (out + err).lower()


def test_check_config_names_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "registry.toml"
    write_config(path, config_text().replace("[storage]", "[storage]\nknd = 1"))
    assert main(["check-config", str(path)]) == 1
    assert "storage.knd: unknown key" in capsys.readouterr().err


def test_check_config_checks_tls_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "registry.toml"
    tls = f'[tls]\ncert_pem_path = "{tmp_path}/none.pem"\nkey_pem_path = "{tmp_path}/none.pem"\n'
    write_config(path, config_text(mode="tls", tls=tls))
    assert main(["check-config", str(path)]) == 1
    assert "tls.cert_pem_path: file not found" in capsys.readouterr().err


EXAMPLE = Path(__file__).parent.parent / "config" / "registry.example.toml"


def test_the_example_config_documents_every_key_but_its_placeholders_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    zeros = "0" * 64
    assert text.count(zeros) == 3  # index key, pepper, private key
    path = write_config(tmp_path / "registry.toml", text)
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("config error: envelope.pepper_hex: a placeholder, not a secret")
    assert "run `registryd init --out PATH`" in err
    while zeros in text:
        text = text.replace(zeros, secrets.token_hex(32), 1)
    cfg = config_mod.parse(text)  # with real secrets in place, every key parses
    assert cfg.storage.kind == "leveldb" and not cfg.allow_sync


def test_certs_dev_writes_certificates_then_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "dev", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ca.pem", "client-key.pem", "client.pem", "server-key.pem", "server.pem"]
    assert mode(out / "server-key.pem") == 0o600
    capsys.readouterr()
    assert main(["certs", "dev", "--out", str(out)]) == 1
    assert "--force" in capsys.readouterr().err


def test_serve_with_bad_config_exits_1_naming_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "registry.toml"
    write_config(path, config_text().replace('mode = "http"', 'mode = "https"'))
    assert main(["serve", "--config", str(path)]) == 1
    assert 'config error: mode: expected "tls" or "http"' in caplog.text


@pytest.mark.parametrize("command", [[], ["init"], ["certs"], ["client"]])
def test_usage_errors_exit_2(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(command)
    assert exit_.value.code == 2
    assert "usage: registryd" in capsys.readouterr().err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "check-config", "init", "certs", "client"):
        assert command in out


def test_check_config_warns_when_the_active_key_expires_soon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "registry.toml"
    soon = int(time.time() * 1000) + 3 * 86_400_000
    write_config(
        path,
        config_text().replace("active = true\n", f"active = true\nnot_after_epoch_ms = {soon}\n"),
    )
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: the active envelope key 0001020304050607 expires in" in err
