"""Requests that prove ownership: signed identity updates and node heartbeats, and the node
directory they need (extensions spec §2.1, §3).

- **Owners**: ``bench-owner-{i}`` for ``i < M`` (``--owners``, default 1,024), identities with
  real keys derived from the run's seed (so the harness can sign for them), preloaded beside
  the ``bench-user`` ones (:mod:`bench.preload`).
- **update** (:class:`UpdatePool`): ``POST /identity/update`` replacing owner ``j % M``'s
  identity by one with a fresh X25519 key and ``created_at_ms = ts_ms``, sealed to the server
  as ``/register`` envelopes are, signed by the owner's Ed25519 key over the §2 message.
  ``ts_ms`` must be strictly above the handle's last accepted one and within the clock skew
  (300 s), so bodies are made when a run needs them (:meth:`UpdatePool.take`), never reused:
  line ``j`` of a slice has ``ts_ms = base + j // M`` with ``base`` above every earlier slice's.
  The lines go round the owners in order, and ``M`` (a multiple of wrk's threads) is at least
  the connection count: a handle's next update is only sent after its previous one was
  answered (at most one request per connection is in flight), so none is refused as stale.
- **nodes**: ``bench-node-{i}`` for ``i < K`` (``--nodes``, default 100), each with an Ed25519
  key from the seed and the host ``198.18.0.{i + 1}`` (RFC 2544's benchmarking range; the bench
  config keeps the prober from probing it), registered by the §3.1-3.2 challenge-response over
  HTTP (:func:`register_nodes`) with ``registryd.node.protocol``'s bodies. ``GET /api/nodes``
  then lists them.
- **heartbeat** (:class:`HeartbeatPool`): ``POST /api/registry/heartbeat`` for node ``j % K``,
  each with a nonce of its own (single use, valid 300 s), so they too are made per slice.
  Nonces are minted in-process by the daemon's own :class:`~registryd.directory.challenges.
  Challenges` from the run's index key (the harness wrote the config, as it knows the envelope
  key that register's envelopes are sealed to): fetching ~30,000 per server over
  ``/api/registry/challenge`` would add about a minute per matrix run.
"""

from __future__ import annotations

import ipaddress
import random
import ssl
import time
from pathlib import Path

import httpx
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from registryd import signed_op, wire
from registryd.client import IdentityKeys
from registryd.config import DirectoryConfig
from registryd.directory.challenges import Challenges
from registryd.identity import PublicIdentity
from registryd.node import protocol
from registryd.node.keys import NodeKey
from registryd.secret import Secret
from registryd.storage.memory import MemoryStorage
from registryd.timespec import now_ms

from .configs import Secrets
from .workload import CREATED_AT_MS, RequestFile, sealed_to_server, write_requests

OWNER = "bench-owner-{}"
NODE = "bench-node-{}"
NODE_HOSTS = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544: benchmarking
UPDATE_PATH = "/identity/update"
NODES_PATH = "/api/nodes"
REGISTER_TIMEOUT_S = 30.0


class PreloadError(RuntimeError):
    """The daemon refused a node registration."""


def _seeded(kind: str, i: int, seed: int) -> random.Random:
    return random.Random(f"bench-{kind}-{seed}-{i}")


def owner_keys(i: int, seed: int) -> IdentityKeys:
    """Owner ``i``'s keys, the same for every server of a run with ``seed``."""
    rng = _seeded("owner", i, seed)
    return IdentityKeys(SigningKey(rng.randbytes(32)), PrivateKey(rng.randbytes(32)), CREATED_AT_MS)


def owner_identities(count: int, seed: int) -> list[PublicIdentity]:
    """The ``count`` owners' registered identities (signed, ``created_at_ms`` in 2023)."""
    return [
        owner_keys(i, seed).identity(OWNER.format(i), created_at_ms=CREATED_AT_MS)
        for i in range(count)
    ]


def update_body(keys: IdentityKeys, name: str, ts_ms: int, secrets: Secrets) -> bytes:
    """A ``/identity/update`` body for ``name``: a fresh encryption key, ``created_at_ms =
    ts_ms``, signed with ``keys``' signing key at ``ts_ms`` (extensions spec §2.1)."""
    new = IdentityKeys(keys.signing_key, PrivateKey.generate(), ts_ms).identity(
        name, created_at_ms=ts_ms
    )
    handle = new.handle
    digest = signed_op.digest(new.to_json())
    signature = signed_op.sign(keys.signing_key, signed_op.UPDATE, handle, ts_ms, digest)
    envelope = sealed_to_server(new, secrets)
    return wire.encode(wire.UpdateRequest(handle.hex(), envelope, ts_ms, signature.hex()))


