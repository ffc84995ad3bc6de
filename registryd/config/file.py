"""The whole config file: :class:`Config`, its cross-table checks, :func:`parse` and :func:`load`.

Every problem is one :class:`~registryd.errors.ConfigError` naming the dotted key path, e.g.
``rate_limit.endpoints.resolv_rps: unknown key``; secrets never appear in one.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import blake3
import msgspec

from .. import tomlfile
from ..errors import ConfigError
from ..eventloop import loop_factory
from ..files import exposed
from ..secret import Secret
from ..sockets import parse_address
from ..tokens import is_argon2id, token_hash_warnings
from .tables import (
    KIB,
    AdminConfig,
    DirectoryConfig,
    EnvelopeConfig,
    IdentityConfig,
    LoggingConfig,
    MetricsConfig,
    NonNegative,
    PeersConfig,
    PowConfig,
    PresenceConfig,
    PrivacyConfig,
    RateLimitConfig,
    ServerConfig,
    StorageConfig,
    TlsConfig,
)

log = logging.getLogger("registryd")


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole config file. ``address`` is ``IP:port`` (``[::1]:8443`` for IPv6)."""

    envelope: EnvelopeConfig
    address: str = "0.0.0.0:8443"
    mode: str = "tls"
    trusted_proxies: tuple[str, ...] = ()
    allow_sync: bool = False
    max_nodes: NonNegative = 2048
    rate_limit: RateLimitConfig = RateLimitConfig()
    tls: TlsConfig | None = None
    storage: StorageConfig = StorageConfig()
    presence: PresenceConfig = PresenceConfig()
    identity: IdentityConfig = IdentityConfig()
    pow: PowConfig = PowConfig()
    server: ServerConfig = ServerConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    peers: PeersConfig = PeersConfig()
    admin: AdminConfig = AdminConfig()
    directory: DirectoryConfig = DirectoryConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()

    @property
    def host_port(self) -> tuple[str, int]:
        """``address`` split into (IP string without brackets, port)."""
        return parse_address(self.address)

    def index_key(self) -> Secret:
        """The 32-byte server-only index key, derived from the pepper if not configured."""
        if self.storage.index_key_hex is not None:
            return self.storage.index_key_hex
        return Secret(
            blake3.blake3(
                self.envelope.pepper_hex.reveal(), derive_key_context="registryd index key v1"
            ).digest()
        )


def _validate_directory(directory: DirectoryConfig) -> None:
    for i, cidr in enumerate(directory.probe_allow_cidrs):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(
                f"directory.probe_allow_cidrs[{i}]", "expected an IP address or CIDR"
            ) from None
    if directory.geoip_db_path is not None and not directory.geoip_db_path.strip():
        raise ConfigError("directory.geoip_db_path", "must not be empty (omit it for no GeoIP)")


def _validate_envelope(envelope: EnvelopeConfig) -> None:
    if envelope.keystore_passphrase_env and envelope.keystore_passphrase_file:
        raise ConfigError(
            "envelope.keystore_passphrase_file", "set it or keystore_passphrase_env, not both"
        )
    if envelope.keystore_path is not None:
        if envelope.keys:
            raise ConfigError("envelope.keystore_path", "set it or inline envelope.keys, not both")
        if not envelope.keystore_path.strip():
            raise ConfigError("envelope.keystore_path", "must not be empty")
        return
    keys = envelope.keys
    if not keys:
        raise ConfigError("envelope.keys", "at least one key is required (or a keystore_path)")
    seen: set[str] = set()
    for i, key in enumerate(keys):
        kid = key.kid_hex.lower()
        if kid in seen:
            raise ConfigError(f"envelope.keys[{i}].kid_hex", f"duplicate kid {kid}")
        seen.add(kid)
    if not any(key.active for key in keys):
        raise ConfigError("envelope.keys", "no key has active = true")


def secret_paths(cfg: Config) -> list[tuple[str, Secret]]:
    """The secrets held in the config text, by key path: pepper, index key, inline keys."""
    held = [("envelope.pepper_hex", cfg.envelope.pepper_hex)]
    if cfg.storage.index_key_hex is not None:
        held.append(("storage.index_key_hex", cfg.storage.index_key_hex))
    for i, key in enumerate(cfg.envelope.keys):
        held.append((f"envelope.keys[{i}].x25519_private_key_hex", key.x25519_private_key_hex))
    return held


def placeholder(secret: bytes) -> bool:
    """Whether a 32-byte secret is a placeholder: at most 8 distinct byte values (all-zero, one
    repeated byte, ``deadbeef`` ...). A random 32-byte value is that with probability < 1e-33."""
    return len(set(secret)) <= 8


