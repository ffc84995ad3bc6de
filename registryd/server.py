"""Serving with Hypercorn, programmatically: TLS, mTLS, IPv4/IPv6, clean stop on SIGINT/SIGTERM.

The Hypercorn ``Config`` is built in code from our validated config (never ``from_mapping``,
which silently ignores misspelt keys), and the TLS context is built once before binding so a
bad certificate stops the daemon with a :class:`ConfigError` instead of serving plain HTTP.
Connections are accepted by :mod:`registryd.transport.listener` (connection cap, per-client
share, TLS memory, graceful stop) and spoken to with Hypercorn's HTTP/1.1 and HTTP/2 protocols.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from wsgiref.handlers import format_date_time

from hypercorn.config import Config as HypercornConfig

from .abuse.clientip import ClientKeys
from .app import create_app
from .config import Config
from .errors import ConfigError, KeyUnavailable
from .keyring import KeyRing, key_warnings
from .keystore import load_keyring
from .logs import audit
from .runtime import Runtime
from .sdnotify import notify
from .sockets import BACKLOG, MAX_HEADER_BYTES, bind_socket, parse_address
from .storage import open_storage
from .timespec import now_ms
from .transport import listener
from .transport.listener import Gate
from .transport.metrics import metrics_hypercorn_config, serving_metrics
from .transport.peers import peer_hypercorn_config, serving_peers

log = logging.getLogger("registryd")


def _require_file(path: str, key: str) -> None:
    if not Path(path).is_file():
        raise ConfigError(key, f"file not found: {path}")


class ServingConfig(HypercornConfig):
    """Hypercorn's config, with its response headers (``date``, and ``server``/``alt-svc``
    when set) built once a second per protocol instead of once per response: Hypercorn formats
    the ``date`` header anew for every answer (``wsgiref`` ``format_date_time``, ~1.1 µs).
    The value is byte-identical: that format has whole seconds, from the same clock."""

    _second = -1
    _headers: dict[str, list[tuple[bytes, bytes]]]

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        """A fresh list each call (callers may extend it); ``date`` is ``time.time()``'s."""
        now = int(time.time())
        if now != self._second:
            self._second, self._headers = now, {}
        headers = self._headers.get(protocol)
        if headers is None:
            headers = [(n, v) for n, v in super().response_headers(protocol) if n != b"date"]
            if self.include_date_header:
                headers.insert(0, (b"date", format_date_time(now).encode("ascii")))
            self._headers[protocol] = headers
        return list(headers)


def hypercorn_config(config: Config) -> HypercornConfig:
    """The Hypercorn config for ``config`` (a :class:`ServingConfig`); raises
    :class:`ConfigError` if TLS cannot be set up."""
    hc = ServingConfig()
    hc.accesslog = None  # an access log would pair client IPs with handles in /check_user paths
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = config.server.shutdown_grace_seconds
    # After the connections, the app's own shutdown (GC, prober, closing pools) gets as long
    # again, not Hypercorn's default 60 s, so a stop takes at most twice the grace.
    hc.shutdown_timeout = config.server.shutdown_grace_seconds
    hc.include_server_header = False
    hc.backlog = BACKLOG  # for whoever serves with this config through Hypercorn (bench floor)
    hc.h11_max_incomplete_size = MAX_HEADER_BYTES
    hc.ssl_handshake_timeout = config.server.handshake_timeout_seconds
    # The idle timer runs from connection start (and after each response) until a request's
    # headers are complete, so it is the header deadline as well as the keep-alive.
    hc.keep_alive_timeout = config.server.header_timeout_seconds
    if config.mode == "tls":
        tls = config.tls
        if tls is None:  # config validation guarantees this; kept for type narrowing
            raise ConfigError("tls", 'mode = "tls" needs a [tls] table')
        _require_file(tls.cert_pem_path, "tls.cert_pem_path")
        _require_file(tls.key_pem_path, "tls.key_pem_path")
        hc.certfile, hc.keyfile = tls.cert_pem_path, tls.key_pem_path
        if tls.client_ca_pem_path:
            _require_file(tls.client_ca_pem_path, "tls.client_ca_pem_path")
            hc.ca_certs = tls.client_ca_pem_path
            hc.verify_mode = ssl.CERT_REQUIRED  # ca_certs alone would still serve cert-less clients
        try:
            context = hc.create_ssl_context()
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError("tls", f"cannot build the TLS context: {exc}") from None
        if context is None:
            raise ConfigError("tls", "TLS was asked for but no TLS context could be built")
    return hc


def settle_heap() -> None:
    """Collect start-up garbage, then freeze what is left out of the cyclic collector's reach.

    Every full collection otherwise walks every object importing and starting left behind:
    14-18 ms with the event loop stopped, every few seconds under load. Frozen, a full
    collection takes ~2 ms (``python -m bench.prober``, 500 nodes: longest loop stall 11-24 ms
    over five runs without, 6-15 ms over six runs with).
    """
    gc.collect()
    gc.freeze()


def _bind_peers(config: Config, sock: socket.socket | None) -> socket.socket:
    """The peer listener's socket: ``peers.listen`` bound now, or ``sock``."""
    if sock is None:
        sock = bind_socket(*parse_address(config.peers.listen or "", "peers.listen"))
    url = url_of(config, sock)
    log.info("peer listener on %s (client certificates from peers.client_ca_pem_path)", url)
    return sock


