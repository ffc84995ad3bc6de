"""The registration loop that keeps a node in a registry's directory (extensions spec §4).

    disconnected --> registering --ok--> registered --heartbeat ok, wait the interval--+
         ^               |                  |  ^                                         |
         +-- failure ----+                  |  +-----------------------------------------+
             (wait)                         +-- 401 ------> registering (at once)
                                            +-- failure --> disconnected (wait), then a
                                                            heartbeat if it was retryable,
                                                            else a new registration

The loop: challenge → register; then a heartbeat at once (a new node is listed ``unknown`` until
its first one) and one every ``heartbeat_interval_seconds``, each with a fresh challenge. A
heartbeat answered 401 means the registry no longer knows the node: it registers again at once
(or, if the registration it just made is refused, after a slow-retry wait, so the pair cannot
spin). Other failures wait as :mod:`registryd.node.backoff` says; a retryable heartbeat failure
is retried as a heartbeat, any other failure leads to a new registration. Each state change and
each heartbeat is written to ``state_path`` (:mod:`registryd.node.state`).

Logs (logger ``registryd.node``) show the node's name, host and the first 16 characters of its
public key; never the private key, never more than 160 printable characters of any answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from ..errors import ConfigError, ProtocolError, ServerError, TransportError
from ..sockets import bind_socket
from .backoff import Outcome, WarnLimiter, classify, plan, retry_after_seconds
from .config import NodeConfig
from .directory_client import DirectoryClient, tls_context
from .health import address_of, serve_health
from .keys import NodeKey
from .state import AgentState, State, rfc3339, write_state

log = logging.getLogger("registryd.node")

REQUEST_TIMEOUT_SECONDS = 10.0
HEALTH_STOP_SECONDS = 5.0
Failure = TransportError | ProtocolError | ServerError


class RegistrationAgent:
    """Keeps the node of ``config`` registered; :meth:`run` until :meth:`stop`.

    ``transport``: any :class:`httpx.AsyncBaseTransport` for the registry calls (default:
    httpx's, verifying TLS with ``config.cafile`` or the system store). ``clock``: Unix time in
    seconds (``time.time``). ``sleep``: an awaitable sleep in seconds (``asyncio.sleep``); the
    loop waits only through it, so tests run it on a fake clock. ``rng``: the source of the
    backoff jitter (default: ``random.SystemRandom()``).

    The key is read from ``config.key_path``. Raises :class:`~registryd.errors.ConfigError` if
    the key file or ``cafile`` is unusable, ``OSError`` if the key file cannot be read.
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.key = NodeKey.load(config.key_path)
        try:
            self._verify = tls_context(config.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("cafile", f"cannot load {config.cafile}: {exc}") from None
        self._transport = transport
        self._clock = clock
        self._sleep = sleep
        self._rng = rng if rng is not None else random.SystemRandom()
        self._warnings = WarnLimiter(clock)
        self._payload: dict[str, Any] = config.payload.as_payload()
        self._state = State.DISCONNECTED
        self._since = clock()
        self._last_heartbeat: float | None = None
        self._last_error: str | None = None
        self._next_attempt: float | None = None
        self._failures = 0  # failures in a row: the backoff attempt and the max_retry count
        self._task: asyncio.Task[Any] | None = None
        self._stop_requested = False
        self.health_url: str | None = None  # http://IP:port once the health endpoint listens

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    def snapshot(self) -> AgentState:
        """The current state as the state file holds it."""
        now = self._clock()
        return AgentState(
            state=self._state,
            since=rfc3339(self._since),
            updated_at=rfc3339(now),
            registry_url=self.config.registry_url,
            host=self.config.payload.host,
            pubkey_prefix=self.key.pubkey_prefix,
            pid=os.getpid(),
            last_heartbeat_at=_time(self._last_heartbeat),
            last_error=self._last_error,
            next_attempt_at=_time(self._next_attempt),
        )

    def stop(self) -> None:
        """Make :meth:`run` return soon: the call or wait in progress is abandoned, the state
        file is written (``disconnected``). Safe to call from a signal handler or a callback, and
        more than once (a second SIGTERM does not interrupt the clean stop)."""
        if self._stop_requested:
            return
        self._stop_requested = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def run(self) -> None:
        """Register and stay registered until :meth:`stop`.

        Writes the state file first and binds ``health_listen`` (if set) before any call, so
        either problem raises ``OSError`` before the node contacts the registry. Registry
        failures never end the loop.
        """
        task = asyncio.current_task()
        if self._task is not None or task is None:
            raise RuntimeError("run() is awaited once, in a task")
        self._task = task
        self._write(strict=True)
        address = self.config.health_address
        sock = None if address is None else bind_socket(*address)
        stop_health = asyncio.Event()
        health: asyncio.Task[None] | None = None
        try:
            if sock is not None:
                self.health_url = address_of(sock)
                health = asyncio.create_task(
                    serve_health(sock, lambda: self._state.value, stop_health.wait)
                )
                log.info("health endpoint on %s/health", self.health_url)
            if not self._stop_requested:
                await self._serve()
        except asyncio.CancelledError:
            if not self._stop_requested:
                raise
            task.uncancel()
        finally:
            self._next_attempt = None
            self._enter(State.DISCONNECTED)
            stop_health.set()
            if health is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(health, HEALTH_STOP_SECONDS)
        log.info("node agent stopped")

    # -- the loop ------------------------------------------------------------------------------

    async def _serve(self) -> None:
        cfg = self.config
        if cfg.registry_url.startswith("http://"):
            log.warning("registry_url is plain http://: use https:// outside development")
        log.info(
            "node agent for %s (host %s, key %s...) with %s",
            cfg.payload.name,
            cfg.payload.host,
            self.key.pubkey_prefix,
            cfg.registry_url,
        )
        async with DirectoryClient(
            cfg.registry_url,
            self.key,
            transport=self._transport,
            verify=self._verify,
            timeout=REQUEST_TIMEOUT_SECONDS,
        ) as directory:
            await self._loop(directory)

    async def _loop(self, directory: DirectoryClient) -> None:
        registered = False  # the registry holds our registration, as far as we know
        fresh = False  # registered, and no heartbeat has succeeded since
        while True:
            if not registered:
                self._enter(State.REGISTERING)
                try:
                    await directory.register(self._payload)
                except (TransportError, ProtocolError, ServerError) as exc:
                    await self._failed("register", exc)
                    continue
                log.info("registered %s with %s", self.config.payload.host, directory.registry_url)
                registered = fresh = True
                self._enter(State.REGISTERED)
            try:
                await directory.heartbeat(self.config.payload.host)
            except ServerError as exc:
                if exc.status == 401 and not fresh:
                    log.warning("heartbeat refused (401 %s): registering again", exc.code)
                    registered = False
                    continue
                registered = classify(exc.status) is Outcome.RETRYABLE
                await self._failed("heartbeat", exc)
                continue
            except (TransportError, ProtocolError) as exc:
                await self._failed("heartbeat", exc)
                continue
            if self._failures:
                log.info("heartbeat ok after %d failures in a row", self._failures)
            else:
                log.debug("heartbeat ok")
            fresh = False
            self._failures = 0
            self._last_heartbeat = self._clock()
            self._last_error = None
            self._next_attempt = self._last_heartbeat + self.config.heartbeat_interval_seconds
            self._enter(State.REGISTERED)
            await self._sleep(self.config.heartbeat_interval_seconds)

    async def _failed(self, call: str, exc: Failure) -> None:
        """Count, log and wait out one failed ``call`` (spec §4 classification)."""
        status = exc.status if isinstance(exc, ServerError) else None
        now = self._clock()
        retry_after = (
            retry_after_seconds(exc.retry_after, now) if isinstance(exc, ServerError) else None
        )
        self._failures += 1
        attempt = self._failures
        step = plan(
            classify(status),
            attempt,
            register_interval=self.config.register_interval_seconds,
            max_retry=self.config.max_retry,
            retry_after=retry_after,
            rng=self._rng,
        )
        if step.paused:
            self._failures = 0
        what = _describe(exc)
        self._last_error = f"{call}: {what}"
        self._next_attempt = now + step.delay
        self._enter(State.DISCONNECTED)
        if step.paused:
            log.warning(
                "%s failed (%s); %d failures in a row (max_retry): pausing %.0f s",
                call,
                what,
                attempt,
                step.delay,
            )
        elif step.outcome is Outcome.RETRYABLE:
            log.warning(
                "%s failed (%s, attempt %d): retrying in %.1f s", call, what, attempt, step.delay
            )
        else:
            level = logging.WARNING if self._warnings.allow(step.outcome) else logging.DEBUG
            log.log(
                level,
                "%s refused (%s: %s): next try in %.0f s%s",
                call,
                step.outcome.value,
                what,
                step.delay,
                "" if level == logging.WARNING else " (warned recently)",
            )
        await self._sleep(step.delay)

    # -- state ---------------------------------------------------------------------------------

    def _enter(self, state: State) -> None:
        """Move to ``state`` and write the state file."""
        if state is not self._state:
            log.info("state: %s -> %s", self._state.value, state.value)
            self._state = state
            self._since = self._clock()
        self._write()

    def _write(self, *, strict: bool = False) -> None:
        """Write the state file; a failure raises ``OSError`` if ``strict``, else is logged (a
        full disk must not stop the node's registration)."""
        try:
            write_state(self.config.state_path, self.snapshot())
        except OSError as exc:
            if strict:
                raise
            log.error("cannot write the state file %s: %s", self.config.state_path, exc)


def _time(unix_seconds: float | None) -> str | None:
    return None if unix_seconds is None else rfc3339(unix_seconds)


def _describe(exc: Failure) -> str:
    if isinstance(exc, ServerError):
        return f"HTTP {exc.status} {exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
