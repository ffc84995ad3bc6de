"""Helpers for the client tests: the real app for blocking clients, and forged servers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from registryd import wire
from registryd.client import MIB, IdentityKeys, RegistryClient
from registryd.identity import PublicIdentity, user_id
from registryd.storage import open_storage
from tests.helpers import make_app, make_config, seal_resolution
from tests.vectors import PEPPER

URL = "http://registry.test"


class SyncASGITransport(httpx.BaseTransport):
    """Serves a blocking httpx client from an ASGI app running on a portal's event loop."""

    def __init__(self, app: Callable[..., object], portal: BlockingPortal) -> None:
        self._inner = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def forward() -> httpx.Response:
            copy = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            response = await self._inner.handle_async_request(copy)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return self._portal.call(forward)


@contextlib.contextmanager
def in_process_app() -> Iterator[SyncASGITransport]:
    """The real app over memory storage, for blocking clients (ASGITransport is async only)."""
    config = make_config()
    with start_blocking_portal() as portal:
        storage = open_storage(config)
        try:
            yield SyncASGITransport(make_app(config, storage), portal)
        finally:
            portal.call(storage.close)


def sync_client(transport: httpx.BaseTransport, max_response_bytes: int = MIB) -> RegistryClient:
    return RegistryClient(URL, PEPPER, transport=transport, max_response_bytes=max_response_bytes)


def assert_identity_of(identity: PublicIdentity | None, name: str, keys: IdentityKeys) -> None:
    assert identity is not None
    assert identity.handle == user_id(name)
    assert identity.username_hint == name
    assert bytes(identity.signing_public_key) == keys.signing_public_key
    assert bytes(identity.encryption_public_key) == keys.encryption_public_key
    assert identity.verify_signature()


def forging_server(identity: bytes, *, echo: str | None = None) -> httpx.MockTransport:
    """A /resolve server that seals ``identity`` correctly, with the real server key and pepper."""

    def handler(request: httpx.Request) -> httpx.Response:
        req = wire.decode(request.content, wire.ResolveRequest)
        envelope = seal_resolution(req, identity)
        answer = wire.ResolveResponse(req.handle if echo is None else echo, envelope)
        return httpx.Response(200, content=wire.encode(answer))

    return httpx.MockTransport(handler)
