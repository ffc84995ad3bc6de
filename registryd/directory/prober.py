"""Health-probe rounds (extensions spec §3.5).

A round lists the nodes and sends ``GET {api_base_url}/health`` to each, at most
``probe_concurrency`` at once (a fixed pool of workers taking the next node), each probe —
resolution, connection, TLS, headers and body — within ``probe_timeout_ms``. So a round of N
nodes lasts at most ``ceil(N / probe_concurrency) * probe_timeout_ms`` plus bookkeeping. Rounds
start every ``probe_interval_seconds`` and never overlap: a round that runs long delays the
next one. Each round ends with one summary log line.

Every probe goes through the SSRF guard (:mod:`.ssrf`): the URL's host is resolved once, the
first permitted address is pinned, redirects are not followed, at most 64 KiB of the body is
read and nothing is decompressed. 2xx is up (``last_latency_ms`` = time to the response
headers); anything else, a timeout or a refused address is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio.to_thread
import httpx

from ..config import DirectoryConfig
from ..metrics import Metrics
from ..storage import Storage
from ..storage.records import DirectoryNode
from . import records
from .records import OFFLINE, ONLINE
from .ssrf import AddressPolicy, PinnedTransport

log = logging.getLogger("registryd.directory")

MAX_BODY_BYTES = 64 * 1024
HEADERS = {"accept-encoding": "identity", "user-agent": "registryd-prober"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One probe: ``ok`` (2xx), ``latency_ms`` when ok, ``refused`` by the SSRF guard."""

    ok: bool
    latency_ms: int | None = None
    refused: bool = False


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a probe result did to its node: status ``before`` and ``after``, ``pruned``."""

    before: str
    after: str
    pruned: bool


Resolver = Callable[[str], Awaitable[list[str]]]
"""Maps a host name (or IP literal) to its addresses."""


class Probed(Protocol):
    """What the prober needs of the directory it probes for
    (:class:`~registryd.directory.service.Directory`)."""

    storage: Storage
    clock: Callable[[], int]
    resolver: Resolver
    metrics: Metrics

    @property
    def config(self) -> DirectoryConfig: ...

    async def record_probe(self, probed: DirectoryNode, outcome: Outcome) -> Recorded | None: ...


@dataclass(frozen=True, slots=True)
class RoundStats:
    """One round: when it started and ended (``time.monotonic()`` seconds) and its counts."""

    started: float
    ended: float
    probed: int
    online: int
    offline: int
    refused: int
    changed: int
    pruned: int

    @property
    def duration_s(self) -> float:
        return self.ended - self.started


def _measured(outcome: Outcome) -> tuple[str, float | None]:
    """A probe's metrics outcome (``up``, ``down``, ``refused``) and latency in seconds."""
    if outcome.ok:
        return "up", None if outcome.latency_ms is None else outcome.latency_ms / 1000
    return ("refused" if outcome.refused else "down"), None


class Prober:
    """Runs rounds for a :class:`~registryd.directory.service.Directory`.

    ``on_round`` (tests, benchmarks) is called with each round's :class:`RoundStats`.
    """

    def __init__(self, directory: Probed, *, ssl_context: Any = None) -> None:
        self.directory = directory
        self.on_round: Callable[[RoundStats], None] | None = None
        self._ssl = ssl_context
        self._refused: set[str] = set()  # hosts refused last round: logged once per streak

    async def run(self) -> None:
        """Run rounds until cancelled, one every ``probe_interval_seconds`` (read anew after
        each round, so a reload applies)."""
        while True:
            started = time.monotonic()
            try:
                await self.run_round()
            except Exception as exc:  # one bad round must not stop probing
                log.error("directory probe round failed (%s); next round as scheduled", exc)
            interval = self.directory.config.probe_interval_seconds
            await asyncio.sleep(max(0.0, started + interval - time.monotonic()))

    async def run_round(self) -> RoundStats:
        """Probe every node once (pruning long-dead ones); returns the round's counts."""
        started = time.monotonic()
        directory = self.directory
        config = directory.config
        if self._ssl is None:  # loading CA certificates takes ~20 ms: not on the event loop
            self._ssl = await anyio.to_thread.run_sync(httpx.create_ssl_context)
        purging = time.perf_counter()
        purged = await directory.storage.purge_spent_nonces(directory.clock())
        directory.metrics.gc("spent_nonces", time.perf_counter() - purging, purged)
        nodes = deque(await directory.storage.list_directory_nodes())
        policy = AddressPolicy(config.probe_allow_cidrs)
        timeout_s = config.probe_timeout_ms / 1000
        counts: Counter[str] = Counter()
        probed = len(nodes)
        refused: set[str] = set()

        async def worker() -> None:
            while nodes:
                node = nodes.popleft()
                url = records.decode(node.record).api_base_url
                outcome = await self.probe(url, policy, timeout_s)
                directory.metrics.probed(*_measured(outcome))
                if outcome.refused:
                    refused.add(node.host)
                    if node.host not in self._refused:
                        log.warning("probe of %s refused by the address policy", node.host)
                counts[ONLINE if outcome.ok else OFFLINE] += 1
                recorded = await directory.record_probe(node, outcome)
                if recorded is not None:
                    counts["changed"] += recorded.before != recorded.after
                    counts["pruned"] += recorded.pruned

        async with asyncio.TaskGroup() as group:
            for _ in range(min(config.probe_concurrency, probed)):
                group.create_task(worker())
        self._refused = refused
        stats = RoundStats(
            started=started,
            ended=time.monotonic(),
            probed=probed,
            online=counts[ONLINE],
            offline=counts[OFFLINE],
            refused=len(refused),
            changed=counts["changed"],
            pruned=counts["pruned"],
        )
        log.info(
            "directory round: %d nodes in %.2f s: %d online, %d offline (%d refused), "
            "%d changed status, %d pruned",
            stats.probed,
            stats.duration_s,
            stats.online,
            stats.offline,
            stats.refused,
            stats.changed,
            stats.pruned,
        )
        if self.on_round is not None:
            self.on_round(stats)
        return stats

    async def probe(self, api_base_url: str, policy: AddressPolicy, timeout_s: float) -> Outcome:
        """``GET {api_base_url}/health`` through the SSRF guard, within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                url = httpx.URL(api_base_url + "/health")
                addresses = await self.directory.resolver(url.raw_host.decode("ascii"))
                pinned = policy.first_permitted(addresses)
                if pinned is None:
                    return Outcome(ok=False, refused=True)
                return await self._get(url, pinned, timeout_s)
        except Exception:  # timeouts, DNS, TLS, protocol errors: all "down"
            return Outcome(ok=False)

    async def _get(self, url: httpx.URL, pinned: str, timeout_s: float) -> Outcome:
        transport = PinnedTransport(pinned, self._ssl)
        async with httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False, timeout=timeout_s
        ) as client:
            started = time.perf_counter()
            async with client.stream("GET", url, headers=HEADERS) as response:
                latency_ms = round((time.perf_counter() - started) * 1000)
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_BODY_BYTES:
                        break
        if 200 <= response.status_code < 300:
            return Outcome(ok=True, latency_ms=latency_ms)
        return Outcome(ok=False)
