"""A fake node directory (extensions spec §3.1-3.3) for the node agent's tests.

It checks what the real directory checks: nonces issued to the key, unexpired and spent once;
Ed25519 signatures over ``canonical_json(payload) || nonce`` and ``host || nonce``; one host per
key and one key per host. Tests queue faults (status, headers, body, or a transport error) in
front of any endpoint, or make it forget a node, and read back what it saw. It serves as an
``httpx.MockTransport`` (in-process) or as a Starlette app (for an agent in a subprocess).
:func:`private_forms` lists the forms a node's private key could leak in, to look for in logs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import json
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registryd.canonical import canonical_json
from registryd.certs import DevCerts
from registryd.errors import InvalidInput
from registryd.node import NodeKey, RegistrationAgent
from registryd.sockets import bind_socket

PREFIX = "/api/registry/"
ENDPOINTS = ("challenge", "register", "heartbeat")


@dataclass(frozen=True)
class Fault:
    """An answer to give instead of the real one; ``status=None`` is a connection error."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"error":{"code":"UNAVAILABLE","message":"try later"}}'


DOWN = Fault(None)


@dataclass
class Node:
    pubkey_b64: str
    payload: dict[str, Any]
    status: str = "unknown"
    last_seen_at: float | None = None


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message


class FakeDirectory:
    """The directory's state and rules; ``clock`` is Unix seconds (nonce expiry, last_seen_at)."""

    def __init__(self, clock: Callable[[], float], challenge_ttl: float = 300.0) -> None:
        self.clock = clock
        self.challenge_ttl = challenge_ttl
        self.nodes: dict[str, Node] = {}
        self.nonces: dict[str, tuple[str, float]] = {}
        self.faults: dict[str, deque[Fault]] = {name: deque() for name in ENDPOINTS}
        self.always: dict[str, Fault] = {}
        self.calls: list[tuple[str, int | None]] = []  # (endpoint, status answered)
        self.changed = asyncio.Condition()  # notified by app() after each call

    # -- test controls ---------------------------------------------------------------------------

    def fail(self, endpoint: str, *faults: Fault) -> None:
        """Answer the next calls to ``endpoint`` with ``faults``, in order."""
        self.faults[endpoint].extend(faults)

    def forget(self, host: str) -> None:
        """Drop a node, as a registry that lost its data."""
        del self.nodes[host]

    def count(self, endpoint: str, status: int | None = 200) -> int:
        return sum(1 for name, answered in self.calls if name == endpoint and answered == status)

    async def until(self, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        """Wait (served through :meth:`app`) until ``predicate()`` holds."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout)

    # -- the protocol ----------------------------------------------------------------------------

    def answer(self, endpoint: str, raw: bytes) -> tuple[int | None, dict[str, str], bytes]:
        """(status, headers, body) for a POST to ``endpoint``; status None: drop the connection."""
        if self.faults.get(endpoint) or endpoint in self.always:
            queued = self.faults[endpoint]
            fault = queued.popleft() if queued else self.always[endpoint]
            self.calls.append((endpoint, fault.status))
            return fault.status, fault.headers, fault.body
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise Refused(400, "INVALID_INPUT", "invalid input: expected an object")
            result = getattr(self, f"_{endpoint}")(body)
        except Refused as exc:
            self.calls.append((endpoint, exc.status))
            error = {"error": {"code": exc.code, "message": exc.message}}
            return exc.status, {}, json.dumps(error).encode()
        except (ValueError, KeyError, TypeError):
            self.calls.append((endpoint, 400))
            return 400, {}, b'{"error":{"code":"INVALID_INPUT","message":"invalid input"}}'
        self.calls.append((endpoint, 200))
        return 200, {}, json.dumps(result).encode()

    def _challenge(self, body: dict[str, Any]) -> dict[str, str]:
        pubkey_b64 = body["pubkey_b64"]
        _pubkey(pubkey_b64)
        nonce = secrets.token_urlsafe(24)
        expires = self.clock() + self.challenge_ttl
        self.nonces[nonce] = (pubkey_b64, expires)
        return {"nonce": nonce, "expires_at": _rfc3339(expires)}

    def _spend(self, nonce: object, pubkey_b64: str, status: int) -> None:
        issued = self.nonces.pop(nonce, None) if isinstance(nonce, str) else None
        if issued is None or issued[0] != pubkey_b64 or issued[1] < self.clock():
            if status == 401:
                raise Refused(401, "UNAUTHORIZED", "unauthorized")
            raise Refused(400, "INVALID_INPUT", "invalid input: invalid or expired nonce")

    def _register(self, body: dict[str, Any]) -> dict[str, bool]:
        pubkey_b64, payload, nonce = body["pubkey_b64"], body["payload"], body["nonce"]
        self._spend(nonce, pubkey_b64, 400)
        try:
            message = canonical_json(payload) + nonce.encode()
        except InvalidInput as exc:
            raise Refused(400, "INVALID_INPUT", str(exc)) from exc
        _verify(pubkey_b64, message, body["signature_b64"])
        for key in ("name", "host", "api_base_url", "protocol_version"):
            if not isinstance(payload.get(key), str) or len(payload[key].encode()) > 256:
                raise Refused(400, "INVALID_INPUT", f"invalid input: payload.{key}")
        host = payload["host"]
        other = self.nodes.get(host)
        if other is not None and other.pubkey_b64 != pubkey_b64:
            raise Refused(403, "FORBIDDEN", "forbidden: host already registered with another key")
        if any(n.pubkey_b64 == pubkey_b64 and h != host for h, n in self.nodes.items()):
            raise Refused(403, "FORBIDDEN", "forbidden: key already registered another host")
        if other is None:
            self.nodes[host] = Node(pubkey_b64, payload)
        else:
            other.payload = payload
        return {"ok": True}

    def _heartbeat(self, body: dict[str, Any]) -> dict[str, bool]:
        pubkey_b64, host, nonce = body["pubkey_b64"], body["host"], body["nonce"]
        self._spend(nonce, pubkey_b64, 401)
        node = self.nodes.get(host)
        if node is None or node.pubkey_b64 != pubkey_b64:
            raise Refused(401, "UNAUTHORIZED", "unauthorized")
        _verify(pubkey_b64, host.encode() + nonce.encode(), body["signature_b64"])
        node.status, node.last_seen_at = "online", self.clock()
        return {"ok": True}

    # -- transports ------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        """The directory in-process, at any base URL."""

        async def handle(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(0)  # a real call yields: an agent that spins still times out
            endpoint = _endpoint(request.method, request.url.path)
            if endpoint is None:
                return httpx.Response(404, json={"error": {"code": "NOT_FOUND", "message": "?"}})
            status, headers, body = self.answer(endpoint, await request.aread())
            if status is None:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(status, headers=headers, content=body)

        return httpx.MockTransport(handle)

    def app(self) -> Starlette:
        """The directory as an ASGI app; a transport fault closes the answer without a body."""

        async def handle(request: Request) -> Response:
            endpoint = request.path_params["endpoint"]
            if endpoint not in ENDPOINTS:
                return Response(b"{}", 404)
            status, headers, body = self.answer(endpoint, await request.body())
            async with self.changed:
                self.changed.notify_all()
            if status is None:
                return Response(b"", 502)
            return Response(body, status, headers, media_type="application/json")

        return Starlette(routes=[Route(PREFIX + "{endpoint}", handle, methods=["POST"])])


def _endpoint(method: str, path: str) -> str | None:
    name = path.rsplit("/", 1)[-1]
    return name if method == "POST" and path == PREFIX + name and name in ENDPOINTS else None


def _pubkey(pubkey_b64: object) -> bytes:
    try:
        raw = base64.b64decode(str(pubkey_b64), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise Refused(400, "INVALID_INPUT", "invalid input: pubkey_b64")
    return raw


def _verify(pubkey_b64: str, message: bytes, signature_b64: object) -> None:
    try:
        signature = base64.b64decode(str(signature_b64), validate=True)
        VerifyKey(_pubkey(pubkey_b64)).verify(message, signature)
    except (binascii.Error, BadSignatureError, ValueError) as exc:
        raise Refused(401, "UNAUTHORIZED", "unauthorized") from exc


def _rfc3339(unix_seconds: float) -> str:
    return dt.datetime.fromtimestamp(unix_seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the agent's side: config, key and a fake clock --------------------------------------------

HOST = "node1.example.net"


def node_toml(registry_url: str = "http://registry.test", **keys: object) -> str:
    """A valid node.toml (key node.key and state node-state.json beside it); ``keys`` are
    top-level keys to add or override (TOML literals via ``json.dumps``)."""
    settings: dict[str, object] = {
        "registry_url": registry_url,
        "key_path": "node.key",
        "state_path": "node-state.json",
        **keys,
    }
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + (
        "\n[payload]\n"
        'name = "node one"\n'
        f'host = "{HOST}"\n'
        f'api_base_url = "https://{HOST}"\n'
        'protocol_version = "1.0"\n'
        'contact_email = "ops@example.net"\n'
        "[payload.features]\n"
        'relay = true\nregions = ["eu", "us"]\nmax_peers = 64\n'
    )


def make_node(directory: Path, registry_url: str = "http://registry.test", **keys: object) -> Path:
    """Write ``node.toml`` and a fresh ``node.key`` into ``directory``; the config's path."""
    path = directory / "node.toml"
    path.write_text(node_toml(registry_url, **keys))
    NodeKey.generate().save(directory / "node.key")
    return path


class FakeTime:
    """Unix seconds that move only when the agent sleeps; records every sleep.

    ``on_sleep(n)`` runs after the ``n``-th sleep is recorded (to inject faults, or stop the
    agent). Each sleep yields to the event loop once, so a stop is delivered there.
    """

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[int], None] = lambda n: None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep(len(self.sleeps))
        await asyncio.sleep(0)


