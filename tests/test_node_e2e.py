"""Issue 12's end-to-end run (extensions spec §3, §4): a real registry daemon over TLS with a
LevelDB store, and a ``registryd node run`` process answering the prober on its ``health_listen``.

The node goes ``online`` in ``GET /api/nodes``; the registry is stopped until the agent has
failed two heartbeats in a row, then restarted on the same port and LevelDB directory; the node
is ``online`` again with a ``last_seen_at`` later than the restart. The prober refreshes
``last_seen_at`` too, so the agent's own recovery is checked where it shows: its state file holds
a heartbeat after the restart and ``node status`` says ``registered``. The agent's debug log holds
no private key in any encoding and the public key only as its 16-character prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeGuard

import httpx
import pytest

from registryd.certs import DevCerts
from registryd.node import NodeKey, State, load_config, read_state
from tests.helpers import NO_RATE_LIMIT, Daemon, config_text, tls_table, write_config
from tests.node_fake import encodings, private_forms

pytestmark = pytest.mark.e2e

NODE_HOST = "127.0.0.1"
HEARTBEAT_S = 1  # two register-scope requests a second: the registry's rate limit is off
DEADLINE_S = 90.0  # per wait; recovery takes ~5-15 s (backoff 2, 4, 8 s x jitter)
POLL_S = 0.2
DIRECTORY_TABLE = '[directory]\nprobe_interval_seconds = 1\nprobe_allow_cidrs = ["127.0.0.0/8"]\n'


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A free loopback port, held for the whole test.

    The socket is bound with SO_REUSEADDR and never listens: the registry and the agent (whose
    sockets set SO_REUSEADDR too) can still bind and listen on the port, while the kernel gives
    it to no one else, neither to a ``bind(("...", 0))`` nor as the local port of an outgoing
    connection. So the port the node advertises, and the registry's port while it is down
    between stop and restart, cannot be taken by another process (bind-then-close would race).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def registry_config(tmp_path: Path, certs: DevCerts, port: int) -> Path:
    """A TLS registry on 127.0.0.1:``port`` over LevelDB, probing loopback every second."""
    text = config_text(
        kind="leveldb",
        path=str(tmp_path / "db"),
        mode="tls",
        tls=tls_table(certs),
        tables=NO_RATE_LIMIT + DIRECTORY_TABLE,
    )
    fixed = text.replace('address = "127.0.0.1:0"', f'address = "127.0.0.1:{port}"')
    assert fixed != text
    return write_config(tmp_path / "registry.toml", fixed)


def node_config(directory: Path, certs: DevCerts, registry_url: str, health_port: int) -> Path:
    """``node.toml`` for a node at 127.0.0.1 answering its own ``/health`` on ``health_port``."""
    directory.mkdir()
    health = f"{NODE_HOST}:{health_port}"
    return write_config(
        directory / "node.toml",
        f'registry_url = "{registry_url}"\n'
        f'cafile = "{certs.ca}"\n'
        'key_path = "node.key"\n'
        'state_path = "node-state.json"\n'
        f"heartbeat_interval_seconds = {HEARTBEAT_S}\n"
        f'health_listen = "{health}"\n'
        "[payload]\n"
        'name = "e2e node"\n'
        f'host = "{NODE_HOST}"\n'
        f'api_base_url = "http://{health}"\n'
        'protocol_version = "1.0"\n'
        'contact_email = "ops@e2e.example"\n',
    )


async def registryd(*args: str) -> tuple[int, str, str]:
    """``python -m registryd ARGS``: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "registryd", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def registry(config: Path) -> AsyncIterator[Daemon]:
    """The registry daemon (started and stopped off the event loop: both block)."""
    d = await asyncio.to_thread(Daemon, config)
    try:
        assert d.url, d.log
        yield d
    finally:
        if d.proc.returncode is None:
            await asyncio.to_thread(d.stop)


