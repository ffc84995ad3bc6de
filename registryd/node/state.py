"""The agent's state file (extensions spec §4): written atomically, read by ``node status``.

The file is one JSON object, rewritten whole on every change (tmp file in the same directory,
fsync, rename, fsync of the directory), so a reader sees the old state or the new one, never a
mix, even across a crash. Times are RFC 3339 UTC. ``schema_version`` is checked on read.

    {"schema_version": 1, "state": "registered", "since": "...", "updated_at": "...",
     "last_heartbeat_at": "..." | null, "last_error": "..." | null,
     "next_attempt_at": "..." | null, "registry_url": "...", "host": "...",
     "pubkey_prefix": "<16 chars>", "pid": 1234}
"""

from __future__ import annotations

import datetime as dt
import enum
import os

import msgspec

from ..errors import ConfigError
from ..files import write_file

SCHEMA_VERSION = 1
MAX_STATE_BYTES = 64 * 1024


class State(enum.Enum):
    """``disconnected`` (not registered, or the registry is not answering), ``registering`` (a
    register call is in flight), ``registered`` (registered and heartbeats succeed)."""

    DISCONNECTED = "disconnected"
    REGISTERING = "registering"
    REGISTERED = "registered"


class AgentState(msgspec.Struct, frozen=True, kw_only=True):
    """One snapshot of the agent, as the state file holds it."""

    state: State
    since: str
    updated_at: str
    registry_url: str
    host: str
    pubkey_prefix: str
    pid: int
    last_heartbeat_at: str | None = None
    last_error: str | None = None
    next_attempt_at: str | None = None
    schema_version: int = SCHEMA_VERSION


def rfc3339(unix_seconds: float) -> str:
    """``unix_seconds`` as ``2026-01-01T00:00:00.123Z`` (UTC, milliseconds)."""
    when = dt.datetime.fromtimestamp(unix_seconds, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> float:
    """The Unix seconds of an RFC 3339 time; ``ValueError`` if it is not one."""
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"no time zone in {text!r}")
    return when.timestamp()


def write_state(path: str | os.PathLike[str], state: AgentState) -> None:
    """Replace the state file at ``path`` with ``state``, atomically and durably (mode 0644).

    Raises ``OSError`` if it cannot be written; the old file is then left as it was.
    """
    write_file(path, msgspec.json.encode(state) + b"\n", mode=0o644, replace=True)


def read_state(path: str | os.PathLike[str]) -> AgentState:
    """The state file at ``path``.

    Raises ``FileNotFoundError`` if there is none yet (the agent never ran), ``OSError`` if it
    cannot be read, :class:`ConfigError` (key path ``state_path``) if it is not a state file of
    this version.
    """
    with open(path, "rb") as f:
        raw = f.read(MAX_STATE_BYTES + 1)
    try:
        if len(raw) > MAX_STATE_BYTES:
            raise ValueError("too large")
        state = msgspec.json.decode(raw, type=AgentState)
        if state.schema_version != SCHEMA_VERSION:
            raise ValueError(f"unknown schema_version {state.schema_version}")
        parse_rfc3339(state.updated_at)
    except (msgspec.DecodeError, ValueError) as exc:
        raise ConfigError("state_path", f"{path} is not a node agent state file ({exc})") from exc
    return state
