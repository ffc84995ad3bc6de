"""``registryd client``: end to end against the real app in-process, settings and error paths."""

from __future__ import annotations

import argparse
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from nacl.signing import SigningKey

from registryd import cli
from registryd.cli import client as client_cli
from registryd.identity import user_id
from tests.client_support import SyncASGITransport, in_process_app
from tests.vectors import PEPPER_HEX

URL = "http://registry.test"
WRONG_PEPPER_HEX = "ff" * 32


class Run:
    """Runs ``registryd client ARGV`` through argparse, with an injected transport."""

    def __init__(self, capsys: pytest.CaptureFixture[str], transport: httpx.BaseTransport) -> None:
        self.capsys = capsys
        self.transport = transport
        self.outputs: list[str] = []

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="registryd")
        client_cli.add_parser(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["client", *argv])
        args.transport = self.transport
        code = args.func(args)
        out, err = self.capsys.readouterr()
        self.outputs += [out, err]
        return code, out, err


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No settings leak in from the environment or a ./client.toml."""
    monkeypatch.delenv(client_cli.ENV_CONFIG, raising=False)
    monkeypatch.delenv(client_cli.ENV_PEPPER, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def app() -> Iterator[SyncASGITransport]:
    with in_process_app() as transport:
        yield transport


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], app: SyncASGITransport) -> Run:
    return Run(capsys, app)


def recording(hosts: list[str]) -> httpx.MockTransport:
    """A server that records the host asked and answers ``{"exists": false}``."""

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return httpx.Response(200, content=b'{"exists":false}')

    return httpx.MockTransport(handler)


def test_register_resolve_check_announce(run: Run, tmp_path: Path) -> None:
    base = ("--url", URL, "--pepper-hex", PEPPER_HEX, "--keys-dir", "keys")
    alice = user_id("alice").hex()

    code, out, _ = run(*base, "register", "alice")
    keys_file = tmp_path / "keys" / f"{alice}.json"
    assert code == 0
    assert json.loads(out) == {
        "registered": True,
        "handle": alice,
        "keys_file": "keys/" + alice + ".json",
    }
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys_file.parent.stat().st_mode) == 0o700

    code, out, err = run(*base, "resolve", "alice")
    assert code == 0 and err == ""
    shown = json.loads(out)
    assert out.count("\n") == 2 + len(shown)  # one field a line
    assert list(shown) == [
        "user_id",
        "username_hint",
        "signing_public_key",
        "encryption_public_key",
        "signature",
        "created_at_ms",
        "signature_valid",
    ]
    assert (shown["user_id"], shown["username_hint"], shown["signature_valid"]) == (
        alice,
        "alice",
        True,
    )

    assert run(*base, "check", "alice")[:2] == (0, '{"exists": true}\n')
    assert run(*base, "check", "bob")[:2] == (0, '{"exists": false}\n')
    assert run(*base, "announce", "alice", "203.0.113.7:51820")[:2] == (0, '{"ok": true}\n')
    code, out, _ = run(*base, "presence", "alice")
    assert code == 0 and json.loads(out)["addr"] == "203.0.113.7:51820"
    assert run(*base, "presence", "bob") == (1, "", "not found: bob\n")
    code, _, err = run(*base, "announce", "bob", "203.0.113.7:1")
    assert code == 2 and "no keys file for bob" in err

    saved = keys_file.read_text()
    assert run(*base, "register", "alice") == (1, "", "error: 409 CONFLICT: conflict\n")
    assert keys_file.read_text() == saved  # the existing keys were reused, not replaced

    assert run(*base, "resolve", "bob") == (1, "", "not found: bob\n")

    # update: new keys, signed by the old ones; the keys file is replaced
    code, out, _ = run(*base, "update", "alice")
    assert code == 0 and json.loads(out)["updated"] is True
    updated = keys_file.read_text()
    assert updated != saved and stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert not keys_file.with_name(keys_file.name + ".new").exists()
    shown = json.loads(run(*base, "resolve", "alice")[1])
    signing = json.loads(updated)["signing_private_key_hex"]
    assert bytes(shown["signing_public_key"]) == bytes(
        SigningKey(bytes.fromhex(signing)).verify_key
    )
    # delete, signed by the new keys
    assert run(*base, "delete", "alice")[:2] == (0, '{"deleted": true}\n')
    assert run(*base, "check", "alice")[:2] == (0, '{"exists": false}\n')

    private = [v for f in (saved, updated) for k, v in json.loads(f).items() if k.endswith("_hex")]
    secrets = [PEPPER_HEX, *private]
    for text in run.outputs:
        assert not any(str(secret) in text for secret in secrets)


def test_settings_come_from_client_toml_in_the_working_directory(run: Run, tmp_path: Path) -> None:
    (tmp_path / "client.toml").write_text(
        f'[client]\nurl = "{URL}"\npepper_hex = "{PEPPER_HEX}"\nkeys_dir = "k"\n'
    )
    assert run("register", "alice")[0] == 0
    assert (tmp_path / "k" / f"{user_id('alice').hex()}.json").exists()


def test_url_precedence(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hosts: list[str] = []
    run = Run(capsys, recording(hosts))
    pepper = f'pepper_hex = "{PEPPER_HEX}"\n'
    (tmp_path / "client.toml").write_text(f'[client]\nurl = "http://cwd.test"\n{pepper}')
    (tmp_path / "env.toml").write_text(f'[client]\nurl = "http://env.test"\n{pepper}')
    (tmp_path / "flag.toml").write_text(f'[client]\nurl = "http://flag-config.test"\n{pepper}')

    run("check", "alice")
    monkeypatch.setenv(client_cli.ENV_CONFIG, "env.toml")
    run("check", "alice")
    run("--client-config", "flag.toml", "check", "alice")
    run("--url", "http://flag.test", "check", "alice")
    assert hosts == ["cwd.test", "env.test", "flag-config.test", "flag.test"]


def test_pepper_precedence(run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "client.toml").write_text(
        f'[client]\nurl = "{URL}"\npepper_hex = "{WRONG_PEPPER_HEX}"\n'
    )
    code, _, err = run("register", "alice")  # the server cannot open an envelope for another pepper
    assert (code, err) == (
        1,
        "error: 400 INVALID_INPUT: invalid input: unable to decrypt envelope\n",
    )

    monkeypatch.setenv(client_cli.ENV_PEPPER, PEPPER_HEX)
    assert run("register", "alice")[0] == 0

    monkeypatch.setenv(client_cli.ENV_PEPPER, WRONG_PEPPER_HEX)
    assert run("--pepper-hex", PEPPER_HEX, "resolve", "alice")[0] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pepper-hex", PEPPER_HEX], "no registry URL"),
        (["--url", URL], "no pepper"),
        (["--url", URL, "--pepper-hex", "abc"], "--pepper-hex: expected 64 hex characters"),
        (["--url", "registry.test", "--pepper-hex", PEPPER_HEX], "must start with http"),
        (["--url", URL, "--pepper-hex", PEPPER_HEX, "--cert", "c.pem"], "--cert and --key"),
    ],
)
def test_usage_errors_exit_2(run: Run, argv: list[str], message: str) -> None:
    code, out, err = run(*argv, "check", "alice")
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_invalid_pepper_in_the_environment_is_not_echoed(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(client_cli.ENV_PEPPER, "zz" + PEPPER_HEX[2:])
    code, _, err = run("--url", URL, "check", "alice")
    assert code == 2
    assert err == f"error: {client_cli.ENV_PEPPER}: expected 64 hex characters (32 bytes)\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "\talice"],
        ["announce", "alice", "  "],
        ["check", "\udcff"],  # argv bytes that are not UTF-8
        ["announce", "alice", "\udcff"],
    ],
)
def test_invalid_arguments_exit_2(run: Run, argv: list[str]) -> None:
    code, _, err = run("--url", URL, "--pepper-hex", PEPPER_HEX, *argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_bad_client_config_exits_1_naming_the_key(run: Run, tmp_path: Path) -> None:
    (tmp_path / "client.toml").write_text('[client]\nurll = "x"\n')
    code, _, err = run("check", "alice")
    assert (code, err) == (1, "error: client.urll: unknown key (in client.toml)\n")


def test_missing_config_named_by_the_environment_exits_1(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(client_cli.ENV_CONFIG, "nope.toml")
    code, _, err = run("check", "alice")
    assert code == 1 and "cannot read client config nope.toml" in err


def test_keys_file_readable_by_others_exits_1(run: Run, tmp_path: Path) -> None:
    base = ("--url", URL, "--pepper-hex", PEPPER_HEX, "--keys-dir", "keys")
    assert run(*base, "register", "alice")[0] == 0
    (tmp_path / "keys" / f"{user_id('alice').hex()}.json").chmod(0o644)
    code, _, err = run(*base, "register", "alice")
    assert code == 1 and "chmod 600" in err and err.count("\n") == 1


def test_unreadable_tls_files_exit_1(run: Run) -> None:
    code, _, err = run(
        "--url", "https://registry.test", "--pepper-hex", PEPPER_HEX, "--cafile", "no-ca.pem",
        "check", "alice",
    )  # fmt: skip
    assert code == 1 and err.startswith("error: cannot load TLS files (no-ca.pem)")


def test_transport_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("All connection attempts failed\nsecond line")

    run = Run(capsys, httpx.MockTransport(refuse))
    code, out, err = run("--url", URL, "--pepper-hex", PEPPER_HEX, "check", "alice")
    assert (code, out) == (1, "")
    assert err == (
        f"error: GET {URL}/check_user/{user_id('alice').hex()}: "
        "All connection attempts failed second line\n"
    )


def test_help_describes_options_and_units(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.build_parser().parse_args(["client", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for expected in ("--timeout SECONDS", "seconds", "--pepper-hex", "REGISTRYD_PEPPER_HEX"):
        assert expected in text
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["client", "announce", "--help"])
    assert "Unix milliseconds" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--timeout", "0", "check", "alice"],
        ["--timeout", "soon", "check", "alice"],
        ["--pepper-hex", PEPPER_HEX, "--client-config", "c.toml", "check", "alice"],
        ["check"],
        [],
    ],
)
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.build_parser().parse_args(["client", *argv])
    assert done.value.code == 2


def test_wired_into_the_registryd_command(
    app: SyncASGITransport, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli.build_parser().parse_args(
        ["client", "--url", URL, "--pepper-hex", PEPPER_HEX, "check", "alice"]
    )
    args.transport = app
    assert args.func(args) == 0
    assert capsys.readouterr().out == '{"exists": false}\n'