def bind_metrics(config: Config) -> socket.socket | None:
    """The metrics listener's socket, ``metrics.address`` bound now and logged; None without
    ``[metrics] address``. Raises :class:`ConfigError` naming the key if it cannot bind."""
    if config.metrics.address is None:
        return None
    address = config.metrics.address
    try:
        sock = bind_socket(*parse_address(address, "metrics.address"))
    except OSError as exc:
        raise ConfigError("metrics.address", f"cannot listen on {address}: {exc}") from None
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
    log.info("metrics listener on %s (plain HTTP)", url)
    if not ipaddress.ip_address(host).is_loopback:
        log.warning("metrics.address is not a loopback address: firewall it to your scrapers")
    return sock


def _gate(config: Config) -> Gate:
    """A listener's connection cap and per-client shares (``[server] max_connections*``)."""
    return Gate(
        config.server.max_connections,
        config.server.max_connections_per_client,
        ClientKeys(config.trusted_proxies),
    )


async def _reload(state: Runtime) -> None:
    """SIGHUP: reload, with one audit line (the admin API audits its own reloads)."""
    try:
        stale = await state.reload()
    except ConfigError as exc:
        audit("reload", source="SIGHUP", outcome="failed")
        log.error("reload failed, still serving the previous configuration: %s", exc)
        return
    audit("reload", source="SIGHUP", outcome="ok", restart_needed=stale)


def _active_kid(keyring: KeyRing) -> str:
    try:
        return keyring.active().kid.hex()
    except KeyUnavailable:
        return "none (degraded)"


def url_of(config: Config, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if config.mode == 'tls' else 'http'}://{host}:{port}"


async def serve(
    config: Config,
    *,
    sock: socket.socket | None = None,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    on_ready: Callable[[str], None] | None = None,
    config_path: str | None = None,
    peer_sock: socket.socket | None = None,
    metrics_sock: socket.socket | None = None,
    serve_metrics: bool = True,
) -> None:
    """Serve until ``shutdown_trigger`` returns (default: SIGINT or SIGTERM).

    Order: TLS context and keys are checked, storage is opened, then the socket is bound (or
    ``sock`` used), so every configuration or storage error surfaces before anything listens.
    In-flight requests get ``server.shutdown_grace_seconds`` to finish; storage is then closed.
    SIGHUP re-reads ``config_path`` and its keystore (:meth:`Runtime.reload`) without
    dropping connections. ``on_ready`` receives the base URL once listening. With
    ``[peers] listen``, the peer listener (:mod:`registryd.transport.peers`) serves too, on
    ``peer_sock`` if given; with ``[metrics] address``, the metrics listener
    (:mod:`registryd.transport.metrics`), on ``metrics_sock`` if given (bound by the caller),
    unless ``serve_metrics`` is False (a worker of ``[server] workers`` other than the one
    serving it). Raises :class:`ConfigError` and :class:`~registryd.errors.StorageError`.
    """
    hc = hypercorn_config(config)
    peer_hc = peer_hypercorn_config(config, hypercorn_config(config))
    metrics_plain = metrics_hypercorn_config(hypercorn_config(config))
    keyring = load_keyring(config.envelope)
    for warning in key_warnings(keyring, now_ms(), config.envelope.expiry_warning_days):
        log.warning("%s", warning)
    if config.storage.index_key_hex is None:
        log.warning(
            "storage.index_key_hex is not set: the index key is derived from the pepper, which "
            "every client knows, so blind indexes and at-rest sealing do not protect the database "
            "from anyone who has the pepper; set storage.index_key_hex (see `registryd init`)"
        )
    if config.mode == "http":
        log.warning('mode = "http": serving plain HTTP without TLS, for local development only')
    storage = open_storage(config)
    try:
        if sock is None:
            sock = bind_socket(*config.host_port)
        url = url_of(config, sock)
        if peer_hc is not None:
            peer_sock = _bind_peers(config, peer_sock)
        if metrics_sock is None and serve_metrics:
            metrics_sock = bind_metrics(config)
        state = Runtime(config, storage, keyring, now_ms, config_path=config_path)
        app = create_app(state)
        loop = asyncio.get_running_loop()
        if config_path is not None:
            reloads: set[asyncio.Task[None]] = set()

            def on_sighup() -> None:
                task = asyncio.create_task(_reload(state))
                reloads.add(task)
                task.add_done_callback(reloads.discard)

            loop.add_signal_handler(signal.SIGHUP, on_sighup)
        stop = asyncio.Event()
        if shutdown_trigger is None:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            shutdown_trigger = stop.wait
        settle_heap()
        if on_ready is not None:  # before the log line: a pid file exists once it is seen
            on_ready(url)
        notify(f"READY=1\nSTATUS=listening on {url}\nMAINPID={os.getpid()}")  # systemd
        log.info(
            "registryd listening on %s (storage=%s, active kid=%s, event loop=%s%s)",
            url,
            storage.kind,
            _active_kid(keyring),
            type(loop).__module__.split(".", 1)[0],  # the loop serving: "asyncio" or "uvloop"
            ", mTLS required" if hc.verify_mode == ssl.CERT_REQUIRED else "",
        )
        peers = (peer_hc, peer_sock, _gate(config)) if peer_hc and peer_sock else None
        scraped = None if metrics_sock is None else (metrics_plain, metrics_sock)
        async with (
            serving_metrics(state.metrics.exposition, scraped, shutdown_trigger),
            serving_peers(app, peers, shutdown_trigger) as shutdown_trigger,
        ):
            # Starlette's ASGI signature is not structurally Hypercorn's TypedDict one.
            await listener.serve(app, hc, sock, _gate(config), shutdown_trigger)  # type: ignore[arg-type]
        log.info("registryd stopped")
    finally:
        await storage.close()
