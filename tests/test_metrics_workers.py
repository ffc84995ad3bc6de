"""Metrics with ``[server] workers = 2`` (issue 14): a real daemon (supervisor and two worker
processes, TLS) on a real redis-server (storage, rate limits and proofs of work shared), with
``[metrics] address``. Requests spread over many connections reach both workers; one scrape of
the metrics address counts every one of them exactly, summed across the workers, with the same
checks as the one-process scrape (:mod:`tests.test_metrics_e2e`), labels included."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from registryd.certs import DevCerts
from tests.helpers import Daemon, config_text, tls_table, write_config
from tests.redis_support import RedisServer
from tests.test_metrics_e2e import FAMILIES, TABLES, Recording, check_scrape, exercise, scrape
from tests.test_scaleout import children

pytestmark = pytest.mark.e2e

GRACE_S = 3
REQUESTS = "registryd_http_requests_total"


def tables(redis: RedisServer) -> str:
    """The one-process test's tables, with two workers and the limits in ``redis``."""
    shared = TABLES.replace("[rate_limit]\n", f'[rate_limit]\nstorage_uri = "{redis.url}"\n', 1)
    return f"[server]\nworkers = 2\nshutdown_grace_seconds = {GRACE_S}\n{shared}"


@pytest.fixture
def served(
    tmp_path: Path, certs: DevCerts, redis: RedisServer
) -> Iterator[tuple[Daemon, str, Path]]:
    """The daemon, its metrics URL and its multiprocess directory."""
    text = config_text(
        kind="redis", url=redis.url, mode="tls", tls=tls_table(certs), tables=tables(redis)
    )
    d = Daemon(write_config(tmp_path / "registry.toml", text))
    try:
        assert d.url, d.log
        found = re.search(r"metrics listener on (http://127\.0\.0\.1:\d+/metrics)", d.log)
        directory = re.search(r"metrics: 2 workers' counts summed from (\S+)", d.log)
        assert found and directory, d.log
        yield d, found.group(1), Path(directory.group(1))
    finally:
        d.stop()


def per_worker(directory: Path) -> dict[int, float]:
    """Requests counted so far by each worker, read from its own counter file."""
    counted = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        metrics = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        counted[pid] = sum(s.value for m in metrics for s in m.samples if s.name == REQUESTS)
    return counted


def settled(directory: Path, expected: int) -> dict[int, float]:
    """Each worker's count once they add up to ``expected`` (at most 5 s): a request is counted
    when its handler returns, a moment after the client has read the answer."""
    deadline = time.monotonic() + 5
    while sum((counted := per_worker(directory)).values()) != expected:
        assert time.monotonic() < deadline, (counted, expected)
        time.sleep(0.02)
    return counted


def spread(url: str, certs: DevCerts, transport: Recording, directory: Path) -> int:
    """``GET /health`` over fresh connections, 8 at a time, until both workers have served
    some (at most 40 rounds); returns how many were sent. Each is counted in ``transport``."""
    sent = 0

    def one() -> Recording:
        fresh = Recording(certs.ca)  # a connection of its own: the kernel picks the worker
        with httpx.Client(transport=fresh, base_url=url) as http:
            assert http.get("/health").status_code == 200
        return fresh

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for _ in range(40):
            for fresh in pool.map(lambda _: one(), range(8)):
                transport.seen.update(fresh.seen)
            sent += 8
            counted = per_worker(directory)
            if len(counted) == 2 and all(counted.values()):
                return sent
    pytest.fail(f"the kernel gave every connection to one worker: {per_worker(directory)}")


def test_two_workers_are_counted_as_one_registry(
    served: tuple[Daemon, str, Path], certs: DevCerts
) -> None:
    d, metrics_url, directory = served
    workers = children(d.proc.pid)
    assert len(workers) == 2
    assert directory.is_dir() and directory.stat().st_mode & 0o777 == 0o700
    transport = Recording(certs.ca)
    spread(d.url, certs, transport, directory)
    forbidden = exercise(d.url, transport)
    counted = settled(directory, sum(transport.seen.values()))
    assert set(counted) == set(workers) and all(counted.values())  # both served requests

    families = scrape(metrics_url)
    total = sum(s.value for s in families["registryd_http_requests"] if s.name == REQUESTS)
    assert total == sum(transport.seen.values()) == sum(counted.values())
    assert FAMILIES - set(families) == {"process_resident_memory_bytes"}  # per process: left out
    check_scrape(families, transport, forbidden, native_expiry=True)

    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < GRACE_S
    assert [pid for pid in workers if Path(f"/proc/{pid}").exists()] == []
    assert not directory.exists()  # removed by the supervisor on exit
    assert "Traceback" not in d.log


def worker_0(d: Daemon) -> int:
    """The one worker given the metrics socket (``--metrics-fd`` on its command line)."""
    found = [
        pid
        for pid in children(d.proc.pid)
        if b"--metrics-fd" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    ]
    assert len(found) == 1, found
    return found[0]


def test_a_killed_worker_0_keeps_its_counts_and_its_successor_serves_the_scrape(
    served: tuple[Daemon, str, Path], certs: DevCerts
) -> None:
    d, metrics_url, directory = served
    transport = Recording(certs.ca)
    sent = spread(d.url, certs, transport, directory)
    first = worker_0(d)
    settled(directory, sent)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while first in children(d.proc.pid) or len(children(d.proc.pid)) < 2:
        assert time.monotonic() < deadline, d.log
        time.sleep(0.1)
    assert worker_0(d) != first
    # The supervisor kept the socket: the scrape waits in its backlog for the new worker 0.
    text = httpx.get(metrics_url, timeout=30).text
    total = sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == REQUESTS
    )
    assert total == sent  # the killed worker's counts are still in the totals
    assert d.stop() == 0
    assert "Traceback" not in d.log
