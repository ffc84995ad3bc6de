"""Multiprocess mode (``[server] workers > 1``): real worker processes write their counts to
``PROMETHEUS_MULTIPROC_DIR`` and one scrape sums them (:mod:`registryd.metrics.multiproc`)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import stat

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from registryd.metrics import Metrics, multiproc


def worker(directory: str, refusals: int) -> None:
    """A worker as ``[server] workers`` runs one: multiprocess mode on, then its metrics.
    Spawned, so ``prometheus_client`` was imported (and chose its value class) before."""
    import prometheus_client.values

    assert prometheus_client.values.ValueClass is prometheus_client.values.MutexValue
    multiproc.enable(directory)
    metrics = Metrics()
    assert metrics.exposition() is not metrics.registry  # it would sum every worker's
    for _ in range(refusals):
        metrics.rate_limited("resolve", ban_started=True)
    metrics.request("POST", "/resolve", 429, 0.002)
    metrics.request("GET", "/health", 200, 0.0004)


def test_two_worker_processes_are_summed_by_one_scrape() -> None:
    directory = multiproc.prepare()
    try:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert list(directory.iterdir()) == []
        other = multiproc.prepare()
        other.rmdir()
        assert other != directory  # each run a directory of its own
        check_summed(str(directory))
    finally:
        shutil.rmtree(directory)


def check_summed(directory: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=worker, args=(str(directory), n)) for n in (3, 4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    pids = {str(p.pid) for p in workers}
    files = os.listdir(directory)
    assert {f.split("_")[-1].removesuffix(".db") for f in files} == pids
    for process in workers:
        assert process.pid is not None
        multiproc.worker_exited(directory, process.pid)
    assert sorted(os.listdir(directory)) == sorted(files)  # its counts outlive it

    registry = multiproc.exposition_registry(directory, [])
    text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("registryd_rate_limit_refusals_total", (("bucket", "resolve"),))] == 7
    assert samples[("registryd_rate_limit_bans_total", (("bucket", "resolve"),))] == 7
    count = "registryd_http_requests_total"
    assert samples[(count, (("method", "POST"), ("route", "/resolve"), ("status", "429")))] == 2
    assert samples[(count, (("method", "GET"), ("route", "/health"), ("status", "200")))] == 2
    bucket = "registryd_http_request_duration_seconds_bucket"
    fast = (("le", "0.0005"), ("method", "GET"), ("route", "/health"))
    assert samples[(bucket, fast)] == 2  # histograms are summed bucket by bucket
    assert not any(name.startswith("process_") for name, _ in samples)  # per process: left out
    assert multiproc.ENV not in os.environ  # this process was never switched


def test_a_single_process_scrape_is_its_own_registry() -> None:
    metrics = Metrics()
    assert metrics.exposition() is metrics.registry