class UpdatePool:
    """Single-use ``/identity/update`` bodies over ``owners`` owners, made per slice (see the
    module docstring). Nothing to rewind for a fresh store: timestamps only grow."""

    def __init__(self, secrets: Secrets, owners: int, seed: int) -> None:
        self._secrets = secrets
        self._keys = [owner_keys(i, seed) for i in range(owners)]
        self._last_ts = 0

    def rewind(self) -> None:
        """Nothing to do: every slice is new (kept for the pools' common shape)."""

    def take(self, out: Path, count: int) -> RequestFile:
        """``count`` (at least 1) fresh update bodies as a request file."""
        owners = len(self._keys)
        base = max(now_ms(), self._last_ts + 1)
        rows = []
        for j in range(max(1, count)):
            i = j % owners
            ts_ms = base + j // owners
            body = update_body(self._keys[i], OWNER.format(i), ts_ms, self._secrets)
            rows.append(("POST", UPDATE_PATH, body))
            self._last_ts = ts_ms
        return write_requests("update", out, rows)


def node_key(i: int, seed: int) -> NodeKey:
    return NodeKey(SigningKey(_seeded("node", i, seed).randbytes(32)))


def node_host(i: int) -> str:
    return str(NODE_HOSTS[i + 1])


def node_payload(i: int) -> dict[str, object]:
    """Node ``i``'s §3.2 payload: a HushNet node's fields, of realistic sizes."""
    host = node_host(i)
    return {
        "name": NODE.format(i),
        "host": host,
        "api_base_url": f"https://{host}:8443",
        "protocol_version": "1",
        "features": {"relay": True, "store_and_forward": i % 2 == 0, "max_message_bytes": 65536},
    }


def register_nodes(url: str, count: int, seed: int, cafile: Path | None) -> float:
    """Register nodes ``0 .. count - 1`` at ``url`` by challenge-response (§3.1, §3.2); returns
    the seconds it took. Raises :class:`PreloadError` on any refusal."""
    start = time.perf_counter()
    verify: ssl.SSLContext | bool = True
    if cafile is not None:
        verify = ssl.create_default_context(cafile=str(cafile))
    with httpx.Client(base_url=url, verify=verify, timeout=REGISTER_TIMEOUT_S) as client:
        for i in range(count):
            key = node_key(i, seed)
            answer = client.post(protocol.CHALLENGE_PATH, json=protocol.challenge_body(key))
            if answer.status_code != 200:
                raise PreloadError(f"challenge answered {answer.status_code}: {answer.text[:200]}")
            nonce = protocol.parse_challenge(answer.content)
            body = protocol.register_body(key, node_payload(i), nonce)
            answer = client.post(protocol.REGISTER_PATH, json=body)
            if answer.status_code != 200:
                raise PreloadError(f"register answered {answer.status_code}: {answer.text[:200]}")
    return time.perf_counter() - start


def nodes_requests(out: Path) -> RequestFile:
    """``GET /api/nodes``, the directory listing."""
    return write_requests("nodes", out, [("GET", NODES_PATH, b"")])


class HeartbeatPool:
    """Single-use heartbeat bodies for ``nodes`` nodes, each with a nonce of its own minted
    from the run's index key at :meth:`take` (see the module docstring)."""

    def __init__(self, secrets: Secrets, nodes: int, seed: int) -> None:
        index_key = Secret(secrets.index_key)
        ttl_s = DirectoryConfig().challenge_ttl_seconds  # the daemon's default
        # issue() touches no storage; Challenges wants one, so it gets an empty one
        self._minter = Challenges(index_key, MemoryStorage(index_key), now_ms, lambda: ttl_s)
        self._keys = [node_key(i, seed) for i in range(nodes)]

    def rewind(self) -> None:
        """Nothing to do: every slice is new (kept for the pools' common shape)."""

    def take(self, out: Path, count: int) -> RequestFile:
        """``count`` (at least 1) fresh heartbeat bodies as a request file."""
        rows = []
        for j in range(max(1, count)):
            i = j % len(self._keys)
            key = self._keys[i]
            nonce, _ = self._minter.issue(key.public_key)
            body = protocol.heartbeat_body(key, node_host(i), nonce)
            rows.append(("POST", protocol.HEARTBEAT_PATH, wire.encode(body)))
        return write_requests("heartbeat", out, rows)
