"""The two clients, :class:`RegistryClient` (blocking) and :class:`AsyncRegistryClient`: each
runs the flows of :mod:`registryd.client.flows` over httpx, reads answers within their size and
time limits, and solves the proofs of work a call asks for (the async one in a worker thread).

Proof of work (spec 4.7): when ``/resolve`` or ``/check_user`` answers 400 ``POW_REQUIRED``, the
client fetches ``GET /pow/challenge``, solves it and retries once with ``x-enigma-pow``; from
then on it fetches a challenge before each such call. A challenge of ``difficulty`` bits costs
about ``2**difficulty`` SHA-256 computations, ~2 M/s in CPython (18 bits ≈ 0.1 s, 24 bits ≈ 8 s);
one above ``max_pow_difficulty`` is a :class:`~registryd.errors.ProtocolError`.

Errors: :class:`~registryd.errors.TransportError` (connection, TLS, timeout),
:class:`~registryd.errors.ServerError` (an error answer), :class:`~registryd.errors.ProtocolError`
(an answer that breaks the protocol); bad arguments raise
:class:`~registryd.errors.InvalidInput`, a ``ValueError``.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from time import monotonic
from types import TracebackType
from typing import Any, TypeVar

import httpx

from .. import __version__
from ..envelope import PEPPER_LEN
from ..errors import ProtocolError, ServerError, TransportError
from ..hashcash import solve as solve_pow
from ..identity import PublicIdentity, user_id
from ..wire import Presence
from .answers import ServerKey, server_error
from .flows import Call, Flow, Flows, Work, handle_of, resume
from .identity_keys import IdentityKeys

T = TypeVar("T")
MIB = 1024 * 1024
DEFAULT_MAX_POW_DIFFICULTY = 24
HEADERS = {
    "accept": "application/json",
    "accept-encoding": "identity",  # the size cap applies to the bytes on the wire
    "user-agent": f"registryd-client/{__version__}",
}


class _Reader:
    """Collects one response body: at most ``limit`` bytes, before ``deadline`` (monotonic s)."""

    def __init__(self, response: httpx.Response, limit: int, deadline: float) -> None:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ProtocolError(f"response of {declared} bytes exceeds the {limit}-byte limit")
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise ProtocolError("compressed responses are not accepted")
        self._response = response
        self._limit = limit
        self._deadline = deadline
        self._body = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._body += chunk
        if len(self._body) > self._limit:
            raise ProtocolError(f"response exceeds the {self._limit}-byte limit")
        if monotonic() > self._deadline:
            raise TransportError("timed out while reading the response")

    def answer(self) -> bytes | ServerError:
        """The body of a 2xx answer, else the :class:`ServerError` the flow has thrown in."""
        status = self._response.status_code
        if not 200 <= status < 300:
            return server_error(status, self._response.reason_phrase, bytes(self._body))
        return bytes(self._body)


def _solve(work: Work | None) -> str | None:
    return None if work is None else solve_pow(work.challenge, work.difficulty)


async def _solve_in_thread(work: Work | None) -> str | None:
    if work is None:
        return None
    stop = threading.Event()  # a cancelled caller stops the worker thread too
    try:
        return await asyncio.to_thread(solve_pow, work.challenge, work.difficulty, stop=stop)
    finally:
        stop.set()


def _verify(cafile: str | None, client_cert: tuple[str, str] | None) -> ssl.SSLContext | bool:
    if cafile is None and client_cert is None:
        return True
    context = ssl.create_default_context(cafile=cafile)
    if client_cert is not None:
        context.load_cert_chain(*client_cert)
    return context


class _Client(Flows):
    """The settings both clients check and share; the flows come from :class:`Flows`."""

    def __init__(
        self,
        base_url: str,
        pepper: bytes,
        *,
        cafile: str | None,
        client_cert: tuple[str, str] | None,
        timeout: float,
        max_response_bytes: int,
        max_pow_difficulty: int,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        if len(pepper) != PEPPER_LEN:
            raise ValueError("pepper must be 32 bytes")
        if timeout <= 0 or max_response_bytes <= 0:
            raise ValueError("timeout and max_response_bytes must be positive")
        if not 0 <= max_pow_difficulty <= 255:
            raise ValueError("max_pow_difficulty must be 0..255 bits")
        super().__init__(pepper, max_pow_difficulty)
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._options: dict[str, Any] = {
            "base_url": self.base_url,
            "verify": _verify(cafile, client_cert),
            "timeout": timeout,
            "headers": HEADERS,
            "follow_redirects": False,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def _reader(self, response: httpx.Response, deadline: float) -> _Reader:
        return _Reader(response, self._max_response_bytes, deadline)

    def _transport_error(self, call: Call, exc: httpx.TransportError) -> TransportError:
        return TransportError(
            f"{call.method} {self.base_url}{call.path}: {exc or type(exc).__name__}"
        )


class RegistryClient(_Client):
    """A blocking client for one registry.

    ``base_url``: ``http(s)://host:port``; ``pepper``: the server's 32-byte envelope pepper
    (spec 4.2; ``ValueError`` otherwise). ``transport`` replaces the network (tests);
    ``cafile`` is a PEM CA bundle to verify the server with; ``client_cert`` a (cert PEM path,
    key PEM path) pair for mTLS (both raise ``OSError``/``ssl.SSLError`` if unreadable).
    ``timeout`` (seconds) bounds connecting, each read and write, and reading the whole answer;
    answers larger than ``max_response_bytes`` are refused with :class:`ProtocolError`.

    ``resolve`` and ``check_user`` do the server's proof of work when it asks for it (spec 4.7;
    see the module docstring): ``max_pow_difficulty`` (bits, default 24 ≈ 8 s of one CPU core)
    is the most this client will do; a harder challenge is a :class:`ProtocolError`.
    """

    def __init__(
        self,
        base_url: str,
        pepper: bytes,
        *,
        transport: httpx.BaseTransport | None = None,
        cafile: str | None = None,
        client_cert: tuple[str, str] | None = None,
        timeout: float = 10.0,
        max_response_bytes: int = MIB,
        max_pow_difficulty: int = DEFAULT_MAX_POW_DIFFICULTY,
    ) -> None:
        super().__init__(
            base_url,
            pepper,
            cafile=cafile,
            client_cert=client_cert,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
            max_pow_difficulty=max_pow_difficulty,
        )
        self._http = httpx.Client(transport=transport, **self._options)

    def envelope_pubkey(self) -> ServerKey:
        """The server's active envelope key (``GET /envelope_pubkey``, spec 4.5)."""
        return self._run(self._envelope_pubkey())

    def register(
        self, username: str, keys: IdentityKeys, *, created_at_ms: int | None = None
    ) -> None:
        """Register ``username`` with ``keys`` (``POST /register``, spec 4.2, 4.5).

        The identity (see :meth:`IdentityKeys.identity`) is sealed to the server's active key
        with a fresh ephemeral X25519 key. Raises :class:`ServerError` (409 ``CONFLICT`` if the
        name is taken), :class:`InvalidInput` for an invalid username.
        """
        self._run(self._register(keys.identity(username, created_at_ms=created_at_ms)))

    def resolve(self, username_or_handle: str | bytes) -> PublicIdentity | None:
        """The identity registered for a username (``str``) or a 32-byte handle (``bytes``).

        ``POST /resolve`` with a fresh ephemeral X25519 key (spec 4.2, 4.5), with proof of work
        if the server asks (spec 4.7). Returns None if nobody is registered (also for a
        constant-shape miss: an envelope that opens to something other than an identity).
        Raises :class:`ProtocolError` if the answer cannot be opened, holds an invalid identity
        or one whose ``user_id`` is not the handle asked for, or the proof of work asked is
        above ``max_pow_difficulty``; :class:`ServerError` (400 ``POW_REQUIRED``) if the server
        refuses a proof; :class:`InvalidInput` for a bad argument.
        """
        return self._run(self._resolve(handle_of(username_or_handle)))

    def check_user(self, username_or_handle: str | bytes) -> bool:
        """Whether the user is registered (``GET /check_user/{handle}``, spec 4.5), with proof
        of work if the server asks (spec 4.7); errors as :meth:`resolve`."""
        return self._run(self._check_user(handle_of(username_or_handle)))

    def announce(
        self,
        username_or_handle: str | bytes,
        addr: str,
        ts_ms: int | None = None,
        *,
        keys: IdentityKeys | None = None,
    ) -> None:
        """Announce presence at ``addr`` (≤ 256 bytes) at ``ts_ms`` (Unix ms, default now).

        ``POST /announce`` (spec 3, 4.5), signed with ``keys`` in ``x-registryd-signature``
        (extensions spec §2.3; without ``keys`` unsigned, which registryd accepts only with
        ``[presence] accept_unsigned``). :class:`InvalidInput` for an empty or long ``addr``;
        :class:`ServerError` 401 (not registered, or not these keys), 409 (``ts_ms`` not after
        the last presence's), 503 (presence store full).
        """
        self._run(self._announce(handle_of(username_or_handle), addr, ts_ms, keys))

    def update(
        self,
        username: str,
        keys: IdentityKeys,
        new_keys: IdentityKeys,
        *,
        created_at_ms: int | None = None,
        ts_ms: int | None = None,
    ) -> None:
        """Replace ``username``'s identity by ``new_keys``' (``POST /identity/update``,
        extensions spec §2.1), signed with the registered ``keys``; the new identity's
        ``created_at_ms`` (default now) must be after the stored one's, ``ts_ms`` (Unix ms,
        default now) after the last signed identity operation's. :class:`ServerError` 400,
        401 (not registered, or not these keys), 409 (stale ``ts_ms``)."""
        identity = new_keys.identity(username, created_at_ms=created_at_ms)
        self._run(self._update(keys, identity, self._ts(ts_ms)))

    def delete(self, username: str, keys: IdentityKeys, *, ts_ms: int | None = None) -> None:
        """Delete ``username``'s identity and presence (``POST /identity/delete``, extensions
        spec §2.2), signed with the registered ``keys``; errors as :meth:`update`."""
        self._run(self._delete(keys, user_id(username), self._ts(ts_ms)))

    def presence(self, username_or_handle: str | bytes) -> Presence | None:
        """The user's unexpired presence (``POST /presence/resolve``, extensions spec §2.4),
        or None; proof of work and errors as :meth:`resolve`."""
        return self._run(self._presence(handle_of(username_or_handle)))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, flow: Flow[T]) -> T:
        call = next(flow)
        while True:
            try:
                call = resume(flow, self._exchange(call))
            except StopIteration as done:
                result: T = done.value
                return result

    def _exchange(self, call: Call) -> bytes | ServerError:
        headers = call.headers(_solve(call.work))
        deadline = monotonic() + self._timeout
        try:
            with self._http.stream(
                call.method, call.path, content=call.body, headers=headers
            ) as response:
                reader = self._reader(response, deadline)
                for chunk in response.iter_bytes():
                    reader.feed(chunk)
        except httpx.TransportError as exc:
            raise self._transport_error(call, exc) from exc
        return reader.answer()


