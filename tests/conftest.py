"""Shared fixtures: the spec 7.2 key material, configs, and in-process apps over both backends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from registryd import config as config_mod
from registryd import wire
from registryd.app import create_app
from registryd.certs import DevCerts, write_dev_certs
from registryd.config import Config
from registryd.server import bind_socket, serve
from registryd.storage import Storage, open_storage

# Spec section 7.2 inputs.
PEPPER_HEX = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"
SERVER_PRIVATE_HEX = "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
SERVER_PUBLIC_HEX = "d89e3bad79437dbed9f843418304f460ff05c7fe81fe4a9577a804cb9367ff66"
KID_HEX = "0001020304050607"
INDEX_KEY_HEX = (
    "5d374138f1840c16a2ce6920d03848edaa713ab64af58e4a3a1d685bc48aa420"  # random, not a pattern
)
ALICE_HANDLE_HEX = "4e586a7d57683f7ae69c6dbe407c986df78603ca12e9cab26d245df1349f08b5"


NO_RATE_LIMIT = "[rate_limit]\nenabled = false\n"


def config_text(
    *,
    kind: str = "memory",
    path: str = "",
    mode: str = "http",
    extra: str = "",
    tls: str = "",
    tables: str = NO_RATE_LIMIT,
) -> str:
    """A valid TOML config using the spec 7.2 keys; ``extra`` is inserted as top-level keys and
    ``tables`` as TOML tables (by default rate limiting is off: most tests are not about it)."""
    storage = f'[storage]\nkind = "{kind}"\nindex_key_hex = "{INDEX_KEY_HEX}"\n'
    if path:
        storage += f'path = "{path}"\n'
    return (
        f'address = "127.0.0.1:0"\nmode = "{mode}"\n{extra}\n'
        f"{storage}{tls}{tables}"
        f'[envelope]\npepper_hex = "{PEPPER_HEX}"\n'
        f'[[envelope.keys]]\nkid_hex = "{KID_HEX}"\n'
        f'x25519_private_key_hex = "{SERVER_PRIVATE_HEX}"\nactive = true\n'
    )


def make_config(**kwargs: str) -> Config:
    return config_mod.parse(config_text(**kwargs))


def write_config(path: Path, text: str) -> Path:
    """Write a config file as an operator must: mode 0600, since ``config.load`` refuses a
    config (it holds the pepper) that group or others may read."""
    path.touch(mode=0o600)
    path.chmod(0o600)  # an existing file keeps its mode through touch
    path.write_text(text, encoding="utf-8")
    return path


def seal_resolution(request: wire.ResolveRequest, plaintext: bytes) -> wire.Envelope:
    """``plaintext`` sealed for ``request`` exactly as the server seals a resolve answer, with
    the spec 7.2 server key (for fake servers in client tests)."""
    handle = bytes.fromhex(request.handle)
    requester = bytes.fromhex(request.requester_ephemeral_pubkey_hex)
    return make_config().keyring().resolution_sealer(handle, requester)(plaintext)


@pytest.fixture(params=["memory", "leveldb"])
def backend_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """A config for each storage backend (LevelDB under ``tmp_path/db``)."""
    kind = str(request.param)
    return make_config(kind=kind, path=str(tmp_path / "db") if kind == "leveldb" else "")


@pytest.fixture
async def storage(backend_config: Config) -> AsyncIterator[Storage]:
    store = open_storage(backend_config)
    try:
        yield store
    finally:
        await store.close()


class Clock:
    """A controllable clock in Unix milliseconds."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        self.now_ms += int(seconds * 1000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def api(
    backend_config: Config, storage: Storage, clock: Clock
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking in-process to the app, over each backend, GC task off."""
    app = create_app(backend_config, storage, clock=clock, run_gc=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        yield client


# -- real servers ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    """Dev CA, server (localhost, 127.0.0.1, ::1) and client certificates, made once."""
    return write_dev_certs(tmp_path_factory.mktemp("certs"))


def tls_table(certs: DevCerts, *, mtls: bool = False) -> str:
    table = f'[tls]\ncert_pem_path = "{certs.server_cert}"\nkey_pem_path = "{certs.server_key}"\n'
    if mtls:
        table += f'client_ca_pem_path = "{certs.ca}"\n'
    return table


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[str]:
    """Serve ``config`` with real Hypercorn in this event loop on 127.0.0.1:0; yields the URL."""
    stop = asyncio.Event()
    urls: list[str] = []
    task = asyncio.create_task(
        serve(
            config,
            sock=bind_socket("127.0.0.1", 0),
            shutdown_trigger=stop.wait,
            on_ready=urls.append,
        )
    )
    while not urls and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    try:
        yield urls[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


# -- the daemon as a process -------------------------------------------------------------


class Daemon:
    """``python -m registryd serve`` in a subprocess; the URL is read from its start-up log."""

    def __init__(
        self,
        config_path: Path,
        log_level: str = "info",
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "registryd",
                "serve",
                "--config",
                str(config_path),
                "--log-level",
                log_level,
                *args,
            ],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self.lines: list[str] = []
        self.url = ""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r"listening on (\S+)", line)
            if found:
                self.url = found.group(1)
                break
        if not self.url:
            self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait()

    def wait(self) -> int:
        """Wait for the process to exit (bounded); returns its exit code."""
        _, err = self.proc.communicate(timeout=30)
        self.lines.append(err)
        return self.proc.returncode

    @property
    def log(self) -> str:
        return "".join(self.lines)


@contextlib.contextmanager
def daemon(
    config_path: Path,
    log_level: str = "info",
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    cwd: Path | None = None,
) -> Iterator[Daemon]:
    """A running :class:`Daemon` (extra ``serve`` ``args``, in ``cwd``), stopped with SIGTERM
    on exit."""
    d = Daemon(config_path, log_level, env, args, cwd)
    try:
        assert d.url, d.log
        yield d
    finally:
        d.stop()
