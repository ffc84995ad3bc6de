"""Who is the client? The rate-limit key of a request (spec 4.9 + DESIGN "Deliberate differences").

The reference trusts ``X-Forwarded-For`` from anyone and takes its *left-most* entry, so a client
picks its own key. registryd's rules:

1. The TCP peer (``scope["client"][0]``) is the client, unless it is in ``trusted_proxies``
   (IPs or CIDRs). No client at all (e.g. a Unix socket) is the key ``"unknown"``.
2. Only when the peer is a trusted proxy, ``X-Forwarded-For`` counts: every occurrence of the
   header, joined in order, split on ``,`` and trimmed (empty entries skipped). Walking from the
   *right*, hops that are themselves trusted proxies are skipped; the first untrusted hop is the
   client. Entries left of it were written by the client itself and are ignored.
3. If every hop is trusted, the header is absent, or the walk meets an entry that is not an IP
   address (``unknown``, ``1.2.3.4:80``, ``_hidden``...), the key is the peer's. A garbage entry
   can only be reached through a misbehaving or misconfigured proxy; keying by it would let a
   client rotate its key freely, keying by the peer cannot be rotated (the proxy's clients then
   share one bucket, which is safe).
4. ``X_FORWARDED_FOR``, ``X-Real-IP`` and ``Forwarded`` are never honoured.

Keys are normalized so that one host has one key: IPv4 as dotted quad (``203.0.113.5``),
IPv4-mapped IPv6 (``::ffff:203.0.113.5``) as its IPv4 address, and any other IPv6 address as its
/64 network (``2001:db8:1:2::/64``), since one subscriber usually holds a whole /64.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from starlette.types import Scope

UNKNOWN = "unknown"
_XFF = b"x-forwarded-for"
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"
_HOST_BITS = bytes(8)


def _packed(text: str) -> bytes | None:
    """``text`` as 4 or 16 address bytes, IPv4-mapped IPv6 unwrapped to IPv4; None if it is not
    an address. (``inet_pton`` is as strict as :mod:`ipaddress` and several times faster.)"""
    try:
        packed = socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except (OSError, ValueError):  # ValueError: embedded NUL, non-latin-1 text
        return None
    if packed[:12] == _MAPPED_PREFIX:
        return packed[12:]
    return packed


def _key(packed: bytes) -> str:
    """The rate-limit key of unwrapped address bytes: IPv4 dotted, IPv6 as its /64 (RFC 5952)."""
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + _HOST_BITS) + "/64"


class ClientKeys:
    """Computes the rate-limit key of an ASGI HTTP scope (rules in the module docstring).

    ``trusted_proxies`` are IP addresses or CIDRs (``"10.0.0.1"``, ``"10.0.0.0/8"``,
    ``"2001:db8::/48"``) as validated by the config. Calling an instance with a scope returns
    the key as a string. It runs on every request: networks are precomputed as
    (network int, mask int) per IP version, and headers are not looked at unless the peer is
    trusted.
    """

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        nets = [ipaddress.ip_network(p.strip(), strict=False) for p in trusted_proxies]
        self._has_proxies = bool(nets)
        self._v4 = tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == 4)
        self._v6 = tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == 6)

    def is_trusted(self, packed: bytes) -> bool:
        """Whether address bytes (IPv4-mapped already unwrapped) are in ``trusted_proxies``."""
        value = int.from_bytes(packed, "big")
        for net, mask in self._v4 if len(packed) == 4 else self._v6:
            if value & mask == net:
                return True
        return False

    def peer(self, host: str) -> str | None:
        """The key of the TCP peer address ``host`` for its share of connections: as for a
        request, but None when it is a trusted proxy (its connections carry many clients)."""
        packed = _packed(host.partition("%")[0])
        if packed is None:
            return host
        if self._has_proxies and self.is_trusted(packed):
            return None
        return _key(packed)

    def __call__(self, scope: Scope) -> str:
        client = scope.get("client")
        if not client or not client[0]:
            return UNKNOWN
        host: str = client[0]
        if not self._has_proxies and ":" not in host:  # the server's IPv4 text is already canonical
            return host
        peer = _packed(host.partition("%")[0])  # a link-local peer may carry a zone: fe80::1%eth0
        if peer is None:  # not an IP (server-provided, e.g. a socket name): key it as it is
            return host
        if self._has_proxies and self.is_trusted(peer):
            forwarded = self._forwarded_client(scope)
            if forwarded is not None:
                return _key(forwarded)
        return _key(peer)

    def _forwarded_client(self, scope: Scope) -> bytes | None:
        """The right-most untrusted ``X-Forwarded-For`` hop, or None (absent, garbage, all
        trusted)."""
        values = [v for k, v in scope["headers"] if k.lower() == _XFF]
        if not values:
            return None
        for entry in reversed(b",".join(values).decode("latin-1").split(",")):
            hop = entry.strip()
            if not hop:
                continue
            packed = _packed(hop)
            if packed is None:
                return None
            if not self.is_trusted(packed):
                return packed
        return None