def _validate_secrets(cfg: Config) -> None:
    for path, secret in secret_paths(cfg):
        if placeholder(secret.reveal()):
            raise ConfigError(
                path,
                "a placeholder, not a secret (all-zero or a short repeated pattern, as in the "
                "example config); run `registryd init --out PATH` for a config with fresh "
                "random secrets",
            )


def _validate_peers(cfg: Config) -> None:
    peers = cfg.peers
    if peers.listen is None:
        if peers.client_ca_pem_path is not None:
            raise ConfigError("peers.client_ca_pem_path", "only with peers.listen")
        return
    host, port = parse_address(peers.listen, "peers.listen")
    if cfg.mode != "tls":
        raise ConfigError("peers.listen", 'the peer listener needs mode = "tls"')
    if not (peers.client_ca_pem_path or "").strip():
        raise ConfigError("peers.client_ca_pem_path", "required with peers.listen (a peer-only CA)")
    if port and (host, port) == cfg.host_port:
        raise ConfigError("peers.listen", "must differ from address")


def _validate_metrics(cfg: Config) -> None:
    """``metrics.address``: an ``IP:port`` of its own, never the public (or peer) listener's."""
    if cfg.metrics.address is None:
        return
    port = parse_address(cfg.metrics.address, "metrics.address")[1]
    taken = [("address", cfg.address)]
    if cfg.peers.listen is not None:
        taken.append(("peers.listen", cfg.peers.listen))
    for key, address in taken:
        if port and port == parse_address(address, key)[1]:  # any host: the safer reading
            raise ConfigError(
                "metrics.address", f"must not be {key}'s port: metrics have a listener of their own"
            )


