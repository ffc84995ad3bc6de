"""The peer listener (``[peers] listen``): a second Hypercorn listener, in the same process and
event loop, serving the same app, whose TLS layer requires a client certificate from
``peers.client_ca_pem_path`` -- a CA that issues peer certificates only.

Why a listener and not the certificate itself: Hypercorn 0.18 does not put the peer certificate
in the ASGI scope (it has no ``tls`` scope extension), so on the public listener the app cannot
tell one client certificate from another, and with mTLS on, every holder of a certificate from
``tls.client_ca_pem_path`` looked alike. Here the TLS handshake is the identification: only a
holder of a peer certificate gets a connection at all. The listener marks every request it
serves (:data:`PEER_LISTENER` in the scope) with its own ASGI wrapper, which
holds for wildcard and IPv6 binds alike, where the scope's ``server`` entry is the connection's
local address rather than the listener's.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from hypercorn.config import Config as HypercornConfig
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import Config
from ..errors import ConfigError
from . import PEER_LISTENER, listener

Trigger = Callable[[], Awaitable[object]]


class PeerListener:
    """ASGI wrapper for the peer listener: marks each request, answers the lifespan itself
    (the public listener runs the app's lifespan once)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await self.app({**scope, PEER_LISTENER: True}, receive, send)


def _ca_keys(path: str, key: str) -> set[bytes]:
    """The public keys (DER SubjectPublicKeyInfo) of the certificates in the PEM file ``path``."""
    # Imported here: cryptography adds ~7 MiB RSS to every daemon, and only this check needs it.
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    try:
        certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(key, f"cannot read CA certificates from {path}: {exc}") from None
    return {
        c.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) for c in certs
    }


def peer_hypercorn_config(config: Config, base: HypercornConfig) -> HypercornConfig | None:
    """The Hypercorn config of the peer listener, or None without ``[peers] listen``.

    ``base`` is a fresh public-listener config (:func:`registryd.server.hypercorn_config`),
    whose timeouts, limits and server certificate are kept; the client CA becomes
    ``peers.client_ca_pem_path`` with certificates required. Raises :class:`ConfigError`
    (``peers.client_ca_pem_path``) if a CA key in that file is also in
    ``tls.client_ca_pem_path`` (every public client would be a peer), or the TLS context
    cannot be built (a file that is not PEM certificates).
    """
    peer_ca = config.peers.client_ca_pem_path
    if config.peers.listen is None or peer_ca is None:
        return None
    key = "peers.client_ca_pem_path"
    peer_keys = _ca_keys(peer_ca, key)
    public_ca = config.tls.client_ca_pem_path if config.tls else None
    if public_ca and peer_keys & _ca_keys(public_ca, "tls.client_ca_pem_path"):
        raise ConfigError(
            key, "shares a CA with tls.client_ca_pem_path: every public client would be a peer"
        )
    base.ca_certs = peer_ca
    base.verify_mode = ssl.CERT_REQUIRED
    try:
        base.create_ssl_context()
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(key, f"cannot build the peer listener's TLS context: {exc}") from None
    return base


@contextlib.asynccontextmanager
async def serving_peers(
    app: ASGIApp,
    peers: tuple[HypercornConfig, socket.socket, listener.Gate] | None,
    shutdown_trigger: Trigger,
) -> AsyncIterator[Trigger]:
    """While the block runs, serve ``app`` on the peer listener (if ``peers`` is not None:
    its Hypercorn config, listening socket and connection gate; :func:`.listener.serve`).

    Yields the shutdown trigger for the public listener: both stop when ``shutdown_trigger``
    returns, and the public one also stops if the peer listener ends. On exit, waits for the
    peer listener's graceful stop and re-raises its error, if any.
    """
    if peers is None:
        yield shutdown_trigger
        return
    hc, sock, gate = peers
    # Starlette's ASGI signature is not structurally Hypercorn's TypedDict one; same protocol.
    peer = PeerListener(app)
    async with listener.alongside(peer, hc, sock, gate, shutdown_trigger) as stopping:  # type: ignore[arg-type]
        yield stopping.wait
