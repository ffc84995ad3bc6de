"""The endpoint matrix: every endpoint on every (storage, mode), next to its framework floor.

For each mode (``http``, ``tls``) and storage (``memory``, ``leveldb``, ``redis``: a local
redis-server with ``appendfsync always``, one daemon worker) this writes one config,
preloads N identities, then

1. serves the floor (``bench/floor.py``) from that config and measures ``GET /json`` and
   ``POST /echo`` — the most any GET or POST endpoint could do with these Hypercorn settings;
2. serves the daemon from the same config and measures resolve hits, resolve misses,
   presence_resolve (hits, after one presence per preloaded identity), check_user, register,
   announce, nodes (``GET /api/nodes`` after registering the bench's nodes), heartbeat and
   update (signed, :mod:`bench.signed_requests`).

Each measurement is a warm-up (discarded), a ``wrk`` peak run (requests/s, p50, p99) and a run
at a constant half of that peak (``hey -q``; register, heartbeat, update and announce: paced
``wrk``, see :mod:`bench.loadgen`) for the p99 at half peak. A run during which
other processes kept the machine busy (see :mod:`bench.cpu`) is repeated (``--busy-retries``
per run, ``--busy-retry-budget`` in all) and the least disturbed kept. The floor is measured
beside each daemon rather than once per mode, so slow drift of the machine affects both sides
of a ratio alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from registryd.certs import DevCerts

from . import loadgen, procs, workload
from .configs import Secrets, Setup, write_config
from .loadgen import LoadResult, Retries
from .preload import preload_leveldb, preload_presences, preload_sync
from .redis_server import redis_server
from .settings import Settings
from .signed_requests import HeartbeatPool, UpdatePool, nodes_requests, register_nodes
from .workload import RegisterPool, RequestFile

FLOOR_ENDPOINTS = ("floor_get", "floor_post")
PACED = ("register", "heartbeat", "update", "announce")  # half peak: paced wrk, not hey
Phase = str  # "warmup", "peak" or "half"
Requests = Callable[[Phase, int], RequestFile]


class Pool(Protocol):
    """Single-use requests handed out in slices (``take``); ``rewind`` before a fresh store."""

    def rewind(self) -> None: ...

    def take(self, out: Path, count: int) -> RequestFile: ...


@dataclass(frozen=True)
class Measured:
    """One endpoint on one server: its ``peak`` (wrk) and ``half`` (constant half-peak rate)."""

    endpoint: str
    storage: str
    mode: str
    peak: LoadResult
    half: LoadResult

    def to_json(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "storage": self.storage,
            "mode": self.mode,
            "peak": self.peak.to_json(),
            "half_peak": self.half.to_json(),
        }


@dataclass
class Workspace:
    """What every server of a run shares: key material, certificates, request files."""

    root: Path
    settings: Settings
    secrets: Secrets
    certs: DevCerts
    files: dict[str, RequestFile]
    pools: dict[str, Pool]
    log: Callable[[str], None]
    retries: Retries

    @classmethod
    def create(
        cls, root: Path, settings: Settings, certs: DevCerts, log: Callable[[str], None]
    ) -> Workspace:
        secrets = Secrets.generate()
        started = time.perf_counter()
        files = request_files(root, settings.identities, settings.request_lines, settings.seed)
        pools: dict[str, Pool] = {
            "register": RegisterPool(secrets),
            "update": UpdatePool(secrets, settings.owners, settings.seed),
            "heartbeat": HeartbeatPool(secrets, settings.nodes, settings.seed),
        }
        log(f"request files written in {time.perf_counter() - started:.1f} s")
        budget = settings.busy_retry_budget * settings.runs  # the budget is per matrix run
        retries = Retries(settings.busy_retries, budget, log)
        return cls(root, settings, secrets, certs, files, pools, log, retries)

    def config(self, setup: Setup, data_dir: Path, name: str | None = None) -> Path:
        """Write the config of ``setup`` (file ``name``.toml, default from the label)."""
        name = name or setup.label.replace("/", "-").replace("+", "-")
        return write_config(
            self.root / f"{name}.toml", self.secrets, setup, data_dir=data_dir, certs=self.certs
        )

    def requests(self, endpoint: str) -> Requests:
        """The request file of ``endpoint`` for a phase: a fresh slice of single-use requests
        for register, update and heartbeat (sized by the phase's expected request count), the
        shared file otherwise."""
        pool = self.pools.get(endpoint)
        if pool is None:
            file = self.files[endpoint]
            return lambda phase, count: file
        return lambda phase, count: pool.take(self.root / f"{endpoint}-{phase}.tsv", count)


def request_files(root: Path, identities: int, lines: int, seed: int) -> dict[str, RequestFile]:
    """The request files of the reusable endpoints and the floor."""
    files = {
        "resolve_hit": workload.resolve_requests(
            root / "resolve_hit.tsv", hits=True, identities=identities, lines=lines, seed=seed
        ),
        "resolve_miss": workload.resolve_requests(
            root / "resolve_miss.tsv", hits=False, identities=identities, lines=lines, seed=seed
        ),
        "presence_resolve": workload.resolve_requests(
            root / "presence_resolve.tsv",
            hits=True,
            identities=identities,
            lines=lines,
            seed=seed,
            path="/presence/resolve",
            endpoint="presence_resolve",
        ),
        "check_user": workload.check_user_requests(
            root / "check_user.tsv", identities=identities, lines=lines, seed=seed
        ),
        "announce": workload.announce_requests(
            root / "announce.tsv", identities=identities, lines=lines, seed=seed
        ),
        "nodes": nodes_requests(root / "nodes.tsv"),
    }
    get, post = workload.floor_requests(root, files["resolve_hit"].body)
    files["floor_get"], files["floor_post"] = get, post
    return files


def measure(
    url: str,
    requests: Requests,
    settings: Settings,
    work_dir: Path,
    *,
    retries: Retries,
    paced: bool = False,
) -> tuple[LoadResult, LoadResult]:
    """Warm-up, peak and half-peak runs of one endpoint; returns (peak, half). A peak or
    half-peak run during which other work kept the machine busy is repeated (``retries``)
    and the least disturbed one kept."""
    cap = settings.register_cap_rps
    if settings.warmup_s > 0:
        loadgen.wrk_peak(
            url,
            requests("warmup", round(settings.warmup_s * cap)),
            duration_s=settings.warmup_s,
            connections=settings.connections,
            threads=settings.threads,
        )

    def peak_run() -> LoadResult:
        return loadgen.wrk_peak(
            url,
            requests("peak", round(settings.duration_s * cap)),
            duration_s=settings.duration_s,
            connections=settings.connections,
            threads=settings.threads,
        )

    peak = retries.least_disturbed(peak_run)
    rate = max(1.0, peak.rps / 2)
    half_s = settings.half_duration_s

    def half_run() -> LoadResult:
        half_requests = requests("half", round(half_s * rate * 1.5) + 100)
        if paced or settings.half_peak_tool == "wrk":
            return loadgen.wrk_paced(url, half_requests, rate=rate, duration_s=half_s)
        return loadgen.hey_rate(url, half_requests, rate=rate, duration_s=half_s, work_dir=work_dir)

    return peak, retries.least_disturbed(half_run)


def run_setup(ws: Workspace, setup: Setup, where: Path | None = None) -> Iterator[Measured]:
    """Floor and daemon measurements for one (storage, mode), as they complete (Redis: on a
    redis-server of its own, started for the setup), with stores, configs and logs in
    ``where`` (default: the workspace; each run of the matrix has a directory of its own)."""
    where = ws.root if where is None else where
    if setup.storage == "redis" and not setup.redis_url:
        with redis_server(where / f"redis-{setup.mode}") as url:
            yield from run_setup(ws, replace(setup, redis_url=url), where)
        return
    settings = ws.settings
    name = setup.label.replace("/", "-")
    data_dir = where / f"db-{name}"
    config = ws.config(setup, data_dir, name=f"{where.name}-{name}")
    owners = settings.owners if "update" in settings.endpoints else 0
    if setup.storage == "leveldb":
        took = preload_leveldb(
            data_dir, ws.secrets, settings.identities, settings.seed, owners=owners
        )
        ws.log(f"{setup.label}: preloaded {settings.identities} identities in {took:.1f} s")
    with procs.server(procs.floor_argv(config), where / f"floor-{name}.log") as url:
        for endpoint in FLOOR_ENDPOINTS:
            peak, half = measure(url, ws.requests(endpoint), settings, ws.root, retries=ws.retries)
            yield Measured(endpoint, setup.storage, setup.mode, peak, half)
    for pool in ws.pools.values():
        pool.rewind()  # a fresh store: the same handles register again
    cafile = ws.certs.ca if setup.mode == "tls" else None
    with procs.server(procs.daemon_argv(config), where / f"daemon-{name}.log") as url:
        if setup.storage in ("memory", "redis"):
            took = preload_sync(
                url, ws.secrets, settings.identities, settings.seed, cafile, owners=owners
            )
            ws.log(
                f"{setup.label}: /sync preloaded {settings.identities} identities in {took:.1f} s"
            )
        if "presence_resolve" in settings.endpoints:
            took = preload_presences(url, settings.identities, cafile)
            ws.log(f"{setup.label}: announced {settings.identities} presences in {took:.1f} s")
        if {"nodes", "heartbeat"} & set(settings.endpoints):
            took = register_nodes(url, settings.nodes, settings.seed, cafile)
            ws.log(f"{setup.label}: registered {settings.nodes} nodes in {took:.1f} s")
        for endpoint in settings.endpoints:
            # hey repeats one request: single-use ones would measure their refusal, and one
            # announce body repeated puts every write on one handle (non-2xx answers on LevelDB)
            paced = endpoint in PACED
            peak, half = measure(
                url, ws.requests(endpoint), settings, ws.root, retries=ws.retries, paced=paced
            )
            yield Measured(endpoint, setup.storage, setup.mode, peak, half)


def run_matrix(ws: Workspace, run: int = 0) -> Iterator[Measured]:
    """Every (storage, mode) once: run number ``run`` (from 0) of the matrix, in a directory of
    its own (fresh stores)."""
    where = ws.root / f"run-{run + 1}"
    where.mkdir(exist_ok=True)
    for mode in ws.settings.modes:
        for storage in ws.settings.storages:
            yield from run_setup(ws, Setup(storage, mode), where)
