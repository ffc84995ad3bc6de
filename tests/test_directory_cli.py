"""``registryd directory`` without a server: usage errors and the table's safety."""

from __future__ import annotations

import pytest

from registryd import cli
from registryd.cli.directory import ENV_TOKEN, table


def test_no_token_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENV_TOKEN, raising=False)
    assert cli.main(["directory", "--url", "https://127.0.0.1:1", "list"]) == 2
    assert "no admin token" in capsys.readouterr().err


def test_an_unreachable_registry_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_TOKEN, "secret-token-value")
    assert cli.main(["directory", "--url", "http://127.0.0.1:1", "remove", "a.example"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "secret-token-value" not in err


def test_the_table_escapes_what_nodes_chose() -> None:
    """A node's name is its own: terminal escapes in it must not reach the operator's tty."""
    node = {
        "status": "online",
        "name": "evil\x1b[2J\nname",
        "host": "a.example",
        "ip": "192.0.2.1",
        "country_code": "FR",
        "last_latency_ms": 12,
        "uptime_ratio": 0.5,
        "last_seen_at": "2025-01-01T00:00:00.000Z",
        "pubkey_b64": "A" * 43 + "=",
    }
    lines = table([node]).splitlines()
    assert len(lines) == 2 and "\x1b" not in lines[1]
    assert "evil\\x1b[2J\\nname" in lines[1]
    assert lines[1].split() == [
        "online",
        "evil\\x1b[2J\\nname",
        "a.example",
        "192.0.2.1",
        "FR",
        "12",
        "ms",
        "50%",
        "2025-01-01T00:00:00.000Z",
        "A" * 16,
    ]
