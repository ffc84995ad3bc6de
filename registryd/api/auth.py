"""Who a caller is: loopback, the peer listener, and Argon2id-hashed bearer tokens.

Used by the peer endpoints (``POST /sync``, ``POST /nodes``; DESIGN) and the admin API. A
client certificate on the public listener identifies nobody: Hypercorn does not expose the
peer certificate, so the app only knows that *some* certificate from ``tls.client_ca_pem_path``
was presented. Certificate-based peers come only through the peer listener
(:mod:`registryd.transport.peers`), whose TLS layer accepts certificates from a peer-only CA.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import Request

from ..errors import RateLimited
from ..tokens import CHECKS_AT_ONCE, TOKEN_HASHER
from ..transport import PEER_LISTENER

CHECKS_WAITING = 16  # queued beyond this, a token check is refused at once (429)


def on_peer_listener(request: Request) -> bool:
    """True when the request came through the peer listener: its TLS layer accepted a client
    certificate from ``peers.client_ca_pem_path``, a CA that issues peer certificates only."""
    return request.scope.get(PEER_LISTENER) is True


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
    """Checks bearer tokens against Argon2id hashes on :data:`CHECKS_AT_ONCE` threads of its own.

    At most :data:`CHECKS_AT_ONCE` run at once and :data:`CHECKS_WAITING` wait; past that a
    check raises :class:`RateLimited`, so a flood of bad tokens costs neither memory nor the
    event loop. Memory in flight is ``CHECKS_AT_ONCE`` times a hash's memory cost (4 MiB for
    hashes from ``registryd hash-token``).
    """

    def __init__(self) -> None:
        self._hasher = TOKEN_HASHER  # verify() reads the parameters from each hash
        # Threads of its own, not anyio's shared pool (up to 40 threads): glibc keeps a freed
        # 4 MiB Argon2 block cached in the arena of each thread that hashed (measured: +8 MiB
        # RSS after 500 checks on 2 threads, flat from the first 100; +16 MiB on 4), so what
        # stays resident grows with the number of threads that ever hash. Two per pool bound
        # it to 2 x 4 MiB. (64 MiB blocks exceed glibc's mmap threshold and are returned.)
        self._threads = ThreadPoolExecutor(CHECKS_AT_ONCE, thread_name_prefix="registryd-token")
        self._pending = 0  # counted before any await, so a burst in one loop turn is bounded too

    async def verify(self, token: str | None, hashes: Sequence[str]) -> bool:
        """True if ``token`` matches one of ``hashes`` (``$argon2id$...``)."""
        if not token or not hashes:
            return False
        if self._pending >= CHECKS_AT_ONCE + CHECKS_WAITING:
            raise RateLimited()
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._threads, self._check, token, hashes)
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
