"""Multiprocess mode (``[server] workers > 1`` with ``[metrics] address``): every worker's
counts summed in one scrape.

``prometheus_client`` keeps each process's counters and histograms in memory, so with several
workers a scrape would see one worker's share. In its multiprocess mode each value lives in an
mmap'd file per process under ``PROMETHEUS_MULTIPROC_DIR`` and a ``MultiProcessCollector`` sums
the files at scrape time. How :mod:`registryd.workers` uses it:

1. the supervisor, before it starts any worker, makes a private directory (:func:`prepare`: a
   fresh ``mkdtemp``, mode 0700, in the system temp directory) and removes it when it exits;
2. each worker calls :func:`enable` with that directory before it makes its ``Runtime`` (whose
   :class:`~registryd.metrics.Metrics` then writes there); the environment variable alone is not
   enough once ``prometheus_client`` has been imported, because it chose its value class then;
3. exactly one process, worker 0, serves ``[metrics] address``, and :meth:`Metrics.exposition`
   gives it :func:`exposition_registry`: the summed files plus its own scrape-time gauges (key
   ring, directory), which read state every worker has;
4. a worker's counter and histogram files stay after it exits: its counts remain part of the
   totals, as a counter's must. The supervisor calls :func:`worker_exited`
   (``mark_process_dead``) for each worker that exits, as ``prometheus_client`` asks; it removes
   a dead process's ``live*`` gauge files, and there are none today: every gauge is computed at
   scrape time (:mod:`.state`), never kept in the files, so no ``multiprocess_mode`` applies.

Process metrics (``process_*``) are per process and left out in this mode.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare() -> Path:
    """A new, empty directory for this run's files (``tempfile.mkdtemp``: mode 0700, a name no
    other run has, so no earlier run's counts add up and no other daemon shares it), in the
    system temp directory (``$TMPDIR``; the systemd unit's ``PrivateTmp=yes`` makes that one of
    the service's own, removed at stop even after a ``kill -9``). The caller removes it."""
    return Path(tempfile.mkdtemp(prefix="registryd-metrics-"))


def enable(directory: str | os.PathLike[str]) -> None:
    """Switch this process to multiprocess mode over ``directory``: metrics made from now on
    write there. Call it before the process makes its ``Runtime``."""
    os.environ[ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # see above


def worker_exited(directory: str | os.PathLike[str], pid: int) -> None:
    """Bookkeeping for worker ``pid``, which has exited: ``mark_process_dead``."""
    mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def exposition_registry(directory: str, live: Iterable[Collector]) -> CollectorRegistry:
    """A registry for one scrape: every process's files under ``directory``, summed, and the
    scrape-time collectors ``live``."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    for collector in live:
        registry.register(collector)
    return registry
