"""Memory of Argon2 token checks (issue 8 item 10), measured on a real daemon process.

``registryd hash-token`` used argon2-cffi's defaults (RFC 9106's second option, 64 MiB a check):
200 concurrent bad admin tokens raised the daemon's peak RSS by ~130 MiB. Its hashes now cost
4 MiB a check (``registryd.tokens.TOKEN_HASHER``), and older, costlier hashes draw a warning.
The flood runs over plain HTTP so that the figure is the token checks' own, not the TLS
buffers of 200 connections.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

from registryd import config as config_mod
from registryd.cli import main
from tests.helpers import config_text, daemon

MIB = 1024 * 1024
TOKEN = "an-admin-token-" + "0123456789" * 3
FLOOD = 200


def hash_with_the_cli(
    token: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert main(["hash-token"]) == 0
    return capsys.readouterr().out.strip()


def status_bytes(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak RSS) of process ``pid``, in bytes."""
    found = re.search(rf"^{field}:\s+(\d+) kB$", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert found, field
    return int(found.group(1)) * 1024


@pytest.mark.e2e
async def test_200_concurrent_bad_tokens_grow_rss_by_less_than_50_mib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = hash_with_the_cli(TOKEN, monkeypatch, capsys)
    path = tmp_path / "registry.toml"
    path.write_text(
        config_text(
            tables=f'[rate_limit]\nenabled = false\n[admin]\ntoken_hashes = ["{digest}"]\n'
            # all FLOOD connections come from 127.0.0.1: beyond the share of 64 the listener
            # would close some at once, depending on how fast answers free connections
            f"[server]\nmax_connections_per_client = {2 * FLOOD}\n"
        )
    )
    path.chmod(0o600)
    bad = {"authorization": "Bearer " + "x" * len(TOKEN)}
    limits = httpx.Limits(max_connections=FLOOD, max_keepalive_connections=FLOOD)
    with daemon(path) as d:
        pid = d.proc.pid
        async with httpx.AsyncClient(base_url=d.url, limits=limits, timeout=120) as http:
            good = await http.get("/admin/keys", headers={"authorization": f"Bearer {TOKEN}"})
            assert good.status_code == 200  # the hash verifies; the pool's threads are up
            assert (await http.get("/admin/keys", headers=bad)).status_code == 401
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
            before = status_bytes(pid, "VmRSS")
            flood = await asyncio.gather(
                *(http.get("/admin/keys", headers=bad) for _ in range(FLOOD))
            )
            peak = status_bytes(pid, "VmHWM")
            after = status_bytes(pid, "VmRSS")
    statuses = Counter(r.status_code for r in flood)
    assert set(statuses) <= {401, 429} and statuses[401] >= 18, statuses  # 2 checking + 16 waiting
    print(f"\nRSS before {before / MIB:.1f} MiB, peak {peak / MIB:.1f}, after {after / MIB:.1f}")
    assert peak - before < 50 * MIB
    assert after - before < 50 * MIB


def test_costly_token_hashes_are_accepted_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = PasswordHasher().hash(TOKEN)  # argon2-cffi's default: 64 MiB, as hash-token wrote it
    cheap = PasswordHasher(time_cost=3, memory_cost=4096, parallelism=1).hash(TOKEN)
    path = tmp_path / "registry.toml"
    tables = f'[admin]\ntoken_hashes = ["{cheap}", "{old}"]\n[peers]\ntoken_hashes = ["{cheap}"]\n'
    path.write_text(config_text(tables=tables))
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="registryd"):
        cfg = config_mod.load(path)
    assert cfg.admin.token_hashes == (cheap, old)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("admin.token_hashes[1]: every check of this hash holds 64 MiB")
    assert "registryd hash-token" in warnings[0] and TOKEN not in warnings[0]
