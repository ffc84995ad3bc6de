"""The running registry's one state: config, envelope key ring, storage, clock, node directory.

:class:`Runtime` is what every handler, the admin API and the background tasks read; ``serve``,
the tests and the benchmarks make one and hand it to :func:`registryd.app.create_app`. A reload
(SIGHUP, ``POST /admin/reload``) swaps the config and the key ring in one assignment each, so a
request sees the old ones or the new ones, never a mix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import anyio.to_thread
import msgspec

from . import config as config_mod
from .config import Config
from .directory import Directory
from .directory.prober import Resolver
from .directory.ssrf import resolve
from .errors import ConfigError, KeyUnavailable
from .keyring import KeyRing, key_warnings
from .keystore import load_keyring
from .logs import audit
from .metrics import Metrics
from .metrics.state import StateCollector
from .metrics.storage import instrument
from .storage import Storage
from .timespec import now_ms

log = logging.getLogger("registryd")

# Config sections read once at start-up (by Hypercorn, the storage, the middleware): a reload
# that changes them keeps the running values and logs that a restart is needed.
RESTART_ONLY = (
    "address",
    "mode",
    "tls",
    "storage",
    "server",
    "rate_limit",
    "pow",
    "trusted_proxies",
    "logging",
    "metrics",
)


class Runtime:
    """The registry's state over one ``config``, open ``storage`` and ``keyring``.

    ``clock`` returns Unix time in ms (tests pass a controllable one). ``config_path`` is the
    file :meth:`reload` reads. ``resolver`` maps a host name to its addresses for the node
    directory (default: the event loop's ``getaddrinfo``; tests pass a fake). The caller owns
    ``storage`` and closes it. ``metrics`` (:mod:`registryd.metrics`) is this registry's own;
    ``storage``'s operations are timed into it from now on.
    """

    def __init__(
        self,
        config: Config,
        storage: Storage,
        keyring: KeyRing,
        clock: Callable[[], int] = now_ms,
        *,
        config_path: str | None = None,
        resolver: Resolver = resolve,
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.config_path = config_path
        self.config = config
        self.keyring = keyring
        self._reloading = asyncio.Lock()
        self.metrics = Metrics()
        instrument(storage, self.metrics)
        self.directory = Directory(
            storage,
            clock,
            lambda: self.config.directory,
            config.index_key(),
            resolver=resolver,
            metrics=self.metrics,
        )
        self.metrics.watch(StateCollector(lambda: self.keyring, clock, self.directory.node_counts))
        self.apply(config, keyring)

    def __repr__(self) -> str:
        return f"Runtime(storage={self.storage!r}, keyring={self.keyring!r})"

    def apply(self, config: Config, keyring: KeyRing) -> list[str]:
        """Serve with ``config`` and ``keyring`` from now on, except the :data:`RESTART_ONLY`
        sections, which keep their running values; returns those that differ."""
        pinned = {name: getattr(self.config, name) for name in RESTART_ONLY}
        stale = [name for name, value in pinned.items() if getattr(config, name) != value]
        running = self.config.peers  # the peer listener is bound once; its tokens reload
        peers = msgspec.structs.replace(
            config.peers, listen=running.listen, client_ca_pem_path=running.client_ca_pem_path
        )
        if peers != config.peers:
            stale.append("peers.listen")
        self.config = msgspec.structs.replace(config, peers=peers, **pinned)
        self.keyring = keyring  # one assignment: requests see the old set or the new one
        return stale

    def active_kid(self) -> str | None:
        """The kid (16 hex) of the key sealing resolves now, or None (degraded)."""
        try:
            return self.keyring.active(self.clock()).kid.hex()
        except KeyUnavailable:
            return None

    async def reload(self) -> list[str]:
        """Re-read the config file (and its keystore), :meth:`apply` it and re-open the node
        directory's GeoIP database.

        The reading, Argon2 included, runs in a worker thread. Raises :class:`ConfigError`
        (the running configuration is then unchanged); returns the sections needing a restart.
        """
        path = self.config_path
        if path is None:
            raise ConfigError("", "this registry was not started from a config file")

        def read() -> tuple[Config, KeyRing]:
            cfg = config_mod.load(path)
            return cfg, load_keyring(cfg.envelope)

        async with self._reloading:  # one at a time, so the last file read is the one applied
            cfg, keyring = await anyio.to_thread.run_sync(read)
            before = self.active_kid()
            stale = self.apply(cfg, keyring)
            await self.directory.reload(self.config.directory)
        log.info("reloaded %s: %d envelope keys", path, len(keyring.keys))
        if (after := self.active_kid()) != before:  # rotated: by the admin API or `keys rotate`
            audit("key.rotated", previous_kid=before or "none", active_kid=after or "none")
        if stale:
            log.warning("changed but needing a restart (kept as they were): %s", ", ".join(stale))
        for warning in key_warnings(keyring, self.clock(), cfg.envelope.expiry_warning_days):
            log.warning("%s", warning)
        return stale
