"""The ``GET /api/nodes`` body (extensions spec §3.4), kept up to date one entry at a time.

Rebuilding the body from storage decodes and encodes every record: ~50 ms of event loop for
10,000 nodes (measured), and the prober changes records all through a round. So each node's
encoded view is kept with its sort key and replaced when the node changes; a request after a
change only sorts the keys and joins the bytes. Everything is loaded from storage on first use
and again when ``uptime_window`` changes (the ratios depend on it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import msgspec

from . import records
from .records import OFFLINE, ONLINE, UNKNOWN, NodeRecord

SortKey = tuple[int, str, str]


class Listing:
    """Encoded views by host. Callers serialise :meth:`load`, :meth:`put` and :meth:`remove`
    with their writes (the directory's lock), so a load never misses a write."""

    def __init__(self) -> None:
        self._views: dict[str, tuple[SortKey, bytes]] | None = None
        self._window = 0
        self._body: bytes | None = None

    def loaded(self, window: int) -> bool:
        return self._views is not None and self._window == window

    def load(self, stored: Iterable[NodeRecord], window: int) -> None:
        self._views, self._window, self._body = {}, window, None
        for record in stored:
            self.put(record)

    def put(self, record: NodeRecord) -> None:
        if self._views is not None:
            view = msgspec.json.encode(records.view(record, self._window))
            self._views[record.host] = (records.order_key(record), view)
            self._body = None

    def remove(self, host: str) -> None:
        if self._views is not None and self._views.pop(host, None) is not None:
            self._body = None

    def counts(self) -> dict[str, int]:
        """Entries by status (``online``, ``unknown``, ``offline``), from the sort keys' ranks;
        all 0 before the first load."""
        ranks = Counter(key[0] for key, _ in (self._views or {}).values())
        return {status: ranks[rank] for rank, status in enumerate((ONLINE, UNKNOWN, OFFLINE))}

    def __len__(self) -> int:
        return 0 if self._views is None else len(self._views)

    def body(self) -> bytes:
        """``{"nodes": [...]}``: online, then unknown, then offline, each by name."""
        if self._body is None:
            views = sorted((self._views or {}).values())
            self._body = b'{"nodes":[' + b",".join(view for _, view in views) + b"]}"
        return self._body
