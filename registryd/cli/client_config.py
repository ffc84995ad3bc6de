"""The client's settings file, ``client.toml``: one ``[client]`` table, every key optional.

``registryd client`` reads it (flags and the environment win over it); library users may too::

    from registryd.cli.client_config import load_client_config
    from registryd.client import RegistryClient

    settings = load_client_config("client.toml")
    client = RegistryClient(settings.url, settings.pepper_hex.reveal(), cafile=settings.ca_file)

Loading it loads nothing else of the command line.
"""

from __future__ import annotations

import os

import msgspec

from .. import tomlfile
from ..errors import ConfigError
from ..secret import Secret

DEFAULT_KEYS_DIR = "./data/client-keys"


class ClientConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``[client]`` table of a client config (``client.toml``), every key optional.

    ``url``: registry base URL; ``ca_file``: PEM CA bundle to verify the server; ``cert_file``
    and ``key_file`` (together): PEM client certificate and key for mTLS; ``pepper_hex``: the
    server's 32-byte pepper as 64 hex chars (spec 4.2); ``keys_dir``: where identity keys files
    live. Relative paths are relative to the current working directory.
    """

    url: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    pepper_hex: Secret | None = None
    keys_dir: str = DEFAULT_KEYS_DIR


class _ClientFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    client: ClientConfig


def load_client_config(path: str | os.PathLike[str]) -> ClientConfig:
    """Read and validate a client config; raises :class:`ConfigError` naming the key path
    (``client.pepper_hex: expected 64 hex characters (32 bytes)``, ``client.urll: unknown key``).
    """
    cfg = tomlfile.load(path, _ClientFile, what="client config").client
    if (cfg.cert_file is None) != (cfg.key_file is None):
        raise ConfigError("client.cert_file", "cert_file and key_file must be set together")
    return cfg
