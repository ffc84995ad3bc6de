"""One accepted connection, TLS already done, served by Hypercorn's protocol layer.

This is Hypercorn's ``TCPServer`` (the read loop feeding ``hypercorn.protocol`` and writing what
it answers) with the close done differently (issue 8):

- **Errors while closing stay here.** Hypercorn's close awaits the TLS shutdown and lets an
  ``ssl.SSLError`` escape (``APPLICATION_DATA_AFTER_CLOSE_NOTIFY`` when the client sends its next
  request as we close): under keep-alive load that error ended ``serve`` on SIGTERM (exit 1, the
  in-flight requests cut off with 500), and after an early answer it put ~5.5 KB of tracebacks
  in the log per request. Here every transport error ends the connection quietly, and the TLS
  shutdown is bounded (:data:`CLOSE_SECONDS`).
- **Lingering close.** When the server closes while the client is still sending its request (an
  answer such as 413 sent before the body was read, or a malformed request), closing at once
  makes the kernel reset the connection, and the reset can destroy the answer before the client
  reads it. The connection is first read and discarded, until the client stops (EOF), for at
  most :data:`LINGER_SECONDS` and :data:`LINGER_BYTES` (Apache's and nginx's lingering close).
- **Idle connections close at once on shutdown**, and busy ones after their answer; the
  keep-alive timer is a loop timer rather than a task per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hypercorn.asyncio.task_group import TaskGroup
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState, WorkerContext

from .protocols import H2, H11, protocol_for

MAX_RECV = 64 * 1024
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 * 1024 * 1024
CLOSE_SECONDS = 2.0
"""How long the TLS shutdown (our close_notify, the client's) may take before the socket is cut."""


class Connection:
    """Serve one connection: ``reader``/``writer`` from asyncio (TLS, if any, established).

    ``client`` and ``server`` are (host, port). ``on_idle(idle)`` is called whenever the
    connection starts or stops carrying a request. :meth:`run` returns when the connection is
    closed; it raises nothing for network or TLS failures.
    """

    def __init__(
        self,
        app: AppWrapper,
        config: HypercornConfig,
        context: WorkerContext,
        state: LifespanState,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: tuple[str, int],
        server: tuple[str, int],
        on_idle: Callable[[bool], None],
    ) -> None:
        self.app, self.config, self.context, self.state = app, config, context, state
        self.reader, self.writer = reader, writer
        self.client, self.server = client, server
        self.idle = False
        self._on_idle = on_idle
        self._protocol: H11 | H2 | None = None
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._send_lock = asyncio.Lock()

    async def run(self) -> None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        try:
            async with TaskGroup(asyncio.get_running_loop()) as task_group:
                self._protocol = protocol_for(
                    alpn,
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    ConnectionState(self.state),
                    ssl_object is not None,
                    self.client,
                    self.server,
                    self._send,
                )
                await self._protocol.initiate()
                self._set_idle(True)
                await self._read(self._protocol)
        finally:
            self._cancel_timer()
            await self._close()

    def shutdown(self) -> None:
        """The server is stopping: close now if idle, else after the answer in progress."""
        if self.idle:
            self._begin_close()

    def abort(self) -> None:
        """Cut the connection now (no TLS shutdown): for evictions and the end of the grace."""
        self.writer.transport.abort()

    async def _read(self, protocol: H11 | H2) -> None:
        discarded = 0
        while True:
            try:
                data = await self.reader.read(MAX_RECV)
            except OSError:  # ConnectionError and ssl.SSLError included
                break
            if not data:
                break
            if self._closing:  # lingering: read and drop, so that the answer is not reset
                discarded += len(data)
                if discarded > LINGER_BYTES:
                    break
                continue
            await protocol.handle(RawData(data))
        await protocol.handle(Closed())

    async def _send(self, event: Event) -> None:
        if isinstance(event, RawData):
            async with self._send_lock:
                try:
                    self.writer.write(event.data)
                    await self.writer.drain()
                except (OSError, RuntimeError):  # RuntimeError: written after the close
                    if self._protocol is not None:
                        await self._protocol.handle(Closed())
        elif isinstance(event, Closed):
            self._begin_close()
        elif isinstance(event, Updated):
            self._set_idle(event.idle)

    def _set_idle(self, idle: bool) -> None:
        if self._closing:
            return
        self.idle = idle
        self._cancel_timer()
        if idle and self.context.terminated.is_set():
            self._begin_close()
            return
        if idle:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.config.keep_alive_timeout, self._begin_close)
        self._on_idle(idle)

    def _begin_close(self) -> None:
        """Close, lingering first if the client may still be sending its request."""
        if self._closing:
            return
        self._closing = True
        self._on_idle(False)
        self._cancel_timer()
        if self._protocol is not None and self._protocol.awaiting_body:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(LINGER_SECONDS, self.writer.close)
        else:
            self.writer.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await self.writer.wait_closed()
        except (OSError, TimeoutError, RuntimeError):
            self.abort()
        except asyncio.CancelledError:
            self.abort()
            raise
