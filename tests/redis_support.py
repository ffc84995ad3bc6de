"""A real ``redis-server`` (Debian's package) for the tests: :class:`RedisServer`.

Each server listens on 127.0.0.1 on a free port (plain, or TLS with the dev certificates), with
``appendonly yes`` and ``appendfsync always`` in a directory of its own, so a ``kill -9`` loses
no acknowledged write; it is stopped by its PID. ``make test`` installs ``redis-server`` when
missing (Makefile ``test-deps``).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from registryd.certs import DevCerts

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port < 55_000 and _free(port + 10_000):
            return port


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port`` with its data in ``directory``.

    ``certs``: serve TLS only (``rediss://``), with the dev server certificate, client
    certificates not asked for. ``extra``: more ``--option value`` arguments.
    """

    def __init__(
        self,
        directory: Path,
        *,
        certs: DevCerts | None = None,
        extra: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        self.directory = directory
        self.certs = certs
        self.extra = extra
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.start()

    @property
    def url(self) -> str:
        scheme = "rediss" if self.certs else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        if self.certs is None:
            return [*args, "--port", str(self.port), *self.extra]
        tls = self.certs
        return [
            *args,
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(tls.server_cert),
            "--tls-key-file",
            str(tls.server_key),
            "--tls-ca-cert-file",
            str(tls.ca),
            "--tls-auth-clients",
            "no",
            *self.extra,
        ]

    def client(self) -> redis.Redis:
        """A synchronous client (for setting up and looking at the data)."""
        if self.certs is None:
            return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=5,
            ssl=True,
            ssl_ca_certs=str(self.certs.ca),
        )

    def start(self) -> None:
        """Start it (again, on the same port and data) and wait until it answers PING."""
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(redis.RedisError, OSError), self.client() as client:
                if client.ping():
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start: {log}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it by PID (SIGKILL for a crash) and wait for it to exit (SIGKILL after 20 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def pause(self, paused: bool = True) -> None:
        """Freeze it (SIGSTOP: connections stay open, nothing answers) or thaw it (SIGCONT)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()


@contextlib.contextmanager
def redis_server(
    directory: Path, *, certs: DevCerts | None = None, extra: tuple[str, ...] = ()
) -> Iterator[RedisServer]:
    server = RedisServer(directory, certs=certs, extra=extra)
    try:
        yield server
    finally:
        server.stop()


class RedisCluster:
    """Three redis-server masters (``--cluster-enabled yes``, AOF, appendfsync always) joined
    with ``redis-cli --cluster create``, no replicas; stopped by PID."""

    def __init__(self, directory: Path) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for i in range(3):
                node_dir = directory / f"node{i}"
                extra = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
                self.nodes.append(RedisServer(node_dir, extra=extra, port=cluster_port()))
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            subprocess.run(
                [
                    shutil.which("redis-cli") or "/usr/bin/redis-cli",
                    "--cluster",
                    "create",
                    *addresses,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self._wait_ok()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + 30
        for node in self.nodes:
            while True:
                with node.client() as client:
                    info = client.execute_command("CLUSTER INFO")
                if isinstance(info, dict):
                    if info.get("cluster_state") == "ok":
                        break
                elif b"cluster_state:ok" in info:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis cluster did not become ok")
                time.sleep(0.1)

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
