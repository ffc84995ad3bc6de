"""Endpoint handlers (spec 4.5): the reference's methods, paths, bodies and status codes."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from . import config as config_mod
from . import wire
from .auth import TokenVerifier, bearer_token, on_peer_listener
from .config import Config
from .encoding import decode_hex
from .envelope import padded
from .errors import (
    ConfigError,
    Conflict,
    InvalidInput,
    KeyUnavailable,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
)
from .hashcash import HEADER as POW_HEADER
from .identity import PublicIdentity, parse_handle
from .keyring import KeyRing, key_warnings
from .keystore import load_keyring
from .pow import ProofOfWork
from .presence import expiry_ms
from .ratelimit import CLIENT_KEY
from .storage import Storage

T = TypeVar("T")
log = logging.getLogger("registryd")

OK = b'{"ok":true}'


def json_response(body: Any, status: int = 200) -> Response:
    content = body if isinstance(body, bytes) else wire.encode(body)
    return Response(content, status, media_type="application/json")


def client_key(request: Request) -> str:
    """The client's rate-limit key, put in the scope by :class:`RateLimitMiddleware`."""
    key: str = request.scope[CLIENT_KEY]
    return key


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


# Config sections read once at start-up (by Hypercorn, the storage, the middleware): a reload
# that changes them keeps the running values and logs that a restart is needed.
RESTART_ONLY = (
    "address",
    "mode",
    "tls",
    "storage",
    "server",
    "rate_limit",
    "pow",
    "trusted_proxies",
)