class Agent:
    """``registryd node run`` at debug level; every log line is kept in :attr:`lines`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode("utf-8", "replace"))

    @property
    def log(self) -> str:
        return "".join(self.lines)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), 30)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            await asyncio.wait_for(self._reader, 30)
        return code


@contextlib.asynccontextmanager
async def agent(config: Path) -> AsyncIterator[Agent]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "registryd", "node", "run", "--config", str(config), "--log-level", "debug"),
        stderr=asyncio.subprocess.PIPE,
    )
    running = Agent(proc)
    try:
        yield running
    finally:
        await running.stop()


async def until(what: str, check: Callable[[], Any], node: Agent) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, which is returned;
    fails after :data:`DEADLINE_S` or as soon as the agent exits, with the agent's log."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = check()
        if asyncio.iscoroutine(found):
            found = await found
        if found:
            return found
        assert node.proc.returncode is None, f"the agent exited while {what}:\n{node.log}"
        assert time.monotonic() < deadline, f"timed out: {what}\n{node.log[-4000:]}"
        await asyncio.sleep(POLL_S)


def unix(rfc3339: str) -> float:
    return dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


async def listed(client: httpx.AsyncClient) -> dict[str, Any] | None:
    """The node's entry in ``GET /api/nodes`` (None while it is not listed)."""
    response = await client.get("/api/nodes")
    assert response.status_code == 200, response.text
    nodes = [n for n in response.json()["nodes"] if n["host"] == NODE_HOST]
    return nodes[0] if nodes else None


def online(entry: dict[str, Any] | None, seen_after: float = 0.0) -> TypeGuard[dict[str, Any]]:
    """Whether the node is listed ``online``, last seen after ``seen_after`` (Unix seconds)."""
    return (
        entry is not None
        and entry["status"] == "online"
        and entry["last_seen_at"] is not None
        and unix(entry["last_seen_at"]) > seen_after
    )


async def test_a_node_stays_registered_across_a_registry_restart(
    tmp_path: Path, certs: DevCerts
) -> None:
    tls = ssl.create_default_context(cafile=str(certs.ca))
    with reserved_port() as port, reserved_port() as health_port:
        registry_url = f"https://127.0.0.1:{port}"
        registry_toml = registry_config(tmp_path, certs, port)
        node_toml = node_config(tmp_path / "node", certs, registry_url, health_port)
        code, out, err = await registryd("node", "init", "--config", str(node_toml))
        assert code == 0, err
        cfg = load_config(node_toml)
        key_path = Path(cfg.key_path)

        async with registry(registry_toml) as first, agent(node_toml) as node:
            assert first.url == registry_url
            async with httpx.AsyncClient(base_url=registry_url, verify=tls, timeout=10) as c:

                async def online_and_probed() -> dict[str, Any] | None:
                    entry = await listed(c)
                    # last_latency_ms: the prober reached the agent's health_listen too
                    return entry if online(entry) and entry["last_latency_ms"] is not None else None

                before = await until("the node goes online", online_and_probed, node)
            assert before["api_base_url"] == f"http://{NODE_HOST}:{health_port}"
            assert before["pubkey_b64"] == NodeKey.load(key_path).pubkey_b64

            seen = len(node.lines)
            assert await asyncio.to_thread(first.stop) == 0

            def failed_twice() -> bool:  # down for 2 s x jitter at least
                return any(
                    "heartbeat failed (" in line and "attempt 2)" in line
                    for line in node.lines[seen:]
                )

            await until("two failed heartbeats in a row", failed_twice, node)
            down = read_state(cfg.state_path)
            assert down.state is State.DISCONNECTED
            assert down.last_error and down.last_error.startswith("heartbeat: ")

            restarted_at = time.time()
            async with registry(registry_toml) as second:
                assert second.url == registry_url  # same port, same LevelDB directory
                async with httpx.AsyncClient(base_url=registry_url, verify=tls, timeout=10) as c:

                    async def fresh() -> dict[str, Any] | None:
                        entry = await listed(c)
                        return entry if online(entry, seen_after=restarted_at) else None

                    again = await until("the node is online again", fresh, node)
                assert unix(again["last_seen_at"]) > unix(before["last_seen_at"])

                def heartbeat_after_restart() -> bool:
                    state = read_state(cfg.state_path)
                    beat = state.last_heartbeat_at
                    registered = state.state is State.REGISTERED
                    return registered and beat is not None and unix(beat) > restarted_at

                await until("the agent's heartbeat succeeds", heartbeat_after_restart, node)
                code, out, err = await registryd("node", "status", "--config", str(node_toml))
                assert code == 0, out + err
                assert re.search(r"^state:\s+registered$", out, re.MULTILINE), out
                assert "heartbeat ok after" in node.log
                assert await node.stop() == 0  # before the registry: a clean end to the log
        registry_log = first.log + second.log

    log = node.log
    assert "Traceback" not in log and "Traceback" not in registry_log
    assert "node agent stopped" in log and " DEBUG " in log  # logged at debug, to the end
    for form in private_forms(key_path):
        assert form not in log
    key = NodeKey.load(key_path)
    for form in encodings(key.public_key):
        assert form not in log
    assert key.pubkey_b64[:17] not in log and key.pubkey_prefix in log
