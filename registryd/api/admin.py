"""The optional admin API: list and rotate envelope keys, reload the config.

On only with ``[admin] token_hashes``; every route then needs a caller on loopback or on the
peer listener (``[peers] listen``; else 403) and a bearer token matching one of the hashes
(else 401). A client certificate on the public listener does not count: it identifies nobody.
Token checks run in a bounded thread pool of the admin API's own
(:class:`~registryd.api.auth.TokenVerifier`). The node directory adds ``/admin/directory``
(:mod:`registryd.api.directory`) behind the same checks.

    GET  /admin/keys          the envelope keys: kid, public key, state, times (never private)
    POST /admin/keys/rotate   {"grace_seconds": n}: a new active key; the old one opens
                              registrations for n more seconds (needs envelope.keystore_path)
    POST /admin/reload        re-read the config file and keystore, as SIGHUP does

Every call that reaches a route while the API is on leaves one audit line (:meth:`AdminApi.audited`,
:func:`registryd.logs.audit`): ``admin action=keys.rotate outcome=ok|refused|failed status=N
via=loopback|peer-listener|public``, never the token or the caller's address.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import (
    ApiError,
    ConfigError,
    Conflict,
    Forbidden,
    InvalidInput,
    KeystoreError,
    NotFound,
    Unauthorized,
)
from ..keyring import describe_key
from ..keystore import Keystore, read_passphrase
from ..logs import audit
from ..runtime import Runtime
from .auth import TokenVerifier, bearer_token, from_loopback, on_peer_listener
from .body import json_response, read_json


class RotateRequest(msgspec.Struct, forbid_unknown_fields=True):
    grace_seconds: Annotated[int, msgspec.Meta(ge=0, le=10 * 365 * 86_400)]


Endpoint = Callable[[Request], Awaitable[Response]]
REFUSED = (401, 403, 429)  # no or a wrong token, not from loopback or the peer listener, a flood


class AdminApi:
    """The ``/admin`` routes over ``state``."""

    def __init__(self, state: Runtime) -> None:
        self.state = state
        self.tokens = TokenVerifier()

    def routes(self) -> list[Route]:
        return [
            Route("/admin/keys", self.audited("keys.list", self.keys), methods=["GET"]),
            Route("/admin/keys/rotate", self.audited("keys.rotate", self.rotate), methods=["POST"]),
            Route("/admin/reload", self.audited("reload", self.reload), methods=["POST"]),
        ]

    def audited(self, action: str, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` leaving one audit line per call: ``action``, ``outcome`` (``ok``,
        ``refused`` for 401/403/429, ``failed``), ``status``, ``via`` (the listener kind) and
        the details the endpoint put in ``request.state.audit``. Nothing is audited while the
        admin API is off (every route is then 404)."""

        async def run(request: Request) -> Response:
            try:
                response = await endpoint(request)
            except ApiError as exc:
                if self.state.config.admin.token_hashes:
                    outcome = "refused" if exc.status_code in REFUSED else "failed"
                    self._audit(request, action, outcome, exc.status_code)
                raise
            self._audit(request, action, "ok", response.status_code)
            return response

        return run

    def _audit(self, request: Request, action: str, outcome: str, status: int) -> None:
        if on_peer_listener(request):
            via = "peer-listener"
        elif from_loopback(request, self.state.config.trusted_proxies):
            via = "loopback"
        else:
            via = "public"
        details = getattr(request.state, "audit", {})
        audit("admin", action=action, outcome=outcome, status=status, via=via, **details)

    async def authorize(self, request: Request) -> None:
        config = self.state.config
        if not config.admin.token_hashes:
            raise NotFound()
        local = from_loopback(request, config.trusted_proxies)
        if not (local or on_peer_listener(request)):
            raise Forbidden("admin API: loopback or the peer listener only")
        token = bearer_token(request)
        if not await self.tokens.verify(token, config.admin.token_hashes):
            raise Unauthorized()

    async def keys(self, request: Request) -> Response:
        await self.authorize(request)
        return json_response(self._listing())

    async def rotate(self, request: Request) -> Response:
        await self.authorize(request)
        state = self.state
        body = await read_json(request, RotateRequest, state.config.server)
        grace_ms = body.grace_seconds * 1000
        envelope = state.config.envelope
        path = envelope.keystore_path
        if path is None:
            raise InvalidInput("rotation needs a keystore (envelope.keystore_path)")
        now = state.clock()

        def rotate_on_disk() -> None:
            with Keystore.editing(path, read_passphrase(envelope)) as store:  # locked
                store.rotate(now, grace_ms)

        request.state.audit = {"grace_seconds": body.grace_seconds}
        try:
            await anyio.to_thread.run_sync(rotate_on_disk)
            await state.reload()
        except KeystoreError as exc:
            if "busy" in exc.message:  # another rotation holds the keystore lock
                raise Conflict(f"rotation failed: {exc}") from None
            raise InvalidInput(f"rotation failed: {exc}") from None
        except ConfigError as exc:
            raise InvalidInput(f"rotation failed: {exc}") from None
        return json_response(self._listing())

    async def reload(self, request: Request) -> Response:
        await self.authorize(request)
        try:
            stale = await self.state.reload()
        except ConfigError as exc:
            raise InvalidInput(f"reload failed, previous configuration kept: {exc}") from None
        request.state.audit = {"restart_needed": stale}
        return json_response({"reloaded": True, "restart_needed": stale})

    def _listing(self) -> list[dict[str, Any]]:
        now = self.state.clock()
        return [describe_key(key, now) for key in self.state.keyring.keys]
