"""Helpers for the proof-of-work tests: instances on a test clock, solved and checked proofs."""

from __future__ import annotations

import hashlib
from typing import Any

from registryd.abuse.pow import ProofOfWork
from registryd.config import PowConfig
from registryd.errors import PowRequired
from registryd.hashcash import solve
from tests.helpers import Clock

CLIENT = "203.0.113.7"
OTHER = "198.51.100.9"


def pow_for(clock: Clock, difficulty: int = 8, ttl: int = 120, **kwargs: Any) -> ProofOfWork:
    config = PowConfig(enabled=True, difficulty=difficulty, ttl_seconds=ttl)
    return ProofOfWork(config, clock, **kwargs)


def adaptive(clock: Clock, difficulty: int = 8, free: float = 1.0, **kwargs: Any) -> ProofOfWork:
    config = PowConfig(enabled=True, difficulty=difficulty, adaptive=True, adaptive_free_rps=free)
    return ProofOfWork(config, clock, **kwargs)


def solved(pow_: ProofOfWork, client: str = CLIENT) -> str:
    """A fresh challenge for ``client`` and its solution, as the header value."""
    issued = pow_.issue(client)
    return f"{issued['challenge']}:{solve(issued['challenge'], issued['difficulty'])}"


def accepted(pow_: ProofOfWork, header: str | None, client: str = CLIENT) -> bool:
    try:
        pow_.verify(header, client)
    except PowRequired:
        return False
    return True


def zero_bits(challenge: str, solution: str) -> int:
    digest = int.from_bytes(hashlib.sha256((challenge + solution).encode()).digest(), "big")
    return 256 - digest.bit_length()


def run_at(
    pow_: ProofOfWork, clock: Clock, rps: float, seconds: float, client: str = CLIENT
) -> int:
    """Issue to ``client`` at ``rps`` for ``seconds``; the last difficulty issued."""
    step_ms = 1000 / rps
    start = clock.now_ms
    difficulty = -1
    for i in range(int(rps * seconds)):
        clock.now_ms = start + round(i * step_ms)
        difficulty = pow_.issue(client)["difficulty"]
    return difficulty
