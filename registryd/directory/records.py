"""The stored node record and the views of it that are listed (extensions spec §3.4).

A record is JSON (msgspec) holding what the node registered, what the prober measured and its
probe history: one character per probe, ``1`` up and ``0`` down, newest last, at most
``uptime_window`` long. Times are Unix ms inside, RFC 3339 UTC (millisecond precision,
``Z``) in views.
"""

from __future__ import annotations

import datetime as dt

import msgspec

ONLINE, UNKNOWN, OFFLINE = "online", "unknown", "offline"
_RANK = {ONLINE: 0, UNKNOWN: 1, OFFLINE: 2}


class NodeRecord(msgspec.Struct, kw_only=True):
    """One node. ``features`` is its canonical JSON, listed as is."""

    name: str
    host: str
    ip: str
    api_base_url: str
    protocol_version: str
    features: msgspec.Raw
    pubkey_b64: str
    registered_at_ms: int
    status: str = UNKNOWN
    last_seen_ms: int | None = None
    last_latency_ms: int | None = None
    country_code: str | None = None
    country_name: str | None = None
    history: str = ""
    offline_since_ms: int | None = None

    def uptime_ratio(self, window: int) -> float | None:
        """Share of successful probes among the last ``window`` (None before the first)."""
        recent = self.history[-window:]
        return recent.count("1") / len(recent) if recent else None

    def went(self, status: str, now_ms: int) -> bool:
        """Set ``status`` (keeping when it went offline); True if it changed."""
        changed = status != self.status
        if status != OFFLINE:
            self.offline_since_ms = None
        elif self.offline_since_ms is None:
            self.offline_since_ms = now_ms
        self.status = status
        return changed


class NodeView(msgspec.Struct):
    """A ``GET /api/nodes`` entry: HushNet's fields, then ``uptime_ratio`` and ``pubkey_b64``."""

    name: str
    host: str
    ip: str
    api_base_url: str
    protocol_version: str
    features: msgspec.Raw
    country_code: str | None
    country_name: str | None
    last_seen_at: str | None
    last_latency_ms: int | None
    status: str
    uptime_ratio: float | None
    pubkey_b64: str


class AdminNodeView(NodeView):
    """An ``/admin/directory`` entry: a :class:`NodeView` with the contact and dates."""

    contact_email: str
    registered_at: str
    offline_since: str | None


_DECODER = msgspec.json.Decoder(NodeRecord)


def decode(raw: bytes) -> NodeRecord:
    return _DECODER.decode(raw)


def encode(record: NodeRecord) -> bytes:
    return msgspec.json.encode(record)


def rfc3339(ms: int | None) -> str | None:
    """Unix ``ms`` as ``2025-11-07T12:34:56.789Z``; None stays None."""
    if ms is None:
        return None
    when = dt.datetime.fromtimestamp(ms // 1000, dt.UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def view(record: NodeRecord, window: int) -> NodeView:
    return NodeView(
        name=record.name,
        host=record.host,
        ip=record.ip,
        api_base_url=record.api_base_url,
        protocol_version=record.protocol_version,
        features=record.features,
        country_code=record.country_code,
        country_name=record.country_name,
        last_seen_at=rfc3339(record.last_seen_ms),
        last_latency_ms=record.last_latency_ms,
        status=record.status,
        uptime_ratio=record.uptime_ratio(window),
        pubkey_b64=record.pubkey_b64,
    )


def admin_view(record: NodeRecord, window: int, contact_email: str) -> AdminNodeView:
    base = msgspec.structs.asdict(view(record, window))
    return AdminNodeView(
        **base,
        contact_email=contact_email,
        registered_at=rfc3339(record.registered_at_ms) or "",
        offline_since=rfc3339(record.offline_since_ms),
    )


def order_key(record: NodeRecord) -> tuple[int, str, str]:
    """Online, then unknown, then offline; each by name (code point order), then host."""
    return _RANK.get(record.status, 1), record.name, record.host