class AsyncRegistryClient(_Client):
    """The asyncio twin of :class:`RegistryClient`: same arguments, methods are coroutines."""

    def __init__(
        self,
        base_url: str,
        pepper: bytes,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        cafile: str | None = None,
        client_cert: tuple[str, str] | None = None,
        timeout: float = 10.0,
        max_response_bytes: int = MIB,
        max_pow_difficulty: int = DEFAULT_MAX_POW_DIFFICULTY,
    ) -> None:
        super().__init__(
            base_url,
            pepper,
            cafile=cafile,
            client_cert=client_cert,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
            max_pow_difficulty=max_pow_difficulty,
        )
        self._http = httpx.AsyncClient(transport=transport, **self._options)

    async def envelope_pubkey(self) -> ServerKey:
        """See :meth:`RegistryClient.envelope_pubkey`."""
        return await self._run(self._envelope_pubkey())

    async def register(
        self, username: str, keys: IdentityKeys, *, created_at_ms: int | None = None
    ) -> None:
        """See :meth:`RegistryClient.register`."""
        await self._run(self._register(keys.identity(username, created_at_ms=created_at_ms)))

    async def resolve(self, username_or_handle: str | bytes) -> PublicIdentity | None:
        """See :meth:`RegistryClient.resolve`."""
        return await self._run(self._resolve(handle_of(username_or_handle)))

    async def check_user(self, username_or_handle: str | bytes) -> bool:
        """See :meth:`RegistryClient.check_user`."""
        return await self._run(self._check_user(handle_of(username_or_handle)))

    async def announce(
        self,
        username_or_handle: str | bytes,
        addr: str,
        ts_ms: int | None = None,
        *,
        keys: IdentityKeys | None = None,
    ) -> None:
        """See :meth:`RegistryClient.announce`."""
        await self._run(self._announce(handle_of(username_or_handle), addr, ts_ms, keys))

    async def update(
        self,
        username: str,
        keys: IdentityKeys,
        new_keys: IdentityKeys,
        *,
        created_at_ms: int | None = None,
        ts_ms: int | None = None,
    ) -> None:
        """See :meth:`RegistryClient.update`."""
        identity = new_keys.identity(username, created_at_ms=created_at_ms)
        await self._run(self._update(keys, identity, self._ts(ts_ms)))

    async def delete(self, username: str, keys: IdentityKeys, *, ts_ms: int | None = None) -> None:
        """See :meth:`RegistryClient.delete`."""
        await self._run(self._delete(keys, user_id(username), self._ts(ts_ms)))

    async def presence(self, username_or_handle: str | bytes) -> Presence | None:
        """See :meth:`RegistryClient.presence`."""
        return await self._run(self._presence(handle_of(username_or_handle)))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, flow: Flow[T]) -> T:
        call = next(flow)
        while True:
            try:
                call = resume(flow, await self._exchange(call))
            except StopIteration as done:
                result: T = done.value
                return result

    async def _exchange(self, call: Call) -> bytes | ServerError:
        headers = call.headers(await _solve_in_thread(call.work))
        deadline = monotonic() + self._timeout
        try:
            async with self._http.stream(
                call.method, call.path, content=call.body, headers=headers
            ) as response:
                reader = self._reader(response, deadline)
                async for chunk in response.aiter_bytes():
                    reader.feed(chunk)
        except httpx.TransportError as exc:
            raise self._transport_error(call, exc) from exc
        return reader.answer()
