"""Development TLS material: a throwaway CA, a server certificate and an mTLS client certificate.

**For development only.** The CA's private key is discarded once the certificates are signed,
so nothing else can ever be issued from it, but anyone holding ``server-key.pem`` or
``client-key.pem`` can impersonate that side until the certificate expires. Production
deployments bring certificates from their own CA (see ``certs/README.md``).

``registryd certs dev --out certs/ [--force]`` calls :func:`write_dev_certs`.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from .files import PRIVATE, write_file

DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
CLIENT_IDENTITY = "registryd-dev-client"
DEFAULT_VALID_DAYS = 825
ORGANIZATION = "registryd development (do not trust in production)"

CA_FILE = "ca.pem"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"
CLIENT_CERT_FILE = "client.pem"
CLIENT_KEY_FILE = "client-key.pem"

_DIR_MODE = 0o700
_CERT_MODE = 0o644


@dataclass(frozen=True)
class DevCerts:
    """Where :func:`write_dev_certs` put each file (all PEM)."""

    ca: Path
    """The dev CA certificate: clients trust it; ``tls.client_ca_pem_path`` for mTLS."""
    server_cert: Path
    """Server certificate chain (``tls.cert_pem_path``)."""
    server_key: Path
    """Server private key, PKCS#8, mode 0600 (``tls.key_pem_path``)."""
    client_cert: Path
    """Client certificate chain for mTLS."""
    client_key: Path
    """Client private key, PKCS#8, mode 0600."""

    @classmethod
    def in_dir(cls, out_dir: Path) -> DevCerts:
        return cls(
            ca=out_dir / CA_FILE,
            server_cert=out_dir / SERVER_CERT_FILE,
            server_key=out_dir / SERVER_KEY_FILE,
            client_cert=out_dir / CLIENT_CERT_FILE,
            client_key=out_dir / CLIENT_KEY_FILE,
        )

    def paths(self) -> tuple[Path, ...]:
        return (self.ca, self.server_cert, self.server_key, self.client_cert, self.client_key)


def write_dev_certs(
    out_dir: Path,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    force: bool = False,
    valid_days: int = DEFAULT_VALID_DAYS,
) -> DevCerts:
    """Make a new dev CA and write ``ca.pem``, ``server.pem``, ``server-key.pem``, ``client.pem``
    and ``client-key.pem`` into ``out_dir``. **For development only.**

    - ``hosts``: the server certificate's subject alternative names (host names, IPv4 or IPv6
      literals); by default ``localhost``, ``127.0.0.1`` and ``::1``.
    - The client certificate is for the identity ``registryd-dev-client`` (SAN and common name).
      Both leaf certificates carry the ``serverAuth`` and ``clientAuth`` extended key usages.
    - Leaf certificates are valid from one hour ago for ``valid_days`` days (default 825, the
      longest validity Apple platforms accept for TLS server certificates); trustme gives the CA
      its fixed validity of 2000-01-01 to 3000-01-01.
    - Keys are ECDSA P-256, written as unencrypted PKCS#8 with mode 0600; certificates get mode
      0644 (less if the umask says so). ``out_dir`` is created with mode 0700 if missing.
    - If any of the five files exists, nothing is written and :class:`FileExistsError` is raised,
      unless ``force`` is true (then all five are replaced).

    Raises :class:`ValueError` for an empty ``hosts`` or ``valid_days < 1``, :class:`OSError`
    when the files cannot be written.
    """
    if isinstance(hosts, str):
        raise TypeError("hosts must be a sequence of names, not a single string")
    if not hosts:
        raise ValueError("hosts must name at least one host or IP address")
    if valid_days < 1:
        raise ValueError("valid_days must be at least 1")
    out_dir = Path(out_dir)
    made = DevCerts.in_dir(out_dir)
    if not force:
        existing = [str(path) for path in made.paths() if path.exists() or path.is_symlink()]
        if existing:
            raise FileExistsError(
                f"refusing to overwrite existing certificate files: {', '.join(existing)} "
                "(pass force=True, or --force on the command line, to replace them)"
            )

    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)
    not_before = now - datetime.timedelta(hours=1)  # tolerate a little clock skew
    not_after = now + datetime.timedelta(days=valid_days)
    ca = trustme.CA(
        organization_name=ORGANIZATION, organization_unit_name="registryd development CA"
    )
    server = ca.issue_cert(
        *hosts,
        organization_name=ORGANIZATION,
        organization_unit_name="registryd development server",
        not_before=not_before,
        not_after=not_after,
    )
    client = ca.issue_cert(
        CLIENT_IDENTITY,
        common_name=CLIENT_IDENTITY,
        organization_name=ORGANIZATION,
        organization_unit_name="registryd development client",
        not_before=not_before,
        not_after=not_after,
    )

    if not out_dir.exists():
        out_dir.mkdir(mode=_DIR_MODE, parents=True)
        os.chmod(out_dir, _DIR_MODE)  # mkdir's mode is filtered by the umask
    contents = {
        made.ca: (ca.cert_pem.bytes(), _CERT_MODE),
        made.server_cert: (_chain(server), _CERT_MODE),
        made.server_key: (_pkcs8(server.private_key_pem.bytes()), PRIVATE),
        made.client_cert: (_chain(client), _CERT_MODE),
        made.client_key: (_pkcs8(client.private_key_pem.bytes()), PRIVATE),
    }
    for path, (data, mode) in contents.items():
        write_file(path, data, mode=mode, replace=force)
    return made


def _chain(leaf: trustme.LeafCert) -> bytes:
    return b"".join(blob.bytes() for blob in leaf.cert_chain_pems)


def _pkcs8(key_pem: bytes) -> bytes:
    # trustme writes SEC1 ("BEGIN EC PRIVATE KEY"); PKCS#8 is what the Rust reference (rustls)
    # loads and what every other TLS stack accepts too.
    key = load_pem_private_key(key_pem, password=None)
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
