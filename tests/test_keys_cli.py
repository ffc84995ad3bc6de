"""``registryd keys ...`` and ``registryd hash-token``, run in-process through their parser."""

from __future__ import annotations

import argparse
import io
import json
import logging
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from argon2 import PasswordHasher

from registryd import config as config_mod
from registryd import keystore, timespec
from registryd.cli import keys as keys_cli
from registryd.errors import KeystoreError
from registryd.keyring import describe_key
from registryd.keystore import KdfParams, Keystore, load_keyring
from registryd.secret import Secret
from tests.helpers import Clock, config_text, write_config
from tests.vectors import KID_HEX, PEPPER_HEX, SERVER_PRIVATE_HEX

CHEAP = KdfParams(time_cost=1, memory_cost=8, parallelism=1)
PASS = "open sesame"
ENV = "REGISTRYD_TEST_KEYSTORE_PASS"
HOUR_S = 3600


class Result(NamedTuple):
    code: int
    out: str
    err: str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="registryd")
    sub = parser.add_subparsers(dest="command", required=True)
    keys_cli.add_parsers(sub)
    return parser


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*argv: str) -> Result:
        args = build_parser().parse_args(list(argv))
        code = args.func(args)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keystores created by these tests use a cheap Argon2id (one test asks for the real one)."""
    monkeypatch.setattr(keystore, "DEFAULT_KDF", CHEAP)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(keys_cli, "now_ms", clock)
    return clock


@pytest.fixture
def passphrase(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENV, PASS)
    return PASS


@pytest.fixture
def log_all(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def one_line_error(result: Result, code: int = 1) -> str:
    assert result.code == code
    assert result.err.count("\n") == 1 and "Traceback" not in result.err, result.err
    return result.err


def load(path: Path, passphrase: str | None = None) -> Keystore:
    return Keystore.load(path, None if passphrase is None else passphrase.encode())


def listing(run: Any, *store: str) -> list[dict[str, Any]]:
    result = run("keys", "list", *store, "--json")
    assert result.code == 0, result.err
    rows: list[dict[str, Any]] = json.loads(result.out)
    return rows


def private_texts(store: Keystore) -> list[str]:
    return [
        t for k in store.keys for t in (k.private.reveal().hex(), k.private.reveal().hex().upper())
    ]


# -- durations and times ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [("90s", 90_000), ("15m", 900_000), ("2h", 7_200_000), ("7d", 604_800_000), ("30", 30_000)],
)
def test_parse_duration(text: str, ms: int) -> None:
    assert timespec.parse_duration(text) == ms
    assert keys_cli.parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "5x", "1.5h", "-3s", "+3s", "2h30m", "h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like 90s"):
        timespec.parse_duration(text)
    with pytest.raises(argparse.ArgumentTypeError, match="expected a duration like 90s"):
        keys_cli.parse_duration(text)  # argparse prints this message as the usage error


def test_parse_when() -> None:
    now = 1_700_000_000_000
    assert timespec.parse_when("7d", now) == now + 7 * 86_400_000
    assert timespec.parse_when("+3600", now) == now + 3_600_000
    assert timespec.parse_when("1767225600000", now) == 1_767_225_600_000
    assert timespec.parse_when("2026-01-01T00:00:00Z", now) == 1_767_225_600_000
    assert timespec.parse_when("2026-01-01T01:00:00+01:00", now) == 1_767_225_600_000
    assert timespec.parse_when("2026-01-01", now) == 1_767_225_600_000  # no zone: UTC
    with pytest.raises(ValueError, match="expected a time"):
        timespec.parse_when("next tuesday", now)


def test_iso() -> None:
    assert timespec.iso(None) == "-"
    assert timespec.iso(1_767_225_600_999) == "2026-01-01T00:00:00Z"


# -- generate, list --------------------------------------------------------------------------


def test_generate_creates_a_private_plaintext_keystore(tmp_path: Path, run: Any) -> None:
    path = tmp_path / "new" / "k.json"
    result = run("keys", "generate", "--keystore", str(path), "--active")
    assert result.code == 0, result.err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store = load(path)
    (key,) = store.keys
    assert key.active and key.state(key.created_ms or 0) == "active"
    assert key.kid.hex() in result.out and key.public.hex() in result.out
    assert key.private.reveal().hex() not in result.out + result.err
    assert run("keys", "generate", "--keystore", str(path)).code == 0
    assert [k.active for k in load(path).keys] == [False, True]


def test_generate_encrypted_with_times(
    tmp_path: Path, run: Any, clock: Clock, passphrase: str
) -> None:
    path = tmp_path / "k.json"
    store_args = ("--keystore", str(path), "--passphrase-env", ENV)
    assert run("keys", "generate", *store_args, "--active").code == 0
    result = run(
        "keys",
        "generate",
        *store_args,
        "--active",
        "--not-before",
        "7d",
        "--not-after",
        "2030-01-01T00:00:00Z",
    )
    assert result.code == 0, result.err
    assert "(pending)" in result.out
    assert json.loads(path.read_text())["kdf"]["name"] == "argon2id"
    rows = listing(run, *store_args)
    assert [r["state"] for r in rows] == ["pending", "active"]
    table = run("keys", "list", *store_args).out.splitlines()
    assert " pending " in table[1] and " active* " in table[2]
    assert rows[0]["not_before_ms"] == clock.now_ms + 7 * 86_400_000
    assert rows[0]["not_after_ms"] == 1_893_456_000_000
    assert run("keys", "generate", *store_args, "--not-after", "1893456000000").code == 0
    assert listing(run, *store_args)[0]["not_after_ms"] == 1_893_456_000_000
    one_line_error(run("keys", "generate", *store_args, "--not-after", "soon"), code=2)


def test_only_passwd_changes_whether_a_keystore_is_encrypted(
    tmp_path: Path, run: Any, passphrase: str
) -> None:
    path = tmp_path / "k.json"
    assert run("keys", "generate", "--keystore", str(path), "--active").code == 0
    result = run("keys", "generate", "--keystore", str(path), "--passphrase-env", ENV)
    assert result.code == 0, result.err
    assert json.loads(path.read_text())["kdf"] is None
    assert len(load(path).keys) == 2


def test_list_shows_public_data_only(
    tmp_path: Path, run: Any, clock: Clock, log_all: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "k.json"
    assert run("keys", "generate", "--keystore", str(path), "--active").code == 0
    clock.advance(10)
    assert run("keys", "rotate", "--keystore", str(path), "--grace", "1h").code == 0
    store = load(path)
    result = run("keys", "list", "--keystore", str(path))
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split()[:2] == ["KID", "STATE"]
    new, old = store.keys
    assert lines[1].startswith(f"{new.kid.hex()}  active*") and new.public.hex() in lines[1]
    assert lines[2].startswith(f"{old.kid.hex()}  grace") and old.public.hex() in lines[2]
    assert "2023-11-14T23:13:30Z" in lines[2]  # opens until: rotation time + 1 h, UTC
    json_out = run("keys", "list", "--keystore", str(path), "--json").out
    texts = [result.out, json_out, log_all.text]
    for secret in private_texts(store):
        assert not any(secret in t for t in texts)
    rows = json.loads(json_out)
    now = clock.now_ms
    assert rows == [describe_key(k, now) for k in store.keys]  # exactly that shape
    assert set(rows[0]) == {
        "kid_hex",
        "x25519_public_key_hex",
        "state",
        "created_ms",
        "not_before_ms",
        "not_after_ms",
        "opens_until_ms",
    }


def test_list_says_when_no_key_can_seal(tmp_path: Path, run: Any) -> None:
    path = tmp_path / "k.json"
    assert run("keys", "generate", "--keystore", str(path)).code == 0
    result = run("keys", "list", "--keystore", str(path))
    assert "503 KEY_UNAVAILABLE" in result.out
    assert " inactive " in result.out


def test_wrong_passphrase_is_one_line_and_exit_1(
    tmp_path: Path, run: Any, monkeypatch: pytest.MonkeyPatch, passphrase: str
) -> None:
    path = tmp_path / "k.json"
    assert run("keys", "generate", "--keystore", str(path), "--passphrase-env", ENV).code == 0
    monkeypatch.setenv(ENV, "wrong")
    err = one_line_error(run("keys", "list", "--keystore", str(path), "--passphrase-env", ENV))
    assert err == f"error: {path}: cannot decrypt: wrong passphrase or the file was modified\n"
    monkeypatch.delenv(ENV)
    err = one_line_error(run("keys", "list", "--keystore", str(path), "--passphrase-env", ENV))
    assert ENV in err


def test_encrypted_keystore_without_a_passphrase(
    tmp_path: Path, run: Any, monkeypatch: pytest.MonkeyPatch, passphrase: str
) -> None:
    path = tmp_path / "k.json"
    assert run("keys", "generate", "--keystore", str(path), "--passphrase-env", ENV).code == 0
    err = one_line_error(run("keys", "list", "--keystore", str(path)), code=2)
    assert "is encrypted: give --passphrase-env or --passphrase-file" in err
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("getpass.getpass", lambda prompt: PASS)
    assert run("keys", "list", "--keystore", str(path)).code == 0
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASS + "\n")
    pass_file.chmod(0o600)
    monkeypatch.setattr("getpass.getpass", lambda prompt: "wrong")
    assert (
        run("keys", "list", "--keystore", str(path), "--passphrase-file", str(pass_file)).code == 0
    )


def test_missing_and_group_readable_keystores_fail_cleanly(tmp_path: Path, run: Any) -> None:
    path = tmp_path / "k.json"
    err = one_line_error(run("keys", "list", "--keystore", str(path)))
    assert "no such keystore file" in err
    assert run("keys", "generate", "--keystore", str(path), "--active").code == 0
    path.chmod(0o640)
    err = one_line_error(run("keys", "rotate", "--keystore", str(path), "--grace", "1h"))
    assert "is readable by group or others (mode 0640); run chmod 600" in err


# -- rotate, retire, prune -------------------------------------------------------------------


def test_rotate_then_prune_after_the_grace_period(tmp_path: Path, run: Any, clock: Clock) -> None:
    path = tmp_path / "k.json"
    store_args = ("--keystore", str(path))
    assert run("keys", "generate", *store_args, "--active").code == 0
    (old,) = load(path).keys
    clock.advance(60)
    result = run("keys", "rotate", *store_args, "--grace", "2h")
    assert result.code == 0, result.err
    new = load(path).keys[0]
    assert f"new active key {new.kid.hex()}" in result.out
    assert f"{old.kid.hex()} opens registrations until" in result.out
    assert new.kid != old.kid and new.active
    assert load(path).keyring(Secret(b"")).active(clock.now_ms) == new
    assert [r["state"] for r in listing(run, *store_args)] == ["active", "grace"]
    clock.advance(2 * HOUR_S - 1)
    assert run("keys", "prune", *store_args).out == "nothing to prune\n"
    clock.advance(1)
    assert [r["state"] for r in listing(run, *store_args)] == ["active", "retired"]
    result = run("keys", "prune", *store_args)
    assert result.code == 0 and f"removed {old.kid.hex()}" in result.out
    assert [k.kid for k in load(path).keys] == [new.kid]


def test_rotate_leaves_a_staged_key_pending_and_says_so(
    tmp_path: Path, run: Any, clock: Clock
) -> None:
    path = tmp_path / "k.json"
    store_args = ("--keystore", str(path))
    assert run("keys", "generate", *store_args, "--active").code == 0
    assert run("keys", "generate", *store_args, "--active", "--not-before", "7d").code == 0
    staged, current = load(path).keys
    clock.advance(60)
    result = run("keys", "rotate", *store_args, "--grace", "1h")
    assert result.code == 0, result.err
    new = load(path).keys[0]
    assert f"{current.kid.hex()} opens registrations until" in result.out
    assert f"{staged.kid.hex()} opens" not in result.out
    assert f"{staged.kid.hex()} stays pending until 2023-11-21T22:13:20Z" in result.out
    assert f"while the newer {new.kid.hex()} is valid" in result.out
    assert "kill -HUP" in result.out and "POST /admin/reload" in result.out
    assert load(path).get(staged.kid) == staged
    assert [r["state"] for r in listing(run, *store_args)] == ["active", "pending", "grace"]


def test_rotate_without_a_sealing_key(tmp_path: Path, run: Any) -> None:
    path = tmp_path / "k.json"
    assert run("keys", "generate", "--keystore", str(path)).code == 0
    result = run("keys", "rotate", "--keystore", str(path), "--grace", "1h")
    assert result.code == 0, result.err
    assert "none rotated out" in result.out and "opens registrations" not in result.out


def test_rotate_waits_for_another_change_and_both_land(
    tmp_path: Path, run: Any, clock: Clock
) -> None:
    path = tmp_path / "k.json"
    assert run("keys", "generate", "--keystore", str(path), "--active").code == 0
    results: list[Result] = []
    with Keystore.editing(path, None) as store:  # e.g. POST /admin/keys/rotate, mid-change
        rotating = threading.Thread(
            target=lambda: results.append(
                run("keys", "rotate", "--keystore", str(path), "--grace", "1h")
            )
        )
        rotating.start()
        time.sleep(0.3)
        assert rotating.is_alive() and not results  # waiting for the lock
        theirs, _ = store.rotate(clock.now_ms, 3_600_000)
    rotating.join(timeout=10)
    assert results and results[0].code == 0, results
    keys = load(path).keys
    assert len(keys) == 3 and keys[1].kid == theirs.kid  # rotated out by the CLI, not lost
    assert [k.state(clock.now_ms) for k in keys] == ["active", "grace", "grace"]


def test_a_typed_passphrase_is_asked_before_the_lock_is_taken(
    tmp_path: Path, run: Any, monkeypatch: pytest.MonkeyPatch, passphrase: str
) -> None:
    path = tmp_path / "k.json"
    assert run("keys", "generate", "--keystore", str(path), "--passphrase-env", ENV).code == 0
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)

    def ask(prompt: str) -> str:
        with Keystore.editing(path, PASS.encode(), timeout_s=0):  # free while we type
            return PASS

    monkeypatch.setattr("getpass.getpass", ask)
    result = run("keys", "rotate", "--keystore", str(path), "--grace", "1h")
    assert result.code == 0, result.err
    assert len(load(path, PASS).keys) == 2


def test_group_readable_passphrase_file_is_refused(tmp_path: Path, run: Any) -> None:
    path = tmp_path / "k.json"
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASS + "\n")
    pass_file.chmod(0o640)
    store_args = ("--keystore", str(path), "--passphrase-file", str(pass_file))
    err = one_line_error(run("keys", "generate", *store_args))
    assert err == (
        f"error: {path}: passphrase file {pass_file} is readable by group or others "
        "(mode 0640); run chmod 600\n"
    )
    assert not path.exists()
    pass_file.chmod(0o600)
    assert run("keys", "generate", *store_args).code == 0
    assert len(load(path, PASS).keys) == 1


def test_rotate_requires_a_valid_grace(tmp_path: Path, run: Any) -> None:
    path = tmp_path / "k.json"
    for argv in (["--grace", "soon"], []):
        with pytest.raises(SystemExit) as info:
            run("keys", "rotate", "--keystore", str(path), *argv)
        assert info.value.code == 2


def test_retire(tmp_path: Path, run: Any, clock: Clock) -> None:
    path = tmp_path / "k.json"
    store_args = ("--keystore", str(path))
    assert run("keys", "generate", *store_args, "--active").code == 0
    clock.advance(1)
    assert run("keys", "rotate", *store_args, "--grace", "7d").code == 0
    new, old = load(path).keys
    result = run("keys", "retire", *store_args, old.kid.hex())
    assert result.code == 0 and f"retired {old.kid.hex()}" in result.out
    assert [r["state"] for r in listing(run, *store_args)] == ["active", "retired"]
    err = one_line_error(run("keys", "retire", *store_args, new.kid.hex()))
    assert "refusing to retire" in err and "--force" in err
    assert load(path).keys[0].active
    assert run("keys", "retire", *store_args, new.kid.hex(), "--force").code == 0
    assert [r["state"] for r in listing(run, *store_args)] == ["retired", "retired"]
    assert "no key with kid 0000000000000000" in one_line_error(
        run("keys", "retire", *store_args, "0000000000000000")
    )
    one_line_error(run("keys", "retire", *store_args, "xyz"), code=2)


# -- passwd ----------------------------------------------------------------------------------


def test_passwd_plaintext_to_encrypted_to_new_passphrase_to_plaintext(
    tmp_path: Path, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keystore, "DEFAULT_KDF", KdfParams())  # the real Argon2id cost
    path = tmp_path / "k.json"
    assert run("keys", "generate", "--keystore", str(path), "--active").code == 0
    assert run("keys", "generate", "--keystore", str(path)).code == 0
    original = load(path).keys

    monkeypatch.setenv("FIRST_PASS", "first")
    result = run("keys", "passwd", "--keystore", str(path), "--new-passphrase-env", "FIRST_PASS")
    assert result.code == 0, result.err
    assert "now encrypted (Argon2id t=3, m=65536 KiB, p=1)" in result.out
    kdf = json.loads(path.read_text())["kdf"]
    assert (kdf["time_cost"], kdf["memory_cost"], kdf["parallelism"]) == (3, 65536, 1)
    assert load(path, "first").keys == original

    second = tmp_path / "second-pass"
    second.write_text("second\n")
    second.chmod(0o600)
    result = run(
        "keys",
        "passwd",
        "--keystore",
        str(path),
        "--passphrase-env",
        "FIRST_PASS",
        "--new-passphrase-file",
        str(second),
    )
    assert result.code == 0, result.err
    assert load(path, "second").keys == original
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        load(path, "first")

    result = run(
        "keys",
        "passwd",
        "--keystore",
        str(path),
        "--passphrase-file",
        str(second),
        "--no-passphrase",
    )
    assert result.code == 0 and "unencrypted" in result.out
    assert json.loads(path.read_text())["kdf"] is None
    assert load(path).keys == original
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_passwd_asks_on_a_terminal_and_needs_a_source_otherwise(
    tmp_path: Path, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "k.json"
    assert run("keys", "generate", "--keystore", str(path), "--active").code == 0
    err = one_line_error(run("keys", "passwd", "--keystore", str(path)), code=2)
    assert "--new-passphrase-env" in err
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    answers = iter(["typed", "typo"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert "do not match" in one_line_error(run("keys", "passwd", "--keystore", str(path)), 2)
    answers = iter(["typed", "typed"])
    assert run("keys", "passwd", "--keystore", str(path)).code == 0
    assert len(load(path, "typed").keys) == 1


# -- config-driven use and import ------------------------------------------------------------


def keystore_config(tmp_path: Path, keystore_path: Path) -> Path:
    cfg = tmp_path / "registry.toml"
    write_config(
        cfg,
        'address = "127.0.0.1:0"\nmode = "http"\n[storage]\nkind = "memory"\n'
        f'[envelope]\npepper_hex = "{PEPPER_HEX}"\nkeystore_path = "{keystore_path}"\n'
        f'keystore_passphrase_env = "{ENV}"\n',
    )
    return cfg


def test_commands_read_the_keystore_from_the_config(
    tmp_path: Path, run: Any, passphrase: str
) -> None:
    path = tmp_path / "k.json"
    cfg = keystore_config(tmp_path, path)
    assert run("keys", "generate", "--config", str(cfg), "--active").code == 0
    assert json.loads(path.read_text())["kdf"] is not None
    assert run("keys", "rotate", "--config", str(cfg), "--grace", "1d").code == 0
    assert [r["state"] for r in listing(run, "--config", str(cfg))] == ["active", "grace"]
    ring = load_keyring(config_mod.load(cfg).envelope)
    assert ring.active().kid == load(path, PASS).keys[0].kid
    err = one_line_error(run("keys", "list", "--config", str(cfg), "--passphrase-env", ENV), code=2)
    assert "go with --keystore" in err
    inline = tmp_path / "inline.toml"
    write_config(inline, config_text())
    assert "keys import" in one_line_error(run("keys", "list", "--config", str(inline)))
    with pytest.raises(SystemExit) as info:
        run("keys", "list", "--config", str(cfg), "--keystore", str(path))
    assert info.value.code == 2


SECOND_KID = "1111111111111111"
SECOND_PRIVATE = "9a3a301c6bab38dc5b5cadd3ffbf0a71acd977461fa4cdac0798d6a2adc9c393"


def reference_config() -> str:
    """The spec 7.2 key (active) followed by an inactive key with an expiry, inline."""
    return config_text() + (
        f'\n[[envelope.keys]]\nkid_hex = "{SECOND_KID}"\n'
        f'x25519_private_key_hex = "{SECOND_PRIVATE}"\nnot_after_epoch_ms = 4102444800000\n'
    )


def test_import_from_a_reference_config(
    tmp_path: Path, run: Any, passphrase: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "registry.toml"
    write_config(cfg, reference_config())
    before = cfg.read_bytes()
    target = tmp_path / "keys.json"
    result = run(
        "keys",
        "import",
        "--from-config",
        str(cfg),
        "--keystore",
        str(target),
        "--passphrase-env",
        ENV,
    )
    assert result.code == 0, result.err
    assert cfg.read_bytes() == before  # the operator's config is not rewritten
    assert "wrote" in result.err and "2 keys" in result.err
    assert SERVER_PRIVATE_HEX not in result.out + result.err

    store = load(target, PASS)
    assert [(k.kid.hex(), k.private.reveal().hex(), k.active) for k in store.keys] == [
        (KID_HEX, SERVER_PRIVATE_HEX, True),
        (SECOND_KID, SECOND_PRIVATE, False),
    ]
    assert store.keys[1].not_after_ms == 4102444800000
    inline = load_keyring(config_mod.parse(reference_config()).envelope)
    assert [k.state(0) for k in store.keys] == [k.state(0) for k in inline.keys]

    toml_lines = [line for line in result.out.splitlines() if not line.startswith("#")]
    assert toml_lines == [
        f'keystore_path = "{target.resolve()}"',
        f'keystore_passphrase_env = "{ENV}"',
    ]
    head, _, _ = reference_config().partition("[[envelope.keys]]")
    migrated = config_mod.parse(head + "\n".join(toml_lines) + "\n")
    ring = load_keyring(migrated.envelope)
    assert ring.active().kid.hex() == KID_HEX
    assert [(k.kid, k.private, k.active) for k in ring.keys] == [
        (k.kid, k.private, k.active) for k in inline.keys
    ]

    again = run("keys", "import", "--from-config", str(cfg), "--keystore", str(target))
    assert "already exists" in one_line_error(again)


def test_import_needs_inline_keys(tmp_path: Path, run: Any, passphrase: str) -> None:
    cfg = keystore_config(tmp_path, tmp_path / "k.json")
    target = tmp_path / "new.json"
    err = one_line_error(
        run("keys", "import", "--from-config", str(cfg), "--keystore", str(target))
    )
    assert "no inline keys" in err
    assert not target.exists()
    bad = tmp_path / "bad.toml"
    write_config(bad, "mode = 'carrier pigeon'\n")
    one_line_error(run("keys", "import", "--from-config", str(bad), "--keystore", str(target)))


# -- hash-token and help ---------------------------------------------------------------------


def test_hash_token(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "my-peer-token-0123456789abcdefghij"
    monkeypatch.setattr("sys.stdin", io.StringIO(f"  {token} \nsecond line\n"))
    result = run("hash-token")
    assert result.code == 0, result.err
    digest = result.out.strip()
    assert digest.startswith("$argon2id$v=19$m=4096,t=3,p=1$") and token not in result.out
    assert PasswordHasher().verify(digest, token)
    config_mod.parse(config_text(tables=f'[peers]\ntoken_hashes = ["{digest}"]\n'))
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert "no token" in one_line_error(run("hash-token"))
    monkeypatch.setattr("sys.stdin", io.StringIO("short-token\n"))
    assert "at least 32 characters" in one_line_error(run("hash-token"))


ACTIONS = ["list", "generate", "rotate", "retire", "prune", "passwd", "import"]


@pytest.mark.parametrize("argv", [["keys"], *(["keys", a] for a in ACTIONS), ["hash-token"]])
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: registryd" in out and len(out) > 200
    assert "restart the daemon" not in out.lower()


def test_rotate_help_says_reload_not_restart(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["keys", "rotate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "SIGHUP or POST /admin/reload, without a restart" in out
    assert "staged key (pending" in out
