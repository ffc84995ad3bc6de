"""``node.toml``: the node agent's one typed config (extensions spec §4), validated at load.

Every problem is one :class:`~registryd.errors.ConfigError` naming the key path
(``payload.features.ratio: floats are not allowed ...``, ``heartbeat_intervall_seconds: unknown
key``). Times are in seconds. Relative paths (``key_path``, ``state_path``, ``cafile``) are
relative to the directory holding ``node.toml``, so ``init``, ``run`` and ``status`` find the same
files whatever the working directory (a systemd unit, an operator's shell).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import msgspec

from .. import tomlfile
from ..canonical import canonical_json
from ..errors import ConfigError, InvalidInput
from ..sockets import parse_address

SECONDS = 1
DAY = 86_400 * SECONDS
MAX_FIELD_BYTES = 256
MAX_FEATURES_BYTES = 4 * 1024
MAX_CONFIG_BYTES = 256 * 1024

Interval = Annotated[int, msgspec.Meta(ge=1, le=DAY)]


class PayloadConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[payload]``: the node as the directory lists it (§3.2).

    ``name``, ``host`` (the DNS name or IP the registry resolves), ``api_base_url`` (``http://``
    or ``https://``; the registry's prober sends ``GET {api_base_url}/health``) and
    ``protocol_version`` are required non-empty strings of at most 256 bytes (UTF-8);
    ``features`` is a table of at most 4 KiB as canonical JSON, with no floats or dates;
    ``contact_email`` is optional (stored, never listed).
    """

    name: str
    host: str
    api_base_url: str
    protocol_version: str
    features: dict[str, Any] = {}
    contact_email: str | None = None

    def as_payload(self) -> dict[str, Any]:
        """The §3.2 payload object whose canonical JSON the agent signs."""
        payload: dict[str, Any] = {
            "name": self.name,
            "host": self.host,
            "api_base_url": self.api_base_url,
            "protocol_version": self.protocol_version,
            "features": self.features,
        }
        if self.contact_email is not None:
            payload["contact_email"] = self.contact_email
        return payload


class NodeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole ``node.toml`` (§4).

    ``registry_url``: the registry's base URL (``https://`` — ``http://`` only for development —
    with no credentials, query or fragment); requests go to ``{registry_url}/api/registry/...``.
    ``cafile``: a PEM CA bundle to verify the registry with instead of the system store.
    ``key_path``: the node's Ed25519 key (PKCS#8 PEM, mode 0600, made by ``registryd node
    init``). ``state_path``: the JSON state file the agent rewrites atomically.
    ``heartbeat_interval_seconds`` (default 30) and ``register_interval_seconds`` (default 120)
    are 1 s .. 1 day. ``max_retry``: failures in a row before a pause of
    ``register_interval_seconds``; -1 (the default) never pauses. ``health_listen``: ``IP:port``
    (``[::1]:port`` for IPv6) where the agent answers ``GET /health`` over plain HTTP.
    """

    registry_url: str
    key_path: str
    state_path: str
    payload: PayloadConfig
    cafile: str | None = None
    heartbeat_interval_seconds: Interval = 30 * SECONDS
    register_interval_seconds: Interval = 120 * SECONDS
    max_retry: int = -1
    health_listen: str | None = None

    @property
    def health_address(self) -> tuple[str, int] | None:
        """``health_listen`` split into (IP, port), or None when it is not set."""
        if self.health_listen is None:
            return None
        return _listen_address(self.health_listen)


def load(path: str | os.PathLike[str]) -> NodeConfig:
    """Read and validate ``node.toml``; relative paths in it are resolved against its directory.

    Raises :class:`ConfigError` naming the key path for any problem, including an unreadable
    file or invalid TOML.
    """
    text, _ = tomlfile.read(path, what="node config", max_bytes=MAX_CONFIG_BYTES)
    return parse(text, base_dir=Path(path).parent, source=path)


def parse(
    text: str,
    *,
    base_dir: str | os.PathLike[str] = ".",
    source: str | os.PathLike[str] | None = None,
) -> NodeConfig:
    """Validate the TOML ``text`` of a node config (read from ``source``); see :func:`load`."""
    cfg = tomlfile.convert(tomlfile.loads(text, source=source), NodeConfig)
    _validate(cfg)
    base = Path(base_dir)
    return msgspec.structs.replace(
        cfg,
        key_path=str(base / cfg.key_path),
        state_path=str(base / cfg.state_path),
        cafile=None if cfg.cafile is None else str(base / cfg.cafile),
    )


def _validate(cfg: NodeConfig) -> None:
    _check_registry_url(cfg.registry_url)
    if cfg.max_retry != -1 and cfg.max_retry < 1:
        raise ConfigError("max_retry", "expected -1 (retry forever) or a positive count")
    for key in ("key_path", "state_path"):
        if not getattr(cfg, key):
            raise ConfigError(key, "expected a file path")
    if cfg.health_listen is not None:
        _listen_address(cfg.health_listen)
    payload = cfg.payload
    for key in ("name", "host", "api_base_url", "protocol_version", "contact_email"):
        value = getattr(payload, key)
        if value is None:
            continue
        if not value or len(value.encode("utf-8")) > MAX_FIELD_BYTES:
            raise ConfigError(f"payload.{key}", f"expected 1 to {MAX_FIELD_BYTES} bytes of text")
    if not payload.api_base_url.startswith(("http://", "https://")):
        raise ConfigError("payload.api_base_url", "expected an http:// or https:// URL")
    try:
        features = canonical_json(payload.features, where="payload.features")
    except InvalidInput as exc:
        where, _, reason = (exc.detail or "").partition(": ")
        raise ConfigError(where, reason) from exc
    if len(features) > MAX_FEATURES_BYTES:
        raise ConfigError("payload.features", f"larger than {MAX_FEATURES_BYTES} bytes as JSON")


def _check_registry_url(url: str) -> None:
    problem = None
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        problem = "expected an http:// or https:// URL"
    elif parsed.userinfo:
        problem = "credentials in the URL are not supported"
    elif parsed.query or parsed.fragment:
        problem = "expected a base URL without query or fragment"
    if problem:
        raise ConfigError("registry_url", problem)


def _listen_address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ConfigError as exc:
        raise ConfigError("health_listen", exc.message) from None


TEMPLATE = """\
# registryd node agent config (extensions spec section 4), written by `registryd node init`.
# Fill in registry_url and [payload], then run: registryd node run --config <this file>
# Relative paths are relative to this file's directory. Times are in seconds.

registry_url = ""                   # e.g. "https://registry.example.net:8443"
# cafile = "ca.pem"                 # PEM CA bundle for the registry (default: system store)
key_path = "node.key"               # Ed25519 key, PKCS#8 PEM, mode 0600 (made by node init)
state_path = "node-state.json"      # disconnected / registering / registered, rewritten atomically
heartbeat_interval_seconds = 30
register_interval_seconds = 120     # cool-down after a conflict, slow retry, max_retry pause
max_retry = -1                      # failures in a row before a pause; -1 = never pause
# health_listen = "203.0.113.7:8080"  # answer GET /health here (plain HTTP) for the prober

[payload]
name = ""                           # shown in the directory, at most 256 bytes
host = ""                           # DNS name or IP of the node; one host per key
api_base_url = ""                   # the prober GETs {api_base_url}/health
protocol_version = "1"
# contact_email = "ops@example.net"  # stored by the registry, never listed

[payload.features]                  # free-form: strings, integers, booleans, arrays, tables
"""
