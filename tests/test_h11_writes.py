"""HTTP/1.1 answers leave in one write (issue 15): :class:`registryd.transport.protocols.H11`
holds a response head until its body, and writes nothing for an empty end of message, where
Hypercorn's protocol writes head, body and end separately. Driven at the protocol level, with
the ``send`` callback a connection gives it, so every write is seen."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.task_group import TaskGroup
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.events import Closed, Event, RawData
from hypercorn.typing import ConnectionState

from registryd import config as config_mod
from registryd.server import hypercorn_config
from registryd.transport.protocols import protocol_for
from tests.helpers import NO_RATE_LIMIT, config_text

BODY = b'{"handle":"ab","envelope":null}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/one``: a body in one message; ``/two``: two; ``/none``: 204 without a body."""
    path = scope["path"]
    if path == "/none":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    length = [(b"content-length", b"%d" % len(BODY))] if path == "/one" else []
    await send({"type": "http.response.start", "status": 200, "headers": length})
    if path == "/one":
        await send({"type": "http.response.body", "body": BODY})
    else:
        await send({"type": "http.response.body", "body": BODY[:10], "more_body": True})
        await send({"type": "http.response.body", "body": BODY[10:]})


async def writes_for(request: bytes) -> list[bytes]:
    """What the protocol writes answering ``request`` on a fresh connection."""
    written: list[bytes] = []
    answered = asyncio.Event()

    async def send(event: Event) -> None:
        if isinstance(event, RawData):
            written.append(event.data)
            answered.set()

    hc = hypercorn_config(config_mod.parse(config_text(tables=NO_RATE_LIMIT)))
    async with TaskGroup(asyncio.get_running_loop()) as tasks:
        protocol = protocol_for(
            None,
            ASGIWrapper(app),  # type: ignore[arg-type]  # a plain ASGI callable
            hc,
            WorkerContext(None),
            tasks,
            ConnectionState({}),
            False,
            ("127.0.0.1", 40000),
            ("127.0.0.1", 8443),
            send,
        )
        await protocol.initiate()
        await protocol.handle(RawData(request))
        async with asyncio.timeout(5):
            await answered.wait()
        await asyncio.sleep(0.1)  # the rest of the answer, and anything written after it
        await protocol.handle(Closed())
    return written


async def test_an_answer_with_a_content_length_is_one_write() -> None:
    writes = await writes_for(b"GET /one HTTP/1.1\r\nhost: registry\r\n\r\n")
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 ") and writes[0].endswith(b"\r\n\r\n" + BODY)


async def test_an_answer_without_a_body_is_one_write() -> None:
    writes = await writes_for(b"GET /none HTTP/1.1\r\nhost: registry\r\n\r\n")
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 204 ")


async def test_a_streamed_answer_sends_its_head_with_the_first_chunk() -> None:
    writes = await writes_for(b"GET /two HTTP/1.1\r\nhost: registry\r\n\r\n")
    assert len(writes) == 3  # head + first chunk, second chunk, last-chunk marker
    assert b"transfer-encoding: chunked\r\n\r\na\r\n" + BODY[:10] in writes[0].lower()
    assert BODY[10:] in writes[1] and writes[2] == b"0\r\n\r\n"
    assert writes[0].startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("request_", [b"GET / HTTP/1.1\r\nbad header\r\n\r\n"])
async def test_a_malformed_request_gets_its_error_body_in_one_write(request_: bytes) -> None:
    writes = await writes_for(request_)
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 400 ") and b"INVALID_INPUT" in writes[0]
