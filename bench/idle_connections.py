"""Idle connections and connect bursts against the daemon (issue 8, item 2).

    python -m bench.idle_connections [--connections 4000] [--addresses 100] [--hello]
                                     [--burst 1000] [--server-table "max_connections = 512"]

Starts ``registryd serve`` over TLS (memory storage, rate limits off, the default connection
limits, a 30 s handshake deadline so that the daemon closes nothing by itself during the
measurement) and reads its resident set size (``VmRSS``). Then:

1. ``--connections`` TCP connections, spread over ``--addresses`` loopback source addresses
   (127.0.1.x: each address holds connections/addresses of them), that never send a byte (with
   ``--hello``: each sends the first byte of a TLS record and stops, so TLS is under way). After
   they settle, the RSS again, and how many the daemon still holds open.
2. While they are open, a legitimate client on 127.0.0.1 asks ``GET /health`` over TLS: its
   status and time.
3. The idle connections are closed, and the RSS read once more (what the allocator kept).
4. ``--burst`` simultaneous TCP connects (from 20 source addresses), each then doing a TLS
   ``GET /health`` on a fresh connection: how many completed the TCP handshake within 1 s (a
   connect dropped from a full listen queue is retried by the kernel after 1 s) and how many
   were served 200 within 10 s.

Prints one JSON object (memory in MiB). The harness raises its own file-descriptor limit to the
hard limit (the daemon inherits it); it never sends anything anywhere but 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from registryd.certs import write_dev_certs

from .configs import MAX_CONNECTIONS, Secrets, Setup, config_text
from .procs import daemon_argv, started

MIB = 1024 * 1024
SETTLE_S = 3.0
BURST_ADDRESSES = 20
BENCH_SHARE = f"max_connections_per_client = {MAX_CONNECTIONS}\n"


def rss_mib(pid: int) -> float:
    """The resident set size of process ``pid`` in MiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / MIB
    raise RuntimeError(f"no VmRSS for pid {pid}")


def source(i: int, addresses: int, base: str = "127.0.1") -> tuple[str, int]:
    """The i-th connection's local address: ``addresses`` loopback hosts in turn, any port."""
    return (f"{base}.{1 + i % addresses}", 0)


@contextlib.contextmanager
def registryd(work: Path, server_table: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    certs = write_dev_certs(work / "certs")
    text = config_text(Secrets.generate(), Setup("memory", "tls"), data_dir=work, certs=certs)
    text = text.replace(BENCH_SHARE, "")  # the daemon's own connection limits are measured
    table = f"handshake_timeout_seconds = 30\n{server_table}\n"
    path = work / "registry.toml"
    path.write_text(text.replace("[server]\n", "[server]\n" + table, 1))
    path.chmod(0o600)
    with started(daemon_argv(path), work / "daemon.log") as (url, proc):
        yield url, proc


async def open_idle(
    host: str, port: int, count: int, addresses: int, hello: bool
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async def one(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, local_addr=source(i, addresses)), 10
            )
        except (OSError, TimeoutError):
            return None
        if hello:
            writer.write(b"\x16")  # a TLS handshake record begins; the rest never comes
        return reader, writer

    opened = await asyncio.gather(*(one(i) for i in range(count)))
    return [pair for pair in opened if pair is not None]


async def still_open(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> int:
    """How many of ``conns`` the server has not closed (no EOF or reset within 0.2 s)."""

    async def is_open(reader: asyncio.StreamReader) -> bool:
        try:
            return bool(await asyncio.wait_for(reader.read(1), 0.2))
        except TimeoutError:
            return True
        except OSError:
            return False

    return sum(await asyncio.gather(*(is_open(reader) for reader, _ in conns)))


async def health(url: str, context: ssl.SSLContext, local: tuple[str, int]) -> tuple[str, float]:
    """``GET /health`` on a fresh TLS connection from ``local``: (status or error, seconds)."""
    parts = urlsplit(url)
    started_at = time.monotonic()
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(
                parts.hostname, parts.port, ssl=context, local_addr=local
            )
            writer.write(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
        status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "none"
    except (OSError, TimeoutError) as exc:
        status = type(exc).__name__
    return status, time.monotonic() - started_at


async def burst(url: str, context: ssl.SSLContext, count: int) -> dict[str, int]:
    parts = urlsplit(url)
    host, port = str(parts.hostname), int(parts.port or 0)

    async def one(i: int) -> tuple[bool, str]:
        local = source(i, BURST_ADDRESSES, base="127.0.2")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, local_addr=local), 1.0
            )
            writer.close()
            connected = True
        except (OSError, TimeoutError):
            connected = False
        status, _ = await health(url, context, local)
        return connected, status

    results = await asyncio.gather(*(one(i) for i in range(count)))
    return {
        "burst": count,
        "burst_connected_within_1s": sum(1 for connected, _ in results if connected),
        "burst_served_200": sum(1 for _, status in results if status == "200"),
    }


async def measure(
    args: argparse.Namespace, url: str, proc: subprocess.Popen[bytes]
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = str(parts.hostname), int(parts.port or 0)
    context = ssl.create_default_context(cafile=str(args.work / "certs" / "ca.pem"))
    await asyncio.sleep(1.0)
    warm, _ = await health(url, context, ("127.0.0.1", 0))
    before = rss_mib(proc.pid)
    conns = await open_idle(host, port, args.connections, args.addresses, args.hello)
    await asyncio.sleep(SETTLE_S)
    idle = rss_mib(proc.pid)
    held = await still_open(conns)
    status, seconds = await health(url, context, ("127.0.0.1", 0))
    for _, writer in conns:
        writer.close()
    await asyncio.sleep(SETTLE_S)
    after = rss_mib(proc.pid)
    result: dict[str, object] = {
        "connections": args.connections,
        "addresses": args.addresses,
        "hello": args.hello,
        "opened": len(conns),
        "held_by_server": held,
        "rss_before_mib": round(before, 1),
        "rss_idle_mib": round(idle, 1),
        "rss_growth_mib": round(idle - before, 1),
        "rss_after_close_mib": round(after, 1),
        "warm_up_status": warm,
        "legit_status": status,
        "legit_seconds": round(seconds, 3),
    }
    if args.burst:
        result.update(await burst(url, context, args.burst))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_connections")
    parser.add_argument("--connections", type=int, default=4000)
    parser.add_argument("--addresses", type=int, default=100)
    parser.add_argument("--hello", action="store_true", help="send one byte of TLS, then idle")
    parser.add_argument("--burst", type=int, default=1000, help="0: skip the burst")
    parser.add_argument("--server-table", default="", help="extra [server] keys (TOML lines)")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = args.connections + args.burst * 2 + 256
    if soft < min(needed, hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        args.work = Path(tmp)
        with registryd(args.work, args.server_table) as (url, proc):
            result = asyncio.run(measure(args, url, proc))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
