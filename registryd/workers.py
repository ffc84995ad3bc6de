"""``[server] workers = N``: N worker processes serving one listening socket.

The supervisor (``registryd serve`` itself) checks what ``serve`` checks before binding (TLS
files and context, keys, the storage reachable with a known schema), binds the listening
socket(s) once, and starts N workers, ``python -m registryd serve --worker-fds FD[,PEER_FD]``,
which inherit the bound socket(s) and serve them with :func:`registryd.server.serve`, each
with its own event loop and its own Redis pool. The kernel hands each connection to one of the
workers blocked in ``accept``.

Why one inherited socket and not ``SO_REUSEPORT``: binding once makes every bind error (address
in use, permission) a start-up error of the one command before anything runs, works with port
0 (tests, ``address = "127.0.0.1:0"``), and needs no check that the N sockets agree; with
reuseport a worker restarted while others run would also reshuffle the kernel's hash of flows.
Fresh interpreters (spawned, not forked) so no event loop, thread or pool crosses a fork.

Signals: SIGHUP is sent on to every worker (each reloads its config, as one daemon does);
SIGTERM or SIGINT is sent on, and workers still running after ``shutdown_grace_seconds`` + 5 s
are killed. A worker that dies on its own is logged and started again after a second; workers
get SIGTERM if the supervisor dies (``PR_SET_PDEATHSIG``). Each
worker reports readiness on its stdout; once all have, the supervisor logs ``listening on``,
calls ``on_ready`` and tells systemd (workers never do).

Metrics (``[metrics] address``): the supervisor binds the metrics socket too, with the others,
and makes a private directory for ``prometheus_client``'s multiprocess mode
(:mod:`registryd.metrics.multiproc`), removed when it exits. Every worker writes its counts
there; worker 0 (and whichever worker replaces it) alone inherits the metrics socket and serves
it, summing every worker's files at each scrape.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import eventloop
from .config import Config
from .metrics import multiproc
from .sdnotify import notify
from .server import bind_metrics, hypercorn_config, serve, url_of
from .sockets import bind_socket, parse_address
from .storage import open_storage
from .transport.peers import peer_hypercorn_config

log = logging.getLogger("registryd")

READY = b"registryd-worker-ready\n"
KILL_AFTER_GRACE_S = 5
RESTART_DELAY_S = 1.0
PR_SET_PDEATHSIG = 1


def _die_with_supervisor() -> None:
    """In a worker, before exec: SIGTERM when the supervisor dies, even by SIGKILL (Linux), so
    no orphaned worker keeps serving the socket."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux/glibc


async def _check_storage(config: Config) -> None:
    storage = open_storage(config)  # StorageError / SchemaVersionError before binding
    await storage.close()


