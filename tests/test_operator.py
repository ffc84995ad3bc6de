"""Operator traps (issue 8 item 12): the pid file, the README's examples run as written, one
storage layout, and friendly development rate limits."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import msgspec
import pytest

from registryd import config as config_mod
from registryd import scaffold
from registryd.cli import main
from registryd.config import StorageConfig
from registryd.errors import ConfigError
from registryd.pidfile import PidFile
from tests.helpers import Clock, Daemon, app_client, config_text, daemon

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def write_config(path: Path, text: str | None = None) -> Path:
    path.write_text(config_text() if text is None else text)
    path.chmod(0o600)
    return path


def wait_for_log(d: Daemon, text: str, timeout: float = 30) -> bool:
    """Read the running daemon's log until a line holds ``text`` (bounded by ``timeout``)."""
    found = threading.Event()

    def read() -> None:
        assert d.proc.stderr is not None
        for line in d.proc.stderr:
            d.lines.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    return found.wait(timeout)


# -- (a) the pid file ----------------------------------------------------------------------


@pytest.mark.e2e
def test_the_pid_file_names_the_daemon_refuses_a_second_and_goes_on_exit(tmp_path: Path) -> None:
    pid_file = tmp_path / "registryd.pid"
    args = ["--pid-file", str(pid_file)]
    with daemon(write_config(tmp_path / "a.toml"), args=args) as first:
        assert pid_file.read_text() == f"{first.proc.pid}\n"
        # as the README says: kill -HUP "$(cat PIDFILE)" reloads
        subprocess.run(
            ["bash", "-c", f'kill -HUP "$(cat {shlex.quote(str(pid_file))})"'], check=True
        )
        assert wait_for_log(first, "reloaded"), first.log
        second = Daemon(write_config(tmp_path / "b.toml"), args=args)
        assert second.stop() == 1 and not second.url
        assert f"names a running registryd (pid {first.proc.pid})" in second.log
        assert pid_file.read_text() == f"{first.proc.pid}\n"
    assert first.proc.returncode == 0
    assert not pid_file.exists()


def test_stale_pid_files_are_replaced(tmp_path: Path) -> None:
    pid_file = PidFile(tmp_path / "registryd.pid")
    pid_file.claim()  # no file yet
    dead = subprocess.Popen(["true"])
    dead.wait()
    other = subprocess.Popen(["sleep", "60"])  # alive, but not a registryd
    try:
        for stale in (str(dead.pid), str(other.pid), "not a pid", str(os.getpid())):
            pid_file.path.write_text(f"{stale}\n")
            pid_file.claim()
    finally:
        other.kill()
        other.wait()
    pid_file.write()
    assert pid_file.path.read_text() == f"{os.getpid()}\n"
    assert oct(pid_file.path.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in tmp_path.iterdir()] == ["registryd.pid"]  # no temporary file left
    pid_file.path.write_text("12345\n")  # another daemon's now: not ours to remove
    pid_file.remove()
    assert pid_file.path.exists()
    pid_file.path.write_text(f"{os.getpid()}\n")
    pid_file.remove()
    assert not pid_file.path.exists()
    with pytest.raises(ConfigError) as err:
        PidFile(tmp_path / "missing" / "registryd.pid").claim()
    assert (err.value.path, err.value.message) == (
        "--pid-file",
        f"no such directory: {tmp_path / 'missing'}",
    )


# -- (b) the README's examples, run as written against a real daemon --------------------------


def code_block(after_heading: str, language: str) -> str:
    section = README.split(after_heading, 1)[1]
    found = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert found, (after_heading, language)
    return found.group(1)


def make_run_serve_args() -> list[str]:
    """The ``serve`` arguments of ``make run`` (Makefile), ``--config`` and its value left out."""
    recipe = re.search(r"-m registryd serve (.+)", (ROOT / "Makefile").read_text())
    assert recipe
    args = recipe.group(1).split()
    at = args.index("--config")
    return args[:at] + args[at + 2 :]


