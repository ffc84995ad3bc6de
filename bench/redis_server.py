"""A redis-server (Debian's package) for one benchmark setup: 127.0.0.1 on a free port, AOF with
``appendfsync always`` (the durable setting the README asks for), its own directory; stopped by
PID. ``make bench`` installs it with the load tools when missing."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from . import procs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """Run redis-server with its data in ``directory`` until the block ends; yields its URL."""
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    argv = [
        shutil.which("redis-server") or "/usr/bin/redis-server",
        *("--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory)),
        *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
        *("--logfile", str(directory / "redis.log")),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)  # noqa: S603 - our own argv
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise procs.ServerFailed(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        procs.stop(proc)
