"""The daemon's one typed config, loaded from TOML and validated strictly (spec 4.11 + DESIGN).

tables.py   one frozen struct per table (``[server]``, ``[rate_limit]`` ...), with defaults
file.py     :class:`Config` (the whole file), the checks across tables, :func:`parse`, :func:`load`

It is data only: it imports nothing of registryd but leaves (errors, secret, files, sockets,
tokens, tomlfile). Every problem is one :class:`~registryd.errors.ConfigError` naming the
dotted key path; secrets (``pepper_hex``, ``index_key_hex``, ``x25519_private_key_hex``) are
:class:`~registryd.secret.Secret` and never printed. Key rings are loaded by
:func:`registryd.keystore.load_keyring`; ``check-config`` prints the redacted summary.
"""

from __future__ import annotations

from .file import Config, load, parse
from .tables import (
    AdminConfig,
    DirectoryConfig,
    EndpointLimits,
    EnvelopeConfig,
    IdentityConfig,
    KeyConfig,
    MetricsConfig,
    PeersConfig,
    PowConfig,
    PresenceConfig,
    PrivacyConfig,
    RateLimitConfig,
    ServerConfig,
    StorageConfig,
    TlsConfig,
)

__all__ = [
    "AdminConfig",
    "Config",
    "DirectoryConfig",
    "EndpointLimits",
    "EnvelopeConfig",
    "IdentityConfig",
    "KeyConfig",
    "MetricsConfig",
    "PeersConfig",
    "PowConfig",
    "PresenceConfig",
    "PrivacyConfig",
    "RateLimitConfig",
    "ServerConfig",
    "StorageConfig",
    "TlsConfig",
    "load",
    "parse",
]
