"""Helpers for the node directory tests: node keys that sign as HushNet nodes do, fake nodes
(real HTTP servers on 127.0.0.0/8 that count connections), and small MaxMind DBs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import netaddr
from mmdb_writer import MMDBWriter
from nacl.signing import SigningKey

from registryd.canonical import canonical_json
from registryd.directory.ssrf import resolve

NAMES: dict[str, list[str]] = {"node-a.test": ["127.0.0.2"], "dual.test": ["::1", "127.0.0.1"]}


async def fake_resolver(host: str) -> list[str]:
    """IP literals answer themselves; a few test names; anything else does not resolve (no
    DNS query leaves this machine)."""
    if host in NAMES:
        return NAMES[host]
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
    return await resolve(host)


class NodeKey:
    """An Ed25519 node key; signs register payloads and heartbeats as spec §3.2/§3.3 say."""

    def __init__(self, seed: bytes | None = None) -> None:
        self.key = SigningKey(seed) if seed is not None else SigningKey.generate()
        self.pubkey = bytes(self.key.verify_key)
        self.pubkey_b64 = base64.b64encode(self.pubkey).decode()

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.key.sign(message).signature).decode()

    def register_body(self, payload: dict[str, Any], nonce: str) -> dict[str, Any]:
        return {
            "payload": payload,
            "nonce": nonce,
            "signature_b64": self.sign(canonical_json(payload) + nonce.encode()),
            "pubkey_b64": self.pubkey_b64,
        }

    def heartbeat_body(self, host: str, nonce: str) -> dict[str, Any]:
        return {
            "host": host,
            "nonce": nonce,
            "signature_b64": self.sign(host.encode() + nonce.encode()),
            "pubkey_b64": self.pubkey_b64,
        }

    async def challenge(self, client: httpx.AsyncClient) -> str:
        response = await client.post(
            "/api/registry/challenge", json={"pubkey_b64": self.pubkey_b64}
        )
        assert response.status_code == 200, response.text
        nonce: str = response.json()["nonce"]
        return nonce

    async def register(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
        nonce = await self.challenge(client)
        return await client.post("/api/registry/register", json=self.register_body(payload, nonce))

    async def heartbeat(self, client: httpx.AsyncClient, host: str) -> httpx.Response:
        nonce = await self.challenge(client)
        return await client.post("/api/registry/heartbeat", json=self.heartbeat_body(host, nonce))


def payload(host: str, url: str, name: str = "node", **extra: Any) -> dict[str, Any]:
    """A HushNet node's payload (as HushNet-Backend's register_with_registry builds it)."""
    return {
        "name": name,
        "host": host,
        "api_base_url": url,
        "protocol_version": "0.0.1",
        "features": {},
        "contact_email": "ops@example.org",
        **extra,
    }


class FakeNode:
    """A plain-HTTP node on ``ip``:0 answering ``GET .../health``; counts every connection.

    ``status`` is the answer's status; ``delay`` seconds before it; ``body_bytes`` streams that
    many bytes (None: forever) after the headers; ``location`` adds a redirect target.
    """

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.status = 200
        self.delay = 0.0
        self.body: bytes = b"ok"
        self.endless = False
        self.location: str | None = None
        self.connections = 0
        self.requests: list[tuple[str, str]] = []  # (target, Host header)
        self.in_flight = 0
        self.max_in_flight = 0
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            target = lines[0].split(" ")[1]
            host = next(
                (ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("host:")), ""
            )
            self.requests.append((target, host))
            if self.delay:
                await asyncio.sleep(self.delay)
            reason = {200: "OK", 302: "Found"}.get(self.status, "Error")
            headers = f"HTTP/1.1 {self.status} {reason}\r\nConnection: close\r\n"
            if self.location:
                headers += f"Location: {self.location}\r\n"
            if self.endless:
                writer.write(headers.encode() + b"\r\n")
                chunk = b"x" * 65536
                while True:
                    writer.write(chunk)
                    await writer.drain()
            writer.write(headers.encode() + f"Content-Length: {len(self.body)}\r\n\r\n".encode())
            writer.write(self.body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.in_flight -= 1
            writer.close()

    async def start(self) -> FakeNode:
        self._server = await asyncio.start_server(self._serve, self.ip, 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)


@contextlib.asynccontextmanager
async def fake_nodes(*ips: str) -> AsyncIterator[list[FakeNode]]:
    nodes = [await FakeNode(ip).start() for ip in ips]
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


def make_mmdb(path: Path, countries: dict[str, tuple[str, str]]) -> Path:
    """A GeoLite2-Country-shaped MaxMind DB at ``path``: CIDR -> (iso_code, English name)."""
    writer = MMDBWriter(
        ip_version=6, database_type="GeoLite2-Country", languages=["en"], ipv4_compatible=True
    )
    for cidr, (code, name) in countries.items():
        writer.insert_network(
            netaddr.IPSet([cidr]), {"country": {"iso_code": code, "names": {"en": name}}}
        )
    writer.to_db_file(str(path))
    return path
