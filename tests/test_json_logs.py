"""JSON logs and audit lines (issue 14): one JSON object per line, as safe as the plain format,
and one audit line per admin call, key rotation, SIGHUP reload and ban — never with a bearer
token, a handle or a client address."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from registryd import config as config_mod
from registryd.identity import user_id
from registryd.keystore import Keystore
from registryd.logs import AUDIT, JsonLogFormatter
from tests.helpers import Clock, app_with_state, config_text, write_config
from tests.vectors import KID_HEX, SERVER_PRIVATE_HEX

TOKEN = "audit-token-must-never-be-logged-7c1e"
TOKEN_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(TOKEN)
ADMIN = {"authorization": f"Bearer {TOKEN}"}
HANDLE = user_id("audit-canary").hex()
REMOTE = "203.0.113.7"
SPEC_KEY = (
    f'[[envelope.keys]]\nkid_hex = "{KID_HEX}"\n'
    f'x25519_private_key_hex = "{SERVER_PRIVATE_HEX}"\nactive = true\n'
)
HOSTILE = "\x1b[31m\x00\x7f\r\nFAKE\u2028\u202e\ud800"


def unprintable(text: str) -> list[str]:
    return [hex(ord(c)) for c in text if not c.isprintable()]


def as_json(record: logging.LogRecord) -> dict[str, Any]:
    """``record`` as the JSON formatter writes it, after checking it is one printable line."""
    line = JsonLogFormatter().format(record)
    assert "\n" not in line and unprintable(line) == [], line
    decoded: dict[str, Any] = json.loads(line)
    return decoded


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [as_json(r) for r in caplog.records if r.name == AUDIT]


def assert_nothing_leaks(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        line = JsonLogFormatter().format(record)
        for secret in (TOKEN, HANDLE, REMOTE, "127.0.0.1"):
            assert secret not in line, line


# -- the formatter -----------------------------------------------------------------------------


def test_a_json_line_holds_the_record_and_no_control_character() -> None:
    record = logging.LogRecord(
        "registryd", logging.WARNING, __file__, 1, "path %s", (HOSTILE,), None
    )
    data = as_json(record)
    assert list(data)[:4] == ["time", "level", "logger", "message"]
    assert data["level"] == "WARNING" and data["logger"] == "registryd"
    assert data["time"].endswith("Z") and data["time"][10] == "T"
    # the decoded message is escaped as the plain format escapes it: printable, one line
    assert data["message"] == "path \\x1b[31m\\x00\\x7f\\r\\nFAKE\\u2028\\u202e\\ud800"
    assert unprintable(data["message"]) == []


def test_a_traceback_in_json_keeps_its_frames_apart_and_escapes_its_messages() -> None:
    try:
        raise ValueError(f"bad {HOSTILE}")
    except ValueError:
        record = logging.LogRecord(
            "registryd", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    data = as_json(record)
    lines = data["exc_info"].split("\n")
    assert lines[0].startswith("Traceback") and len(lines) > 2
    assert lines[-1] == "ValueError: bad \\x1b[31m\\x00\\x7f\\r\\nFAKE\\u2028\\u202e\\ud800"
    assert all(unprintable(line) == [] for line in lines)


def test_extra_fields_are_escaped_too() -> None:
    record = logging.LogRecord("registryd.audit", logging.INFO, __file__, 1, "x", (), None)
    record.host = f"evil{HOSTILE}"
    record.restart_needed = ["tls", f"x{HOSTILE}"]
    data = as_json(record)
    assert data["host"].startswith("evil\\x1b") and unprintable(data["host"]) == []
    assert data["restart_needed"][0] == "tls" and unprintable(data["restart_needed"][1]) == []


# -- audit lines from the app ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def admin_app(
    tmp_path: Path, clock: Clock, *, client: str = "127.0.0.1", rate_limit: str = ""
) -> AsyncIterator[httpx.AsyncClient]:
    """The app over a config with an admin token, a keystore (one active key) and ``rate_limit``
    (default: off), requests coming from ``client``."""
    keystore = tmp_path / "keys.json"
    if not keystore.exists():
        store = Keystore(path=keystore)
        store.generate(clock.now_ms, active=True)
        store.save()
    limits = rate_limit or "[rate_limit]\nenabled = false\n"
    text = config_text(tables=f'[admin]\ntoken_hashes = ["{TOKEN_HASH}"]\n{limits}')
    text = text.replace(SPEC_KEY, "").replace(
        "[envelope]\n", f'[envelope]\nkeystore_path = "{keystore}"\n'
    )
    path = write_config(tmp_path / "registry.toml", text)
    cfg = config_mod.load(path)
    async with app_with_state(
        cfg, clock=clock, config_path=str(path), client=(client, 5000), base_url="http://r"
    ) as (_, http):
        yield http


async def test_each_admin_call_leaves_one_audit_line(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="registryd")
    async with admin_app(tmp_path, clock) as http:
        before = (await http.get("/admin/keys", headers=ADMIN)).json()[0]["kid_hex"]
        assert (await http.get("/admin/keys")).status_code == 401
        bad = {"authorization": "Bearer wrong-token"}
        assert (await http.get("/admin/keys", headers=bad)).status_code == 401
        rotate = await http.post("/admin/keys/rotate", headers=ADMIN, json={"grace_seconds": 60})
        assert rotate.status_code == 200
        after = next(k["kid_hex"] for k in rotate.json() if k["state"] == "active")
        assert (await http.post("/admin/reload", headers=ADMIN)).status_code == 200
        remove = await http.post(
            "/admin/directory/remove", headers=ADMIN, json={"host": "gone.example.org"}
        )
        assert remove.status_code == 404
        assert (await http.get("/admin/directory", headers=ADMIN)).status_code == 200
    lines = audit_lines(caplog)
    keys = ("event", "action", "outcome", "status", "via")
    assert [tuple(line.get(k) for k in keys) for line in lines] == [
        ("admin", "keys.list", "ok", 200, "loopback"),
        ("admin", "keys.list", "refused", 401, "loopback"),
        ("admin", "keys.list", "refused", 401, "loopback"),
        ("key.rotated", None, None, None, None),  # the reload inside the rotation saw it
        ("admin", "keys.rotate", "ok", 200, "loopback"),
        ("admin", "reload", "ok", 200, "loopback"),
        ("admin", "directory.remove", "failed", 404, "loopback"),
        ("admin", "directory.list", "ok", 200, "loopback"),
    ]
    assert (lines[3]["previous_kid"], lines[3]["active_kid"]) == (before, after)
    assert lines[4]["grace_seconds"] == 60 and lines[5]["restart_needed"] == []
    assert lines[6]["host"] == "gone.example.org"
    assert all(line["level"] == "INFO" and line["logger"] == AUDIT for line in lines)
    assert lines[0]["message"] == "admin action=keys.list outcome=ok status=200 via=loopback"
    assert_nothing_leaks(caplog)


async def test_a_refused_call_from_the_public_network_is_audited_without_its_address(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="registryd")
    async with admin_app(tmp_path, clock, client=REMOTE) as http:
        assert (await http.post("/admin/reload", headers=ADMIN)).status_code == 403
    [line] = audit_lines(caplog)
    assert (line["action"], line["outcome"], line["status"], line["via"]) == (
        "reload",
        "refused",
        403,
        "public",
    )
    assert_nothing_leaks(caplog)


async def test_a_ban_is_audited_once_under_a_pseudonym(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="registryd")
    limits = "[rate_limit]\nburst = 3\nban_seconds = 60\n"
    async with admin_app(tmp_path, clock, client=REMOTE, rate_limit=limits) as http:
        statuses = [(await http.get(f"/check_user/{HANDLE}")).status_code for _ in range(6)]
        assert statuses == [200, 200, 200, 429, 429, 429]  # banned on the 4th, refused after
    [ban] = audit_lines(caplog)
    assert (ban["event"], ban["bucket"], ban["ban_seconds"]) == ("ban", "global", 60)
    assert len(ban["client"]) == 16 and int(ban["client"], 16) >= 0
    assert_nothing_leaks(caplog)


async def test_admin_calls_are_not_audited_while_the_admin_api_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="registryd")
    cfg = config_mod.parse(config_text())
    async with app_with_state(cfg, client=("127.0.0.1", 5000)) as (_, http):
        assert (await http.get("/admin/keys", headers=ADMIN)).status_code == 404
    assert audit_lines(caplog) == []
