"""Identities and request files: what the load generators send.

Preloaded identities are ``bench-user-{i}`` for ``i < N`` with realistic sizes (32-byte signing and
encryption keys, 64-byte signature, random bytes: the server does not verify signatures on
``/sync``). Request files hold one request per line, ``METHOD<TAB>PATH<TAB>BODY``, in random order
(seeded), read by ``bench/requests.lua``:

- resolve hits: random preloaded handles, each with one of 1,024 requester X25519 keys;
- resolve misses: handles of names that were never registered;
- presence_resolve: as resolve hits, on ``POST /presence/resolve`` (extensions spec §2.4); every
  preloaded handle has a presence (:func:`bench.preload.preload_presences`);
- check_user: ``GET /check_user/{handle}``, half preloaded handles and half absent ones;
- register: one envelope per line for a fresh handle ``bench-reg-{i}``, each a signed identity of
  its own keys sealed to the server's active envelope key with a fresh ephemeral key, exactly as
  ``registryd.client`` does; single-use, so each run gets its own slice;
- announce: random preloaded ``user_id`` with varying ``addr`` and ``ts_ms`` (the last minute);
- nodes, heartbeat, update: :mod:`bench.signed_requests`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from registryd import wire
from registryd.client import IdentityKeys
from registryd.envelope import seal, shared_key, x25519_keypair
from registryd.identity import PublicIdentity, user_id
from registryd.timespec import now_ms

from .configs import Secrets

PRELOADED = "bench-user-{}"
ABSENT = "bench-absent-{}"
REGISTERED = "bench-reg-{}"
REQUESTER_KEYS = 1024
CREATED_AT_MS = 1_700_000_000_000


@dataclass(frozen=True)
class RequestFile:
    """A request file and what it exercises; ``method``, ``path`` and ``body`` are its first
    request (for ``hey``, which repeats one request)."""

    endpoint: str
    file: Path
    method: str
    path: str
    body: bytes

    def body_file(self) -> Path | None:
        """The first request's body in a file of its own (``hey -D``), or None for a GET."""
        if not self.body:
            return None
        out = self.file.with_suffix(".body")
        out.write_bytes(self.body)
        return out


def preloaded_identity(i: int, rng: random.Random) -> PublicIdentity:
    """The ``i``-th preloaded identity: random keys and signature of realistic sizes."""
    name = PRELOADED.format(i)
    raw = rng.randbytes(128)
    return PublicIdentity(
        user_id=user_id(name).hex(),
        username_hint=name,
        signing_public_key=list(raw[:32]),
        encryption_public_key=list(raw[32:64]),
        signature=list(raw[64:]),
        created_at_ms=CREATED_AT_MS + i,
    )


def preloaded_batches(count: int, batch: int, seed: int) -> Iterator[list[PublicIdentity]]:
    """The ``count`` preloaded identities, ``batch`` at a time (so 1,000,000 never sit in memory
    at once)."""
    rng = random.Random(seed)
    for start in range(0, count, batch):
        yield [preloaded_identity(i, rng) for i in range(start, min(start + batch, count))]


def _line(method: str, path: str, body: bytes = b"") -> bytes:
    return method.encode() + b"\t" + path.encode() + b"\t" + body + b"\n"


def write_requests(
    endpoint: str, out: Path, lines: Sequence[tuple[str, str, bytes]]
) -> RequestFile:
    """Write ``lines`` (method, path, body) as the request file ``out`` of ``endpoint``."""
    with open(out, "wb") as f:
        for method, path, body in lines:
            f.write(_line(method, path, body))
    method, path, body = lines[0]
    return RequestFile(endpoint, out, method, path, body)


def _handle_hex(template: str, i: int) -> str:
    return user_id(template.format(i)).hex()


def resolve_body(handle_hex: str, requester_hex: str) -> bytes:
    return msgspec.json.encode(
        {"handle": handle_hex, "requester_ephemeral_pubkey_hex": requester_hex}
    )


