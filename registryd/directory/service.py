"""The node directory's state and operations (extensions spec §3), behind the HTTP routes.

One :class:`Directory` per app. Read-modify-write operations on node records (register,
heartbeat, probe results, prune, remove) run one at a time under one lock, so the checks
"host pinned to its first key" and "one host per key" hold against concurrent requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import msgspec

from ..canonical import canonical_json
from ..config import DirectoryConfig
from ..encoding import encode_b64
from ..errors import Forbidden, InvalidInput, ServiceUnavailable, Unauthorized
from ..metrics import Metrics
from ..secret import Secret
from ..storage import Storage
from ..storage.records import DirectoryNode
from ..tasks import background
from . import records
from .challenges import Challenges
from .geoip import GeoIP
from .listing import Listing
from .payload import (
    HeartbeatBody,
    RegisterBody,
    decode_pubkey,
    decode_signature,
    normalize_host,
    parse_payload,
    verifies,
)
from .prober import Outcome, Prober, Recorded, Resolver
from .records import OFFLINE, ONLINE, NodeRecord
from .ssrf import resolve

log = logging.getLogger("registryd.directory")

MAX_NODES = 10_000  # registrations of new hosts beyond this get 503; the prober's work is bounded
RESOLVE_TIMEOUT_S = 5.0
NONCE_REFUSED = "invalid or expired nonce"
DAY_MS = 86_400_000


class Directory:
    """Registration, heartbeats, listing and probing of nodes over ``storage``, with ``clock``
    (Unix ms) and the ``[directory]`` config that ``config()`` returns (read at each use, so a
    reload applies). Challenge nonces are keyed from the 32-byte ``index_key``.

    ``resolver`` maps a host to its addresses (default: the event loop's ``getaddrinfo``);
    ``ssl_context`` verifies HTTPS probes (default: httpx's, i.e. certifi's roots).
    Probes and spent-nonce purges are recorded in ``metrics`` (default: a registry of its own).
    """

    def __init__(
        self,
        storage: Storage,
        clock: Callable[[], int],
        config: Callable[[], DirectoryConfig],
        index_key: Secret,
        *,
        resolver: Resolver = resolve,
        ssl_context: object | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.storage = storage
        self.metrics = Metrics() if metrics is None else metrics
        self.clock = clock
        self._config = config
        self.resolver = resolver
        self.challenges = Challenges(
            index_key, storage, clock, lambda: self.config.challenge_ttl_seconds
        )
        self.geoip = GeoIP()
        self.prober = Prober(self, ssl_context=ssl_context)
        self._lock = asyncio.Lock()
        self._listing = Listing()

    @property
    def config(self) -> DirectoryConfig:
        return self._config()

    async def _loaded_listing(self) -> Listing:
        """The listing, loaded from storage if needed; call with the lock held."""
        window = self.config.uptime_window
        if not self._listing.loaded(window):
            nodes = await self.storage.list_directory_nodes()
            self._listing.load((records.decode(node.record) for node in nodes), window)
        return self._listing

    @contextlib.asynccontextmanager
    async def running(self, *, probe: bool = True) -> AsyncIterator[None]:
        """Open the GeoIP database and, with ``probe``, run the prober until exit."""
        httpx_log = logging.getLogger("httpx")
        if httpx_log.level == logging.NOTSET:  # no INFO line per probe naming each node's URL
            httpx_log.setLevel(logging.WARNING)
        await self.geoip.open(self.config.geoip_db_path)
        async with self._lock:  # the one full load (~60 ms for 10,000 nodes), before serving
            await self._loaded_listing()
        try:
            async with background(self.prober.run() if probe else None):
                yield
        finally:
            self.geoip.close()

    def node_counts(self) -> dict[str, int]:
        """Nodes by status (``online``, ``unknown``, ``offline``), from the in-memory listing."""
        return self._listing.counts()

    async def reload(self, config: DirectoryConfig) -> None:
        """After a config reload: re-open the GeoIP database (spec §3.6)."""
        await self.geoip.open(config.geoip_db_path)

    # -- §3.2 register ---------------------------------------------------------------------

    async def register(self, body: RegisterBody) -> None:
        """Checks in the spec's order, then the upsert; raises the spec's errors."""
        pubkey = decode_pubkey(body.pubkey_b64)
        signature = decode_signature(body.signature_b64)
        ticket = await self.challenges.usable(body.nonce, pubkey)
        if ticket is None:
            raise InvalidInput(NONCE_REFUSED)
        message = canonical_json(body.payload) + body.nonce.encode()  # floats: 400 here
        if not verifies(pubkey, message, signature):
            raise Unauthorized()
        await self.challenges.spend(ticket, InvalidInput(NONCE_REFUSED))
        node = parse_payload(body.payload)
        ip = await self._resolve_host(node.host)
        now = self.clock()
        async with self._lock:
            existing = await self.storage.get_directory_node(node.host)
            if existing is not None and existing.pubkey != pubkey:
                raise Forbidden("host already registered with another key")
            other = await self.storage.directory_host_of_key(pubkey)
            if other is not None and other != node.host:
                raise Forbidden("key already registered with another host")
            if existing is None and len(await self._loaded_listing()) >= MAX_NODES:
                raise ServiceUnavailable("the node directory is full")
            record = NodeRecord(
                name=node.name,
                host=node.host,
                ip=ip,
                api_base_url=node.api_base_url,
                protocol_version=node.protocol_version,
                features=msgspec.Raw(node.features),
                pubkey_b64=encode_b64(pubkey),
                registered_at_ms=now,
            )
            if existing is not None:  # keeps its status and history
                old = records.decode(existing.record)
                record = msgspec.structs.replace(
                    old,
                    name=record.name,
                    ip=ip,
                    api_base_url=record.api_base_url,
                    protocol_version=record.protocol_version,
                    features=record.features,
                )
            contact = node.contact_email.encode()
            await self._put(DirectoryNode(node.host, pubkey, b"", contact), record)

    async def _resolve_host(self, host: str) -> str:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                addresses = await self.resolver(host)
        except (OSError, UnicodeError, ValueError, TimeoutError):
            addresses = []
        if not addresses:
            raise InvalidInput("could not resolve host")
        return addresses[0]

    # -- §3.3 heartbeat --------------------------------------------------------------------

    async def heartbeat(self, body: HeartbeatBody) -> None:
        """401 unless ``pubkey_b64`` is the host's key, the nonce was issued to it (unused,
        unexpired) and the signature over ``host || nonce`` verifies; then ``online``."""
        if len(body.host.encode()) > 256:
            raise InvalidInput("host: at most 256 bytes")
        pubkey = decode_pubkey(body.pubkey_b64)
        signature = decode_signature(body.signature_b64)
        host = normalize_host(body.host)
        ticket = await self.challenges.usable(body.nonce, pubkey)
        if ticket is None:
            raise Unauthorized()
        entry = await self.storage.get_directory_node(host)
        if entry is None or entry.pubkey != pubkey:
            raise Unauthorized()
        if not verifies(pubkey, body.host.encode() + body.nonce.encode(), signature):
            raise Unauthorized()
        await self.challenges.spend(ticket, Unauthorized())
        async with self._lock:
            entry = await self.storage.get_directory_node(host)
            if entry is None or entry.pubkey != pubkey:  # removed meanwhile
                raise Unauthorized()
            record = records.decode(entry.record)
            now = self.clock()
            record.last_seen_ms = now
            record.went(ONLINE, now)
            await self._put(entry, record)

    async def _put(self, entry: DirectoryNode, record: NodeRecord) -> None:
        """Store ``record`` for ``entry``'s host, key and contact; call with the lock held."""
        await self.storage.put_directory_node(
            DirectoryNode(entry.host, entry.pubkey, records.encode(record), entry.contact)
        )
        self._listing.put(record)

    async def _delete(self, host: str) -> bool:
        """Remove ``host``'s node; call with the lock held."""
        removed = await self.storage.delete_directory_node(host)
        self._listing.remove(host)
        return removed

    # -- §3.4 listing, §3.7 administration -------------------------------------------------

    async def listing(self) -> bytes:
        """The ``GET /api/nodes`` body (:class:`~.listing.Listing`)."""
        if not self._listing.loaded(self.config.uptime_window):
            async with self._lock:
                await self._loaded_listing()
        return self._listing.body()

    async def admin_listing(self) -> list[records.AdminNodeView]:
        """Every node with its contact email, in listing order."""
        window = self.config.uptime_window
        nodes = await self.storage.list_directory_nodes(with_contact=True)
        pairs = sorted(
            ((records.decode(node.record), node.contact.decode()) for node in nodes),
            key=lambda pair: records.order_key(pair[0]),
        )
        return [records.admin_view(record, window, contact) for record, contact in pairs]

    async def remove(self, host: str) -> bool:
        """Remove ``host``'s node; False if there is none."""
        name = normalize_host(host)
        async with self._lock:
            return await self._delete(name)

    # -- §3.5 probe results ----------------------------------------------------------------

    async def record_probe(self, probed: DirectoryNode, outcome: Outcome) -> Recorded | None:
        """Store ``outcome`` for ``probed`` unless it was removed or re-keyed meanwhile (None);
        a node then offline for more than ``prune_after_days`` (0: never) is removed."""
        async with self._lock:
            entry = await self.storage.get_directory_node(probed.host)
            if entry is None or entry.pubkey != probed.pubkey:
                return None
            record = records.decode(entry.record)
            before = record.status
            now = self.clock()
            config = self.config
            record.history = (record.history + ("1" if outcome.ok else "0"))[
                -config.uptime_window :
            ]
            record.country_code, record.country_name = self.geoip.country(record.ip)
            if outcome.ok:
                record.last_seen_ms = now
                record.last_latency_ms = outcome.latency_ms
                record.went(ONLINE, now)
            else:
                record.last_latency_ms = None
                record.went(OFFLINE, now)
            since = record.offline_since_ms
            days = config.prune_after_days
            if days and since is not None and now - since > days * DAY_MS:
                await self._delete(entry.host)
                return Recorded(before, record.status, pruned=True)
            await self._put(entry, record)
            return Recorded(before, record.status, pruned=False)
