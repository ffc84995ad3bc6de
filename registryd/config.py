"""The daemon's one typed config, loaded from TOML and validated strictly (spec 4.11 + DESIGN).

Every problem is one :class:`~registryd.errors.ConfigError` naming the dotted key path, e.g.
``rate_limit.endpoints.resolv_rps: unknown key``. Secrets (``pepper_hex``, ``index_key_hex``,
``x25519_private_key_hex``) are held as :class:`~registryd.secret.Secret` and never printed.
Times are in seconds unless the key name says ``_ms``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Annotated

import blake3
import msgspec

from . import tomlfile
from .errors import ConfigError
from .files import exposed
from .secret import Secret
from .sockets import parse_address
from .tokens import is_argon2id, token_hash_warnings

log = logging.getLogger("registryd")

SECONDS = 1
DAY = 86_400 * SECONDS
KIB = 1024

Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
KidHex = Annotated[str, msgspec.Meta(pattern="^[0-9a-fA-F]{16}\\Z")]


class EndpointLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[rate_limit.endpoints]``: token refill rates in requests per second.

    Each bucket holds ``rate_limit.burst`` tokens. ``pow_challenge_rps`` (registryd only) limits
    ``GET /pow/challenge``.
    """

    register_rps: Positive = 1
    resolve_rps: Positive = 3
    check_user_rps: Positive = 10
    pow_challenge_rps: Positive = 2


class RateLimitConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[rate_limit]`` (spec 4.8): per-client token buckets; ``ban_seconds`` after a violation.

    A client is its TCP peer address (IPv6: its /64), or, behind a ``trusted_proxies`` peer, the
    right-most untrusted ``X-Forwarded-For`` hop. ``max_clients`` bounds the clients tracked at
    once (about 250 bytes each, at most 350). ``storage_uri`` names the limiter store; only ``memory://``
    exists in this version.
    """

    enabled: bool = True
    per_ip_rps: Positive = 5
    burst: Positive = 10
    ban_seconds: NonNegative = 300 * SECONDS
    max_clients: Positive = 100_000
    storage_uri: str = "memory://"
    endpoints: EndpointLimits = EndpointLimits()


class KeyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``[[envelope.keys]]`` entry: 8-byte kid and 32-byte X25519 private key, in hex."""

    kid_hex: KidHex
    x25519_private_key_hex: Secret
    active: bool = False
    not_after_epoch_ms: NonNegative | None = None


class EnvelopeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[envelope]``: the 32-byte pepper every client must know, and the server's keys —
    either inline ``keys`` (as the reference) or a ``keystore_path`` managed with
    ``registryd keys``, not both. An encrypted keystore's passphrase comes from the environment
    variable named by ``keystore_passphrase_env`` or the file ``keystore_passphrase_file``.
    Start-up and ``check-config`` warn when the active key expires within
    ``expiry_warning_days``.
    """

    pepper_hex: Secret
    keys: tuple[KeyConfig, ...] = ()
    keystore_path: str | None = None
    keystore_passphrase_env: str | None = None
    keystore_passphrase_file: str | None = None
    expiry_warning_days: NonNegative = 7


class TlsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[tls]``: PEM paths. ``client_ca_pem_path`` makes client certificates required (mTLS)."""

    cert_pem_path: str
    key_pem_path: str
    client_ca_pem_path: str | None = None


class StorageConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[storage]``: ``kind`` is ``"leveldb"`` (directory ``path``) or ``"memory"``.

    ``index_key_hex`` (32 bytes) keys the blind indexes and the at-rest encryption; if absent
    it is derived from the pepper, which clients know, and a warning is logged.
    """

    kind: str = "leveldb"
    path: str = "./registry_db"
    index_key_hex: Secret | None = None


class PresenceConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[presence]``: announcements live ``ttl_seconds`` (at most a year); GC runs every
    ``gc_interval_seconds`` (at most a day)."""

    ttl_seconds: Annotated[int, msgspec.Meta(gt=0, le=365 * DAY)] = 300 * SECONDS
    gc_interval_seconds: Annotated[int, msgspec.Meta(gt=0, le=DAY)] = 60 * SECONDS


class PowConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[pow]`` (spec 4.7): hashcash on ``/resolve`` and ``/check_user``.

    ``difficulty`` is in leading zero bits of SHA-256 (expected work ``2**difficulty`` hashes);
    a challenge lives ``ttl_seconds``. With ``adaptive`` (registryd only) each doubling of a
    client's request rate above ``adaptive_free_rps`` adds one bit, up to 30.
    """

    enabled: bool = False
    difficulty: Annotated[int, msgspec.Meta(ge=0, le=255)] = 18
    ttl_seconds: NonNegative = 120 * SECONDS
    adaptive: bool = False
    adaptive_free_rps: Annotated[float, msgspec.Meta(gt=0)] = 1.0


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[server]`` (registryd only): request body cap in bytes; deadlines in seconds.

    A client must finish its TLS handshake within ``handshake_timeout_seconds``, its request
    headers within ``header_timeout_seconds`` and its whole body within ``body_timeout_seconds``
    of the request's start, or it is disconnected. ``shutdown_grace_seconds`` is how long
    in-flight requests get to finish on SIGINT/SIGTERM. At most ``max_connections`` are open,
    at most ``max_connections_per_client`` from one client address (IPv6: one /64; trusted
    proxies are exempt); see :mod:`registryd.listener`.
    """

    max_body_bytes: Positive = 64 * KIB
    shutdown_grace_seconds: Positive = 10 * SECONDS
    handshake_timeout_seconds: Positive = 10 * SECONDS
    header_timeout_seconds: Positive = 10 * SECONDS
    body_timeout_seconds: Positive = 10 * SECONDS
    max_connections: Positive = 1024
    max_connections_per_client: Positive = 64


class PrivacyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[privacy]`` (registryd only).

    ``constant_shape_resolve``: a resolve miss returns an envelope shaped like a hit (same
    status, headers and length) instead of ``"envelope": null``: identities are padded to a
    power-of-two bucket of at least ``resolve_pad_bytes`` (a power of two, 256 B to 1 MiB) and a
    miss seals that many random bytes. Set it at or above your largest identity's JSON size so
    that every hit and miss share one bucket. ``check_user_enabled = false`` makes
    ``/check_user`` answer 404.
    """

    constant_shape_resolve: bool = True
    resolve_pad_bytes: int = 1 * KIB
    check_user_enabled: bool = True


class PeersConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[peers]`` (registryd only): who may call ``POST /sync`` and ``POST /nodes``.

    A caller is a peer when it sends a bearer token matching one of ``token_hashes`` (Argon2id,
    from ``registryd hash-token``), on any listener; or when it is connected to the peer
    listener. ``listen`` (``IP:port``, ``mode = "tls"`` only) opens that second listener, serving
    the same app with the ``[tls]`` certificate, whose TLS layer requires a client certificate
    from ``client_ca_pem_path``: a CA that issues peer certificates only, never the public
    ``tls.client_ca_pem_path``. A certificate on the public listener never makes a peer.
    """

    token_hashes: tuple[str, ...] = ()
    listen: str | None = None
    client_ca_pem_path: str | None = None


class AdminConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[admin]`` (registryd only): the admin API (``/admin/...``) is on when ``token_hashes``
    (Argon2id hashes of bearer tokens, from ``registryd hash-token``) is not empty. It answers
    only callers on loopback or on the peer listener (``[peers] listen``) with such a token."""

    token_hashes: tuple[str, ...] = ()


# -- node directory (extensions spec §3) -------------------------------------------------------


class DirectoryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[directory]`` (extensions spec §3): the HushNet-compatible node directory.

    A challenge nonce is valid ``challenge_ttl_seconds``. The prober sends ``GET
    {api_base_url}/health`` to every node every ``probe_interval_seconds`` (rounds never
    overlap), ``probe_concurrency`` at once, each within ``probe_timeout_ms`` (milliseconds).
    Loopback, private, link-local, multicast, reserved and unspecified targets are refused unless
    they fall in ``probe_allow_cidrs`` (IPs or CIDRs). ``uptime_ratio`` covers the last
    ``uptime_window`` probes. ``geoip_db_path`` names a local MaxMind DB (a missing or unreadable
    file is a warning, not an error). Nodes offline for more than ``prune_after_days`` are
    removed (0 keeps them). Every key applies on reload.
    """

    challenge_ttl_seconds: Annotated[int, msgspec.Meta(gt=0, le=DAY)] = 300 * SECONDS
    probe_interval_seconds: Annotated[int, msgspec.Meta(gt=0, le=DAY)] = 60 * SECONDS
    probe_concurrency: Annotated[int, msgspec.Meta(gt=0, le=1024)] = 16
    probe_timeout_ms: Annotated[int, msgspec.Meta(gt=0, le=60_000)] = 3000
    probe_allow_cidrs: tuple[str, ...] = ()
    uptime_window: Annotated[int, msgspec.Meta(gt=0, le=10_000)] = 100
    geoip_db_path: str | None = None
    prune_after_days: Annotated[int, msgspec.Meta(ge=0, le=36_500)] = 30


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


# -- end of node directory ---------------------------------------------------------------------


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
    pow: PowConfig = PowConfig()
    server: ServerConfig = ServerConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    peers: PeersConfig = PeersConfig()
    admin: AdminConfig = AdminConfig()
    directory: DirectoryConfig = DirectoryConfig()

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
    if cfg.storage.kind not in ("leveldb", "memory"):
        raise ConfigError("storage.kind", 'expected "leveldb" or "memory"')
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
    _validate_paths(cfg)
    if cfg.rate_limit.storage_uri != "memory://":
        raise ConfigError("rate_limit.storage_uri", 'only "memory://" is supported in this version')
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
