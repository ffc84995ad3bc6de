"""One node's calls to a registry's node directory (extensions spec §3.1-3.3), over httpx.

The client follows no redirects, reads at most ``max_response_bytes`` of any answer (64 KiB by
default; a longer one is a :class:`~registryd.errors.ProtocolError`), refuses compressed answers
(so the cap applies to the bytes on the wire), and gives every call ``timeout`` seconds in all.

Errors: :class:`~registryd.errors.TransportError` (connection, TLS, timeout),
:class:`~registryd.errors.ServerError` (any non-2xx answer: its ``status``, ``code``, a
``message`` safe to log — printable ASCII, at most 160 characters — and the raw ``retry_after``
header), :class:`~registryd.errors.ProtocolError` (an oversized or malformed answer).
"""

from __future__ import annotations

import asyncio
import ssl
from types import TracebackType
from typing import Any

import httpx
import msgspec

from .. import __version__
from ..errors import ProtocolError, ServerError, TransportError
from ..wire import ErrorBody
from . import protocol
from .keys import NodeKey

KIB = 1024
MAX_LOGGED_CHARS = 160
HEADERS = {
    "accept": "application/json",
    "accept-encoding": "identity",
    "content-type": "application/json",
    "user-agent": f"registryd-node/{__version__}",
}


def safe_text(raw: str | bytes, limit: int = MAX_LOGGED_CHARS) -> str:
    """At most ``limit`` printable ASCII characters of ``raw`` (others become ``?``): what a log
    line may hold of anything a server sent."""
    if isinstance(raw, bytes):
        raw = raw[: limit * 4].decode("utf-8", "replace")
    text = "".join(c if " " <= c <= "~" else "?" for c in raw[:limit])
    return text + ("..." if len(raw) > limit else "")


def _server_error(response: httpx.Response, body: bytes) -> ServerError:
    status = response.status_code
    retry_after = response.headers.get("retry-after")
    try:
        error = msgspec.json.decode(body, type=ErrorBody).error
    except msgspec.DecodeError:
        text = body or response.reason_phrase.encode("ascii", "replace")
        return ServerError(status, f"HTTP_{status}", safe_text(text), retry_after=retry_after)
    code = safe_text(error.code, 40)
    return ServerError(status, code, safe_text(error.message), retry_after=retry_after)


def tls_context(cafile: str | None) -> ssl.SSLContext | bool:
    """What httpx verifies the registry with: the system store, or ``cafile`` (PEM).

    Raises ``OSError`` / ``ssl.SSLError`` if ``cafile`` cannot be read.
    """
    return True if cafile is None else ssl.create_default_context(cafile=cafile)


class DirectoryClient:
    """The §3 calls of the node holding ``key``, to the registry at ``registry_url``.

    ``transport`` is any :class:`httpx.AsyncBaseTransport` (``httpx.MockTransport`` in tests);
    without it httpx's own transport is used, verifying TLS with ``verify`` (see
    :func:`tls_context`).
    ``timeout`` is in seconds per call, ``max_response_bytes`` in bytes.
    """

    def __init__(
        self,
        registry_url: str,
        key: NodeKey,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 10.0,
        max_response_bytes: int = 64 * KIB,
    ) -> None:
        self.registry_url = registry_url.rstrip("/")
        self._key = key
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._http = httpx.AsyncClient(
            base_url=self.registry_url,
            transport=transport,
            verify=verify,
            timeout=timeout,
            headers=HEADERS,
            follow_redirects=False,
        )

    async def challenge(self) -> str:
        """``POST /api/registry/challenge``: a fresh nonce bound to this node's key (§3.1)."""
        body = await self._post(protocol.CHALLENGE_PATH, protocol.challenge_body(self._key))
        return protocol.parse_challenge(body)

    async def register(self, payload: dict[str, Any]) -> None:
        """A fresh challenge, then ``POST /api/registry/register`` of the signed ``payload``
        (§3.2)."""
        nonce = await self.challenge()
        await self._post(protocol.REGISTER_PATH, protocol.register_body(self._key, payload, nonce))

    async def heartbeat(self, host: str) -> None:
        """A fresh challenge, then ``POST /api/registry/heartbeat`` for ``host`` (§3.3)."""
        nonce = await self.challenge()
        await self._post(protocol.HEARTBEAT_PATH, protocol.heartbeat_body(self._key, host, nonce))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> DirectoryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"DirectoryClient({self.registry_url!r}, {self._key!r})"

    async def _post(self, path: str, body: object) -> bytes:
        """POST ``body`` as JSON; the body of a 2xx answer, else :class:`ServerError`."""
        try:
            async with asyncio.timeout(self._timeout):
                response, answer = await self._exchange(path, msgspec.json.encode(body))
        except TimeoutError:
            raise TransportError(f"POST {path}: no answer within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:  # transport errors, and a body that fails to decode
            what = safe_text(str(exc)) or type(exc).__name__
            raise TransportError(f"POST {path}: {what}") from exc
        if not 200 <= response.status_code < 300:
            raise _server_error(response, answer)
        return answer

    async def _exchange(self, path: str, content: bytes) -> tuple[httpx.Response, bytes]:
        limit = self._max_response_bytes
        async with self._http.stream("POST", path, content=content) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise ProtocolError(f"POST {path}: answer of {declared} bytes exceeds {limit}")
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                raise ProtocolError(f"POST {path}: compressed answers are not accepted")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise ProtocolError(f"POST {path}: answer exceeds {limit} bytes")
        return response, bytes(body)
