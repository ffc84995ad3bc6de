"""Transport-level abuse against real Hypercorn over TLS on 127.0.0.1:0 (issue 8, items 3, 9, 11):
early answers with the body still coming, HTTP/2 streams answered early, malformed HTTP/1.1
framing, protocol upgrades, an oversize chunked body."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import h2.events
import httpx
import pytest

from registryd import config as config_mod
from registryd.certs import DevCerts
from tests.helpers import NO_RATE_LIMIT, config_text, running, tls_table
from tests.rawhttp import H2Client, h2_body, h2_status, open_tls, read_answer, tls_context

pytestmark = pytest.mark.e2e

RESOLVE = json.dumps({"handle": "00" * 32, "requester_ephemeral_pubkey_hex": "09" * 32}).encode()
JSON = {"content-type": "application/json"}


@pytest.fixture(autouse=True)
def no_error_in_the_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a test sends, the server logs no error and no traceback."""
    caplog.set_level(logging.INFO)
    yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert "Traceback" not in caplog.text


def tls_config(certs: DevCerts, tables: str = NO_RATE_LIMIT) -> config_mod.Config:
    return config_mod.parse(config_text(mode="tls", tls=tls_table(certs), tables=tables))


def error_code(body: bytes) -> str:
    decoded = json.loads(body)
    assert list(decoded) == ["error"] and sorted(decoded["error"]) == ["code", "message"]
    code: str = decoded["error"]["code"]
    return code


# -- item 3: early answers ---------------------------------------------------------------------

EARLY = {  # a request answered before its body is read: (head, status, error code)
    "content type": (b"POST /register HTTP/1.1\r\ncontent-type: text/plain", 400, "INVALID_INPUT"),
    "/sync unauthorized": (b"POST /sync HTTP/1.1", 401, "UNAUTHORIZED"),
    "POST /nodes unauthorized": (b"POST /nodes HTTP/1.1", 401, "UNAUTHORIZED"),
    "/resolve without pow": (b"POST /resolve HTTP/1.1", 400, "POW_REQUIRED"),
    "unknown path": (b"POST /nowhere HTTP/1.1", 404, "NOT_FOUND"),
    "wrong method": (b"PUT /register HTTP/1.1", 405, "METHOD_NOT_ALLOWED"),
}
EARLY_TABLES = NO_RATE_LIMIT + "[pow]\nenabled = true\n"
HEALTH = b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n"


def head(start: bytes, length: int) -> bytes:
    extra = b"" if b"content-type" in start else b"\r\ncontent-type: application/json"
    return start + extra + b"\r\nhost: localhost\r\ncontent-length: %d\r\n\r\n" % length


async def test_an_early_answer_keeps_the_connection_for_the_next_request(certs: DevCerts) -> None:
    """The body arrives after the server could have answered; the request pipelined behind it
    is answered on the same connection (on main it was not: the connection was closed)."""
    body = b"{" + b" " * 998 + b"}"
    async with running(tls_config(certs, EARLY_TABLES)) as url:
        for name, (start, status, code) in EARLY.items():
            reader, writer = await open_tls(url, certs)
            writer.write(head(start, len(body)))
            await asyncio.sleep(0.2)  # the answer could go now: the body is late
            writer.write(body + HEALTH)
            first = await read_answer(reader)
            assert (first.status, error_code(first.body)) == (status, code), name
            assert "connection" not in first.headers, name
            second = await read_answer(reader)
            assert second.status == 200 and json.loads(second.body)["status"] == "ok", name
            writer.close()


async def test_a_hundred_early_answers_barely_touch_the_log(
    certs: DevCerts, caplog: pytest.LogCaptureFixture
) -> None:
    """Head, then body as a separate write, on fresh connections; the client gets banned on
    the way (429). On main each such answer could log ~5.5 KB of tracebacks."""
    tables = EARLY_TABLES.replace("enabled = false", "burst = 5\nban_seconds = 300")
    body = b"{" + b" " * 1998 + b"}"
    statuses: Counter[int] = Counter()
    async with running(tls_config(certs, tables)) as url:
        await asyncio.sleep(0.1)
        before = len(caplog.text)
        kinds = list(EARLY.values())
        for i in range(100):
            start, _, _ = kinds[i % len(kinds)]
            reader, writer = await open_tls(url, certs)
            writer.write(head(start, len(body)))
            await writer.drain()
            writer.write(body)
            answer = await read_answer(reader)
            error_code(answer.body)
            statuses[answer.status] += 1
            writer.close()
        grown = len(caplog.text) - before
    assert statuses[429] >= 90  # banned after its burst
    assert grown < 20_000


