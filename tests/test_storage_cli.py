"""``registryd storage export|import`` end to end on LevelDB: a daemon's data moved to another
data directory serves the same registry; and the command's refusals, with their exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import re
import stat
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from registryd.certs import DevCerts
from registryd.cli import main
from registryd.cli import storage as storage_cli
from registryd.client import IdentityKeys, RegistryClient
from registryd.errors import ServerError
from registryd.identity import user_id
from registryd.secret import Secret
from registryd.storage.leveldb import LevelDBStorage
from tests.helpers import INDEX_KEY_HEX, config_text, daemon, make_config, tls_table, write_config
from tests.vectors import PEPPER_HEX

PEPPER = bytes.fromhex(PEPPER_HEX)
OTHER_KEY_HEX = bytes(range(100, 132)).hex()


def leveldb_config(
    tmp_path: Path, name: str, certs: DevCerts, key_hex: str = INDEX_KEY_HEX
) -> Path:
    text = config_text(
        kind="leveldb", path=str(tmp_path / name / "db"), mode="tls", tls=tls_table(certs)
    )
    (tmp_path / name).mkdir(exist_ok=True)
    return write_config(tmp_path / name / "registry.toml", text.replace(INDEX_KEY_HEX, key_hex))


def registryd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REGISTRYD_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "registryd", "storage", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.e2e
def test_a_daemons_store_exported_and_imported_elsewhere_serves_the_same_registry(
    certs: DevCerts, tmp_path: Path
) -> None:
    source, target = leveldb_config(tmp_path, "a", certs), leveldb_config(tmp_path, "b", certs)
    backup = tmp_path / "backup.rex"
    with daemon(source) as d:
        with RegistryClient(d.url, PEPPER, cafile=str(certs.ca)) as client:
            alice_keys = IdentityKeys.generate()
            client.register("alice", alice_keys)
            client.register("bob", IdentityKeys.generate())
            client.announce("alice", "198.51.100.7:4000", keys=alice_keys)  # + its ops record
            alice, seen = client.resolve("alice"), client.presence("alice")
        busy = registryd("export", "--config", str(source), "--out", str(backup))
        assert busy.returncode == 1 and "stop the daemon first" in busy.stderr
        assert not backup.exists()

    done = registryd("export", "--config", str(source), "--out", str(backup))
    assert done.returncode == 0, done.stderr
    assert "exported 4 records" in done.stdout and "2 identities, 1 presence," in done.stdout
    assert "1 operation record" in done.stdout
    assert done.stderr == ""  # no progress bar without a terminal
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []

    dry = registryd("import", "--config", str(target), "--in", str(backup), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "verifies; would import 4 records" in dry.stdout
    assert not (tmp_path / "b" / "db").exists()  # a dry run creates nothing

    done = registryd("import", "--config", str(target), "--in", str(backup))
    assert done.returncode == 0, done.stderr
    assert "imported 4 records" in done.stdout and done.stderr == ""

    with daemon(target) as d, RegistryClient(d.url, PEPPER, cafile=str(certs.ca)) as client:
        assert alice is not None and client.resolve("alice") == alice
        assert seen is not None and client.presence("alice") == seen
        with pytest.raises(ServerError) as replayed:  # the presence counter came along
            client.announce("alice", "198.51.100.8:4000", seen.ts_ms, keys=alice_keys)
        assert replayed.value.status == 409
        assert client.check_user("bob") is True
        assert client.resolve("carol") is None
        with pytest.raises(ServerError) as taken:
            client.register("alice", IdentityKeys.generate())
        assert taken.value.status == 409

    again = registryd("import", "--config", str(target), "--in", str(backup))
    assert again.returncode == 1
    assert again.stderr.startswith("cannot import: the target leveldb store is not empty")


@pytest.fixture
def backup(certs: DevCerts, tmp_path: Path) -> Path:
    """An export of a LevelDB store holding 50 identities, made with the CLI in-process."""

    async def fill() -> None:
        store = LevelDBStorage(Secret(bytes.fromhex(INDEX_KEY_HEX)), tmp_path / "src" / "db")
        await store.merge([(user_id(f"user{i}"), b'{"id":%d}' % i) for i in range(50)])
        await store.close()

    asyncio.run(fill())
    out = tmp_path / "backup.rex"
    config = leveldb_config(tmp_path, "src", certs)
    assert main(["storage", "export", "--config", str(config), "--out", str(out)]) == 0
    return out


def refusal(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["storage", *args])
    captured = capsys.readouterr()
    return code, captured.err


def test_another_index_key_is_refused(
    backup: Path, certs: DevCerts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = leveldb_config(tmp_path, "other", certs, OTHER_KEY_HEX)
    code, err = refusal(capsys, ["import", "--config", str(config), "--in", str(backup)])
    assert code == 1
    assert err.startswith(f"cannot import: {backup}: exported with another index key")


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_file_is_refused_and_nothing_is_imported(
    damage: str,
    backup: Path,
    certs: DevCerts,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = backup.read_bytes()
    if damage == "truncated":
        backup.write_bytes(data[: len(data) // 2])
    else:
        backup.write_bytes(data[:300] + bytes([data[300] ^ 1]) + data[301:])
    config = leveldb_config(tmp_path, "dst", certs)
    code, err = refusal(capsys, ["import", "--config", str(config), "--in", str(backup)])
    assert code == 1
    assert ("truncated at byte" if damage == "truncated" else "checksum does not match") in err

    async def empty() -> bool:
        store = LevelDBStorage(Secret(bytes.fromhex(INDEX_KEY_HEX)), tmp_path / "dst" / "db")
        try:
            return await store.is_empty()
        finally:
            await store.close()

    assert asyncio.run(empty())


def test_dry_run_export_counts_and_an_existing_out_needs_force(
    backup: Path, certs: DevCerts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(tmp_path / "src" / "registry.toml")
    before = backup.read_bytes()
    code, err = refusal(capsys, ["export", "--config", config, "--out", str(backup)])
    assert code == 2 and "exists: use --force" in err and backup.read_bytes() == before
    capsys.readouterr()
    assert (
        main(["storage", "export", "--config", config, "--out", str(tmp_path / "x"), "--dry-run"])
        == 0
    )
    assert "would export 50 records" in capsys.readouterr().out
    assert not (tmp_path / "x").exists()
    assert main(["storage", "export", "--config", config, "--out", str(backup), "--force"]) == 0
    assert backup.stat().st_size == len(before)  # the same records again


def on_a_terminal(*args: str) -> bytes:
    """What ``registryd storage ARGS`` draws on stderr when stderr is a pseudo-terminal (of
    100 columns: a new one has 0, and tqdm would draw an empty bar)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with os.fdopen(leader, "rb", buffering=0) as terminal:
        done = subprocess.run(  # a few hundred bytes: the terminal's buffer holds them
            [sys.executable, "-m", "registryd", "storage", *args],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
        )
        os.close(follower)
        drawn = b""
        with contextlib.suppress(OSError):  # EIO once the follower side is closed and read
            while chunk := terminal.read(4096):
                drawn += chunk
    assert done.returncode == 0, drawn
    return drawn


