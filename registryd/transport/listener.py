"""Accepting connections: the connection cap, each client's share, TLS, the graceful stop.

Hypercorn's ``serve`` cannot do these (issue 8, measured on ``main``): it accepts through
``asyncio.start_server``, which builds every connection's TLS state, a 256 KiB read buffer
included, before any code of ours runs, so nothing could bound connections or their memory
(6,000 connections that never sent a byte took RSS from 37 to 1,840 MiB); it calls
``listen`` on our socket again with its own backlog (100 for our 1,024: in a burst of 1,000
connects, a third waited for a SYN retransmission); and a TLS error while closing one
connection ended the whole ``serve`` (exit 1 on SIGTERM). So registryd accepts by itself and
hands each connection to :class:`~.connection.Connection`, which runs Hypercorn's
HTTP/1.1 and HTTP/2 protocols.

- A connection costs only its socket until the client sends a first byte: TLS starts then
  (a first byte that cannot start a TLS handshake closes it), with a 16 KiB read buffer
  (:data:`TLS_READ_BYTES`). The handshake, the wait for that byte included, has
  ``handshake_timeout_seconds``.
- At most ``[server] max_connections`` are open, and at most ``max_connections_per_client``
  per client (its address, IPv6 by /64, as for rate limits; a ``trusted_proxies`` peer has no
  share, since its connections carry many clients). Over its share a client's new connection
  is closed at once. When all connections are in use, a new one takes the place of the one
  that has been idle longest (silent, handshaking, or kept alive between requests), so that
  silent connections cannot lock out a client that speaks; if none is idle it is closed.
- Stopping: no more accepts; idle connections close; in-flight requests get
  ``shutdown_grace_seconds`` to finish (their answers say ``connection: close``); whatever is
  left is then cut, and the call returns at most 2 x :data:`ABORT_SECONDS` later.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import errno
import functools
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.lifespan import Lifespan
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import ASGIFramework, LifespanState
from hypercorn.utils import LifespanTimeoutError

from ..abuse.clientip import ClientKeys
from .connection import CLOSE_SECONDS, Connection

log = logging.getLogger("registryd")

ABORT_SECONDS = 0.5
ACCEPT_BATCH = 128
TLS_READ_BYTES = 16 * 1024
"""asyncio's read buffer per TLS connection (``asyncio.sslproto.SSLProtocol.max_size``).

asyncio allocates and zeroes 256 KiB per TLS connection when TLS starts: 1,024 connections
that sent one byte of a handshake grew RSS by 507 MiB. A TLS record is at most 16 KiB plus a
few bytes, so 16 KiB costs at most a second read per record; the same connections take 78 MiB
(``python -m bench.idle_connections --hello``). asyncio reads the class attribute for each new
connection and offers no parameter, hence :func:`serve` sets it.
"""
REPORT_SECONDS = 60.0
_HANDSHAKE = b"\x16"  # the content type of a TLS record that starts a handshake
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(eq=False)
class Slot:
    """One admitted connection: its client key (None: a trusted proxy) and, while it is idle,
    how to evict it."""

    client: str | None
    evict: Callable[[], object] | None = None
    released: bool = False


@dataclass
class Gate:
    """Counts open connections, in all and per client, and decides who is admitted."""

    limit: int
    per_client: int
    keys: ClientKeys
    open: int = 0
    refused: int = 0
    evicted: int = 0
    _clients: dict[str, int] = field(default_factory=dict)
    _idle: dict[Slot, None] = field(default_factory=dict)  # oldest first

    def admit(self, host: str) -> Slot | None:
        """A slot for a new connection from peer address ``host``, or None to refuse it."""
        client = self.keys.peer(host)
        if client is not None and self._clients.get(client, 0) >= self.per_client:
            self.refused += 1
            return None
        if self.open >= self.limit:
            if not self._idle:
                self.refused += 1
                return None
            self._evict_oldest()
        self.open += 1
        if client is not None:
            self._clients[client] = self._clients.get(client, 0) + 1
        return Slot(client)

    def idle(self, slot: Slot, evict: Callable[[], object] | None) -> None:
        """Mark ``slot`` idle (newest), evictable by ``evict``; or busy (``evict=None``)."""
        self._idle.pop(slot, None)
        if evict is not None and not slot.released:
            slot.evict = evict
            self._idle[slot] = None

    def release(self, slot: Slot) -> None:
        if slot.released:
            return
        slot.released = True
        self._idle.pop(slot, None)
        self.open -= 1
        if slot.client is not None:
            left = self._clients[slot.client] - 1
            if left:
                self._clients[slot.client] = left
            else:
                del self._clients[slot.client]

    def _evict_oldest(self) -> None:
        victim = next(iter(self._idle))
        evict = victim.evict
        self.release(victim)
        self.evicted += 1
        if evict is not None:
            evict()


async def _readable(sock: socket.socket) -> None:
    """Wait until ``sock`` has something to read (or was closed by the peer)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock, wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock)


