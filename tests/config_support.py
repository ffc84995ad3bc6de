"""Config texts for the config tests: a valid base config and ways to break it."""

from __future__ import annotations

import pytest

from registryd import config
from registryd.config import Config
from registryd.errors import ConfigError
from tests.vectors import KID_HEX, PEPPER_HEX
from tests.vectors import SERVER_PRIVATE_HEX as PRIVATE_HEX

INDEX_KEY_HEX = "c3c010b7a6d427698b20152b6f8df72897df0a9f83ba97ed73942fe1889e9a42"
SECRETS = (PEPPER_HEX, PRIVATE_HEX, INDEX_KEY_HEX)
NOW_MS = 1_700_000_000_000

KEY = (
    f'[[envelope.keys]]\nkid_hex = "{KID_HEX}"\n'
    f'x25519_private_key_hex = "{PRIVATE_HEX}"\nactive = true\n'
)
ENVELOPE = f'[envelope]\npepper_hex = "{PEPPER_HEX}"\n' + KEY
STORAGE = f'[storage]\nkind = "memory"\nindex_key_hex = "{INDEX_KEY_HEX}"\n'


def toml(top: str = "", *tables: str, envelope: str = ENVELOPE, storage: str = STORAGE) -> str:
    """A valid config (http mode, memory storage) with ``top`` keys and extra ``tables``."""
    head = 'address = "127.0.0.1:8443"\nmode = "http"\n' + top
    return "\n".join([head, storage, *tables, envelope])


def parse(text: str) -> Config:
    return config.parse(text)


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value
