"""The prober's SSRF guard (extensions spec §3.5): resolve once, check, connect to that address.

:class:`AddressPolicy` refuses loopback, private, link-local, multicast, reserved, unspecified
and other non-global addresses, IPv4 and IPv6 alike, unless they fall in ``probe_allow_cidrs``.
An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is judged as its IPv4 address. Forms that
carry an IPv4 address a gateway would reach are judged by it too: NAT64 (``64:ff9b::/96``, and
the local-use ``64:ff9b:1::/48`` always refused) and 6to4 (``2002::/16``); Teredo
(``2001::/32``) is refused as non-global.

:class:`PinnedTransport` is an httpx transport whose every connection goes to one checked IP,
whatever the URL's host: the Host header and the TLS SNI and certificate check still use the
URL's host name, so there is no second DNS lookup to rebind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def _non_global(ip: IPAddress) -> bool:
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


class AddressPolicy:
    """Which resolved addresses the prober may connect to; ``allow`` are IPs or CIDRs."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in allow
        )

    def permitted(self, address: str) -> str | None:
        """The address to connect to (an IPv4-mapped one as IPv4), or None if refused."""
        try:
            ip: IPAddress = ipaddress.ip_address(address)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id is not None:
                return None
            ip = ip.ipv4_mapped or ip
        if any(ip in net for net in self.allow):
            return ip.compressed
        if _non_global(ip):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            if ip in NAT64_LOCAL:
                return None
            inner = _embedded_v4(ip)
            if inner is not None and _non_global(inner):
                return None
        return ip.compressed

    def first_permitted(self, addresses: Sequence[str]) -> str | None:
        """The first of ``addresses`` that is permitted (as :meth:`permitted` gives it)."""
        for address in addresses:
            pinned = self.permitted(address)
            if pinned is not None:
                return pinned
        return None


async def resolve(host: str) -> list[str]:
    """The addresses of ``host`` (an IP literal is its own answer), resolved in the event
    loop's thread pool so the loop never blocks; raises :class:`OSError` or
    :class:`UnicodeError` when it cannot be resolved."""
    try:
        return [ipaddress.ip_address(host).compressed]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens every TCP connection to ``ip``, whatever host httpcore asks for."""

    def __init__(self, ip: str) -> None:
        self._ip = ip
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._backend.connect_tcp(
            self._ip, port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the prober connects to TCP addresses only")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


_EXCEPTIONS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
}


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpcore's exceptions as httpx's, as httpx's own transport raises them."""
    try:
        yield
    except (
        httpcore.NetworkError,
        httpcore.TimeoutException,
        httpcore.ProtocolError,
        httpcore.UnsupportedProtocol,
    ) as exc:
        raise _EXCEPTIONS.get(type(exc), httpx.TransportError)(str(exc)) from exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:  # httpcore's pool stream: iterable, aclose()
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        await self._stream.aclose()


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects only to ``ip`` (one connection, no keep-alive, no
    retries). ``ssl_context`` verifies HTTPS against the URL's host name (shared, so making a
    transport costs no certificate loading)."""

    def __init__(self, ip: str, ssl_context: ssl.SSLContext) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=1,
            max_keepalive_connections=0,
            retries=0,
            network_backend=_PinnedBackend(ip),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise httpx.UnsupportedProtocol("only async request bodies are supported")
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