@pytest.mark.e2e
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    # what `make run` does, on port 0 instead of 8443
    assert main(["certs", "dev", "--out", str(tmp_path / "certs")]) == 0
    assert main(["init", "--dev", "--out", str(tmp_path / "registry.toml")]) == 0
    server_config = tmp_path / "registry.toml"
    server_config.write_text(server_config.read_text().replace(":8443", ":0"))
    serve_args = make_run_serve_args()
    assert serve_args == ["--pid-file", "data/registryd.pid"]
    (tmp_path / "data").mkdir()
    with daemon(Path("registry.toml"), args=serve_args, cwd=tmp_path) as d:
        client_config = tmp_path / "client.toml"
        client_config.write_text(client_config.read_text().replace("https://127.0.0.1:8443", d.url))
        outputs = []
        for line in code_block("## Try it", "sh").splitlines():
            argv = shlex.split(line, comments=True)
            assert argv[0] == ".venv/bin/registryd", line
            run = subprocess.run(
                [sys.executable, "-m", "registryd", *argv[1:]],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert run.returncode == 0, (line, run.stderr)
            outputs.append(run.stdout)
        assert '"exists": true' in outputs[3]
        snippet = code_block("The same from Python", "python")
        python = subprocess.run(
            [sys.executable, "-c", snippet],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert python.returncode == 0, python.stderr
        assert python.stdout == "carol True\n"
        # the README's reload line, with make run's pid file
        reload_line = next(line for line in README.splitlines() if line.startswith("kill -HUP"))
        subprocess.run(["bash", "-c", reload_line], cwd=tmp_path, check=True, timeout=30)
        assert wait_for_log(d, "reloaded registry.toml"), d.log
    assert d.proc.returncode == 0
    assert not (tmp_path / "data" / "registryd.pid").exists()


# -- (c) one storage layout -------------------------------------------------------------------


def test_a_keystore_inside_the_leveldb_directory_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "data" / "db"
    for keystore in (db / "keys.json", db, db / "sub" / "keys.json"):
        text = config_text(kind="leveldb", path=str(db)).replace(
            "[envelope]\n", f'[envelope]\nkeystore_path = "{keystore}"\n'
        )
        text = re.sub(r"\[\[envelope\.keys\]\]\n(.+\n){3}", "", text)
        with pytest.raises(ConfigError) as err:
            config_mod.parse(text)
        assert err.value.path == "envelope.keystore_path"
        assert "must not be inside storage.path" in err.value.message
    beside = text.replace(
        f'keystore_path = "{db / "sub" / "keys.json"}"',
        f'keystore_path = "{tmp_path / "data" / "keys.json"}"',
    )
    assert config_mod.parse(beside).envelope.keystore_path == str(tmp_path / "data" / "keys.json")
    memory = text.replace('kind = "leveldb"', 'kind = "memory"')
    assert config_mod.parse(memory).storage.kind == "memory"  # no directory, nothing to clash


def test_readme_init_and_example_config_agree_on_the_layout() -> None:
    example = (ROOT / "config" / "registry.example.toml").read_text()
    init = scaffold.server_config(scaffold.random_hex(32), dev=False)
    dev = scaffold.server_config(scaffold.random_hex(32), dev=True)
    for text in (README, example, init):
        assert set(re.findall(r'^path = "([^"]+)"', text, re.M)) == {"/var/lib/registryd/db"}
        keystores = set(re.findall(r'keystore_path = "([^"]+)"', text))
        assert keystores == {"/var/lib/registryd/keys.json"}, keystores
    assert re.findall(r'^path = "([^"]+)"', dev, re.M) == ["./data/db"]
    assert re.findall(r'keystore_path = "([^"]+)"', dev) == ["./data/keys.json"]
    assert "data/registryd.pid" in (ROOT / "Makefile").read_text()


# -- (d) friendly development rate limits, and a 429 that says how long ----------------------


async def test_the_dev_config_does_not_ban_a_newcomer(clock: Clock) -> None:
    cfg = config_mod.parse(scaffold.server_config(scaffold.random_hex(32), dev=True))
    cfg = msgspec.structs.replace(cfg, storage=StorageConfig(kind="memory"))
    async with app_client(cfg, clock=clock, base_url="http://r") as http:
        quick = [(await http.get("/health")).status_code for _ in range(50)]
        assert quick == [200] * 50  # 13 quick curls used to bring a 5-minute ban
        while (refused := await http.get("/envelope_pubkey")).status_code == 200:
            pass
        assert refused.status_code == 429
        wait = int(refused.headers["retry-after"])
        assert 0 < wait <= 10
        message = refused.json()["error"]["message"]
        assert message == f"rate limited: retry after {wait} s"
        clock.advance(wait)
        assert (await http.get("/health")).status_code == 200
