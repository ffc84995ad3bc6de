"""Early answers: what happens to a request body the app did not read (issue 8).

Many answers come before the body is read: a wrong content type, 401 on ``/sync`` and
``POST /nodes``, a missing proof of work, 404, 405, 413, 429. The body is still on its way, and
left unread it blocks the connection: HTTP/1.1 cannot parse the next request, and HTTP/2 keeps
receiving data for a stream that has ended. :class:`DrainMiddleware` settles it before the
answer leaves:

- The rest of the body is read and dropped, up to ``max_bytes`` and within ``timeout_s``. If
  it ends in time, the connection stays usable (the next pipelined request is answered).
- Otherwise, or when the answer already says so (408, 413), the answer carries
  ``connection: close`` on HTTP/1.1, and the server reads on and drops the body for a moment
  after answering (:mod:`.connection`), so the client reads the answer instead of a
  reset. On HTTP/2 the stream alone is ended (:mod:`.protocols`); a ``connection``
  header, forbidden there, is removed.

A request without a body (HTTP/1.1 with no ``content-length`` or ``transfer-encoding``) costs
nothing here.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_CLOSE = (b"connection", b"close")


class _Body:
    """The request's ``receive``, noting whether the body has been read to its end."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.done = False
        self.sink: asyncio.Task[None] | None = None

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            self.done = True
        return message

    async def drain(self, max_bytes: int, timeout_s: float) -> bool:
        """Read and drop the rest of the body; whether it ended within the bounds."""
        seen = 0
        try:
            async with asyncio.timeout(timeout_s):
                while not self.done:
                    message = await self.receive()
                    seen += len(message.get("body", b""))
                    if message["type"] == "http.disconnect" or seen > max_bytes:
                        return False
        except TimeoutError:
            return False
        return True

    async def _discard(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

    def discard_the_rest(self) -> None:
        """Keep taking what arrives until the server ends the request, so that the server never
        waits on a full queue of unread body with the answer stuck behind it."""
        if not self.done and self.sink is None:
            self.sink = asyncio.get_running_loop().create_task(self._discard())


def _has_body(scope: Scope) -> bool:
    if scope.get("http_version") == "2":
        return True  # HTTP/2 says so in its frames, not in a header
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


class DrainMiddleware:
    """Pure ASGI middleware settling unread request bodies before an answer (module docstring).

    ``max_bytes``: at most this much unread body is read to keep the connection (the
    ``[server] max_body_bytes``); ``timeout_s``: within this many seconds
    (``body_timeout_seconds``).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        body = _Body(receive)
        http2 = scope.get("http_version") == "2"

        async def send_settled(message: Message) -> None:
            # The body read to its end (most answers) on HTTP/1.1: nothing to settle or strip.
            if message["type"] == "http.response.start" and not (body.done and not http2):
                headers = list(message.get("headers", ()))
                closing = any(
                    name.lower() == b"connection" and b"close" in value.lower()
                    for name, value in headers
                )
                if not body.done and (
                    closing or not await body.drain(self.max_bytes, self.timeout_s)
                ):
                    body.discard_the_rest()
                    if not closing:
                        headers.append(_CLOSE)
                if http2:
                    headers = [(n, v) for n, v in headers if n.lower() != b"connection"]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, body.receive, send_settled)
        finally:
            if body.sink is not None:
                body.sink.cancel()
