"""Slow clients against real Hypercorn: headers, bodies and TLS handshakes each have a deadline,
and the daemon keeps serving other clients meanwhile."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httpx
import pytest

from registryd import config as config_mod
from registryd.certs import DevCerts
from registryd.identity import user_id
from tests.helpers import config_text, running, tls_table

pytestmark = pytest.mark.e2e

DEADLINE_S = 2  # scaled down from the 10 s defaults so the test stays short
TRICKLE_EVERY_S = 0.5
SHORT_DEADLINES = (
    f"[server]\nheader_timeout_seconds = {DEADLINE_S}\nbody_timeout_seconds = {DEADLINE_S}\n"
    f"handshake_timeout_seconds = {DEADLINE_S}\n"
)


def slow_config(certs: DevCerts) -> config_mod.Config:
    tls = tls_table(certs) + SHORT_DEADLINES
    return config_mod.parse(config_text(mode="tls", tls=tls))


async def open_tls(url: str, certs: DevCerts) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=str(certs.ca))
    return await asyncio.open_connection(parts.hostname, parts.port, ssl=context)


async def trickle(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, data: bytes) -> bytes:
    """Send ``data`` a byte every TRICKLE_EVERY_S until the server answers or hangs up; returns
    the answer (its head and its ``content-length`` bytes of body), or b"" if hung up on."""
    for byte in data:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
            first = await asyncio.wait_for(reader.read(4096), TRICKLE_EVERY_S)
            return await rest_of_answer(reader, first)
        except TimeoutError:
            continue
        except (ConnectionError, ssl.SSLError):
            break  # hung up on: whatever it said before is still in the buffer
    try:
        return await rest_of_answer(reader, await asyncio.wait_for(reader.read(4096), 30))
    except (ConnectionError, ssl.SSLError):
        return b""


async def rest_of_answer(reader: asyncio.StreamReader, answer: bytes) -> bytes:
    """``answer`` read on until its head and ``content-length`` body are complete (or the
    server hangs up)."""
    async with asyncio.timeout(10):
        while True:
            head, end_of_head, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
            if end_of_head and (length is None or len(body) >= int(length[1])):
                return answer
            chunk = await reader.read(4096)
            if not chunk:
                return answer
            answer += chunk


async def while_serving_others(
    url: str, certs: DevCerts, slow: Callable[[], Awaitable[bytes]]
) -> tuple[bytes, float, list[int]]:
    """Run ``slow`` while a normal client keeps asking; returns its answer, time and statuses."""
    statuses: list[int] = []
    done = asyncio.Event()

    async def normal_client() -> None:
        context = ssl.create_default_context(cafile=str(certs.ca))
        async with httpx.AsyncClient(verify=context, timeout=5) as client:
            while not done.is_set():
                response = await client.get(f"{url}/check_user/{user_id('alice').hex()}")
                statuses.append(response.status_code)
                await asyncio.sleep(0.05)

    normal = asyncio.create_task(normal_client())
    started = time.monotonic()
    try:
        answer = await asyncio.wait_for(slow(), 30)
    finally:
        elapsed = time.monotonic() - started
        done.set()
        await normal
    return answer, elapsed, statuses


async def test_slow_body_is_cut_off_at_its_deadline(certs: DevCerts) -> None:
    async with running(slow_config(certs)) as url:
        reader, writer = await open_tls(url, certs)
        head = (
            b"POST /resolve HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
            b"content-length: 200\r\n\r\n"
        )
        writer.write(head)
        answer, elapsed, statuses = await while_serving_others(
            url, certs, lambda: trickle(writer, reader, b" " * 200)
        )
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"code":"REQUEST_TIMEOUT"' in answer and b"connection: close" in answer
    assert DEADLINE_S - 0.5 <= elapsed <= DEADLINE_S + 1.5
    assert len(statuses) >= 10 and set(statuses) == {200}


async def test_slow_headers_are_cut_off_at_their_deadline(certs: DevCerts) -> None:
    async with running(slow_config(certs)) as url:
        reader, writer = await open_tls(url, certs)
        head = b"GET /nodes HTTP/1.1\r\nhost: localhost\r\nx-padding: " + b"a" * 100 + b"\r\n\r\n"
        answer, elapsed, statuses = await while_serving_others(
            url, certs, lambda: trickle(writer, reader, head)
        )
        writer.close()
    assert answer == b""  # hung up on, no request ever reached the app
    assert DEADLINE_S - 0.5 <= elapsed <= DEADLINE_S + 1.5
    assert len(statuses) >= 10 and set(statuses) == {200}


async def test_silent_tls_client_is_cut_off_at_the_handshake_deadline(certs: DevCerts) -> None:
    async with running(slow_config(certs)) as url:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)

        async def silent() -> bytes:
            return await reader.read(100)  # never sends a ClientHello

        answer, elapsed, statuses = await while_serving_others(url, certs, silent)
        writer.close()
    assert answer == b""
    assert DEADLINE_S - 0.5 <= elapsed <= DEADLINE_S + 1.5
    assert len(statuses) >= 10 and set(statuses) == {200}