class Registry:
    """The registry's endpoints over one config, storage and key ring.

    ``config_path`` is the file :meth:`reload` reads (SIGHUP, ``POST /admin/reload``).
    """

    def __init__(
        self,
        config: Config,
        storage: Storage,
        keyring: KeyRing,
        clock: Callable[[], int],
        *,
        config_path: str | None = None,
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.config_path = config_path
        self.pow = ProofOfWork(config.pow, clock) if config.pow.enabled else None
        # separate pools: a flood of bad peer tokens cannot queue out the operator, and back
        self.peer_tokens = TokenVerifier()
        self.admin_tokens = TokenVerifier()
        self._reloading = asyncio.Lock()
        self.reload_hooks: list[Callable[[Config], Awaitable[None]]] = []  # e.g. the directory
        self.config = config
        self.apply(config, keyring)

    def apply(self, config: Config, keyring: KeyRing) -> list[str]:
        """Serve with ``config`` and ``keyring`` from now on, except the :data:`RESTART_ONLY`
        sections, which keep their running values; returns those that differ."""
        pinned = {name: getattr(self.config, name) for name in RESTART_ONLY}
        stale = [name for name, value in pinned.items() if getattr(config, name) != value]
        running = self.config.peers  # the peer listener is bound once; its tokens reload
        peers = msgspec.structs.replace(
            config.peers, listen=running.listen, client_ca_pem_path=running.client_ca_pem_path
        )
        if peers != config.peers:
            stale.append("peers.listen")
        self.config = msgspec.structs.replace(config, peers=peers, **pinned)
        self.keyring = keyring  # one assignment: requests see the old set or the new one
        self._pad = config.privacy.resolve_pad_bytes
        self._miss = bytearray(os.urandom(self._pad))  # what a constant-shape miss seals
        return stale

    async def reload(self) -> list[str]:
        """Re-read the config file (and its keystore) and :meth:`apply` it.

        The reading, Argon2 included, runs in a worker thread. Raises :class:`ConfigError`
        (the running configuration is then unchanged); returns the sections needing a restart.
        """
        path = self.config_path
        if path is None:
            raise ConfigError("", "this registry was not started from a config file")

        def read() -> tuple[Config, KeyRing]:
            cfg = config_mod.load(path)
            return cfg, load_keyring(cfg.envelope)

        async with self._reloading:  # one at a time, so the last file read is the one applied
            cfg, keyring = await anyio.to_thread.run_sync(read)
            stale = self.apply(cfg, keyring)
            for hook in self.reload_hooks:
                await hook(self.config)
        log.info("reloaded %s: %d envelope keys", path, len(keyring.keys))
        if stale:
            log.warning("changed but needing a restart (kept as they were): %s", ", ".join(stale))
        for warning in key_warnings(keyring, self.clock(), cfg.envelope.expiry_warning_days):
            log.warning("%s", warning)
        return stale

    def routes(self) -> list[Route]:
        routes = [
            Route("/register", self.register, methods=["POST"]),
            Route("/resolve", self.resolve, methods=["POST"]),
            Route("/check_user/{handle}", self.check_user, methods=["GET"]),
            Route("/announce", self.announce, methods=["POST"]),
            Route("/sync", self.sync, methods=["POST"]),
            Route("/nodes", self.get_nodes, methods=["GET"]),
            Route("/nodes", self.post_nodes, methods=["POST"]),
            Route("/envelope_pubkey", self.envelope_pubkey, methods=["GET"]),
            Route("/envelope_pubkeys", self.envelope_pubkeys, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
        ]
        if self.pow is not None:
            routes.append(Route("/pow/challenge", self._challenge(self.pow), methods=["GET"]))
        return routes

    async def health(self, request: Request) -> Response:
        """200 ``{"status": "ok", "active_kid"}``, or 503 ``{"status": "degraded"}`` when no
        envelope key is valid (resolves and ``/envelope_pubkey`` then answer 503 too)."""
        try:
            key = self.keyring.active(self.clock())
        except KeyUnavailable:
            reason = "no valid active envelope key"
            return json_response({"status": "degraded", "reason": reason}, 503)
        return json_response({"status": "ok", "active_kid": key.kid.hex()})

    def require_pow(self, request: Request) -> None:
        """Spec 4.7: with ``[pow] enabled``, a fresh proof in ``x-enigma-pow`` (400 otherwise)."""
        if self.pow is not None:
            self.pow.verify(request.headers.get(POW_HEADER), client_key(request))

    @staticmethod
    def _challenge(pow: ProofOfWork) -> Callable[[Request], Awaitable[Response]]:
        async def pow_challenge(request: Request) -> Response:
            return json_response(pow.issue(client_key(request)))

        return pow_challenge

    async def read_json(self, request: Request, type_: type[T]) -> T:
        """The body decoded strictly as ``type_``: JSON content type, at most ``max_body_bytes``."""
        if not _is_json(request.headers.get("content-type", "")):
            raise InvalidInput("Content type error: expected application/json")
        limit = self.config.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                raise InvalidInput("bad content-length")
            if len(declared) > 20 or int(declared) > limit:
                raise PayloadTooLarge(f"body exceeds {limit} bytes")
        body = bytearray()
        # Hypercorn's read timeout is per read: a body trickled a byte at a time needs a deadline.
        # (asyncio.timeout: a fraction of anyio's cancel-scope cost; Hypercorn serves asyncio)
        try:
            async with asyncio.timeout(self.config.server.body_timeout_seconds):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise PayloadTooLarge(f"body exceeds {limit} bytes")
        except TimeoutError:
            raise RequestTimeout("body not received in time") from None
        except ClientDisconnect:
            raise InvalidInput("client disconnected before the body was complete") from None
        return wire.decode(bytes(body), type_)

    async def register(self, request: Request) -> Response:
        req = await self.read_json(request, wire.RegisterRequest)
        handle = parse_handle(req.handle)
        plaintext = self.keyring.open_registration(handle, req.envelope.sealed(), self.clock())
        identity = wire.decode(plaintext, PublicIdentity)
        if identity.handle != handle:
            raise InvalidInput("handle does not match identity")
        identity.validate()
        if not await self.storage.register(handle, identity.to_json()):
            raise Conflict()
        return json_response(OK)

    async def resolve(self, request: Request) -> Response:
        self.require_pow(request)
        req = await self.read_json(request, wire.ResolveRequest)
        handle = parse_handle(req.handle)
        field = "requester_ephemeral_pubkey_hex"
        requester = decode_hex(req.requester_ephemeral_pubkey_hex, 32, field)
        try:  # before the lookup, so a bad key is refused alike for hits and misses
            seal_to_requester = self.keyring.resolution_sealer(handle, requester, self.clock())
        except InvalidInput:
            raise InvalidInput(field) from None
        identity = await self.storage.get_identity(handle)
        if not self.config.privacy.constant_shape_resolve:
            envelope = (
                None if identity is None else wire.Envelope.build(*seal_to_requester(identity))
            )
        else:  # a miss looks like a hit: same length bucket, same DH and AEAD work
            # bytes(...) copies, as padded() does: both paths allocate and fill one bucket
            plaintext = bytes(self._miss) if identity is None else padded(identity, self._pad)
            envelope = wire.Envelope.build(*seal_to_requester(plaintext))
        return json_response(wire.ResolveResponse(req.handle, envelope))

    async def check_user(self, request: Request) -> Response:
        if not self.config.privacy.check_user_enabled:
            raise NotFound()
        self.require_pow(request)
        handle = parse_handle(request.path_params["handle"])
        exists = await self.storage.exists(handle)
        return json_response(b'{"exists":true}' if exists else b'{"exists":false}')

    async def announce(self, request: Request) -> Response:
        presence = await self.read_json(request, wire.Presence)
        handle = decode_hex(presence.user_id, 32, "user_id")
        presence.validate()
        now = self.clock()
        presence.user_id = handle.hex()
        expires = expiry_ms(presence.ts_ms, now, self.config.presence.ttl_seconds)
        await self.storage.announce(handle, wire.encode(presence), expires)
        return json_response(OK)

    async def sync(self, request: Request) -> Response:
        if not self.config.allow_sync:
            raise Unauthorized()
        await self.require_peer(request)
        req = await self.read_json(request, wire.SyncRequest)
        records = []
        for identity in req.identities:
            try:
                identity.validate()
            except InvalidInput:
                continue  # the reference skips invalid identities silently
            records.append((identity.handle, identity.to_json()))
        return json_response({"merged": await self.storage.merge(records)})

    async def get_nodes(self, request: Request) -> Response:
        nodes = await self.storage.nodes()
        return json_response({"nodes": [{"base_url": url} for url in nodes]})

    async def post_nodes(self, request: Request) -> Response:
        await self.require_peer(request)
        payload = await self.read_json(request, wire.NodesPayload)
        urls = [node.validated() for node in payload.nodes]  # all valid, or nothing stored
        added = await self.storage.add_nodes(urls, self.config.max_nodes)
        return json_response({"merged": added})

    async def envelope_pubkey(self, request: Request) -> Response:
        now = self.clock()
        return json_response(self.keyring.active(now).describe(now))

    async def envelope_pubkeys(self, request: Request) -> Response:
        now = self.clock()
        return json_response([key.describe(now) for key in self.keyring.keys])

    async def require_peer(self, request: Request) -> None:
        """Pass authenticated peers: callers on the peer listener, or with a bearer token
        matching one of ``[peers] token_hashes`` (else 401)."""
        if on_peer_listener(request):
            return
        token = bearer_token(request)
        if not await self.peer_tokens.verify(token, self.config.peers.token_hashes):
            raise Unauthorized()
