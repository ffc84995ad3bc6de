"""Helpers the tests import (``from tests.helpers import ...``); conftest.py holds fixtures only.

- configs over the spec 7.2 keys (:func:`config_text`, :func:`make_config`, :func:`write_config`)
  and a controllable :class:`Clock`;
- the app in-process, built as ``serve`` builds it (:func:`make_app`, :func:`app_transport`,
  :func:`app_client`, :func:`app_with_state`);
- real servers: :func:`running` (Hypercorn in this event loop) and :class:`Daemon` /
  :func:`daemon` (``python -m registryd serve`` as a process);
- small shared pieces: :func:`seal_resolution`, :func:`error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from registryd import config as config_mod
from registryd import wire
from registryd.app import create_app
from registryd.certs import DevCerts
from registryd.config import Config
from registryd.directory.prober import Resolver
from registryd.keystore import load_keyring
from registryd.runtime import Runtime
from registryd.server import serve
from registryd.sockets import bind_socket
from registryd.storage import Storage, open_storage
from registryd.timespec import now_ms
from tests.vectors import KID_HEX, PEPPER_HEX, SERVER_PRIVATE_HEX

INDEX_KEY_HEX = (
    "5d374138f1840c16a2ce6920d03848edaa713ab64af58e4a3a1d685bc48aa420"  # random, not a pattern
)
NO_RATE_LIMIT = "[rate_limit]\nenabled = false\n"
# The reference's behaviour (extensions spec §1, §2.3): identities unchecked, unsigned announces.
REFERENCE = "[identity]\nverify_signatures = false\n[presence]\naccept_unsigned = true\n"
BASE_URL = "http://registry.test"
Client = tuple[str, int]


def config_text(
    *,
    kind: str = "memory",
    path: str = "",
    url: str = "",
    mode: str = "http",
    extra: str = "",
    tls: str = "",
    tables: str = NO_RATE_LIMIT,
    reference: bool = False,
) -> str:
    """A valid TOML config using the spec 7.2 keys; ``extra`` is inserted as top-level keys and
    ``tables`` as TOML tables (by default rate limiting is off: most tests are not about it).
    ``reference`` adds :data:`REFERENCE` (for tests of the reference's behaviour, whose spec
    vectors carry junk signatures and announce unsigned)."""
    storage = f'[storage]\nkind = "{kind}"\nindex_key_hex = "{INDEX_KEY_HEX}"\n'
    if reference:
        tables += REFERENCE
    if path:
        storage += f'path = "{path}"\n'
    if url:
        storage += f'url = "{url}"\n'
    return (
        f'address = "127.0.0.1:0"\nmode = "{mode}"\n{extra}\n'
        f"{storage}{tls}{tables}"
        f'[envelope]\npepper_hex = "{PEPPER_HEX}"\n'
        f'[[envelope.keys]]\nkid_hex = "{KID_HEX}"\n'
        f'x25519_private_key_hex = "{SERVER_PRIVATE_HEX}"\nactive = true\n'
    )


IN_PROCESS_EXPIRY = pytest.mark.parametrize("backend_config", ["memory", "leveldb"], indirect=True)
"""For tests of purging (P7, P18): they run over the backends whose purge_expired and
purge_tombstones delete expired entries. Redis expires them natively (its purges have nothing
to do, ``Storage.native_expiry``); its own tests check that an expired entry is never answered."""


def backend_of(config: Config) -> dict[str, Any]:
    """``config``'s storage as :func:`config_text` keywords (kind, and path or url)."""
    storage = config.storage
    return {
        "kind": storage.kind,
        "path": storage.path if storage.kind == "leveldb" else "",
        "url": storage.url if storage.kind == "redis" else "",
    }


def make_config(**kwargs: Any) -> Config:
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
    sealer = load_keyring(make_config().envelope).resolution_sealer(handle, requester)
    return wire.Envelope.build(*sealer(plaintext))


def error(code: str, message: str) -> dict[str, Any]:
    """The wire error body (spec 4.6) as JSON decodes it."""
    return {"error": {"code": code, "message": message}}


class Clock:
    """A controllable clock in Unix milliseconds."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        self.now_ms += int(seconds * 1000)


# -- the app in-process ------------------------------------------------------------------------


def make_state(
    config: Config,
    storage: Storage,
    clock: Callable[[], int] | None = None,
    *,
    config_path: str | None = None,
    resolver: Resolver | None = None,
) -> Runtime:
    """The app's state over an open ``storage`` (the caller closes it), as ``serve`` makes it;
    the node directory resolves hosts with ``resolver`` (default: the system's resolver)."""
    keyring = load_keyring(config.envelope)
    if resolver is None:
        return Runtime(config, storage, keyring, clock or now_ms, config_path=config_path)
    return Runtime(
        config, storage, keyring, clock or now_ms, config_path=config_path, resolver=resolver
    )


def make_app(
    config: Config,
    storage: Storage,
    *,
    clock: Callable[[], int] | None = None,
    run_gc: bool = False,
) -> Starlette:
    """The app over an open ``storage`` (the caller closes it); its lifespan runs the presence
    GC and the directory prober only with ``run_gc``."""
    return create_app(make_state(config, storage, clock), run_gc=run_gc)


def app_transport(
    config: Config,
    storage: Storage,
    *,
    clock: Callable[[], int] | None = None,
    client: Client | None = None,
    raise_app_exceptions: bool = True,
) -> httpx.ASGITransport:
    """An httpx transport into the app over ``storage``; requests come from ``client``
    (address, port). With ``raise_app_exceptions=False`` a crash is the 500 a client sees."""
    app = make_app(config, storage, clock=clock)
    options: dict[str, Any] = {} if client is None else {"client": client}
    return httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions, **options)


@contextlib.asynccontextmanager
async def opened(config: Config, storage: Storage | None = None) -> AsyncIterator[Storage]:
    """``storage``, or the config's own storage opened now and closed on exit."""
    if storage is not None:
        yield storage
        return
    own = open_storage(config)
    try:
        yield own
    finally:
        await own.close()


@contextlib.asynccontextmanager
async def app_client(
    config: Config,
    *,
    storage: Storage | None = None,
    clock: Callable[[], int] | None = None,
    client: Client | None = None,
    raise_app_exceptions: bool = True,
    base_url: str = BASE_URL,
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking in-process to the app over ``storage`` (default: the config's
    own, opened here and closed on exit), background tasks off."""
    async with opened(config, storage) as store:
        transport = app_transport(
            config, store, clock=clock, client=client, raise_app_exceptions=raise_app_exceptions
        )
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            yield http


@contextlib.asynccontextmanager
async def app_with_state(
    config: Config,
    *,
    storage: Storage | None = None,
    clock: Callable[[], int] | None = None,
    config_path: str | None = None,
    client: Client | None = None,
    base_url: str = BASE_URL,
    resolver: Resolver | None = None,
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """:func:`app_client`, with the app's state (to reload, or to look at its keys and its
    node directory, whose host names ``resolver`` resolves)."""
    async with opened(config, storage) as store:
        state = make_state(config, store, clock, config_path=config_path, resolver=resolver)
        options: dict[str, Any] = {} if client is None else {"client": client}
        transport = httpx.ASGITransport(app=create_app(state, run_gc=False), **options)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            yield state, http


# -- real servers ----------------------------------------------------------------------------


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
