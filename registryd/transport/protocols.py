"""Hypercorn's HTTP/1.1 and HTTP/2 protocol machines, with four narrow changes (issue 8).

:class:`~.connection.Connection` drives these instead of Hypercorn's own choice:

- **No protocol switches.** An ``Upgrade`` header (``websocket``, ``h2c``) and an HTTP/2 preface
  sent inside HTTP/1.1 are ignored, so the request is answered as the plain HTTP/1.1 request it
  also is (RFC 9110 section 7.8 lets a server ignore ``Upgrade``). Hypercorn would switch to a
  websocket (then refuse it with an empty 403) or to h2c even inside TLS, where RFC 9113 section
  3.2 does not allow it. HTTP/2 ``CONNECT`` (tunnels, websockets over HTTP/2) gets the 405 error
  body, and the extended ``CONNECT`` setting is not advertised.
- **Malformed HTTP/1.1 gets the error body.** Where h11 cannot parse a request, Hypercorn answers
  an empty 400, 431 or 501; here it is ``400 {"error":{"code":"INVALID_INPUT",...}}`` with
  ``connection: close``. (501 is what RFC 9112 section 6.1 suggests for an unknown transfer
  coding, but section 6.3 requires 400 when ``chunked`` is not the final coding, and registryd
  never answers a bad request with a 5xx.)
- **A request head over** :data:`~registryd.sockets.MAX_HEADER_BYTES` **gets the error body**
  even when it arrives in one read: h11 bounds only the bytes of a head still incomplete
  (``h11_max_incomplete_size``), so a 20 KB head sent at once was served.
- **Shutting down, a response says** ``connection: close``, so a keep-alive client does not
  send its next request into a closing connection.
- **HTTP/2 data for an answered stream is dropped, not a crash.** Hypercorn 0.18.0 (the newest
  release) looks such ``DATA`` up with ``self.streams[stream_id]`` and the ``KeyError`` kills
  the connection and every stream multiplexed on it (pgjones/hypercorn#312 and #334, open;
  reproduced here with a 429 sent before the request body ended). Here the data is dropped and
  its flow-control credit returned, so the client can finish and read the answer; a stream that
  sends more than :data:`DROP_BYTES` after its answer is reset.
- **HTTP/2 pseudo-headers must be visible ASCII.** h2 accepts any bytes in ``:method`` and
  ``:path``; Hypercorn decodes them as ASCII and the ``UnicodeDecodeError`` dropped the whole
  connection. Such a stream gets ``400`` with the error body (HTTP/1.1's parser, h11, already
  refuses these bytes in a request line).

- **One write per HTTP/1.1 answer**, not three (head, body, end; issue 15).

These override methods of Hypercorn 0.18's protocol classes (``_check_protocol``,
``_create_stream``, ``_send_error_response``, ``_send_h11_event``, ``stream_send``,
``_handle_events``), internal
names that may change: ``pyproject.toml`` pins ``hypercorn<0.19``, and the tests in
``tests/test_transport.py`` exercise each override through real connections.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable

import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h11
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import Response
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.typing import AppWrapper, ConnectionState, H11SendableEvent, TaskGroup, WorkerContext

from ..errors import InvalidInput, MethodNotAllowed
from ..sockets import MAX_HEADER_BYTES
from ..wire import error_body

_MALFORMED = {
    400: error_body(InvalidInput("malformed HTTP/1.1 request")),
    431: error_body(InvalidInput("request head too large")),
    501: error_body(InvalidInput("unsupported transfer-encoding (only chunked is accepted)")),
}
_NO_CONNECT = error_body(MethodNotAllowed("CONNECT"))
_BAD_PSEUDO = error_body(InvalidInput("malformed HTTP/2 request"))
_VISIBLE = re.compile(rb"[\x21-\x7e]+")
_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")
DROP_BYTES = 4 * 1024 * 1024
"""HTTP/2: request data dropped on one stream after its answer before the stream is reset."""


class H11(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol without upgrades, with error bodies (module docstring),
    writing each response in one piece."""

    _head = b""  # a response head, held until its body (or its end) is written with it

    @property
    def awaiting_body(self) -> bool:
        """Whether the client may still be sending a request (body, or bytes h11 rejected)."""
        return self.connection.their_state in (h11.SEND_BODY, h11.ERROR)

    async def _check_protocol(self, event: h11.Request) -> None:
        """Hypercorn switches to h2c or HTTP/2 here; registryd never switches protocols."""

    async def _create_stream(self, request: h11.Request) -> None:
        head = len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers)
        if head > MAX_HEADER_BYTES:
            await self._send_error_response(431)
            await self.send(Closed())
            return
        # Without the Upgrade header Hypercorn makes a plain HTTP stream, never a websocket one.
        headers = [(name, value) for name, value in request.headers if name != b"upgrade"]
        if len(headers) != len(request.headers):
            request = h11.Request(
                method=request.method,
                target=request.target,
                headers=headers,
                http_version=request.http_version,
            )
        await super()._create_stream(request)

    async def _send_error_response(self, status_code: int) -> None:
        body = _MALFORMED.get(status_code, _MALFORMED[400])
        headers = [_JSON, (b"content-length", b"%d" % len(body)), _CLOSE]
        extra = self.config.response_headers("h11")
        await self._send_h11_event(h11.Response(status_code=400, headers=[*headers, *extra]))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        """Hypercorn writes the head, the body and the end of a response separately: three
        writes (and three socket sends) for an answer that fits one. Here the head waits for the
        body, and an empty end (a content-length answer) writes nothing: one send per answer.
        (``python -m bench.ab``: resolve +7.7 % throughput, LevelDB/http.)"""
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if isinstance(event, h11.Response):
            self._head += data
            return
        if self._head:
            data, self._head = self._head + data, b""
        if data:
            await self.send(RawData(data=data))

    async def stream_send(self, event: StreamEvent) -> None:
        if (
            isinstance(event, Response)
            and event.status_code >= 200
            and self.context.terminated.is_set()
            and not any(name.lower() == b"connection" for name, _ in event.headers)
        ):
            event = Response(
                stream_id=event.stream_id,
                headers=[*event.headers, _CLOSE],
                status_code=event.status_code,
            )
        await super().stream_send(event)


