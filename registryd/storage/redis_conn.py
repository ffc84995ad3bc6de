"""Connecting to Redis from ``[storage]`` / ``[rate_limit]`` URLs: the asyncio client of
redis-py with a bounded timeout and one quick retry, and the start-up checks.

URLs: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS; ``ca_file`` names the CA,
else the system's), ``unix:///path/redis.sock?db=0``, and ``redis+cluster://host:port`` or
``rediss+cluster://...`` for a Redis Cluster (any one node; the others are discovered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff

from ..errors import SchemaVersionError, StorageError

log = logging.getLogger("registryd")

DURABLE = {"appendonly": "yes", "appendfsync": "always"}
"""What ``CONFIG GET`` must show for no acknowledged write to be lost (README: Redis)."""


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme.endswith("+cluster")


def _options(url: str, ca_file: str | None, timeout_s: float) -> tuple[str, dict[str, Any]]:
    scheme = urlsplit(url).scheme
    plain = url.replace("+cluster://", "://", 1)
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    if scheme.startswith("rediss") and ca_file:
        options["ssl_ca_certs"] = ca_file
    return plain, options


def async_client(url: str, ca_file: str | None, timeout_s: float) -> Any:
    """An asyncio client (pooled; connections are made on first use, in the running loop).

    One retry after a short pause re-makes a pooled connection that Redis closed (a restart),
    within the caller's deadline; redis-py's default (three retries, backoff up to 10 s)
    would outlast it.
    """
    plain, options = _options(url, ca_file, timeout_s)
    options["retry"] = Retry(ConstantBackoff(0.02), 1)
    if is_cluster(url):
        return redis.asyncio.cluster.RedisCluster.from_url(plain, **options)
    return redis.asyncio.Redis.from_url(plain, **options)


async def aclose_within(client: Any, timeout_s: float) -> None:
    """Close ``client``'s pool within ``timeout_s`` seconds, whatever Redis does: a frozen Redis
    (SIGSTOP, a partition) must not hold up the daemon's stop (its SIGTERM grace). Errors and
    the timeout are swallowed: every write was acknowledged before its method returned."""
    with contextlib.suppress(TimeoutError, redis.RedisError, OSError):
        async with asyncio.timeout(timeout_s):
            await client.aclose()


def sync_client(url: str, ca_file: str | None, timeout_s: float) -> Any:
    """A synchronous client, for the checks made once before serving."""
    plain, options = _options(url, ca_file, timeout_s)
    if is_cluster(url):
        return redis.cluster.RedisCluster.from_url(plain, **options)
    return redis.Redis.from_url(plain, **options)


def durability_warnings(client: Any) -> list[str]:
    """Warnings when ``CONFIG GET`` shows settings that can lose acknowledged writes (one
    line per setting), or that it could not be asked (managed Redis often refuses CONFIG)."""
    try:
        found = {}
        for name in DURABLE:
            reply = client.config_get(name)
            found[name] = next(iter(reply.values()), None) if isinstance(reply, dict) else None
    except redis.RedisError as exc:
        return [
            f"Redis refused CONFIG GET ({type(exc).__name__}); make sure it runs with "
            "appendonly yes and appendfsync always, "
            "or an acknowledged write can be lost in a crash"
        ]
    return [
        f"Redis has {name} {_text(found[name])}, not {want}: a write acknowledged in the last "
        "second can be lost when Redis crashes (README: Storage, Redis)"
        for name, want in DURABLE.items()
        if _text(found[name]) != want
    ]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_schema(client: Any, schema_key: bytes, version: bytes, prefix: bytes) -> None:
    """Write ``version`` under ``schema_key`` in an empty keyspace, or check the one found.

    Raises :class:`SchemaVersionError` on another version, or on registryd data without one,
    and :class:`StorageError` when Redis cannot be reached.
    """
    try:
        found = client.get(schema_key)
        if found is None:
            if next(iter(client.scan_iter(match=prefix + b"*", count=100)), None) is not None:
                raise SchemaVersionError("Redis holds registryd data but no schema_version")
            client.set(schema_key, version, nx=True)
            found = client.get(schema_key)
    except redis.RedisError as exc:
        raise StorageError(f"cannot reach Redis: {type(exc).__name__}: {exc}") from exc
    if found != version:
        raise SchemaVersionError(
            f"Redis has schema_version {found!r}; this build reads {version!r}"
        )


def server_warnings(url: str, ca_file: str | None, timeout_s: float) -> list[str]:
    """:func:`durability_warnings` of the Redis at ``url`` (``check-config``), or one warning
    that it cannot be reached."""
    try:
        with sync_client(url, ca_file, timeout_s) as client:
            client.ping()
            return durability_warnings(client)
    except redis.RedisError as exc:
        return [f"cannot reach Redis at storage.url: {type(exc).__name__}"]
