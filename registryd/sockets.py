"""Listening addresses and sockets: the daemon's listeners and the node agent's health endpoint.

An address is ``IP:port``, IPv6 in brackets (``[::1]:8443``); host names are refused, so a
listener never binds to whatever a name resolves to.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from .errors import ConfigError

BACKLOG = 1024
MAX_HEADER_BYTES = 16 * 1024
"""The request head (request line and headers) a listener reads at most, in bytes."""


def parse_address(address: str, key: str = "address") -> tuple[str, int]:
    """Split ``IP:port`` / ``[IPv6]:port``; raises :class:`ConfigError` naming ``key``."""
    m = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\]:(?P<port>[0-9]{1,5})|(?P<v4>[^:\[\]]+):(?P<port4>[0-9]{1,5})",
        address.strip(),
    )
    if not m:
        raise ConfigError(key, "expected IP:port, e.g. 127.0.0.1:8443 or [::1]:8443")
    host = m["v6"] or m["v4"]
    port = int(m["port"] or m["port4"])
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(key, "host must be an IP address, not a name") from None
    if (ip.version == 6) != bool(m["v6"]) or port > 65535:
        raise ConfigError(key, "expected IP:port, e.g. 127.0.0.1:8443 or [::1]:8443")
    return host, port


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host`` (IPv4 or IPv6 literal) and ``port`` (0 = any free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock
