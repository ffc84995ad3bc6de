"""The daemon as an operator runs it (issue 14): JSON logs from a real process, audit lines for
admin calls, bans and SIGHUP, the precedence of ``--log-format``/``--log-level`` over
``[logging]``, readiness on ``$NOTIFY_SOCKET``, ``$REGISTRYD_CONFIG``, and clear errors for
missing optional dependencies."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

from registryd.certs import DevCerts
from registryd.cli import main
from registryd.identity import user_id
from tests.helpers import config_text, tls_table, write_config

pytestmark = pytest.mark.e2e

TOKEN = "json-audit-token-never-logged-91b2"
HANDLE = user_id("json-log-canary").hex()
LIMITS = "[rate_limit]\nburst = 20\nper_ip_rps = 1\nban_seconds = 60\n"


@pytest.fixture(scope="module")
def json_config(certs: DevCerts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    token_hash = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(TOKEN)
    tables = f'[logging]\nformat = "json"\n[admin]\ntoken_hashes = ["{token_hash}"]\n{LIMITS}'
    text = config_text(mode="tls", tls=tls_table(certs), tables=tables)
    return write_config(tmp_path_factory.mktemp("json-logs") / "registry.toml", text)


class Process:
    """``python -m registryd serve ...`` with systemd's readiness protocol: the test binds the
    NOTIFY_SOCKET and learns the URL from READY=1 (whatever the log level); stderr goes to
    a file, read line by line as the test waits for one."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(tmp_path / "notify.sock"))
        self.notify.settimeout(60)
        self.log_path = tmp_path / "stderr.log"
        environment = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), **(env or {})}
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "registryd", "serve", *args],
                stderr=out,
                env={**_environ(), **environment},
            )
        self.reader = open(self.log_path, encoding="utf-8")  # closed by close()
        self.lines: list[str] = []

    def ready(self) -> dict[str, str]:
        """The READY=1 datagram, as a dict."""
        datagram = self.notify.recv(4096).decode()
        return dict(line.split("=", 1) for line in datagram.splitlines())

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """The first new stderr line holding ``text`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.reader.readline()
            if not line:
                select.select([], [], [], 0.05)  # a file is always readable: poll gently
                continue
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in {self.lines}")

    def stop(self) -> str:
        """SIGTERM, then the whole log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            assert self.proc.wait(30) == 0
        finally:
            self.close()
        return self.log_path.read_text(encoding="utf-8")

    def close(self) -> None:
        """Kill the process if it still runs (ours, by its PID) and close the test's ends."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.reader.close()
        self.notify.close()


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "REGISTRYD_CONFIG")}


@contextlib.contextmanager
def serving(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Process]:
    process = Process(tmp_path, *args, env=env)
    try:
        yield process
    finally:
        process.close()


def test_json_logs_and_audit_lines_from_a_running_daemon(
    json_config: Path, certs: DevCerts, tmp_path: Path
) -> None:
    with serving(tmp_path, "--config", str(json_config)) as daemon:
        ready = daemon.ready()
        assert ready["READY"] == "1" and ready["MAINPID"] == str(daemon.proc.pid)
        url = ready["STATUS"].removeprefix("listening on ")
        tls = ssl.create_default_context(cafile=str(certs.ca))
        with httpx.Client(base_url=url, verify=tls, timeout=30) as client:
            good, bad = {"authorization": f"Bearer {TOKEN}"}, {"authorization": "Bearer nope"}
            assert client.get("/admin/keys", headers=good).status_code == 200
            assert client.get("/admin/keys", headers=bad).status_code == 401
            assert client.post("/admin/reload", headers=good).status_code == 200
            lookups = 0  # 20 tokens: 3 admin calls, then ~17 lookups (more if it refills) and a ban
            while client.get(f"/check_user/{HANDLE}").status_code == 200 and lookups < 100:
                lookups += 1
            assert 17 <= lookups < 100
        daemon.wait_for('"event": "ban"')
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for('"source": "SIGHUP"')
        log = daemon.stop()
    records = [json.loads(line) for line in log.splitlines()]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("registryd listening on https://127.0.0.1:") for m in messages)
    audits = [r for r in records if r["logger"] == "registryd.audit"]
    summary = [(a["event"], a.get("action") or a.get("source"), a.get("outcome")) for a in audits]
    assert summary == [
        ("admin", "keys.list", "ok"),
        ("admin", "keys.list", "refused"),
        ("admin", "reload", "ok"),
        ("ban", None, None),
        ("reload", "SIGHUP", "ok"),
    ]
    assert audits[3]["bucket"] == "global" and audits[3]["ban_seconds"] == 60
    assert all(a["via"] == "loopback" for a in audits[:3])
    assert TOKEN not in log and HANDLE not in log.lower()
    assert not any("127.0.0.1" in json.dumps(a) for a in audits)


def test_flags_win_over_the_logging_table(
    json_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[logging] says json and info; --log-format plain --log-level warning say otherwise:
    plain lines, no info line, and the audit line all the same. The config comes from
    $REGISTRYD_CONFIG."""
    env = {"REGISTRYD_CONFIG": str(json_config)}
    with serving(tmp_path, "--log-format", "plain", "--log-level", "warning", env=env) as daemon:
        assert daemon.ready()["READY"] == "1"
        daemon.proc.send_signal(signal.SIGHUP)
        line = daemon.wait_for("registryd.audit")
        log = daemon.stop()
    assert line.rstrip().endswith(
        "INFO registryd.audit: reload source=SIGHUP outcome=ok restart_needed=none"
    )
    assert not log.lstrip().startswith("{")
    assert "listening on" not in log and "INFO registryd:" not in log


def _blocked(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``modules`` impossible to import (as if not installed), and forget the registryd
    modules that imported them."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)
    for name in ("registryd.certs", "registryd.storage.leveldb"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_certs_dev_without_trustme_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _blocked(monkeypatch, "trustme")
    assert main(["certs", "dev", "--out", str(tmp_path / "certs")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: registryd certs dev needs trustme") and err.count("\n") == 1
    assert 'pip install "registryd[dev]"' in err
    assert not (tmp_path / "certs").exists()


def test_leveldb_without_its_binding_is_a_config_error_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _blocked(monkeypatch, "plyvel", "plyvel_next")
    text = config_text(kind="leveldb", path=str(tmp_path / "db"))
    path = write_config(tmp_path / "registry.toml", text)
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith('config error: storage.kind: "leveldb" needs a LevelDB binding')
    assert 'pip install "registryd[leveldb]"' in err and 'kind = "memory"' in err
    assert main(["serve", "--config", str(path)]) == 1  # before binding anything
    assert not (tmp_path / "db").exists()


def test_memory_storage_loads_no_leveldb_binding() -> None:
    code = (
        "import sys; sys.modules['plyvel'] = sys.modules['plyvel_next'] = None; "
        "import registryd.server, registryd.cli.daemon; "
        "from registryd.storage import open_storage; from registryd import config; "
        "print(sorted(m for m in sys.modules if 'leveldb' in m))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