class Supervisor:
    """Runs ``config.server.workers`` workers on sockets bound here (module docstring).
    ``worker_args`` are passed to each worker's ``serve`` (config path, log flags).

    Worker 0 serves ``[metrics] address``, not the supervisor: the scrape-time gauges (key ring,
    node directory; :mod:`registryd.metrics.state`) read a running registry's state, which a
    worker has and the supervisor does not (it would need a key ring, reloads, a storage pool
    and a directory listing of its own, or gauges copied into the files between scrapes, stale
    by then). The supervisor holds the metrics socket open, so while worker 0 is restarted a
    scrape waits in the socket's backlog (~1 s restart delay, then the worker's start) rather
    than being refused.
    """

    def __init__(self, config: Config, worker_args: Sequence[str]) -> None:
        self.config = config
        self.worker_args = list(worker_args)
        self.procs: list[asyncio.subprocess.Process] = []
        self.stopping = False
        self.fds: list[int] = []
        self.metrics_sock: socket.socket | None = None
        self.metrics_dir: Path | None = None

    def bind(self) -> list[socket.socket]:
        """Check, then bind the public (and peer, and metrics) sockets; returns them all."""
        hypercorn_config(self.config)  # TLS files and context: ConfigError before binding
        peer_hc = peer_hypercorn_config(self.config, hypercorn_config(self.config))
        asyncio.run(_check_storage(self.config))
        socks = [bind_socket(*self.config.host_port)]
        if peer_hc is not None:
            socks.append(
                bind_socket(*parse_address(self.config.peers.listen or "", "peers.listen"))
            )
        self.fds = [s.fileno() for s in socks]
        self.metrics_sock = bind_metrics(self.config)
        if self.metrics_sock is not None:
            socks.append(self.metrics_sock)
            self.metrics_dir = multiproc.prepare()
            log.info(
                "metrics: %d workers' counts summed from %s",
                self.config.server.workers,
                self.metrics_dir,
            )
        for sock in socks:
            sock.set_inheritable(True)
        return socks

    async def _start(self, index: int) -> asyncio.subprocess.Process:
        drop = ("NOTIFY_SOCKET", multiproc.ENV)
        env = {k: v for k, v in os.environ.items() if k not in drop}
        argv = [sys.executable, "-m", "registryd", "serve", *self.worker_args]
        argv += ["--worker-fds", ",".join(map(str, self.fds))]
        fds = list(self.fds)
        if self.metrics_dir is not None:
            argv += ["--metrics-dir", str(self.metrics_dir)]
        if index == 0 and self.metrics_sock is not None:
            fds.append(self.metrics_sock.fileno())
            argv += ["--metrics-fd", str(fds[-1])]
        return await asyncio.create_subprocess_exec(
            *argv,
            pass_fds=fds,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_supervisor,
        )

    async def _ready(self, proc: asyncio.subprocess.Process) -> bool:
        assert proc.stdout is not None
        return await proc.stdout.readline() == READY

    async def run(self, socks: list[socket.socket], on_ready: Callable[[str], None]) -> int:
        """Start the workers, wait until all are ready, then supervise until stopped."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        self.procs = [await self._start(i) for i in range(self.config.server.workers)]
        if not all(await asyncio.gather(*(self._ready(p) for p in self.procs))):
            log.error("a worker failed to start; stopping")
            await self._stop()
            return 1
        url = url_of(self.config, socks[0])
        on_ready(url)
        notify(f"READY=1\nSTATUS=listening on {url}\nMAINPID={os.getpid()}")
        log.info("registryd listening on %s (%d workers)", url, len(self.procs))
        watchers = [asyncio.create_task(self._watch(i)) for i in range(len(self.procs))]
        await stop.wait()
        self.stopping = True
        for task in watchers:
            task.cancel()
        await self._stop()
        log.info("registryd stopped (%d workers)", len(self.procs))
        return 0

    def _forward(self, signum: int) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signum)

    async def _watch(self, index: int) -> None:
        while not self.stopping:
            code = await self.procs[index].wait()
            if self.metrics_dir is not None:
                multiproc.worker_exited(self.metrics_dir, self.procs[index].pid)
            if self.stopping:
                return
            log.error("worker %d exited with %s; starting it again", index, code)
            await asyncio.sleep(RESTART_DELAY_S)
            self.procs[index] = await self._start(index)
            await self._ready(self.procs[index])

    async def _stop(self) -> None:
        self._forward(signal.SIGTERM)
        grace = self.config.server.shutdown_grace_seconds + KILL_AFTER_GRACE_S
        waits = asyncio.gather(*(p.wait() for p in self.procs))
        try:
            await asyncio.wait_for(waits, grace)
        except TimeoutError:
            log.error("workers still running %d s after SIGTERM: killing them", grace)
            self._forward(signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in self.procs))


def supervise(config: Config, worker_args: Sequence[str], on_ready: Callable[[str], None]) -> int:
    """Bind, start ``[server] workers`` workers and supervise them until SIGTERM/SIGINT;
    returns the exit code. Raises ConfigError, StorageError and OSError before binding."""
    supervisor = Supervisor(config, worker_args)
    socks = supervisor.bind()
    try:
        return asyncio.run(supervisor.run(socks, on_ready))
    finally:
        for sock in socks:
            sock.close()
        if supervisor.metrics_dir is not None:
            shutil.rmtree(supervisor.metrics_dir, ignore_errors=True)


def serve_worker(
    config: Config,
    config_path: str,
    fds: str,
    metrics_fd: int | None,
    metrics_dir: str | None,
) -> None:
    """Serve as one worker: on the listening socket (and peer socket) it inherited
    (``--worker-fds FD[,PEER_FD]``), in multiprocess metrics mode over ``metrics_dir``
    (``--metrics-dir``) if given, and serving the metrics socket ``metrics_fd``
    (``--metrics-fd``, worker 0 only) if given."""
    if metrics_dir is not None:
        multiproc.enable(metrics_dir)  # before serve makes the Runtime and its metrics
    socks = [socket.socket(fileno=int(fd)) for fd in fds.split(",")]
    metrics_sock = None if metrics_fd is None else socket.socket(fileno=metrics_fd)
    eventloop.run(
        serve(
            config,
            sock=socks[0],
            peer_sock=socks[1] if len(socks) > 1 else None,
            metrics_sock=metrics_sock,
            serve_metrics=metrics_sock is not None,
            config_path=config_path,
            on_ready=_report_ready,
        ),
        config.server.event_loop,
    )


def _report_ready(_url: str) -> None:
    """A worker's ``on_ready``: tell the supervisor on stdout."""
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