def _validate_paths(cfg: Config) -> None:
    """Refuse a keystore inside the LevelDB directory: LevelDB owns every file in it."""
    keystore = cfg.envelope.keystore_path
    if keystore is None or cfg.storage.kind != "leveldb":
        return
    db = Path(cfg.storage.path).resolve()
    if Path(keystore).resolve().is_relative_to(db):
        raise ConfigError(
            "envelope.keystore_path",
            f"must not be inside storage.path ({cfg.storage.path}); keep it beside the "
            "database, e.g. /var/lib/registryd/keys.json next to /var/lib/registryd/db",
        )


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, or None (``redis://``, ``rediss://``, ``unix://``,
    ``redis+cluster://``, ``rediss+cluster://``; a host, or a socket path, is required)."""
    parts = urlsplit(url)
    schemes = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
    if parts.scheme not in schemes:
        return f"expected a URL starting {', '.join(s + '://' for s in schemes)}"
    if parts.scheme == "unix":
        return None if parts.path else "unix:// needs the socket's path"
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "bad port"
    return None if parts.hostname else "needs a host"


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``<redacted>`` (for printing)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:<redacted>@{host}").geturl()


def _validate_redis(cfg: Config) -> None:
    storage = cfg.storage
    if storage.kind != "redis":
        return
    if (problem := redis_url_problem(storage.url)) is not None:
        raise ConfigError("storage.url", f'{problem} (kind = "redis")')
    if storage.wait_replicas and "+cluster://" in storage.url:
        raise ConfigError("storage.wait_replicas", "not with a Redis Cluster url")
    if storage.ca_file is not None:
        if not storage.url.startswith("rediss"):
            raise ConfigError("storage.ca_file", "only with a rediss:// url")
        if not Path(storage.ca_file).is_file():
            raise ConfigError("storage.ca_file", f"file not found: {storage.ca_file}")


def _validate_workers(cfg: Config) -> None:
    """N workers must share every piece of state: storage, limits and proof of work."""
    if cfg.server.workers == 1:
        return
    if cfg.storage.kind != "redis":
        raise ConfigError(
            "server.workers",
            f'{cfg.server.workers} workers need shared storage: [storage] kind = "redis" '
            f'(not "{cfg.storage.kind}")',
        )
    shared = cfg.rate_limit.storage_uri != "memory://"
    if (cfg.rate_limit.enabled or cfg.pow.enabled) and not shared:
        raise ConfigError(
            "server.workers",
            f"{cfg.server.workers} workers need shared limits and proof of work: "
            '[rate_limit] storage_uri = "redis://..." (not "memory://")',
        )


def _validate(cfg: Config) -> None:
    parse_address(cfg.address)
    for i, proxy in enumerate(cfg.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"trusted_proxies[{i}]", "expected an IP address or CIDR") from None
    _validate_envelope(cfg.envelope)
    _validate_secrets(cfg)
    _validate_directory(cfg.directory)
    if cfg.mode not in ("tls", "http"):
        raise ConfigError("mode", 'expected "tls" or "http"')
    if cfg.mode == "tls":
        if cfg.tls is None:
            raise ConfigError("tls", 'mode = "tls" needs a [tls] table')
        for name in ("cert_pem_path", "key_pem_path"):
            if not getattr(cfg.tls, name).strip():
                raise ConfigError(f"tls.{name}", "must not be empty")
    ca = cfg.tls.client_ca_pem_path if cfg.tls is not None else None
    if ca is not None and not ca.strip():  # "" would silently serve without client certificates
        raise ConfigError(
            "tls.client_ca_pem_path",
            "must not be empty; remove the key to serve without client certificates",
        )
    if cfg.storage.kind == "sled":
        raise ConfigError("storage.kind", 'sled is not supported; use "leveldb"')
    if cfg.storage.kind not in ("leveldb", "memory", "redis"):
        raise ConfigError("storage.kind", 'expected "leveldb", "memory" or "redis"')
    _validate_redis(cfg)
    if cfg.storage.kind == "leveldb" and not cfg.storage.path.strip():
        raise ConfigError("storage.path", "must not be empty for leveldb")
    if cfg.pow.enabled:
        if not 1 <= cfg.pow.difficulty <= 30:
            raise ConfigError("pow.difficulty", "expected 1..=30")
        if cfg.pow.ttl_seconds <= 0:
            raise ConfigError("pow.ttl_seconds", "expected > 0")
    if cfg.server.max_connections_per_client > cfg.server.max_connections:
        raise ConfigError("server.max_connections_per_client", "expected <= server.max_connections")
    pad = cfg.privacy.resolve_pad_bytes
    if not 256 <= pad <= 1024 * KIB or pad & (pad - 1):
        raise ConfigError(
            "privacy.resolve_pad_bytes", "expected a power of two from 256 to 1048576"
        )
    _validate_peers(cfg)
    _validate_metrics(cfg)
    _validate_paths(cfg)
    uri = cfg.rate_limit.storage_uri
    if uri != "memory://" and (problem := redis_url_problem(uri)) is not None:
        raise ConfigError("rate_limit.storage_uri", f'"memory://", or a Redis URL: {problem}')
    _validate_workers(cfg)
    loop_factory(cfg.server.event_loop)  # uvloop installed, if asked for
    for table, hashes in (("peers", cfg.peers.token_hashes), ("admin", cfg.admin.token_hashes)):
        for i, digest in enumerate(hashes):
            if not is_argon2id(digest):
                raise ConfigError(
                    f"{table}.token_hashes[{i}]", "expected an Argon2id hash (registryd hash-token)"
                )


def parse(text: str, *, source: str | os.PathLike[str] | None = None) -> Config:
    """Parse and validate TOML ``text`` (read from ``source``, a path named in errors); raises
    :class:`ConfigError`."""
    raw = tomlfile.loads(text, source=source)
    peers = raw.get("peers")
    if isinstance(peers, dict) and "mtls" in peers:
        raise ConfigError(
            "peers.mtls",
            "removed: a certificate from tls.client_ca_pem_path no longer makes a peer; use peer "
            "tokens, or peers.listen with a peer-only peers.client_ca_pem_path (README: Peers)",
        )
    cfg = tomlfile.convert(raw, Config)
    _validate(cfg)
    return cfg


def load(path: str | Path) -> Config:
    """Read, parse and validate the config file at ``path``; raises :class:`ConfigError`.

    The file holds secrets (at least ``envelope.pepper_hex``), so, like the keystore, it is
    refused when group or others may access it (it must be mode 0600 or 0400); the error names
    the secrets it holds. Relative ``tls.*`` and ``storage.path`` values are relative to the
    working directory, as in the reference.
    """
    text, status = tomlfile.read(path, what="config file")
    cfg = parse(text, source=path)
    if problem := exposed(status):  # checked on the file that was read
        first, *others = [name for name, _ in secret_paths(cfg)]
        also = f" (it also holds {', '.join(others)})" if others else ""
        raise ConfigError(first, f"held in {path}, which {problem}{also}")
    for table, hashes in (("peers", cfg.peers.token_hashes), ("admin", cfg.admin.token_hashes)):
        for warning in token_hash_warnings(table, hashes):
            log.warning("%s", warning)
    return cfg
