"""The secrets and registryd config files of one benchmark run.

Every server in a run (daemon or floor) is described by a :class:`Setup` and gets a config file
written from it: address ``127.0.0.1:0``, rate limits and proof of work off unless the scenario
asks, ``/sync`` open to one bench peer token (so the memory store can be preloaded over HTTP),
and TLS from throwaway dev certificates in ``mode = "tls"``. The floor is started from the very
same file, so its Hypercorn settings are built by the same ``registryd.server.hypercorn_config``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher

from registryd.certs import DevCerts
from registryd.envelope import x25519_public

MIB = 1024 * 1024
MAX_BODY_BYTES = 8 * MIB  # /sync preload batches are a few MiB
MAX_CONNECTIONS = 1024  # the daemon's default [server] max_connections
GENEROUS_RPS = 1_000_000  # rate limits on, but never reached by a benchmark

# Cheap Argon2id parameters: the hash only guards a throwaway token on loopback, and a
# verification per /sync batch should cost microseconds, not 50 ms.
_CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


@dataclass(frozen=True)
class Secrets:
    """Random key material shared by every server of one run.

    The harness knows the server's envelope key (it wrote the config), so it can seal
    ``/register`` envelopes ahead of time.
    """

    pepper: bytes
    index_key: bytes
    server_private: bytes
    kid: bytes
    peer_token: str
    peer_token_hash: str

    @classmethod
    def generate(cls) -> Secrets:
        token = os.urandom(24).hex()
        return cls(
            pepper=os.urandom(32),
            index_key=os.urandom(32),
            server_private=os.urandom(32),
            kid=os.urandom(8),
            peer_token=token,
            peer_token_hash=_CHEAP_HASHER.hash(token),
        )

    @property
    def server_public(self) -> bytes:
        return x25519_public(self.server_private)

    def __repr__(self) -> str:
        return f"Secrets(kid={self.kid.hex()!r})"


@dataclass(frozen=True)
class Setup:
    """One server configuration: ``storage`` is ``memory``, ``leveldb`` or ``redis`` (at
    ``redis_url``), ``mode`` is ``http`` or ``tls``; ``rate_limits`` turns on generous limits
    that never trigger; ``workers`` is ``[server] workers``."""

    storage: str
    mode: str
    rate_limits: bool = False
    redis_url: str = ""
    workers: int = 1

    @property
    def label(self) -> str:
        suffix = "+ratelimit" if self.rate_limits else ""
        suffix += f"+{self.workers}workers" if self.workers > 1 else ""
        return f"{self.storage}/{self.mode}{suffix}"


def _rate_limit_table(enabled: bool) -> str:
    if not enabled:
        return "[rate_limit]\nenabled = false\n"
    rps = GENEROUS_RPS
    return (
        "[rate_limit]\nenabled = true\n"
        f"per_ip_rps = {rps}\nburst = {rps}\nban_seconds = 0\n"
        "[rate_limit.endpoints]\n"
        f"register_rps = {rps}\nresolve_rps = {rps}\ncheck_user_rps = {rps}\n"
        f"pow_challenge_rps = {rps}\n"
    )


def config_text(
    secrets: Secrets,
    setup: Setup,
    *,
    data_dir: Path,
    certs: DevCerts | None = None,
    directory: str = "probe_interval_seconds = 86400\n",
) -> str:
    """The TOML config of ``setup`` (LevelDB in ``data_dir``; ``certs`` required for TLS);
    ``directory``: the keys of its ``[directory]`` table (:mod:`bench.prober` sets its own)."""
    tls = ""
    if setup.mode == "tls":
        if certs is None:
            raise ValueError("mode tls needs dev certificates")
        tls = f'[tls]\ncert_pem_path = "{certs.server_cert}"\nkey_pem_path = "{certs.server_key}"\n'
    return (
        f'address = "127.0.0.1:0"\nmode = "{setup.mode}"\nallow_sync = true\n'
        f"[server]\nmax_body_bytes = {MAX_BODY_BYTES}\n"
        # every load generator connects from 127.0.0.1: no per-client share below the cap
        f"max_connections_per_client = {MAX_CONNECTIONS}\nworkers = {setup.workers}\n"
        f'[storage]\nkind = "{setup.storage}"\npath = "{data_dir}"\n'
        + (f'url = "{setup.redis_url}"\n' if setup.storage == "redis" else "")
        + f'index_key_hex = "{secrets.index_key.hex()}"\n'
        f"{tls}"
        f"{_rate_limit_table(setup.rate_limits)}"
        "[pow]\nenabled = false\n"
        # preloaded identities carry random keys (signing 1,000,000 would take a minute), and
        # announce replays the reference's unsigned bodies; presences outlive the run
        "[identity]\nverify_signatures = false\n"
        "[presence]\naccept_unsigned = true\nttl_seconds = 86400\n"
        # the preloaded nodes sit at documentation addresses the prober refuses: no probe round
        # (one runs at start, on an empty directory) marks them offline or writes meanwhile
        f"[directory]\n{directory}"
        f'[peers]\ntoken_hashes = ["{secrets.peer_token_hash}"]\n'
        f'[envelope]\npepper_hex = "{secrets.pepper.hex()}"\n'
        f'[[envelope.keys]]\nkid_hex = "{secrets.kid.hex()}"\n'
        f'x25519_private_key_hex = "{secrets.server_private.hex()}"\nactive = true\n'
    )


def write_config(
    path: Path, secrets: Secrets, setup: Setup, *, data_dir: Path, certs: DevCerts | None
) -> Path:
    """Write the config of ``setup`` to ``path`` (mode 0600: it holds secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(config_text(secrets, setup, data_dir=data_dir, certs=certs))
    return path