async def test_sixty_http2_streams_under_a_rate_limit_are_all_answered(certs: DevCerts) -> None:
    """On main the first 429 (sent before the body was read) crashed Hypercorn's HTTP/2
    handling with a KeyError and every stream on the connection died."""
    tables = "[rate_limit]\nburst = 10\nban_seconds = 0\n"
    async with (
        running(tls_config(certs, tables)) as url,
        httpx.AsyncClient(verify=tls_context(certs, ("h2",)), http2=True, timeout=30) as client,
    ):
        answers = await asyncio.gather(
            *(client.post(url + "/resolve", content=RESOLVE, headers=JSON) for _ in range(60))
        )
    assert {a.http_version for a in answers} == {"HTTP/2"}
    assert Counter(a.status_code for a in answers) == {200: 10, 429: 50}


async def test_http2_413_ends_one_stream_not_the_connection(certs: DevCerts) -> None:
    async with (
        running(tls_config(certs)) as url,
        httpx.AsyncClient(verify=tls_context(certs, ("h2",)), http2=True, timeout=30) as client,
    ):
        big = await client.post(url + "/register", content=b" " * 100_000, headers=JSON)
        assert (big.http_version, big.status_code) == ("HTTP/2", 413)
        assert error_code(big.content) == "PAYLOAD_TOO_LARGE"
        after = await client.get(url + "/health")  # the same connection
        assert (after.http_version, after.status_code) == ("HTTP/2", 200)


async def test_http2_body_after_an_early_answer_is_dropped(certs: DevCerts) -> None:
    """A 200 KB body still arriving after its stream was answered (401): the data is dropped,
    the client can finish, and the connection serves the next stream. On main the first such
    DATA frame raised KeyError in Hypercorn and the connection died."""
    async with running(tls_config(certs)) as url:
        client = await H2Client.connect(url, certs)
        try:
            common = [(":scheme", "https"), (":authority", "localhost")]
            client.h2.send_headers(1, [(":method", "POST"), (":path", "/sync"), *common])
            await client.flush()
            await client.send_body(1, b"x" * 200_000)
            sync = await client.until(h2.events.StreamEnded, 1)
            assert h2_status(sync) == 401 and error_code(h2_body(sync)) == "UNAUTHORIZED"
            client.h2.send_headers(3, [(":method", "GET"), (":path", "/health"), *common], True)
            await client.flush()
            health = await client.until(h2.events.StreamEnded, 3)
            assert h2_status(health) == 200
        finally:
            client.close()


# -- item 9: what the protocol layer answers ---------------------------------------------------

MALFORMED = {
    "no Host": b"GET /health HTTP/1.1\r\n\r\n",
    "not a request line": b"GARBAGE\r\n\r\n",
    "HTTP/0.9": b"GET /health\r\n\r\n",
    "space in target": b"GET /hea lth HTTP/1.1\r\nhost: x\r\n\r\n",
    "double space": b"GET  /health HTTP/1.1\r\nhost: x\r\n\r\n",
    "control in method": b"G\x01T /health HTTP/1.1\r\nhost: x\r\n\r\n",
    "header without colon": b"GET /health HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n",
    "space in name": b"GET /health HTTP/1.1\r\nhost: x\r\nbad name: x\r\n\r\n",
    "space before colon": b"GET /health HTTP/1.1\r\nhost: x\r\nname : x\r\n\r\n",
    "empty name": b"GET /health HTTP/1.1\r\nhost: x\r\n: x\r\n\r\n",
    "DEL in name": b"GET /health HTTP/1.1\r\nhost: x\r\nx\x7f: a\r\n\r\n",
    "NUL in value": b"GET /health HTTP/1.1\r\nhost: x\r\nx: a\x00b\r\n\r\n",
    "CR in value": b"GET /health HTTP/1.1\r\nhost: x\r\nx: a\rb\r\n\r\n",
    "two Hosts": b"GET /health HTTP/1.1\r\nhost: x\r\nhost: y\r\n\r\n",
    "two content-lengths": b"POST /register HTTP/1.1\r\nhost: x\r\n"
    b"content-length: 1\r\ncontent-length: 2\r\n\r\nab",
    "content-length abc": b"POST /register HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n",
    "content-length -1": b"POST /register HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n",
    "content-length +1": b"POST /register HTTP/1.1\r\nhost: x\r\ncontent-length: +1\r\n\r\na",
    "transfer-encoding gzip": b"POST /register HTTP/1.1\r\nhost: x\r\n"
    b"transfer-encoding: gzip\r\n\r\n",
    "transfer-encoding gzip, chunked": b"POST /register HTTP/1.1\r\nhost: x\r\n"
    b"transfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "transfer-encoding twice": b"POST /register HTTP/1.1\r\nhost: x\r\n"
    b"transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": b"POST /register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b"transfer-encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    "chunk without CRLF": b"POST /register HTTP/1.1\r\nhost: x\r\n"
    b"content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
    "20 KB head in one read": b"GET /health HTTP/1.1\r\nhost: x\r\n"
    + b"x-pad: %s\r\n" % (b"a" * 20_000)
    + b"\r\n",
    "bad trailer": b"POST /register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b"transfer-encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
}


