"""Client library for the registry protocol (spec 4.2, 4.5): sync and async, over httpx.

    with RegistryClient("https://127.0.0.1:8443", pepper, cafile="certs/ca.pem") as client:
        keys = IdentityKeys.generate()
        client.register("alice", keys)
        identity = client.resolve("alice")  # PublicIdentity | None, its user_id checked

Each operation is written once as a *flow*: a generator that yields the HTTP calls it needs and
receives their response bodies (the pattern of httpx's ``Auth.auth_flow``). The two client
classes only run flows over ``httpx.Client`` / ``httpx.AsyncClient``.

Errors: :class:`~registryd.errors.TransportError` (connection, TLS, timeout),
:class:`~registryd.errors.ServerError` (an error answer), :class:`~registryd.errors.ProtocolError`
(an answer that breaks the protocol); bad arguments raise
:class:`~registryd.errors.InvalidInput`, a ``ValueError``.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tomllib
from collections.abc import Generator, Iterator
from pathlib import Path
from time import monotonic
from types import TracebackType
from typing import Any, NamedTuple, TypeAlias, TypeVar

import httpx
import msgspec

from . import __version__, wire
from .config import config_error, dec_hook
from .encoding import decode_hex
from .envelope import now_ms, open_sealed, seal, shared_key, x25519_keypair
from .errors import ConfigError, InvalidInput, ProtocolError, ServerError, TransportError
from .identity import (
    USER_ID_LEN,
    NonNegative,
    PublicIdentity,
    user_id,
)
from .identity_keys import KEY_LEN, IdentityKeys
from .secret import Secret

__all__ = [
    "AsyncRegistryClient",
    "ClientConfig",
    "IdentityKeys",
    "RegistryClient",
    "ServerKey",
    "load_client_config",
]

T = TypeVar("T")
MIB = 1024 * 1024
MAX_ERROR_TEXT = 200
DEFAULT_KEYS_DIR = "./data/client-keys"
HEADERS = {
    "accept": "application/json",
    "accept-encoding": "identity",  # the size cap applies to the bytes on the wire
    "user-agent": f"registryd-client/{__version__}",
}
JSON_CONTENT = {"content-type": "application/json"}


# -- config ---------------------------------------------------------------------------------


class ClientConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``[client]`` table of a client config (``client.toml``), every key optional.

    ``url``: registry base URL; ``ca_file``: PEM CA bundle to verify the server; ``cert_file``
    and ``key_file`` (together): PEM client certificate and key for mTLS; ``pepper_hex``: the
    server's 32-byte pepper as 64 hex chars (spec 4.2); ``keys_dir``: where identity keys files
    live. Relative paths are relative to the current working directory.
    """

    url: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    pepper_hex: Secret | None = None
    keys_dir: str = DEFAULT_KEYS_DIR


class _ClientFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    client: ClientConfig


def load_client_config(path: str | os.PathLike[str]) -> ClientConfig:
    """Read and validate a client config; raises :class:`ConfigError` naming the key path
    (``client.pepper_hex: expected 64 hex characters (32 bytes)``, ``client.urll: unknown key``).
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read client config {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"invalid TOML in {path}: {exc}") from exc
    try:
        cfg = msgspec.convert(raw, _ClientFile, strict=True, dec_hook=dec_hook).client
    except msgspec.ValidationError as exc:
        raise config_error(exc) from exc
    if (cfg.cert_file is None) != (cfg.key_file is None):
        raise ConfigError("client.cert_file", "cert_file and key_file must be set together")
    return cfg


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


class _Call(NamedTuple):
    method: str
    path: str
    body: bytes | None = None

    @property
    def headers(self) -> dict[str, str] | None:
        return JSON_CONTENT if self.body is not None else None


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
            decode_hex(answer.kid_hex, wire.KID_LEN, "kid_hex"),
            decode_hex(answer.x25519_public_key_hex, wire.X25519_LEN, "x25519_public_key_hex"),
            answer.not_after_epoch_ms,
        )


def _open_identity(
    pepper: bytes, handle: bytes, private: bytes, envelope: wire.Envelope
) -> PublicIdentity:
    with _protocol("/resolve envelope"):
        key = shared_key(pepper, handle, private, envelope.sender_bytes())
        plaintext = open_sealed(key, handle, envelope.nonce_bytes(), envelope.ciphertext_bytes())
        identity = wire.decode(plaintext, PublicIdentity)
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

    def body(self) -> bytes:
        """The body of a 2xx answer; raises :class:`ServerError` for any other status."""
        status = self._response.status_code
        if not 200 <= status < 300:
            raise _server_error(status, self._response.reason_phrase, bytes(self._body))
        return bytes(self._body)


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
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        if len(pepper) != KEY_LEN:
            raise ValueError("pepper must be 32 bytes")
        if timeout <= 0 or max_response_bytes <= 0:
            raise ValueError("timeout and max_response_bytes must be positive")
        self.base_url = base_url.rstrip("/")
        self._pepper = Secret(pepper)
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

    def _transport_error(self, call: _Call, exc: httpx.TransportError) -> TransportError:
        return TransportError(
            f"{call.method} {self.base_url}{call.path}: {exc or type(exc).__name__}"
        )

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
        raw = yield _post("/resolve", wire.ResolveRequest(handle.hex(), public.hex()))
        answer = _decode(raw, wire.ResolveResponse, "/resolve answer")
        if answer.handle != handle.hex():
            raise ProtocolError("the /resolve answer echoes another handle")
        if answer.envelope is None:
            return None
        return _open_identity(self._pepper.reveal(), handle, private, answer.envelope)

    def _check_user(self, handle: bytes) -> Flow[bool]:
        raw = yield _Call("GET", f"/check_user/{handle.hex()}")
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
    ) -> None:
        super().__init__(
            base_url,
            pepper,
            cafile=cafile,
            client_cert=client_cert,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
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

        ``POST /resolve`` with a fresh ephemeral X25519 key (spec 4.2, 4.5). Returns None if
        nobody is registered. Raises :class:`ProtocolError` if the answer cannot be opened or
        its ``user_id`` is not the handle asked for; :class:`InvalidInput` for a bad argument.
        """
        return self._run(self._resolve(_handle(username_or_handle)))

    def check_user(self, username_or_handle: str | bytes) -> bool:
        """Whether the user is registered (``GET /check_user/{handle}``, spec 4.5)."""
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
                call = flow.send(self._exchange(call))
            except StopIteration as done:
                result: T = done.value
                return result

    def _exchange(self, call: _Call) -> bytes:
        deadline = monotonic() + self._timeout
        try:
            with self._http.stream(
                call.method, call.path, content=call.body, headers=call.headers
            ) as response:
                reader = self._reader(response, deadline)
                for chunk in response.iter_bytes():
                    reader.feed(chunk)
        except httpx.TransportError as exc:
            raise self._transport_error(call, exc) from exc
        return reader.body()


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
    ) -> None:
        super().__init__(
            base_url,
            pepper,
            cafile=cafile,
            client_cert=client_cert,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
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
                call = flow.send(await self._exchange(call))
            except StopIteration as done:
                result: T = done.value
                return result

    async def _exchange(self, call: _Call) -> bytes:
        deadline = monotonic() + self._timeout
        try:
            async with self._http.stream(
                call.method, call.path, content=call.body, headers=call.headers
            ) as response:
                reader = self._reader(response, deadline)
                async for chunk in response.aiter_bytes():
                    reader.feed(chunk)
        except httpx.TransportError as exc:
            raise self._transport_error(call, exc) from exc
        return reader.body()
