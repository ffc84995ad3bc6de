"""abuse.pow: spec 4.7 vectors, stateless challenges, exactly-once spending, adaptive cost."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import logging
import os
import threading
import tracemalloc
from collections.abc import Callable

import pytest

from registryd.abuse.pow import HALF_LIFE_MS, IDLE_MS, MAX_DIFFICULTY, ProofOfWork
from registryd.config import PowConfig
from registryd.errors import PowRequired
from registryd.hashcash import Challenge, SolveCancelled, leading_zero_bits_ok, solve
from tests.helpers import Clock
from tests.pow_support import (
    CLIENT,
    OTHER,
    accepted,
    adaptive,
    pow_for,
    run_at,
    solved,
    zero_bits,
)

VECTOR_CHALLENGE = "00112233445566778899aabbccddeeff"


def solution_with_exactly(challenge: str, bits: int) -> str:
    """A solution whose digest has exactly ``bits`` leading zero bits."""
    return next(f"{n:x}" for n in itertools.count() if zero_bits(challenge, f"{n:x}") == bits)


# -- the solver and the spec 4.7 rule ----------------------------------------------------------


def test_spec_7_3_vectors() -> None:
    assert solve(VECTOR_CHALLENGE, 8) == "79"
    assert solve(VECTOR_CHALLENGE, 12) == "1373"
    assert hashlib.sha256(b"00112233445566778899aabbccddeeff79").hexdigest().startswith("00967a59")
    assert hashlib.sha256(b"00112233445566778899aabbccddeeff1373").hexdigest().endswith("ba80")


@pytest.mark.parametrize("difficulty", range(0, 17))
def test_solver_finds_the_smallest_hex_counter(difficulty: int) -> None:
    challenge = "0f" * 16
    smallest = next(
        f"{n:x}" for n in itertools.count() if zero_bits(challenge, f"{n:x}") >= difficulty
    )
    assert solve(challenge, difficulty) == smallest


def test_leading_zero_bits_rule_of_spec_4_7() -> None:
    assert leading_zero_bits_ok(bytes.fromhex("00967a59") + bytes(28), 8)
    assert not leading_zero_bits_ok(bytes.fromhex("00967a59") + bytes(28), 9)
    assert leading_zero_bits_ok(bytes.fromhex("000d341c") + bytes(28), 12)
    assert not leading_zero_bits_ok(bytes.fromhex("000d341c") + bytes(28), 13)
    assert leading_zero_bits_ok(b"\xff" * 32, 0)
    assert leading_zero_bits_ok(bytes(32), 256)
    assert not leading_zero_bits_ok(bytes(32), 257)
    for _ in range(200):
        digest = os.urandom(32)
        for bits in range(0, 20):
            expected = int.from_bytes(digest, "big") >> (256 - bits) == 0
            assert leading_zero_bits_ok(digest, bits) is expected


def test_a_set_stop_event_cancels_the_solver() -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(SolveCancelled):
        solve(VECTOR_CHALLENGE, 64, stop=stop)


@pytest.mark.parametrize("difficulty", [-1, 257])
def test_solver_refuses_impossible_difficulties(difficulty: int) -> None:
    with pytest.raises(ValueError, match="difficulty"):
        solve(VECTOR_CHALLENGE, difficulty)


# -- issuing ----------------------------------------------------------------------------------


def test_challenge_shape(clock: Clock) -> None:
    issued = pow_for(clock, difficulty=9, ttl=120).issue(CLIENT)
    assert set(issued) == {"challenge", "difficulty", "expires_ms"}
    challenge = issued["challenge"]
    assert len(challenge) == 32 and challenge == bytes.fromhex(challenge).hex()
    assert issued["difficulty"] == 9
    assert issued["expires_ms"] == clock.now_ms + 120_000  # clock is on a whole second
    assert int(challenge[:8], 16) * 1000 == issued["expires_ms"]


def test_expiry_is_rounded_down_to_what_the_challenge_encodes(clock: Clock) -> None:
    clock.now_ms += 999
    issued = pow_for(clock, ttl=120).issue(CLIENT)
    assert issued["expires_ms"] == clock.now_ms - 999 + 120_000


def test_challenges_are_distinct(clock: Clock) -> None:
    pow_ = pow_for(clock)
    # Within one second, one client's challenges differ only in their 3 random bytes: among
    # 1000, a repeat has a 3% chance (birthday bound 1000**2 / 2**25), more than 5 under 1e-11.
    assert len({pow_.issue(CLIENT)["challenge"] for _ in range(1000)}) >= 995


def test_issuing_stores_nothing(clock: Clock) -> None:
    pow_ = pow_for(clock)
    for _ in range(100):
        pow_.issue(CLIENT)
    assert pow_.spent == 0 and pow_.tracked_clients == 0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _longest_client_key(i: int) -> str:
    """A distinct rate-limit key per ``i``, as long as an IPv6 /64 key gets (24 chars)."""
    return f"ffff:ffff:{i >> 16:04x}:{i & 0xFFFF:04x}::/64"


@pytest.mark.parametrize("is_adaptive", [False, True])
def test_issuing_100000_challenges_to_100000_clients_holds_no_memory(
    clock: Clock, is_adaptive: bool
) -> None:
    pow_ = adaptive(clock) if is_adaptive else pow_for(clock)
    next_key = itertools.count()

    def issue_to_new_clients(n: int) -> None:
        for i in range(n):
            pow_.issue(_longest_client_key(next(next_key)))
            if not i % 1000:
                clock.advance(1)
        gc.collect()

    pow_.issue(CLIENT)  # warm up lazily built state
    gc.collect()
    rss_before = _rss_bytes()
    issue_to_new_clients(100_000)
    assert _rss_bytes() - rss_before < 10 * 1024 * 1024
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        issue_to_new_clients(20_000)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 16 * 1024  # nothing per challenge, nor per client
    assert peak - before < 64 * 1024
    assert pow_.spent == 0
    if is_adaptive:
        assert 80_000 < pow_.tracked_clients <= 100_000  # the default table: 100,000 slots
    else:
        assert pow_.tracked_clients == 0


def test_the_adaptive_rate_table_is_allocated_up_front_at_16_bytes_a_slot(clock: Clock) -> None:
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        pow_ = adaptive(clock, max_clients=100_000)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 16 * 100_000 <= after - before < 16 * 100_000 + 16 * 1024
    assert pow_.tracked_clients == 0


def test_bad_constructor_arguments(clock: Clock) -> None:
    config = PowConfig(enabled=True, difficulty=8)
    with pytest.raises(ValueError, match="32 bytes"):
        ProofOfWork(config, clock, key=b"short")
    with pytest.raises(ValueError, match="positive"):
        ProofOfWork(config, clock, max_spent=0)
    with pytest.raises(ValueError, match="positive"):
        ProofOfWork(config, clock, max_clients=0)


def test_repr_hides_the_key(clock: Clock) -> None:
    key = bytes(range(32))
    pow_ = pow_for(clock, key=key)
    text = repr(pow_) + repr(vars(pow_))
    assert key.hex() not in text and str(key) not in text


def test_a_fixed_key_makes_challenges_verifiable_by_another_instance(clock: Clock) -> None:
    key = os.urandom(32)
    header = solved(ProofOfWork(PowConfig(enabled=True, difficulty=8), clock, key=key))
    assert accepted(ProofOfWork(PowConfig(enabled=True, difficulty=8), clock, key=key), header)
    assert not accepted(ProofOfWork(PowConfig(enabled=True, difficulty=8), clock), header)


# -- verifying ------------------------------------------------------------------------------


def test_a_solved_challenge_is_accepted(clock: Clock) -> None:
    pow_ = pow_for(clock)
    assert accepted(pow_, solved(pow_))


@pytest.mark.parametrize("difficulty", [8, 10, 12])
def test_one_bit_short_is_refused_and_enough_bits_accepted(clock: Clock, difficulty: int) -> None:
    pow_ = pow_for(clock, difficulty=difficulty)
    short = pow_.issue(CLIENT)["challenge"]
    assert not accepted(pow_, f"{short}:{solution_with_exactly(short, difficulty - 1)}")
    exact = pow_.issue(CLIENT)["challenge"]
    assert accepted(pow_, f"{exact}:{solution_with_exactly(exact, difficulty)}")
    more = pow_.issue(CLIENT)["challenge"]
    assert accepted(pow_, f"{more}:{solution_with_exactly(more, difficulty + 1)}")


def test_any_solution_string_is_accepted_even_with_colons(clock: Clock) -> None:
    pow_ = pow_for(clock)
    challenge = pow_.issue(CLIENT)["challenge"]
    solution = next(s for n in itertools.count() if zero_bits(challenge, s := f"a:b:{n}") >= 8)
    assert accepted(pow_, f"{challenge}:{solution}")


def test_a_solved_challenge_is_accepted_exactly_once_in_1000_tries(clock: Clock) -> None:
    pow_ = pow_for(clock)
    header = solved(pow_)
    assert sum(accepted(pow_, header) for _ in range(1000)) == 1


async def test_a_solved_challenge_is_accepted_once_among_100_concurrent_tries(
    clock: Clock,
) -> None:
    pow_ = pow_for(clock)
    header = solved(pow_)
    start = asyncio.Event()
    waiting = 0

    async def attempt() -> bool:
        nonlocal waiting
        waiting += 1
        await start.wait()
        return accepted(pow_, header)

    async def release() -> bool:
        assert waiting == 100  # the attempts, scheduled first, all wait on the event
        start.set()
        return False

    assert sum(await asyncio.gather(*(attempt() for _ in range(100)), release())) == 1


def test_a_wrong_solution_does_not_spend_the_challenge(clock: Clock) -> None:
    pow_ = pow_for(clock, difficulty=12)
    challenge = pow_.issue(CLIENT)["challenge"]
    assert not accepted(pow_, f"{challenge}:{solution_with_exactly(challenge, 3)}")
    assert not accepted(pow_, f"{challenge}:{solution_with_exactly(challenge, 11)}")
    assert pow_.spent == 0
    assert accepted(pow_, f"{challenge}:{solve(challenge, 12)}")
    assert pow_.spent == 1
    assert not accepted(pow_, f"{challenge}:{solve(challenge, 12)}")  # now spent


def test_expiry(clock: Clock) -> None:
    pow_ = pow_for(clock, ttl=120)
    first, second, third = (pow_.issue(CLIENT) for _ in range(3))
    expires = first["expires_ms"]
    assert second["expires_ms"] == third["expires_ms"] == expires

    def header(issued: Challenge) -> str:
        return f"{issued['challenge']}:{solve(issued['challenge'], 8)}"

    clock.now_ms = expires - 1
    assert accepted(pow_, header(first))
    clock.now_ms = expires
    assert accepted(pow_, header(second))
    clock.now_ms = expires + 1
    assert not accepted(pow_, header(third))


def test_a_tampered_challenge_is_refused(clock: Clock) -> None:
    pow_ = pow_for(clock, difficulty=4)
    challenge = bytes.fromhex(pow_.issue(CLIENT)["challenge"])
    for i in range(16):
        for flip in (0x01, 0x80):
            tampered = bytearray(challenge)
            tampered[i] ^= flip
            text = tampered.hex()
            assert not accepted(pow_, f"{text}:{solve(text, 4)}"), (i, flip)
    assert accepted(pow_, f"{challenge.hex()}:{solve(challenge.hex(), 4)}")


def test_a_challenge_not_issued_here_is_refused(clock: Clock) -> None:
    pow_ = pow_for(clock)
    assert not accepted(pow_, f"{VECTOR_CHALLENGE}:79")


def test_a_challenge_issued_to_another_client_is_refused(clock: Clock) -> None:
    pow_ = pow_for(clock)
    header = solved(pow_, CLIENT)
    assert not accepted(pow_, header, OTHER)
    assert not accepted(pow_, header, CLIENT + " ")
    assert accepted(pow_, header, CLIENT)  # the other client's try did not spend it


@pytest.mark.parametrize(
    "make_header",
    [
        lambda c, s: None,
        lambda c, s: "",
        lambda c, s: c + s,  # no colon
        lambda c, s: f"{c}:",
        lambda c, s: f":{s}",
        lambda c, s: ":",
        lambda c, s: f"{c.upper()}:{s}",
        lambda c, s: f"{c[:-1]}:{s}",
        lambda c, s: f"{c}0:{s}",
        lambda c, s: f" {c}:{s}",
        lambda c, s: f"{c[:-1]}g:{s}",
        lambda c, s: f"{c}:{s}é",  # non-ASCII solution
        lambda c, s: f"{c[:-1]}é:{s}",  # non-ASCII challenge
        lambda c, s: f"{c}:{s}\udcff",
    ],
)
def test_malformed_headers_are_refused(
    clock: Clock, make_header: Callable[[str, str], str | None]
) -> None:
    pow_ = pow_for(clock)
    issued = pow_.issue(CLIENT)
    challenge = issued["challenge"]
    header = make_header(challenge, solve(challenge, 8))
    with pytest.raises(PowRequired) as err:
        pow_.verify(header, CLIENT)
    assert err.value.status_code == 400
    assert err.value.code == "POW_REQUIRED"
    assert err.value.message == "pow required"


def test_verify_accepts_a_solution_the_reference_solver_would_send(clock: Clock) -> None:
    pow_ = pow_for(clock, difficulty=12)
    issued = pow_.issue(CLIENT)
    solution = solve(issued["challenge"], issued["difficulty"])
    assert zero_bits(issued["challenge"], solution) >= 12
    pow_.verify(f"{issued['challenge']}:{solution}", CLIENT)


# -- the spent set ----------------------------------------------------------------------------


def test_spent_challenges_are_pruned_after_expiry(clock: Clock) -> None:
    pow_ = pow_for(clock, ttl=60)
    for _ in range(50):
        assert accepted(pow_, solved(pow_))
        clock.advance(0.5)
    assert pow_.spent == 50
    clock.advance(60 - 25 + 1)
    assert 0 < pow_.spent < 50  # the oldest have expired
    clock.advance(30)
    assert pow_.spent == 0


def test_spent_set_is_bounded_and_fails_closed(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    pow_ = pow_for(clock, ttl=60, max_spent=10)
    headers = [solved(pow_) for _ in range(13)]
    clock.advance(1)
    with caplog.at_level(logging.WARNING, logger="registryd"):
        assert [accepted(pow_, h) for h in headers[:10]] == [True] * 10
        assert not accepted(pow_, headers[10])  # full: refused, though well solved
        assert not accepted(pow_, headers[11])
    assert pow_.spent == 10
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "spent challenges" in warnings[0].getMessage()
    assert [accepted(pow_, h) for h in headers[:10]] == [False] * 10  # none forgotten
    clock.advance(60)  # all expired: room again
    assert pow_.spent == 0
    assert accepted(pow_, solved(pow_))


def test_a_clock_stepping_back_does_not_revive_a_spent_challenge(clock: Clock) -> None:
    pow_ = pow_for(clock, ttl=60)
    header = solved(pow_)
    assert accepted(pow_, header)
    clock.advance(61)
    assert pow_.spent == 0  # pruned
    clock.advance(-61)
    assert not accepted(pow_, header)


# -- adaptive difficulty ----------------------------------------------------------------------


def test_non_adaptive_difficulty_is_the_base(clock: Clock) -> None:
    pow_ = pow_for(clock, difficulty=8)
    assert run_at(pow_, clock, 50, 60) == 8


@pytest.mark.parametrize("rps", [0.1, 0.5, 1.0, 1.9])
def test_an_honest_client_gets_the_base_difficulty(clock: Clock, rps: float) -> None:
    pow_ = adaptive(clock, difficulty=8, free=1.0)
    assert run_at(pow_, clock, rps, 1200) == 8


def test_honest_requests_count_once_each(clock: Clock) -> None:
    pow_ = adaptive(clock, difficulty=4, free=1.0)
    start = clock.now_ms
    difficulties = set()
    for i in range(1800):  # 1.5 requests/s, each a challenge and its proof
        clock.now_ms = start + i * 667
        issued = pow_.issue(CLIENT)
        difficulties.add(issued["difficulty"])
        pow_.verify(f"{issued['challenge']}:{solve(issued['challenge'], 4)}", CLIENT)
    assert difficulties == {4}  # 3 counted events/s would have been 4 + 1


@pytest.mark.parametrize(("rps", "extra"), [(2.5, 1), (3.9, 1), (4.0, 2), (7.0, 2), (8.5, 3)])
def test_each_doubling_of_the_rate_adds_a_bit(clock: Clock, rps: float, extra: int) -> None:
    pow_ = adaptive(clock, difficulty=8, free=1.0)
    assert run_at(pow_, clock, rps, 900) == 8 + extra


def test_refused_proofs_count_as_requests(clock: Clock) -> None:
    pow_ = adaptive(clock, difficulty=8, free=1.0)
    start = clock.now_ms
    for i in range(3600):  # 4 requests/s without a proof
        clock.now_ms = start + i * 250
        assert not accepted(pow_, None)
    assert pow_.issue(CLIENT)["difficulty"] == 10


def test_a_burst_reads_as_its_size_over_the_decay_constant(clock: Clock) -> None:
    pow_ = adaptive(clock, difficulty=8, free=1.0)
    difficulties = [pow_.issue(CLIENT)["difficulty"] for _ in range(400)]
    assert difficulties[:173] == [8] * 173  # 173 at once ≈ 1.998 rps
    assert difficulties[173] == 9  # 174 at once ≈ 2.01 rps
    assert difficulties[-1] == 10  # 400 at once ≈ 4.6 rps


def test_adaptive_difficulty_is_capped_at_30(clock: Clock) -> None:
    pow_ = adaptive(clock, difficulty=20, free=0.01)
    assert run_at(pow_, clock, 50, 900) == MAX_DIFFICULTY  # 5000 times free: would be 32


def test_the_extra_difficulty_decays_when_the_client_slows_down(clock: Clock) -> None:
    pow_ = adaptive(clock, difficulty=8, free=1.0)
    assert run_at(pow_, clock, 8.5, 900) == 11
    clock.advance(HALF_LIFE_MS / 1000)  # 8.5 -> 4.25 requests/s
    assert pow_.issue(CLIENT)["difficulty"] == 10
    clock.advance(IDLE_MS / 1000)
    assert pow_.issue(CLIENT)["difficulty"] == 8


def test_other_clients_are_not_affected(clock: Clock) -> None:
    pow_ = adaptive(clock, difficulty=8, free=1.0)
    assert run_at(pow_, clock, 8.5, 900) == 11
    assert pow_.issue(OTHER)["difficulty"] == 8


def test_tracked_clients_are_bounded_and_idle_ones_dropped(clock: Clock) -> None:
    pow_ = adaptive(clock, max_clients=100)
    for i in range(1000):
        pow_.issue(f"10.0.{i >> 8}.{i & 255}")
        assert pow_.tracked_clients <= 100
    assert pow_.tracked_clients == 100
    clock.advance(IDLE_MS / 1000 + 1)
    pow_.issue(CLIENT)
    assert pow_.tracked_clients == 1


def test_the_issued_difficulty_binds_the_challenge(clock: Clock) -> None:
    pow_ = adaptive(clock, difficulty=8, free=1.0)
    run_at(pow_, clock, 4.0, 900)
    issued = pow_.issue(CLIENT)
    assert issued["difficulty"] == 10
    challenge = issued["challenge"]
    assert not accepted(pow_, f"{challenge}:{solution_with_exactly(challenge, 8)}")
    issued = pow_.issue(CLIENT)
    assert accepted(pow_, f"{issued['challenge']}:{solve(issued['challenge'], 10)}")