async def test_malformed_http1_gets_the_error_body(certs: DevCerts) -> None:
    """On main each of these got an empty 400 or 501 from Hypercorn."""
    wrong: dict[str, object] = {}
    async with running(tls_config(certs)) as url:
        for name, raw in MALFORMED.items():
            reader, writer = await open_tls(url, certs)
            writer.write(raw)
            got: object
            try:
                answer = await read_answer(reader)
                headers = answer.headers
                got = (answer.status, headers.get("content-type"), headers.get("connection"))
                got += (error_code(answer.body),)
            except (OSError, asyncio.IncompleteReadError, ValueError, AssertionError) as exc:
                got = type(exc).__name__
            writer.close()
            if got != (400, "application/json", "close", "INVALID_INPUT"):
                wrong[name] = got
    assert wrong == {}
    assert len(MALFORMED) >= 20


UPGRADES = {
    "websocket": b"connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n"
    b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    "h2c": b"connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
    b"http2-settings: AAMAAABkAAQAAP__\r\n",
}


@pytest.mark.parametrize("kind", UPGRADES)
async def test_upgrades_are_refused_and_the_request_answered(certs: DevCerts, kind: str) -> None:
    """On main a websocket upgrade got an empty 403 and h2c inside TLS was accepted (101)."""
    async with running(tls_config(certs)) as url:
        reader, writer = await open_tls(url, certs)
        for path, status in ((b"/health", 200), (b"/nowhere", 404)):
            writer.write(b"GET %s HTTP/1.1\r\nhost: localhost\r\n%s\r\n" % (path, UPGRADES[kind]))
            answer = await read_answer(reader)
            assert answer.status == status
            assert answer.headers["content-type"] == "application/json"
            assert json.loads(answer.body)
        writer.close()


async def test_http2_connect_gets_405(certs: DevCerts) -> None:
    async with running(tls_config(certs)) as url:
        client = await H2Client.connect(url, certs)
        try:
            client.h2.send_headers(1, [(":method", "CONNECT"), (":authority", "example.org:443")])
            await client.flush()
            events = await client.until(h2.events.StreamEnded, 1)
            assert h2_status(events) == 405
            assert error_code(h2_body(events)) == "METHOD_NOT_ALLOWED"
        finally:
            client.close()


@pytest.mark.parametrize("path", ["/check_user/\u00e9", "/resolve\x7f", "/a b"])
async def test_http2_pseudo_headers_that_are_not_visible_ascii_get_400(
    certs: DevCerts, path: str
) -> None:
    """Hypercorn decodes ``:path`` as ASCII: a non-ASCII one dropped the whole connection."""
    async with running(tls_config(certs)) as url:
        client = await H2Client.connect(url, certs)
        try:
            client.h2.send_headers(
                1,
                [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", path)],
                end_stream=True,
            )
            await client.flush()
            events = await client.until(h2.events.StreamEnded, 1)
            assert h2_status(events) == 400
            assert error_code(h2_body(events)) == "INVALID_INPUT"
            client.h2.send_headers(  # the connection serves on
                3,
                [
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":authority", "x"),
                    (":path", "/health"),
                ],
                end_stream=True,
            )
            await client.flush()
            assert h2_status(await client.until(h2.events.StreamEnded, 3)) == 200
        finally:
            client.close()


# -- item 11: an oversize chunked body ---------------------------------------------------------


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 16384):
        yield b" " * 16384


async def test_an_oversize_chunked_body_gets_a_readable_413(certs: DevCerts) -> None:
    """httpx sends the whole body before it reads: on main the connection was reset under it."""
    async with (
        running(tls_config(certs)) as url,
        httpx.AsyncClient(verify=tls_context(certs), timeout=30) as client,
    ):
        for _ in range(3):
            answer = await client.post(url + "/register", content=_chunks(1 << 20), headers=JSON)
            assert answer.status_code == 413
            assert error_code(answer.content) == "PAYLOAD_TOO_LARGE"
            assert answer.headers["connection"] == "close"
        assert (await client.get(url + "/health")).status_code == 200
