"""Multiprocess mode (``[server] workers > 1``): every worker's counts summed in one scrape.

``prometheus_client`` keeps each process's counters and histograms in memory, so with several
workers a scrape would see one worker's share. In its multiprocess mode each value lives in an
mmap'd file per process under ``PROMETHEUS_MULTIPROC_DIR`` and a ``MultiProcessCollector`` sums
the files at scrape time. How workers use it:

1. the supervisor, before it starts any worker, calls :func:`prepare` on a directory of its own
   (e.g. ``$RUNTIME_DIRECTORY/metrics``, emptied: counts of an earlier run would add up);
2. each worker calls :func:`enable` with that directory before it makes its ``Runtime`` (whose
   :class:`~registryd.metrics.Metrics` then writes there); the environment variable alone is not
   enough in a forked worker, because ``prometheus_client`` chose its value class when it was
   first imported (in the supervisor);
3. exactly one process serves ``[metrics] address`` (the supervisor or worker 0), and
   :meth:`Metrics.exposition` gives it :func:`exposition_registry`: the summed files plus its
   own scrape-time gauges (key ring, directory), which read state every worker shares;
4. a worker's files stay after it exits: its counts remain part of the totals, as a counter's
   must. No gauge is kept in the files (gauges are computed at scrape time), so
   ``mark_process_dead`` has nothing to remove.

Process metrics (``process_*``) are per process and left out in this mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(directory: str | os.PathLike[str]) -> None:
    """Create ``directory`` (mode 0700) or empty it of an earlier run's ``*.db`` files; the
    supervisor calls it once, before starting workers."""
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def enable(directory: str | os.PathLike[str]) -> None:
    """Switch this process to multiprocess mode over ``directory``: metrics made from now on
    write there. Call it before the process makes its ``Runtime``."""
    os.environ[ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # see above


def exposition_registry(directory: str, live: Iterable[Collector]) -> CollectorRegistry:
    """A registry for one scrape: every process's files under ``directory``, summed, and the
    scrape-time collectors ``live``."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    for collector in live:
        registry.register(collector)
    return registry
