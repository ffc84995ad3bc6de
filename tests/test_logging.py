"""What the daemon's log may hold (issue 8, items 6 and 8): no bearer token or handle at any
level, third-party debug output only when asked for by name, and no control or format
character from a request (ESC, NUL, VT, U+2028, bidi overrides ...) at any level."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from argon2 import PasswordHasher

from registryd.certs import DevCerts
from registryd.identity import user_id
from registryd.logs import SafeFormatter, escape
from registryd.storage.memory import MemoryStorage
from tests.helpers import Clock, app_client, config_text, make_config, tls_table, write_config

HOSTILE = {
    "esc": "\x1b[31m",
    "nul": "\x00",
    "vt": "\x0b",
    "cr-lf": "\r\nFAKE",
    "del": "\x7f",
    "line-separator": "\u2028",
    "paragraph-separator": "\u2029",
    "bidi-override": "\u202e",
    "zero-width": "\u200b",
    "bom": "\ufeff",
    "lone-surrogate": "\ud800",
}


def unprintable(text: str) -> list[str]:
    """The characters of ``text`` a log line must not hold (line breaks aside)."""
    return [hex(ord(c)) for c in text if not c.isprintable() and c != "\n"]


# -- the formatter ----------------------------------------------------------------------------


@pytest.mark.parametrize("char", HOSTILE.values(), ids=HOSTILE.keys())
def test_escape_leaves_no_control_or_format_character(char: str) -> None:
    escaped = escape(f"GET /a{char}b")
    assert escaped.startswith("GET /a\\") and escaped.endswith("b")
    assert unprintable(escaped) == [] and "\n" not in escaped


def test_escape_keeps_printable_text() -> None:
    for text in ("plain ascii", "Зоё José 名前", "tabs\\t and \\x1b written out"):
        assert escape(text) == text
    assert escape("\x1b\u2028\U000e0001\r\n\t") == "\\x1b\\u2028\\U000e0001\\r\\n\\t"


def test_the_formatter_keeps_a_record_on_one_line_and_escapes_tracebacks() -> None:
    formatter = SafeFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "path %s", ("/a\nFAKE\x1b",), None)
    assert formatter.format(record) == "ERROR path /a\\nFAKE\\x1b"
    try:
        try:
            raise KeyError("cause\nFAKE")
        except KeyError as cause:
            error = ValueError("bad \u202epath\nINJECTED")
            error.add_note("note\nFAKE NOTE")
            raise error from cause
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    lines = formatter.format(record).split("\n")
    assert lines[0] == "ERROR failed" and lines[1].startswith("Traceback")
    assert "KeyError: 'cause\\nFAKE'" in lines  # repr'd by KeyError itself
    assert lines[-2:] == ["ValueError: bad \\u202epath\\nINJECTED", "note\\nFAKE NOTE"]
    assert not any(line.startswith(("INJECTED", "FAKE")) for line in lines)
    assert all(unprintable(line) == [] for line in lines)


# -- what the app logs of a request -----------------------------------------------------------


class BreakingClock(Clock):
    """A clock that raises once ``broken``: a failure inside the middleware, before routing."""

    broken = False

    def __call__(self) -> int:
        if self.broken:
            raise RuntimeError("clock failure")
        return self.now_ms


# a path cannot carry a lone surrogate: servers decode %ED%A0%80 to U+FFFD
IN_PATHS = {name: char for name, char in HOSTILE.items() if name != "lone-surrogate"}


@pytest.mark.parametrize("char", IN_PATHS.values(), ids=IN_PATHS.keys())
async def test_an_unhandled_error_logs_the_route_not_the_path(
    caplog: pytest.LogCaptureFixture, char: str
) -> None:
    config = make_config(tables="")  # rate limits on: the limiter reads the clock
    clock = BreakingClock()
    async with app_client(config, clock=clock, raise_app_exceptions=False) as c:
        clock.broken = True
        response = await c.get(f"/{quote(char)}x{quote(char)}/y")
    assert response.status_code == 500
    [record] = [r for r in caplog.records if r.name == "registryd"]
    assert record.getMessage() == "unhandled RuntimeError in GET (no route)"


async def test_an_unhandled_error_in_a_route_logs_its_template_not_the_handle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenStorage(MemoryStorage):
        async def exists(self, user_id: bytes) -> bool:
            raise RuntimeError("storage bug")

    config = make_config()
    storage = BrokenStorage(config.index_key())
    handle = user_id("alice").hex()
    async with app_client(config, storage=storage, raise_app_exceptions=False) as c:
        assert (await c.get(f"/check_user/{handle}")).status_code == 500
    await storage.close()
    [record] = [r for r in caplog.records if r.name == "registryd"]
    assert record.getMessage() == "unhandled RuntimeError in GET /check_user/{handle}"


# -- the daemon's log, captured from a real process over TLS ---------------------------------

TOKEN = "admin-token-must-not-be-logged-5f3a"
HANDLE = user_id("log-canary").hex()
# percent-encoded, so h11 and h2 carry them; the server decodes them into the request's path
HOSTILE_PATHS = [
    "/%1b[31mred",
    "/a%00b",
    "/x%0bv",
    "/u%e2%80%a8w",
    "/bidi%e2%80%aeevil",
    "/n%0d%0aFAKE%20LINE",
    f"/check_user/{HANDLE}%1b",
]


def _listening_port(proc: subprocess.Popen[bytes], deadline: float) -> int:
    """The TCP port ``proc`` listens on, from /proc (the daemon logs its URL only at info and
    debug)."""
    while proc.poll() is None and time.monotonic() < deadline:
        sockets = set()
        for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed meanwhile (the daemon reads files)
                if fd.is_socket():
                    sockets.add(os.readlink(fd).removeprefix("socket:[").removesuffix("]"))
        for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in sockets:  # 0A: LISTEN
                return int(fields[1].split(":")[1], 16)
        time.sleep(0.05)
    raise AssertionError(f"the daemon is not listening (exit code {proc.poll()})")


def run_daemon(config: Path, ca: Path, log: Path, level: str, extra: Sequence[str] = ()) -> str:
    """Serve ``config`` at ``level``, make the requests below over HTTP/1.1 and HTTP/2, stop
    with SIGTERM and return the whole log (stderr goes to a file: no pipe to fill)."""
    args = ["serve", "--config", str(config), "--log-level", level, *extra]
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "registryd", *args], stderr=out)
    try:
        port = _listening_port(proc, time.monotonic() + 30)
        tls = ssl.create_default_context(cafile=str(ca))
        auth = {"authorization": f"Bearer {TOKEN}"}
        for http2 in (False, True):
            with httpx.Client(
                base_url=f"https://127.0.0.1:{port}", verify=tls, http2=http2, timeout=30
            ) as client:
                answer = client.get(f"/check_user/{HANDLE}", headers=auth)
                assert (answer.status_code, answer.http_version) == (
                    200,
                    "HTTP/2" if http2 else "HTTP/1.1",
                )
                assert client.get("/admin/keys", headers=auth).status_code == 200
                for path in HOSTILE_PATHS:
                    assert client.get(path, headers=auth).status_code in (400, 404)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)  # its exit code is the shutdown tests' business
        finally:
            if proc.poll() is None:  # it did not stop: ours to end, by its PID
                proc.kill()
                proc.wait(30)
    return log.read_bytes().decode("utf-8", "backslashreplace")


@pytest.fixture(scope="module")
def daemon_config(certs: DevCerts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TLS (so HTTP/2 is offered), rate limits off, an admin token."""
    token_hash = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(TOKEN)
    admin = f'[admin]\ntoken_hashes = ["{token_hash}"]\n[rate_limit]\nenabled = false\n'
    text = config_text(mode="tls", tls=tls_table(certs), tables=admin)
    return write_config(tmp_path_factory.mktemp("logging") / "registry.toml", text)


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_no_token_handle_or_control_character_in_the_log_at_any_level(
    daemon_config: Path, certs: DevCerts, tmp_path: Path, level: str
) -> None:
    log = run_daemon(daemon_config, certs.ca, tmp_path / "stderr.log", level)
    assert TOKEN not in log
    assert HANDLE not in log.lower()
    assert unprintable(log) == []
    if level == "debug":  # registryd's own debug lines are there, hpack's are not
        assert "DEBUG registryd: debug logging for registryd only" in log
        assert "hpack" not in log and "DEBUG hypercorn" not in log and "DEBUG asyncio" not in log


def test_a_third_party_debug_logger_only_when_named(
    daemon_config: Path, certs: DevCerts, tmp_path: Path
) -> None:
    """The same capture finds the token when hpack is asked for: the test above could fail."""
    extra = ["--debug-logger", "hpack"]
    log = run_daemon(daemon_config, certs.ca, tmp_path / "stderr.log", "info", extra)
    assert "WARNING registryd: debug logging for hpack: their lines may hold bearer tokens" in log
    assert f"Bearer {TOKEN}" in log  # hpack logs every decoded header
    assert unprintable(log) == []  # its lines go through the same formatter
