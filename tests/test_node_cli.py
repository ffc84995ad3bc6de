"""``registryd node init|run|status``: in-process through ``main``, and ``run`` as a process
against a fake directory served by Hypercorn on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import stat
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registryd.cli import main
from registryd.node import NodeKey, State, load_config, read_state
from registryd.node.config import TEMPLATE
from registryd.node.state import AgentState, rfc3339, write_state
from tests.node_fake import HOST, FakeDirectory, make_node, node_toml, serving


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_template_and_a_private_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc" / "node.toml"
    assert main(["node", "init", "--config", str(config)]) == 0
    assert config.read_text() == TEMPLATE
    key_path = tmp_path / "etc" / "node.key"
    assert mode(key_path) == 0o600
    key = NodeKey.load(key_path)
    out = capsys.readouterr().out
    assert "fill in registry_url and [payload]" in out
    assert f"public key {key.pubkey_prefix}..." in out and key.pubkey_b64 not in out


def test_init_makes_the_key_a_config_names(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(node_toml(key_path="keys/agent.pem"))
    assert main(["node", "init", "--config", str(config)]) == 0
    assert mode(tmp_path / "keys" / "agent.pem") == 0o600
    assert NodeKey.load(load_config(config).key_path).public_key


def test_init_refuses_to_overwrite_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_node(tmp_path)
    key_path = tmp_path / "node.key"
    before = key_path.read_bytes()
    assert main(["node", "init", "--config", str(config)]) == 1
    assert "node.key exists; refusing to overwrite a node key" in capsys.readouterr().err
    assert key_path.read_bytes() == before and mode(key_path) == 0o600


def test_init_refuses_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "node.toml"
    config.write_text(node_toml(max_retry=0))
    assert main(["node", "init", "--config", str(config)]) == 1
    assert "config error: max_retry" in capsys.readouterr().err
    assert not (tmp_path / "node.key").exists()


def test_run_with_a_bad_config_names_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(node_toml(heartbeat_interval_seconds=0))
    assert main(["node", "run", "--config", str(config)]) == 1
    assert "config error: heartbeat_interval_seconds" in caplog.text


def test_run_with_an_exposed_key_refuses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_node(tmp_path)
    (tmp_path / "node.key").chmod(0o644)
    assert main(["node", "run", "--config", str(config)]) == 1
    assert "key_path" in caplog.text and "chmod 600" in caplog.text


def write_snapshot(config: Path, state: State, updated: float, **fields: object) -> None:
    snapshot = AgentState(
        state=state,
        since=rfc3339(updated - 100),
        updated_at=rfc3339(updated),
        registry_url="https://registry.example",
        host=HOST,
        pubkey_prefix="ABCDEFGHIJKLMNOP",
        pid=4242,
        **fields,  # type: ignore[arg-type]
    )
    write_state(load_config(config).state_path, snapshot)


def test_status_of_a_registered_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_node(tmp_path)
    now = time.time()
    write_snapshot(config, State.REGISTERED, now, last_heartbeat_at=rfc3339(now))
    assert main(["node", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^state:\s+registered$", out, re.M)
    assert re.search(rf"^last heartbeat:\s+{re.escape(rfc3339(now))}$", out, re.M)
    assert re.search(r"^node key:\s+ABCDEFGHIJKLMNOP\.\.\.$", out, re.M)
    assert main(["node", "status", "--config", str(config), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "registered" and shown["stale"] is False and shown["pid"] == 4242


def test_status_of_a_node_that_is_not_registered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_node(tmp_path)
    assert main(["node", "status", "--config", str(config)]) == 3
    assert "no state file" in capsys.readouterr().out
    write_snapshot(config, State.DISCONNECTED, time.time(), last_error="register: HTTP 503 X: y")
    assert main(["node", "status", "--config", str(config)]) == 3
    out = capsys.readouterr().out
    assert re.search(r"^state:\s+disconnected$", out, re.M)
    assert re.search(r"^last error:\s+register: HTTP 503 X: y$", out, re.M)


def test_status_flags_a_stale_registered_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_node(tmp_path, heartbeat_interval_seconds=30)
    write_snapshot(config, State.REGISTERED, time.time() - 91)  # > 2 x 30 s + 30 s
    assert main(["node", "status", "--config", str(config)]) == 3
    captured = capsys.readouterr()
    assert re.search(r"^state:\s+registered \(stale\)$", captured.out, re.M)
    assert "is the agent running?" in captured.err


def test_status_of_a_foreign_state_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_node(tmp_path)
    Path(load_config(config).state_path).write_text("{}")
    assert main(["node", "status", "--config", str(config)]) == 1
    assert "is not a node agent state file" in capsys.readouterr().err


# -- the agent as a process -------------------------------------------------------------------


def secret_forms(key_path: Path) -> list[str]:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    seed = key.private_bytes_raw()
    b64 = base64.b64encode(seed).decode()
    return [seed.hex(), seed.hex().upper(), b64, base64.urlsafe_b64encode(seed).decode()[:40]]


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_run_keeps_a_node_registered_and_stops_cleanly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    directory = FakeDirectory(time.time)
    async with serving(directory.app()) as url:
        config = make_node(tmp_path, url, heartbeat_interval_seconds=1, health_listen="127.0.0.1:0")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "registryd", "node", "run", "--config", str(config), "--log-level", "debug"),
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        lines: list[str] = []
        health = asyncio.get_running_loop().create_future()

        async def read_log() -> None:
            assert proc.stderr is not None
            async for raw in proc.stderr:
                lines.append(raw.decode())
                found = re.search(r"health endpoint on (\S+)/health", lines[-1])
                if found and not health.done():
                    health.set_result(found.group(1))

        reader = asyncio.create_task(read_log())
        try:
            await directory.until(lambda: directory.count("heartbeat") >= 2)
            async with httpx.AsyncClient(base_url=await asyncio.wait_for(health, 30)) as client:
                answer = await client.get("/health")
            assert answer.json() == {"status": "ok", "state": "registered"}
            assert read_state(load_config(config).state_path).state is State.REGISTERED
            proc.send_signal(signum)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await asyncio.wait_for(reader, 30)
    log = "".join(lines)
    assert "node agent stopped" in log and "Traceback" not in log
    state = read_state(load_config(config).state_path)
    assert state.state is State.DISCONNECTED and state.last_heartbeat_at is not None
    assert directory.nodes[HOST].status == "online"
    for form in secret_forms(tmp_path / "node.key"):
        assert form not in log
    key = NodeKey.load(tmp_path / "node.key")
    assert key.pubkey_prefix in log and key.pubkey_b64 not in log
    assert " DEBUG " in log  # the run really logged at the debug level
