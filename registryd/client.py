"""Client library for the registry protocol (spec 4.2, 4.5): sync and async, over httpx.

    with RegistryClient("https://127.0.0.1:8443", pepper, cafile="certs/ca.pem") as client:
        keys = IdentityKeys.generate()
        client.register("alice", keys)
        identity = client.resolve("alice")  # PublicIdentity | None, its user_id checked

Each operation is written once as a *flow*: a generator that yields the HTTP calls it needs and
receives their response bodies, or has the :class:`~registryd.errors.ServerError` of an error
answer thrown in (the pattern of httpx's ``Auth.auth_flow``). The two client classes only run
flows over ``httpx.Client`` / ``httpx.AsyncClient``, and solve the proofs of work a call asks
for (the async one in a worker thread).

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
import contextlib
import re
import ssl
import threading
from collections.abc import Generator, Iterator
from time import monotonic
from types import TracebackType
from typing import Any, NamedTuple, TypeAlias, TypeVar

import httpx
import msgspec

from . import __version__, wire
from .encoding import decode_hex
from .envelope import (
    KID_LEN,
    PEPPER_LEN,
    X25519_LEN,
    open_sealed,
    seal,
    shared_key,
    x25519_keypair,
)
from .errors import InvalidInput, ProtocolError, ServerError, TransportError
from .hashcash import HEADER as POW_HEADER
from .hashcash import solve as solve_pow
from .identity import (
    USER_ID_LEN,
    NonNegative,
    PublicIdentity,
    user_id,
)
from .identity_keys import IdentityKeys
from .secret import Secret
from .timespec import now_ms

__all__ = [
    "AsyncRegistryClient",
    "IdentityKeys",
    "RegistryClient",
    "ServerKey",
]

T = TypeVar("T")
MIB = 1024 * 1024
MAX_ERROR_TEXT = 200
HEADERS = {
    "accept": "application/json",
    "accept-encoding": "identity",  # the size cap applies to the bytes on the wire
    "user-agent": f"registryd-client/{__version__}",
}
JSON_CONTENT = {"content-type": "application/json"}
POW_REQUIRED = "POW_REQUIRED"
DEFAULT_MAX_POW_DIFFICULTY = 24
# Opaque to the client, but it goes into a header before the first ':': visible ASCII, no ':'.
_CHALLENGE_TEXT = re.compile(r"[!-9;-~]{1,256}")


# -- wire answers and the pure steps of each operation ----------------------------------------


class ServerKey(NamedTuple):
    """The server's active envelope key: ``kid`` (8 B), X25519 ``public_key`` (32 B) and
    ``not_after_ms`` (Unix ms, or None if it does not expire)."""

    kid: bytes
    public_key: bytes
    not_after_ms: int | None


class _PublicKeyAnswer(msgspec.Struct, forbid_unknown_fields=True):
    kid_hex: str
    x25519_public_key_hex: str
    active: bool
    not_after_epoch_ms: NonNegative | None = None


class _OkAnswer(msgspec.Struct, forbid_unknown_fields=True):
    ok: bool


class _ExistsAnswer(msgspec.Struct, forbid_unknown_fields=True):
    exists: bool


class _ErrorDetail(msgspec.Struct):  # lenient: only code and message matter
    code: str
    message: str


class _ErrorAnswer(msgspec.Struct):
    error: _ErrorDetail


class _ChallengeAnswer(msgspec.Struct, forbid_unknown_fields=True):
    challenge: str
    difficulty: NonNegative
    expires_ms: NonNegative


class _Work(NamedTuple):
    """A proof of work to attach to a call: solve ``challenge`` to ``difficulty`` bits."""

    challenge: str
    difficulty: int

    def header(self, solution: str) -> dict[str, str]:
        return {POW_HEADER: f"{self.challenge}:{solution}"}


class _Call(NamedTuple):
    method: str
    path: str
    body: bytes | None = None
    work: _Work | None = None

    def headers(self, solution: str | None) -> dict[str, str] | None:
        """The request headers, with the proof of work header once ``work`` is solved."""
        content = JSON_CONTENT if self.body is not None else {}
        proof = self.work.header(solution) if self.work is not None and solution else {}
        return {**content, **proof} or None


Flow: TypeAlias = Generator[_Call, bytes, T]


def _post(path: str, payload: object) -> _Call:
    return _Call("POST", path, wire.encode(payload))


@contextlib.contextmanager
def _protocol(what: str) -> Iterator[None]:
    """Turn a decoding failure of a server answer into :class:`ProtocolError`."""
    try:
        yield
    except InvalidInput as exc:
        raise ProtocolError(f"bad {what}: {exc.detail or exc}") from exc


def _decode(raw: bytes, type_: type[T], what: str) -> T:
    with _protocol(what):
        return wire.decode(raw, type_)


def _expect_ok(raw: bytes, what: str) -> None:
    if not _decode(raw, _OkAnswer, what).ok:
        raise ProtocolError(f"bad {what}: ok is false")


def _server_key(raw: bytes) -> ServerKey:
    with _protocol("/envelope_pubkey answer"):
        answer = wire.decode(raw, _PublicKeyAnswer)
        return ServerKey(
            decode_hex(answer.kid_hex, KID_LEN, "kid_hex"),
            decode_hex(answer.x25519_public_key_hex, X25519_LEN, "x25519_public_key_hex"),
            answer.not_after_epoch_ms,
        )


def _work(raw: bytes, max_difficulty: int) -> _Work:
    answer = _decode(raw, _ChallengeAnswer, "/pow/challenge answer")
    if not _CHALLENGE_TEXT.fullmatch(answer.challenge):
        raise ProtocolError("bad /pow/challenge answer: challenge")
    if answer.difficulty > max_difficulty:
        raise ProtocolError(
            f"the server asks for {answer.difficulty} bits of proof of work; "
            f"this client stops at max_pow_difficulty={max_difficulty}"
        )
    return _Work(answer.challenge, answer.difficulty)


def _open_identity(
    pepper: bytes, handle: bytes, private: bytes, envelope: wire.Envelope
) -> PublicIdentity | None:
    """The identity sealed in ``envelope``, or None for a constant-shape miss.

    A server that hides misses answers them with an envelope like a hit's, sealed the same way
    around random bytes; a hit's plaintext is the identity JSON, maybe padded with spaces. So a
    plaintext that opens but is not an identity's JSON means "not found", while an envelope that
    does not open, an invalid identity or one of another handle is a :class:`ProtocolError`.
    """
    with _protocol("/resolve envelope"):
        sealed = envelope.sealed()
        key = shared_key(pepper, handle, private, sealed.sender_public)
        plaintext = open_sealed(key, handle, sealed.nonce, sealed.ciphertext)
    try:
        identity = wire.decode(plaintext, PublicIdentity)
    except InvalidInput:
        return None
    with _protocol("/resolve envelope"):
        identity.validate()
    if identity.handle != handle:
        raise ProtocolError("the server answered with the identity of another handle")
    return identity


def _handle(who: str | bytes) -> bytes:
    if isinstance(who, str):
        return user_id(who)
    if isinstance(who, bytes) and len(who) == USER_ID_LEN:
        return who
    raise InvalidInput("handle: expected a username (str) or 32 raw bytes")


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:MAX_ERROR_TEXT])


def _server_error(status: int, reason: str, body: bytes) -> ServerError:
    try:
        error = msgspec.json.decode(body, type=_ErrorAnswer).error
    except msgspec.DecodeError:
        return ServerError(status, f"HTTP_{status}", _printable(reason or "error"))
    return ServerError(status, _printable(error.code), _printable(error.message))


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
            return _server_error(status, self._response.reason_phrase, bytes(self._body))
        return bytes(self._body)


def _solve(work: _Work | None) -> str | None:
    return None if work is None else solve_pow(work.challenge, work.difficulty)


async def _solve_in_thread(work: _Work | None) -> str | None:
    if work is None:
        return None
    stop = threading.Event()  # a cancelled caller stops the worker thread too
    try:
        return await asyncio.to_thread(solve_pow, work.challenge, work.difficulty, stop=stop)
    finally:
        stop.set()


def _resume(flow: Flow[T], answer: bytes | ServerError) -> _Call:
    """Send ``answer`` into ``flow``, or throw it in if it is an error; the next call."""
    return flow.throw(answer) if isinstance(answer, ServerError) else flow.send(answer)


def _verify(cafile: str | None, client_cert: tuple[str, str] | None) -> ssl.SSLContext | bool:
    if cafile is None and client_cert is None:
        return True
    context = ssl.create_default_context(cafile=cafile)
    if client_cert is not None:
        context.load_cert_chain(*client_cert)
    return context


class _ClientBase:
    """Settings and the flows shared by both clients."""

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
        self.base_url = base_url.rstrip("/")
        self._pepper = Secret(pepper)
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._max_pow_difficulty = max_pow_difficulty
        self._pow_wanted = False  # the server asked for proof of work: prove up front
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

    def _transport_error(self, call: _Call, exc: httpx.TransportError) -> TransportError:
        return TransportError(
            f"{call.method} {self.base_url}{call.path}: {exc or type(exc).__name__}"
        )

    def _proven(self, call: _Call) -> Flow[bytes]:
        """``call`` with proof of work if the server wants it (spec 4.7): up front once it has
        asked, else after its first ``POW_REQUIRED``, retrying once."""
        if self._pow_wanted:
            try:
                work = yield from self._challenge()
            except ServerError as exc:
                if exc.status != 404:
                    raise
                self._pow_wanted = False  # the server has switched proof of work off
            else:
                return (yield call._replace(work=work))
        try:
            return (yield call)
        except ServerError as exc:
            if exc.code != POW_REQUIRED:
                raise
        self._pow_wanted = True
        work = yield from self._challenge()
        return (yield call._replace(work=work))

    def _challenge(self) -> Flow[_Work]:
        return _work((yield _Call("GET", "/pow/challenge")), self._max_pow_difficulty)

    def _envelope_pubkey(self) -> Flow[ServerKey]:
        return _server_key((yield _Call("GET", "/envelope_pubkey")))

    def _register(self, identity: PublicIdentity) -> Flow[None]:
        server = yield from self._envelope_pubkey()
        handle = identity.handle
        private, public = x25519_keypair()
        with _protocol("server envelope key"):
            key = shared_key(self._pepper.reveal(), handle, private, server.public_key)
        nonce, ciphertext = seal(key, handle, identity.to_json())
        envelope = wire.Envelope.build(server.kid, public, nonce, ciphertext)
        raw = yield _post("/register", wire.RegisterRequest(handle.hex(), envelope))
        _expect_ok(raw, "/register answer")

    def _resolve(self, handle: bytes) -> Flow[PublicIdentity | None]:
        private, public = x25519_keypair()
        raw = yield from self._proven(
            _post("/resolve", wire.ResolveRequest(handle.hex(), public.hex()))
        )
        answer = _decode(raw, wire.ResolveResponse, "/resolve answer")
        if answer.handle != handle.hex():
            raise ProtocolError("the /resolve answer echoes another handle")
        if answer.envelope is None:
            return None
        return _open_identity(self._pepper.reveal(), handle, private, answer.envelope)

    def _check_user(self, handle: bytes) -> Flow[bool]:
        raw = yield from self._proven(_Call("GET", f"/check_user/{handle.hex()}"))
        return _decode(raw, _ExistsAnswer, "/check_user answer").exists

    def _announce(self, handle: bytes, addr: str, ts_ms: int | None) -> Flow[None]:
        presence = wire.Presence(handle.hex(), addr, now_ms() if ts_ms is None else ts_ms)
        presence.validate()
        _expect_ok((yield _post("/announce", presence)), "/announce answer")


class RegistryClient(_ClientBase):
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
        return self._run(self._resolve(_handle(username_or_handle)))

    def check_user(self, username_or_handle: str | bytes) -> bool:
        """Whether the user is registered (``GET /check_user/{handle}``, spec 4.5), with proof
        of work if the server asks (spec 4.7); errors as :meth:`resolve`."""
        return self._run(self._check_user(_handle(username_or_handle)))

    def announce(
        self, username_or_handle: str | bytes, addr: str, ts_ms: int | None = None
    ) -> None:
        """Announce presence at ``addr`` (≤ 256 bytes) at ``ts_ms`` (Unix ms, default now).

        ``POST /announce`` (spec 3, 4.5); :class:`InvalidInput` for an empty or long ``addr``.
        """
        self._run(self._announce(_handle(username_or_handle), addr, ts_ms))

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
                call = _resume(flow, self._exchange(call))
            except StopIteration as done:
                result: T = done.value
                return result

    def _exchange(self, call: _Call) -> bytes | ServerError:
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


class AsyncRegistryClient(_ClientBase):
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
        return await self._run(self._resolve(_handle(username_or_handle)))

    async def check_user(self, username_or_handle: str | bytes) -> bool:
        """See :meth:`RegistryClient.check_user`."""
        return await self._run(self._check_user(_handle(username_or_handle)))

    async def announce(
        self, username_or_handle: str | bytes, addr: str, ts_ms: int | None = None
    ) -> None:
        """See :meth:`RegistryClient.announce`."""
        await self._run(self._announce(_handle(username_or_handle), addr, ts_ms))

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
                call = _resume(flow, await self._exchange(call))
            except StopIteration as done:
                result: T = done.value
                return result

    async def _exchange(self, call: _Call) -> bytes | ServerError:
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
