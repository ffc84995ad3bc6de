"""Bearer tokens for ``[peers]`` and ``[admin]``: their Argon2id hashes and what they cost.

The config holds hashes, never tokens (``registryd hash-token`` makes them). This module is
what the config checks and the CLI need; verifying a presented token is
:class:`registryd.api.auth.TokenVerifier`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError

CHECKS_AT_ONCE = 2  # Argon2 verifications in flight per pool (each holds its hash's memory cost)

# Token hashes: Argon2id with t=3, m=4 MiB, p=1; a check takes ~5 ms on the 2-core dev machine.
# RFC 9106 section 4 gives two uniformly safe options for *passwords*: t=1, p=4, m=2 GiB, and
# the second, t=3, p=4, m=64 MiB -- argon2-cffi's default, used here before: a flood of 200 bad
# tokens then held 64 MiB per check in flight and raised the daemon's peak RSS by ~130 MiB (two
# checks at a time; ~260 MiB with both pools busy). The same section's procedure starts instead
# from "the maximum amount of memory m that each call can afford": here 4 MiB, so four checks in
# flight (two pools) hold 16 MiB, then picks t for the time budget. Memory hardness slows the
# guessing of low-entropy secrets; a bearer token is random (hash-token refuses fewer than
# MIN_TOKEN_CHARS characters; the suggested secrets.token_urlsafe(32) carries 256 bits). At
# 10**12 guesses a second, 2**127 guesses take ~5 * 10**18 years, whatever a guess costs: the
# hash only keeps the config file from holding a usable token.
TOKEN_HASHER = PasswordHasher(time_cost=3, memory_cost=4 * 1024, parallelism=1)
MIN_TOKEN_CHARS = 32  # e.g. 16 random bytes in hex: 128 bits
EXPENSIVE_TOKEN_KIB = 16 * 1024  # older hashes (argon2-cffi's 64 MiB default) draw a warning


def hash_token(token: str) -> str:
    """The ``$argon2id$...`` hash of ``token`` (:data:`TOKEN_HASHER`) for ``[peers]`` or
    ``[admin] token_hashes``; raises :class:`ValueError` for a token shorter than
    :data:`MIN_TOKEN_CHARS` characters, too short to be a random token."""
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"token too short: use a random token of at least {MIN_TOKEN_CHARS} characters"
        )
    return TOKEN_HASHER.hash(token)


def token_hash_warnings(table: str, hashes: Sequence[str]) -> list[str]:
    """One warning per hash in ``table.token_hashes`` whose checks cost more than
    :data:`EXPENSIVE_TOKEN_KIB` of memory each. Such hashes still verify."""
    warnings = []
    for i, digest in enumerate(hashes):
        memory_kib = extract_parameters(digest).memory_cost
        if memory_kib > EXPENSIVE_TOKEN_KIB:
            warnings.append(
                f"{table}.token_hashes[{i}]: every check of this hash holds {memory_kib // 1024} "
                f"MiB ({CHECKS_AT_ONCE} checks at a time); hash the token again with "
                f"`registryd hash-token`, which uses {TOKEN_HASHER.memory_cost // 1024} MiB"
            )
    return warnings


def is_argon2id(digest: str) -> bool:
    """Whether ``digest`` is an encoded Argon2id hash (``$argon2id$v=19$m=...``)."""
    try:
        return extract_parameters(digest).type is Type.ID
    except InvalidHashError:
        return False
