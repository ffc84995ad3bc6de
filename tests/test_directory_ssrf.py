"""The prober's SSRF guard (extensions spec §3.5): the address policy, and a transport that
connects only to the checked address while the Host header, SNI and certificate check keep
the URL's name."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import httpx
import pytest

from registryd.certs import DevCerts
from registryd.directory.ssrf import AddressPolicy, PinnedTransport
from tests.directory_support import FakeNode, fake_nodes

REFUSED = [
    "0.0.0.0",  # noqa: S104 - an address to refuse, not to bind
    "127.0.0.1",
    "127.255.255.254",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",  # shared address space (CGNAT)
    "169.254.169.254",  # link-local: cloud metadata
    "192.0.0.1",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "224.0.0.1",  # multicast (Python 3.11 calls it global)
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "::",
    "::1",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",  # site-local (Python 3.11 calls it global)
    "ff02::1",
    "ff0e::1",  # global-scope multicast
    "2001:db8::1",
    "2001::1",  # Teredo
    "100::1",  # discard-only
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b:1::a00:1",  # local-use NAT64
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "fe80::1%eth0",  # scoped
    "not-an-address",
]
PERMITTED = ["1.1.1.1", "9.9.9.9", "2606:4700:4700::1111", "2a00:1450::1", "::ffff:1.1.1.1"]


@pytest.mark.parametrize("address", REFUSED)
def test_refused_addresses(address: str) -> None:
    assert AddressPolicy().permitted(address) is None


@pytest.mark.parametrize("address", PERMITTED)
def test_permitted_addresses(address: str) -> None:
    assert AddressPolicy().permitted(address) is not None


def test_mapped_addresses_connect_as_ipv4() -> None:
    assert AddressPolicy().permitted("::ffff:1.1.1.1") == "1.1.1.1"


def test_allow_list_opens_exactly_its_ranges() -> None:
    policy = AddressPolicy(["127.0.0.2/32", "fd00::/8", "10.0.0.0/8"])
    assert policy.permitted("127.0.0.2") == "127.0.0.2"
    assert policy.permitted("::ffff:127.0.0.2") == "127.0.0.2"
    assert policy.permitted("127.0.0.3") is None
    assert policy.permitted("fd12::1") == "fd12::1"
    assert policy.permitted("10.9.8.7") == "10.9.8.7"
    assert policy.permitted("192.168.0.1") is None
    assert policy.first_permitted(["127.0.0.3", "192.168.0.1", "127.0.0.2", "1.1.1.1"]) == (
        "127.0.0.2"
    )
    assert policy.first_permitted(["127.0.0.3", "::1"]) is None


async def _get(url: str, pinned: str, context: ssl.SSLContext | None = None) -> httpx.Response:
    transport = PinnedTransport(pinned, context or ssl.create_default_context())
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        return await client.get(url)


async def test_pinned_transport_connects_to_the_pinned_address_with_the_url_host() -> None:
    async with fake_nodes("127.0.0.2", "127.0.0.3") as (pinned, other):
        # the name does not resolve anywhere: only the pinned address is used
        response = await _get(f"http://node.invalid:{pinned.port}/api/health", "127.0.0.2")
        assert response.status_code == 200
        assert pinned.requests == [("/api/health", f"node.invalid:{pinned.port}")]
        # a URL naming another address still goes to the pinned one
        response = await _get(f"http://127.0.0.3:{pinned.port}/health", "127.0.0.2")
        assert response.status_code == 200
        assert pinned.connections == 2 and other.connections == 0


@pytest.fixture
async def tls_node(certs: DevCerts) -> AsyncIterator[tuple[int, list[str]]]:
    """An HTTPS server on 127.0.0.1 with the dev certificate (localhost, 127.0.0.1, ::1);
    yields its port and the SNI names it was asked for."""
    names: list[str] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)

    def on_sni(sock: object, name: str | None, ctx: object) -> None:
        names.append(str(name))

    context.sni_callback = on_sni

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], names
    finally:
        server.close()
        await server.wait_closed()


async def test_tls_uses_the_url_host_for_sni_and_verification(
    tls_node: tuple[int, list[str]], certs: DevCerts
) -> None:
    port, names = tls_node
    trusted = ssl.create_default_context(cafile=str(certs.ca))
    response = await _get(f"https://localhost:{port}/health", "127.0.0.1", trusted)
    assert response.status_code == 204
    assert names == ["localhost"]
    # pinned to the same address, but the certificate does not name this host: refused
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await _get(f"https://elsewhere.test:{port}/health", "127.0.0.1", trusted)
    assert names[-1] == "elsewhere.test"


async def test_node_helper_counts_connections_even_without_a_request() -> None:
    node = await FakeNode("127.0.0.2").start()
    try:
        _, writer = await asyncio.open_connection("127.0.0.2", node.port)
        writer.close()
        for _ in range(100):
            if node.connections:
                break
            await asyncio.sleep(0.01)
        assert node.connections == 1 and node.requests == []
    finally:
        await node.stop()