def test_progress_bars_show_on_a_terminal(backup: Path, certs: DevCerts, tmp_path: Path) -> None:
    """(Without a terminal, the end to end test above sees an empty stderr.)"""
    source = str(tmp_path / "src" / "registry.toml")
    drawn = on_a_terminal("export", "--config", source, "--out", str(tmp_path / "again.rex"))
    assert b"exporting: 100%" not in drawn  # no total is known while exporting ...
    assert re.search(rb"exporting: 50\.0? records", drawn), drawn  # ... but the count shows
    target = str(leveldb_config(tmp_path, "dst", certs))
    drawn = on_a_terminal("import", "--config", target, "--in", str(backup))
    assert re.search(rb"checking: 50\.0? records", drawn), drawn
    assert re.search(rb"importing: 100%.*\| 50\.0/50\.0 ", drawn), drawn  # total from the check


def test_export_of_a_missing_store_creates_nothing(
    certs: DevCerts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = leveldb_config(tmp_path, "typo", certs)
    code, err = refusal(capsys, ["export", "--config", str(config), "--out", "x.rex"])
    assert code == 1 and "storage error: no LevelDB store at" in err
    assert not (tmp_path / "typo" / "db").exists()


def test_a_memory_store_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "mem.toml", config_text(kind="memory"))
    code, err = refusal(capsys, ["export", "--config", str(config), "--out", "x"])
    assert code == 2
    assert 'error: [storage] kind is "memory": that store lives inside a running daemon' in err


def test_a_redis_store_is_named_by_its_url_without_the_password() -> None:
    cfg = make_config(kind="redis", url="redis://ops:s3cret-pass@127.0.0.1:6390/0")
    where = storage_cli._where(cfg)
    assert where == "redis store at redis://ops:<redacted>@127.0.0.1:6390/0"
    assert "s3cret" not in where
