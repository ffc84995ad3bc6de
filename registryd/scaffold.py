"""Fresh config files for ``registryd init``: random pepper, index key and one active key."""

from __future__ import annotations

import os
from pathlib import Path

from .files import write_file

DEV_DATA = "./data"
"""The dev data directory: LevelDB in ``db/``; a keystore, the pid file (``make run``) and the
client's keys beside it. Production uses the same layout under ``/var/lib/registryd``."""
PROD_DATA = "/var/lib/registryd"

DEV_RATE_LIMIT = """
[rate_limit]                  # development: friendly (defaults: burst 10, ban_seconds 300)
burst = 100                   # every bucket's capacity
ban_seconds = 10              # a violation bans the client this long
"""


def random_hex(n: int) -> str:
    """``n`` random bytes as hex (``2 * n`` chars)."""
    return os.urandom(n).hex()


def server_config(pepper_hex: str, *, dev: bool) -> str:
    """A valid registry.toml with new secrets: LevelDB in ``DATA/db`` with the keystore path
    ``DATA/keys.json`` beside it (commented out), DATA being ``./data`` for ``dev`` (with TLS
    from certs/ and friendly rate limits) or ``/var/lib/registryd``."""
    if dev:
        address, cert, key, ca, data = (
            "127.0.0.1:8443",
            "certs/server.pem",
            "certs/server-key.pem",
            "certs/ca.pem",
            DEV_DATA,
        )
    else:
        address, cert, key, ca, data = (
            "0.0.0.0:8443",
            "/etc/registryd/tls/server.pem",
            "/etc/registryd/tls/server-key.pem",
            "/etc/registryd/tls/client-ca.pem",
            PROD_DATA,
        )
    return f"""\
# registryd config written by `registryd init`. It holds secrets: keep it mode 0600.
# Every key is documented in config/registry.example.toml.
address = "{address}"
mode = "tls"

[tls]
cert_pem_path = "{cert}"
key_pem_path = "{key}"
# client_ca_pem_path = "{ca}"   # uncomment to require client certificates (mTLS)

[storage]
kind = "leveldb"
path = "{data}/db"
index_key_hex = "{random_hex(32)}"   # server-only secret: blind indexes and at-rest sealing

[envelope]
pepper_hex = "{pepper_hex}"      # give this to your clients; it enters the envelope KDF
# Moving to a keystore (registryd keys import): keep it beside the database, never inside it.
# keystore_path = "{data}/keys.json"

[[envelope.keys]]
kid_hex = "{random_hex(8)}"
x25519_private_key_hex = "{random_hex(32)}"
active = true

[presence]
ttl_seconds = 300
gc_interval_seconds = 60
{DEV_RATE_LIMIT if dev else ""}"""


def client_config(pepper_hex: str, *, url: str = "https://127.0.0.1:8443") -> str:
    """A client.toml for the dev server: URL, the dev CA and the server's pepper."""
    return f"""\
# Client settings for `registryd client`, written by `registryd init --dev`.
[client]
url = "{url}"
ca_file = "certs/ca.pem"
pepper_hex = "{pepper_hex}"
keys_dir = "data/client-keys"
# cert_file = "certs/client.pem"      # for a server that requires mTLS
# key_file = "certs/client-key.pem"
"""


def write_private(path: Path, text: str, *, force: bool = False) -> None:
    """Write ``text`` to a fresh ``path`` with mode 0600; refuses to overwrite unless ``force``."""
    try:
        write_file(path, text.encode("utf-8"), replace=force)
    except FileExistsError as exc:
        raise FileExistsError(f"{exc} (pass --force to replace it)") from None