class H2(H2Protocol):
    """Hypercorn's HTTP/2 protocol without ``CONNECT``, surviving early answers (module
    docstring)."""

    awaiting_body = False  # streams end one by one (:meth:`_drop`); the connection never lingers

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._dropped: dict[int, int] = {}  # bytes dropped per answered stream
        codes = h2.settings.SettingCodes
        self.connection.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                codes.MAX_CONCURRENT_STREAMS: self.config.h2_max_concurrent_streams,
                codes.MAX_HEADER_LIST_SIZE: self.config.h2_max_header_list_size,
            },
        )

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        # One event at a time: an app task may close a stream at any await in between, and the
        # check below must see the streams as they are when its event is handled.
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                self._drop(event)
            elif isinstance(event, h2.events.RequestReceived) and _is_connect(event):
                self._refuse(event.stream_id, 405, _NO_CONNECT)
            elif isinstance(event, h2.events.RequestReceived) and not _visible_pseudo(event):
                self._refuse(event.stream_id, 400, _BAD_PSEUDO)
            else:
                if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    self._dropped.pop(event.stream_id, None)
                await super()._handle_events([event])
                continue
            await self._flush()

    def _drop(self, event: h2.events.DataReceived) -> None:
        """Drop data for a stream already answered, returning its flow-control credit so that
        the client can finish sending and read the answer; past :data:`DROP_BYTES` on one
        stream, reset it. (Resetting at once, as RFC 9113 section 8.1 allows, leaves httpx's
        HTTP/2 client waiting for flow-control credit instead of reading the answer.)"""
        stream_id = event.stream_id
        self.connection.acknowledge_received_data(event.flow_controlled_length, stream_id)
        dropped = self._dropped.get(stream_id, 0) + event.flow_controlled_length
        if dropped <= DROP_BYTES:
            self._dropped[stream_id] = dropped
            return
        self._dropped.pop(stream_id, None)
        with contextlib.suppress(h2.exceptions.ProtocolError):  # closed meanwhile
            self.connection.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)

    def _refuse(self, stream_id: int, status: int, body: bytes) -> None:
        """Answer a stream the app never sees with ``status`` and the error ``body``."""
        headers = [(b":status", b"%d" % status), _JSON, (b"content-length", b"%d" % len(body))]
        with contextlib.suppress(h2.exceptions.ProtocolError):  # e.g. no flow-control window
            self.connection.send_headers(stream_id, headers + self.config.response_headers("h2"))
            self.connection.send_data(stream_id, body, end_stream=True)


def protocol_for(
    alpn: str | None,
    app: AppWrapper,
    config: HypercornConfig,
    context: WorkerContext,
    task_group: TaskGroup,
    state: ConnectionState,
    ssl: bool,
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
    send: Callable[[Event], Awaitable[None]],
) -> H11 | H2:
    """HTTP/2 when TLS negotiated ``h2`` by ALPN, else HTTP/1.1."""
    kind = H2 if alpn == "h2" else H11
    return kind(app, config, context, task_group, state, ssl, client, server, send)


def _is_connect(request: h2.events.RequestReceived) -> bool:
    return (b":method", b"CONNECT") in (request.headers or [])


def _visible_pseudo(request: h2.events.RequestReceived) -> bool:
    """Whether every pseudo-header value is visible ASCII (what Hypercorn can decode)."""
    return all(
        _VISIBLE.fullmatch(value) for name, value in request.headers or [] if name[:1] == b":"
    )
