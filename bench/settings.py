"""The knobs of one benchmark run, and the issue's targets."""

from __future__ import annotations

from dataclasses import asdict, dataclass

GIB = 1024**3
MILLION = 1_000_000

# Endpoint targets as multiples of the floor (one worker, rate limits and PoW off): issue 15,
# and issue 5's where issue 15 names none (bench/checks.py applies them).
RESOLVE_LEVELDB_VS_FLOOR = 0.9  # issue 15: resolve on LevelDB, http and tls
RESOLVE_VS_FLOOR = 0.85  # issue 5: resolve on the other stores
CHECK_USER_VS_FLOOR = 0.95  # issue 15
PRESENCE_RESOLVE_VS_FLOOR = 0.85  # issue 15
REGISTER_LEVELDB_VS_FLOOR = 0.6  # issues 5 and 15: durable register on LevelDB
P99_AT_HALF_PEAK_MS = 10.0
SCALING_1M_VS_1K = 0.9
GC_MAX_STALL_MS = 20.0  # issue 15: above the no-GC baseline of the same run, resolve load on
GC_P99_LAG_MS = 5.0  # issue 15: p99 event-loop lag above that baseline
MEMORY_BYTES_PER_IDENTITY = GIB / MILLION  # 1 GiB per 1,000,000 identities
RATE_LIMITS_MIN_RATIO = 0.85  # limits may cost at most 15 % of resolve throughput
REDIS_VS_LEVELDB_RESOLVE = 0.8  # issue 13: Redis resolve, one worker, vs LevelDB resolve


@dataclass(frozen=True)
class Settings:
    """What to run and for how long. Durations are in seconds."""

    identities: int = 10_000
    owners: int = 1_024  # identities with real keys, the targets of signed updates
    nodes: int = 100  # node directory entries, registered by challenge-response
    storages: tuple[str, ...] = ("memory", "leveldb", "redis")
    modes: tuple[str, ...] = ("http", "tls")
    endpoints: tuple[str, ...] = (
        "resolve_hit",
        "resolve_miss",
        "presence_resolve",
        "check_user",
        "register",
        "announce",
        "nodes",
        "heartbeat",
        "update",
    )
    duration_s: float = 8.0
    warmup_s: float = 2.0
    half_duration_s: float = 4.0
    connections: int = 32
    threads: int = 1
    request_lines: int = 20_000
    register_cap_rps: float = 2_500.0
    half_peak_tool: str = "hey"
    busy_retries: int = 1
    busy_retry_budget: int = 12
    rate_limits: bool = True
    memory_scenario: bool = True
    workers_scenario: bool = True
    scaling: bool = False
    scaling_identities: int = MILLION
    scaling_small: int = 1_000
    gc_presences: int = MILLION
    seed: int = 1
    runs: int = 1  # matrix runs; the table gives each cell's median

    def to_json(self) -> dict[str, object]:
        return asdict(self)
