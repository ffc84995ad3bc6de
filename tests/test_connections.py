"""Connections against real Hypercorn over TLS on 127.0.0.x (issue 8, items 1 and 2): the stop
on SIGTERM under load, the connection cap and each client's share, the listen backlog. The
memory of 4,000 idle connections is measured by ``python -m bench.idle_connections``."""

from __future__ import annotations

import asyncio
import json
import selectors
import signal
import socket
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from registryd import config as config_mod
from registryd.certs import DevCerts
from tests.helpers import NO_RATE_LIMIT, Daemon, config_text, running, tls_table, write_config
from tests.rawhttp import open_tls, read_answer, tls_context

RESOLVE = json.dumps({"handle": "00" * 32, "requester_ephemeral_pubkey_hex": "09" * 32}).encode()
JSON = {"content-type": "application/json"}


# -- the cap over real TLS -------------------------------------------------------------------


async def silent(url: str, local: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection from ``local`` that never sends a byte; accepted before returning."""
    parts = urlsplit(url)
    pair = await asyncio.open_connection(parts.hostname, parts.port, local_addr=(local, 0))
    await asyncio.sleep(0.05)  # the server (this loop) accepts it meanwhile
    return pair


async def closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), within_s) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


@pytest.mark.e2e
async def test_connection_cap_share_and_a_legitimate_client(certs: DevCerts) -> None:
    tables = NO_RATE_LIMIT + "[server]\nmax_connections = 6\nmax_connections_per_client = 3\n"
    config = config_mod.parse(config_text(mode="tls", tls=tls_table(certs), tables=tables))
    async with running(config) as url:
        first = [await silent(url, "127.0.0.2") for _ in range(4)]
        assert await closed_by_server(first[3][0], 5)  # over its share: closed at once
        second = [await silent(url, "127.0.0.3") for _ in range(3)]  # now 6 of 6 open
        reader, writer = await open_tls(url, certs, local="127.0.0.4")
        writer.write(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        assert (await read_answer(reader)).status == 200  # served while the silent ones wait
        writer.close()
        assert await closed_by_server(first[0][0], 5)  # the longest idle gave way
        still = [not await closed_by_server(r, 0.2) for r, _ in first[1:3] + second]
        assert still == [True] * 5
        for _, w in first + second:
            w.close()


@pytest.mark.e2e
async def test_the_listen_backlog_is_ours(certs: DevCerts) -> None:
    """300 connects while the server's loop is blocked (this test holds it): the kernel's
    accept queue takes them all. On main Hypercorn listened again with a backlog of 100, and
    ~200 of them waited for a SYN retransmission."""
    config = config_mod.parse(config_text(mode="tls", tls=tls_table(certs)))
    async with running(config) as url:
        port = urlsplit(url).port
        assert port is not None
        assert connect_burst(port, 300, within_s=0.8) == 300


def connect_burst(port: int, count: int, within_s: float) -> int:
    """Start ``count`` connects at once without yielding to the event loop; how many completed
    their TCP handshake within ``within_s``."""
    socks = []
    with selectors.DefaultSelector() as selector:
        try:
            for _ in range(count):
                sock = socket.socket()
                socks.append(sock)
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                selector.register(sock, selectors.EVENT_WRITE)
            connected, deadline = 0, time.monotonic() + within_s
            while connected < count and (left := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(left):
                    done = key.fileobj
                    assert isinstance(done, socket.socket)
                    selector.unregister(done)
                    connected += done.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        finally:
            for sock in socks:
                sock.close()
    return connected


# -- SIGTERM under load (the daemon as a process) --------------------------------------------

GRACE_S = 2


@pytest.mark.e2e
@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
async def test_sigterm_under_tls_keep_alive_load(
    certs: DevCerts, tmp_path: Path, event_loop: str
) -> None:
    """8 keep-alive clients polling /resolve, 100 clients stuck mid-body, one request in flight,
    one idle keep-alive connection; then SIGTERM. On main: exit 1 within 0.5 s (an SSL error
    escaped Hypercorn), in-flight requests cut off with 500. The same on either
    ``[server] event_loop``."""
    path = tmp_path / "registry.toml"
    server = f'[server]\nshutdown_grace_seconds = {GRACE_S}\nevent_loop = "{event_loop}"\n'
    write_config(path, config_text(mode="tls", tls=tls_table(certs), tables=NO_RATE_LIMIT + server))
    d = Daemon(path)
    assert f"event loop={event_loop}" in d.log, d.log  # the loop actually serving
    statuses: Counter[int | str] = Counter()
    stop = asyncio.Event()

    async def poll() -> None:
        async with httpx.AsyncClient(verify=tls_context(certs), timeout=30) as client:
            while not stop.is_set():
                try:
                    answer = await client.post(d.url + "/resolve", content=RESOLVE, headers=JSON)
                    statuses[answer.status_code] += 1
                except httpx.TransportError as exc:  # refused or closed once stopping
                    statuses[type(exc).__name__] += 1
                    await asyncio.sleep(0.05)

    pollers: list[asyncio.Task[None]] = []
    try:
        assert d.url, d.log
        stuck = [await open_tls(d.url, certs, local=f"127.0.1.{1 + i % 4}") for i in range(100)]
        for _, writer in stuck:
            writer.write(
                b"POST /resolve HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
                b"\r\ncontent-length: %d\r\n\r\n{" % len(RESOLVE)
            )
        idle_reader, idle_writer = await open_tls(d.url, certs, local="127.0.2.1")
        idle_writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await read_answer(idle_reader)).status == 200  # kept alive, then idle
        in_flight_reader, in_flight = await open_tls(d.url, certs, local="127.0.2.2")
        in_flight.write(
            b"POST /resolve HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
            b"\r\ncontent-length: %d\r\n\r\n" % len(RESOLVE) + RESOLVE[:10]
        )
        pollers += [asyncio.create_task(poll()) for _ in range(8)]
        async with asyncio.timeout(30):
            while statuses[200] < 40:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # the in-flight body's first part has been read
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        in_flight.write(RESOLVE[10:])
        answer = await read_answer(in_flight_reader)
        assert answer.status == 200 and json.loads(answer.body)["handle"] == "00" * 32
        assert answer.headers["connection"] == "close"
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # closed cleanly
        code = await asyncio.to_thread(d.wait)
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.gather(*pollers)
        for _, writer in stuck:
            writer.close()
    finally:
        stop.set()
        for poller in pollers:
            poller.cancel()
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.communicate(timeout=10)
    assert code == 0, d.log
    assert elapsed <= GRACE_S + 2
    assert statuses[200] >= 40 and not [s for s in statuses if isinstance(s, int) and s != 200]
    assert "Traceback" not in d.log and " ERROR " not in d.log
    assert "registryd stopped" in d.log