async def run_until(
    agent: RegistrationAgent,
    time: FakeTime,
    sleeps: int,
    hook: Callable[[int], None] = lambda n: None,
) -> None:
    """Run ``agent`` until it has slept ``sleeps`` times; ``hook(n)`` after each sleep."""

    def on_sleep(n: int) -> None:
        hook(n)
        if n >= sleeps:
            agent.stop()

    time.on_sleep = on_sleep
    await asyncio.wait_for(asyncio.create_task(agent.run()), 30)


@contextlib.asynccontextmanager
async def serving(app: Starlette, certs: DevCerts | None = None) -> AsyncIterator[str]:
    """Serve ``app`` with Hypercorn on 127.0.0.1:0 in this event loop (over TLS with the dev
    ``certs``); yields its URL."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    if certs is not None:
        config.certfile, config.keyfile = str(certs.server_cert), str(certs.server_key)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        yield f"{'https' if certs else 'http'}://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def encodings(raw: bytes) -> list[str]:
    """``raw`` as hex (both cases), base64 (padded or not) and base64url, and raw."""
    b64 = base64.b64encode(raw).decode()
    return [
        raw.hex(),
        raw.hex().upper(),
        b64,
        b64.rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.decode("latin-1"),
    ]


def private_forms(key_path: Path) -> list[str]:
    pem = key_path.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    seed = key.private_bytes_raw()
    expanded = seed + key.public_key().public_bytes_raw()  # libsodium's 64-byte secret key
    der_b64 = "".join(pem.decode().splitlines()[1:-1])
    return [*encodings(seed), *encodings(expanded), der_b64, der_b64[:32]]
