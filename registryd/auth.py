"""Who a caller is: verified client certificates, loopback, and Argon2id-hashed bearer tokens.

Used by the peer endpoints (``POST /sync``, ``POST /nodes``; DESIGN) and the admin API.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import Request

from .config import Config
from .errors import RateLimited

CHECKS_AT_ONCE = 2  # Argon2 verifications in flight (each holds ~64 MiB for ~50 ms)
CHECKS_WAITING = 16  # queued beyond this, a token check is refused at once (429)


def verified_client_cert(config: Config, request: Request) -> bool:
    """True when the connection presented a certificate from ``tls.client_ca_pem_path``.

    Hypercorn does not expose the peer certificate, but with a client CA configured the TLS
    layer refuses every handshake without one (``CERT_REQUIRED``), so HTTPS implies it.
    """
    tls = config.tls
    return bool(
        config.mode == "tls"
        and tls is not None
        and tls.client_ca_pem_path
        and request.url.scheme == "https"
    )


def from_loopback(request: Request, trusted_proxies: Sequence[str]) -> bool:
    """True when the TCP peer is a loopback address (127.0.0.0/8 or ::1) that is not one of
    ``trusted_proxies``: a local reverse proxy forwards remote clients, who are not local."""
    client = request.scope.get("client")
    if not client:
        return False
    try:
        peer = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    proxies = (ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
    return peer.is_loopback and not any(peer in net for net in proxies)


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class TokenVerifier:
    """Checks bearer tokens against Argon2id hashes in a small thread pool.

    At most :data:`CHECKS_AT_ONCE` run at once and :data:`CHECKS_WAITING` wait; past that a
    check raises :class:`RateLimited`, so a flood of bad tokens costs neither memory nor the
    event loop.
    """

    def __init__(self) -> None:
        self._hasher = PasswordHasher()
        self._limiter = anyio.CapacityLimiter(CHECKS_AT_ONCE)
        self._pending = 0  # counted before any await, so a burst in one loop turn is bounded too

    async def verify(self, token: str | None, hashes: Sequence[str]) -> bool:
        """True if ``token`` matches one of ``hashes`` (``$argon2id$...``)."""
        if not token or not hashes:
            return False
        if self._pending >= CHECKS_AT_ONCE + CHECKS_WAITING:
            raise RateLimited()
        self._pending += 1
        try:
            return await anyio.to_thread.run_sync(self._check, token, hashes, limiter=self._limiter)
        finally:
            self._pending -= 1

    def _check(self, token: str, hashes: Sequence[str]) -> bool:
        for digest in hashes:
            try:
                if self._hasher.verify(digest, token):
                    return True
            except (VerificationError, InvalidHashError):
                continue
        return False