class Listener:
    """Accepts on a listening socket and serves each connection (module docstring)."""

    def __init__(
        self,
        app: ASGIWrapper,
        config: HypercornConfig,
        sock: socket.socket,
        ssl_context: ssl.SSLContext | None,
        gate: Gate,
    ) -> None:
        self.app, self.config, self.sock, self.ssl_context, self.gate = (
            app,
            config,
            sock,
            ssl_context,
            gate,
        )
        self.context = WorkerContext(None)
        self.state: LifespanState = {}
        self._server = sock.getsockname()[:2]
        self._tasks: dict[asyncio.Task[None], Connection | None] = {}
        self._reported = (time.monotonic() - REPORT_SECONDS, 0, 0)  # (when, refused, evicted)
        self._report_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Accept from now on (until :meth:`stop`)."""
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock, self._accept)

    def _accept(self) -> None:
        # Accepted in batches, as asyncio's own servers do, from a reader callback rather than a
        # task: stopping cannot then lose a socket accepted at the moment of a cancellation.
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:  # try again in a while, not in a busy loop
                    log.warning("cannot accept connections (%s); pausing 1 s", exc.strerror)
                    loop.remove_reader(self.sock)
                    loop.call_later(1.0, self._resume)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            slot = self.gate.admit(address[0])
            if self.gate.refused != self._reported[1] or self.gate.evicted != self._reported[2]:
                self._report()
            if slot is None:
                conn.close()
                continue
            task = loop.create_task(self._serve(conn, address[:2], slot))
            self._tasks[task] = None
            task.add_done_callback(functools.partial(self._done, conn, slot))
            self.gate.idle(slot, task.cancel)

    def _resume(self) -> None:
        if self.sock.fileno() >= 0:
            asyncio.get_running_loop().add_reader(self.sock, self._accept)

    def _done(self, conn: socket.socket, slot: Slot, task: asyncio.Task[None]) -> None:
        # here, not in _serve: a task cancelled before its first step never runs its finally
        del self._tasks[task]
        conn.close()
        self.gate.release(slot)

    async def _serve(self, conn: socket.socket, client: tuple[str, int], slot: Slot) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        try:
            reader = asyncio.StreamReader()
            protocol = asyncio.StreamReaderProtocol(reader)
            if self.ssl_context is None:
                transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn)
            else:
                timeout = self.config.ssl_handshake_timeout
                async with asyncio.timeout(timeout):
                    await _readable(conn)  # a silent client never costs a TLS state,
                    if conn.recv(1, socket.MSG_PEEK) != _HANDSHAKE:  # nor one that is not TLS
                        return
                    transport, _ = await loop.connect_accepted_socket(
                        lambda: protocol,
                        conn,
                        ssl=self.ssl_context,
                        ssl_handshake_timeout=timeout,
                        ssl_shutdown_timeout=CLOSE_SECONDS,
                    )
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            connection = Connection(
                self.app,
                self.config,
                self.context,
                self.state,
                reader,
                writer,
                client,
                self._server,
                lambda idle: self.gate.idle(slot, connection.abort if idle else None),
            )
            if task is not None:
                self._tasks[task] = connection
            if self.context.terminated.is_set():
                connection.abort()
            await connection.run()
        except (OSError, TimeoutError):  # handshake failed or timed out, the client went away
            pass
        except Exception as exc:  # a fault in one connection must not reach the others
            log.warning("connection dropped: %s", type(exc).__name__)

    async def stop(self, grace: float) -> None:
        """Stop serving: no more accepts, idle connections now, busy ones after ``grace`` s at
        the latest."""
        asyncio.get_running_loop().remove_reader(self.sock)
        self.sock.close()
        await self.context.terminated.set()
        for task, connection in list(self._tasks.items()):
            if connection is None:
                task.cancel()  # not yet speaking HTTP
            else:
                connection.shutdown()
        await self._wait(grace)
        for task, connection in list(self._tasks.items()):
            if connection is None:
                task.cancel()
            else:
                connection.abort()  # its requests see a disconnect and can end by themselves
        await self._wait(ABORT_SECONDS)
        for task in list(self._tasks):
            task.cancel()
        await self._wait(ABORT_SECONDS)
        if self._report_timer is not None:
            self._report_timer.cancel()

    async def _wait(self, seconds: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=seconds)

    def _report(self) -> None:
        """Log refusals and evictions: at once, then at most once per :data:`REPORT_SECONDS`."""
        at, refused, evicted = self._reported
        now = time.monotonic()
        if now - at < REPORT_SECONDS:
            if self._report_timer is None:  # what happens meanwhile is told when it is due
                self._report_timer = asyncio.get_running_loop().call_at(
                    at + REPORT_SECONDS, self._report
                )
            return
        self._report_timer = None
        log.warning(
            "connection limits: %d connections refused, %d idle ones closed for newcomers "
            "(server.max_connections = %d, server.max_connections_per_client = %d)",
            self.gate.refused - refused,
            self.gate.evicted - evicted,
            self.gate.limit,
            self.gate.per_client,
        )
        self._reported = (now, self.gate.refused, self.gate.evicted)


async def serve(
    app: ASGIFramework,
    config: HypercornConfig,
    sock: socket.socket,
    gate: Gate,
    shutdown_trigger: Callable[[], Awaitable[object]],
) -> None:
    """Serve ``app`` on the listening ``sock`` until ``shutdown_trigger`` returns.

    The ASGI lifespan runs around it (startup before the first accept, shutdown after the
    last connection). TLS comes from ``config.create_ssl_context()`` when it has a certificate;
    deadlines from ``config`` (``ssl_handshake_timeout``, ``keep_alive_timeout``,
    ``graceful_timeout``, then ``shutdown_timeout`` for the app's shutdown, logged and given up
    when it passes). Raises Hypercorn's ``LifespanFailureError`` if the app's startup
    fails; network errors are never raised.
    """
    loop = asyncio.get_running_loop()
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BYTES
    wrapped = ASGIWrapper(app)
    listener = Listener(wrapped, config, sock, config.create_ssl_context(), gate)
    lifespan = Lifespan(wrapped, config, loop, listener.state)
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    try:
        await lifespan.wait_for_startup()
        if lifespan_task.done() and lifespan_task.exception() is not None:
            raise lifespan_task.exception()  # type: ignore[misc]
        listener.start()
        try:
            await shutdown_trigger()
        finally:
            await listener.stop(config.graceful_timeout)
            try:
                await lifespan.wait_for_shutdown()
            except LifespanTimeoutError:
                log.error(
                    "the app's shutdown did not finish within %s s; stopping without it",
                    config.shutdown_timeout,
                )
    finally:
        sock.close()
        lifespan_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lifespan_task


@contextlib.asynccontextmanager
async def alongside(
    app: ASGIFramework,
    config: HypercornConfig,
    sock: socket.socket,
    gate: Gate,
    shutdown_trigger: Callable[[], Awaitable[object]],
) -> AsyncIterator[asyncio.Event]:
    """While the block runs, :func:`serve` ``app`` on ``sock`` beside the public listener (the
    peer and metrics listeners). Yields an event set once ``shutdown_trigger`` returns or this
    listener ends; on exit, sets it, waits for the graceful stop and re-raises its error."""
    stopping = asyncio.Event()

    async def watch() -> None:
        await shutdown_trigger()
        stopping.set()

    watcher = asyncio.create_task(watch())
    task = asyncio.create_task(serve(app, config, sock, gate, stopping.wait))
    task.add_done_callback(lambda _: stopping.set())
    try:
        yield stopping
    finally:
        stopping.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await task
