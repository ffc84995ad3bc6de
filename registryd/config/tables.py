"""One frozen struct per table of the daemon's config file (spec 4.11 + DESIGN), with defaults.

Unknown keys are refused (``forbid_unknown_fields``). Secrets are held as
:class:`~registryd.secret.Secret`. Times are in seconds unless the key name says ``_ms``;
sizes in bytes. The whole file is :class:`registryd.config.file.Config`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ..secret import Secret

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
    once (about 250 bytes each, at most 350). ``storage_uri`` names the limiter store:
    ``memory://`` (this process) or a Redis URL (shared by every process and host using it;
    :mod:`registryd.abuse.stores`).
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
    """``[storage]``: ``kind`` is ``"leveldb"`` (directory ``path``), ``"memory"`` or ``"redis"``.

    Redis: ``url`` is ``redis://host:port/db``, ``rediss://...`` (TLS, CA from ``ca_file`` or the
    system's), ``unix:///path.sock`` or ``redis+cluster://host:port``; every call must answer
    within ``timeout_ms`` (milliseconds) or the request gets 503. ``wait_replicas`` > 0 makes
    each write wait (``WAIT``, up to half of ``timeout_ms``) until that many replicas hold it,
    else the request gets 503 (not with a cluster).

    ``index_key_hex`` (32 bytes) keys the blind indexes and the at-rest encryption; if absent
    it is derived from the pepper, which clients know, and a warning is logged.
    """

    kind: str = "leveldb"
    path: str = "./registry_db"
    index_key_hex: Secret | None = None
    url: str = ""
    ca_file: str | None = None
    timeout_ms: Annotated[int, msgspec.Meta(gt=0, le=60_000)] = 1000
    wait_replicas: Annotated[int, msgspec.Meta(ge=0, le=16)] = 0


class PresenceConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[presence]``: announcements live ``ttl_seconds`` (at most a year); GC runs every
    ``gc_interval_seconds`` (at most a day). ``accept_unsigned`` keeps the reference's unsigned
    ``POST /announce`` (extensions spec §2.3; signed ones are still checked); at most
    ``max_entries`` presences are stored (a new handle's announce then gets 503)."""

    ttl_seconds: Annotated[int, msgspec.Meta(gt=0, le=365 * DAY)] = 300 * SECONDS
    gc_interval_seconds: Annotated[int, msgspec.Meta(gt=0, le=DAY)] = 60 * SECONDS
    accept_unsigned: bool = False
    max_entries: Positive = 1_000_000


class IdentityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[identity]`` (extensions spec §1, §2): ``verify_signatures`` checks every identity
    registered, synced or updated (key and signature lengths, Ed25519 over ``signed_payload``,
    ``username_hint`` hashing to ``user_id``); a signed operation's ``ts_ms`` must be within
    ``signed_op_skew_seconds`` of the server's clock (at most a day)."""

    verify_signatures: bool = True
    signed_op_skew_seconds: Annotated[int, msgspec.Meta(gt=0, le=DAY)] = 300 * SECONDS


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
    proxies are exempt); see :mod:`registryd.transport.listener`. ``workers`` > 1 serves with
    that many processes on one socket (:mod:`registryd.workers`); it needs shared state:
    ``[storage] kind = "redis"`` and a Redis ``[rate_limit] storage_uri`` (when rate limits or
    proof of work are on). The connection caps are per worker. ``event_loop`` is ``"asyncio"``
    (the standard library's) or ``"uvloop"`` (the ``uvloop`` extra; :mod:`registryd.eventloop`).
    """

    max_body_bytes: Positive = 64 * KIB
    shutdown_grace_seconds: Positive = 10 * SECONDS
    handshake_timeout_seconds: Positive = 10 * SECONDS
    header_timeout_seconds: Positive = 10 * SECONDS
    body_timeout_seconds: Positive = 10 * SECONDS
    max_connections: Positive = 1024
    max_connections_per_client: Positive = 64
    workers: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"


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


class LoggingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[logging]`` (registryd only): ``format`` is ``"plain"`` (one line of text per record)
    or ``"json"`` (one JSON object per line: ``time``, ``level``, ``logger``, ``message`` and an
    audit line's fields); ``level`` is registryd's own verbosity (other libraries log warnings
    and errors only). ``serve --log-level`` and ``--log-format``, when given, win over the
    file. Audit lines are written at every level. Changing either needs a restart.
    """

    format: Literal["plain", "json"] = "plain"
    level: Literal["debug", "info", "warning", "error"] = "info"


class MetricsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[metrics]`` (registryd only): ``address`` (``IP:port``) opens a plain-HTTP listener
    serving Prometheus metrics at ``GET /metrics`` (README "Metrics"); absent, none is opened.
    It must differ from ``address`` and ``peers.listen``: metrics are never served on the
    public port. Changing it needs a restart. With ``[server] workers`` > 1, one scrape counts
    every worker (:mod:`registryd.metrics.multiproc`).
    """

    address: str | None = None


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