def resolve_requests(
    out: Path,
    *,
    hits: bool,
    identities: int,
    lines: int,
    seed: int,
    path: str = "/resolve",
    endpoint: str | None = None,
) -> RequestFile:
    """Resolve-shaped requests to ``path``: hits on preloaded handles, or misses."""
    rng = random.Random(seed)
    requesters = [x25519_keypair()[1].hex() for _ in range(REQUESTER_KEYS)]
    rows = []
    for _ in range(lines):
        if hits:
            handle = _handle_hex(PRELOADED, rng.randrange(identities))
        else:
            handle = _handle_hex(ABSENT, rng.getrandbits(64))
        rows.append(("POST", path, resolve_body(handle, rng.choice(requesters))))
    return write_requests(endpoint or ("resolve_hit" if hits else "resolve_miss"), out, rows)


def check_user_requests(out: Path, *, identities: int, lines: int, seed: int) -> RequestFile:
    rng = random.Random(seed)
    rows = []
    for _ in range(lines):
        if rng.random() < 0.5:
            handle = _handle_hex(PRELOADED, rng.randrange(identities))
        else:
            handle = _handle_hex(ABSENT, rng.getrandbits(64))
        rows.append(("GET", f"/check_user/{handle}", b""))
    return write_requests("check_user", out, rows)


def preloaded_presence(i: int) -> bytes:
    """The unsigned ``/announce`` body that gives preloaded identity ``i`` its presence."""
    presence = wire.Presence(
        _handle_hex(PRELOADED, i), f"198.51.100.1:{1024 + i % 60000}", now_ms()
    )
    return wire.encode(presence)


def announce_requests(out: Path, *, identities: int, lines: int, seed: int) -> RequestFile:
    rng = random.Random(seed)
    now = now_ms()
    rows = []
    for _ in range(lines):
        presence = wire.Presence(
            user_id=_handle_hex(PRELOADED, rng.randrange(identities)),
            addr=f"198.51.100.{rng.randrange(1, 255)}:{rng.randrange(1024, 65536)}",
            ts_ms=now - rng.randrange(60_000),
        )
        rows.append(("POST", "/announce", wire.encode(presence)))
    return write_requests("announce", out, rows)


def sealed_to_server(identity: PublicIdentity, secrets: Secrets) -> wire.Envelope:
    """``identity`` sealed to the server's active key with a fresh ephemeral key, as
    ``registryd.client`` seals a registration or an update (wire spec §4.2)."""
    handle = identity.handle
    private, public = x25519_keypair()
    key = shared_key(secrets.pepper, handle, private, secrets.server_public)
    nonce, ciphertext = seal(key, handle, identity.to_json())
    return wire.Envelope.build(secrets.kid, public, nonce, ciphertext)


def register_body(i: int, secrets: Secrets) -> bytes:
    """A ``/register`` body for ``bench-reg-{i}``: its own signed identity, sealed to the
    server's active key (:func:`sealed_to_server`)."""
    identity = IdentityKeys.generate().identity(REGISTERED.format(i), created_at_ms=CREATED_AT_MS)
    envelope = sealed_to_server(identity, secrets)
    return wire.encode(wire.RegisterRequest(identity.handle.hex(), envelope))


class RegisterPool:
    """Single-use ``/register`` bodies, generated on first need and handed out in slices.

    Every server of a run starts with a store that holds no ``bench-reg`` handle, so each server
    takes its slices from the start of the pool again (:meth:`rewind`), and the pool only grows
    when a server needs more than any before it. A run that sends more requests than its slice
    holds cycles through it, and the repeats show up as 409 errors in the results.
    """

    def __init__(self, secrets: Secrets) -> None:
        self._secrets = secrets
        self.bodies: list[bytes] = []
        self._next = 0

    def rewind(self) -> None:
        self._next = 0

    def take(self, out: Path, count: int) -> RequestFile:
        """The next ``count`` bodies (at least 1) as a request file."""
        count = max(1, count)
        end = self._next + count
        self.bodies.extend(register_body(i, self._secrets) for i in range(len(self.bodies), end))
        rows = [("POST", "/register", body) for body in self.bodies[self._next : end]]
        self._next = end
        return write_requests("register", out, rows)


def floor_requests(out_dir: Path, post_body: bytes) -> tuple[RequestFile, RequestFile]:
    """The floor's request files: ``GET /json`` and ``POST /echo`` with ``post_body`` (a resolve
    body, so the echo carries a payload of the size resolve requests carry)."""
    get = write_requests("floor_get", out_dir / "floor_get.tsv", [("GET", "/json", b"")])
    post = write_requests("floor_post", out_dir / "floor_post.tsv", [("POST", "/echo", post_body)])
    return get, post
