"""registryd.abuse.pow under abuse: unsolved proofs spend nothing, and floods of keys evict no one
that matters."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from registryd.errors import PowRequired
from registryd.hashcash import solve
from tests.helpers import Clock
from tests.pow_support import CLIENT, OTHER, accepted, adaptive, pow_for, run_at, solved, zero_bits


def wrong(challenge: str, difficulty: int, tag: str = "garbage") -> str:
    """A solution that does not solve ``challenge`` at ``difficulty`` (``tag`` or ``tag<n>``)."""
    candidates = itertools.chain([tag], (f"{tag}{n}" for n in itertools.count()))
    return next(s for s in candidates if zero_bits(challenge, s) < difficulty)


def client(i: int) -> str:
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


# -- wrong solutions do not spend challenges ---------------------------------------------------


@pytest.mark.parametrize("is_adaptive", [False, True])
def test_a_flood_of_unsolved_proofs_does_not_fill_the_spent_set(
    clock: Clock, caplog: pytest.LogCaptureFixture, is_adaptive: bool
) -> None:
    # The reviewer's reproduction: max_spent fresh challenges, each sent back with garbage.
    pow_ = adaptive(clock, max_spent=1000) if is_adaptive else pow_for(clock, max_spent=1000)
    with caplog.at_level(logging.WARNING, logger="registryd"):
        for i in range(10_000):
            issued = pow_.issue(client(i % 1000))
            challenge = issued["challenge"]
            header = f"{challenge}:{wrong(challenge, issued['difficulty'])}"
            assert not accepted(pow_, header, client(i % 1000))
        assert pow_.spent == 0
        for i in range(3):  # honest clients are still served, after the flood as before it
            assert accepted(pow_, solved(pow_, client(i)), client(i))
    assert pow_.spent == 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # never "full"


def test_unsolved_proofs_leave_room_for_exactly_max_spent_solved_ones(clock: Clock) -> None:
    pow_ = pow_for(clock, max_spent=10)
    for _ in range(100):
        challenge = pow_.issue(CLIENT)["challenge"]
        assert not accepted(pow_, f"{challenge}:{wrong(challenge, 8)}")
    assert [accepted(pow_, solved(pow_)) for _ in range(11)] == [True] * 10 + [False]


def test_a_wrong_solution_leaves_the_challenge_usable_exactly_once(clock: Clock) -> None:
    pow_ = pow_for(clock, difficulty=12)
    challenge = pow_.issue(CLIENT)["challenge"]
    for n in range(100):
        assert not accepted(pow_, f"{challenge}:{wrong(challenge, 12, f'try{n}-')}")
    assert pow_.spent == 0
    header = f"{challenge}:{solve(challenge, 12)}"
    assert [accepted(pow_, header) for _ in range(100)] == [True] + [False] * 99
    assert pow_.spent == 1
    other_solution = next(s for n in itertools.count() if zero_bits(challenge, s := f"x{n}") >= 12)
    assert not accepted(pow_, f"{challenge}:{other_solution}")  # spent, whatever the solution


def test_a_wrong_solution_from_another_client_does_not_spend_the_challenge(clock: Clock) -> None:
    pow_ = pow_for(clock)
    challenge = pow_.issue(CLIENT)["challenge"]
    assert not accepted(pow_, f"{challenge}:{wrong(challenge, 8)}", OTHER)
    assert not accepted(pow_, f"{challenge}:{solve(challenge, 8)}", OTHER)
    assert accepted(pow_, f"{challenge}:{solve(challenge, 8)}", CLIENT)


def test_an_expired_challenge_is_refused_even_when_solved_after_wrong_tries(clock: Clock) -> None:
    pow_ = pow_for(clock, ttl=60)
    issued = pow_.issue(CLIENT)
    challenge = issued["challenge"]
    assert not accepted(pow_, f"{challenge}:{wrong(challenge, 8)}")
    clock.now_ms = issued["expires_ms"] + 1
    assert not accepted(pow_, f"{challenge}:{solve(challenge, 8)}")
    assert pow_.spent == 0


async def test_concurrent_wrong_and_right_tries_accept_the_challenge_once(clock: Clock) -> None:
    pow_ = pow_for(clock, difficulty=10)
    challenge = pow_.issue(CLIENT)["challenge"]
    right = f"{challenge}:{solve(challenge, 10)}"
    headers = [f"{challenge}:{wrong(challenge, 10, f'w{n}-')}" for n in range(50)]
    headers[::2] = [right] * 25  # 25 right, 25 wrong, interleaved
    start = asyncio.Event()

    async def attempt(header: str) -> bool:
        await start.wait()
        return accepted(pow_, header)

    tasks = [asyncio.create_task(attempt(h)) for h in headers]
    await asyncio.sleep(0)
    start.set()
    results = await asyncio.gather(*tasks)
    assert sum(results) == 1
    assert results[0] is True  # the first right one, in scheduling order
    assert pow_.spent == 1


def test_verify_refuses_with_pow_required_for_a_wrong_solution(clock: Clock) -> None:
    pow_ = pow_for(clock)
    challenge = pow_.issue(CLIENT)["challenge"]
    with pytest.raises(PowRequired) as err:
        pow_.verify(f"{challenge}:{wrong(challenge, 8)}", CLIENT)
    assert (err.value.status_code, err.value.code) == (400, "POW_REQUIRED")


# -- adaptive difficulty: counting and the fixed-size table --------------------------------


def test_wrong_solutions_count_as_requests(clock: Clock) -> None:
    pow_ = adaptive(clock, difficulty=8, free=1.0)
    challenge = pow_.issue(CLIENT)["challenge"]
    start = clock.now_ms
    for i in range(3600):  # 4 tries/s of one challenge, never solved
        clock.now_ms = start + i * 250
        assert not accepted(pow_, f"{challenge}:{wrong(challenge, 8, f'{i}-')}")
    assert pow_.issue(CLIENT)["difficulty"] == 10


@pytest.mark.parametrize(("wrong_tries", "difficulty"), [(0, 4), (1, 4), (2, 5)])
def test_each_wrong_try_counts_and_the_accepted_proof_does_not(
    clock: Clock, wrong_tries: int, difficulty: int
) -> None:
    pow_ = adaptive(clock, difficulty=4, free=1.0)
    start = clock.now_ms
    for i in range(1200):  # 0.9 challenges/s, each solved after `wrong_tries` wrong tries
        clock.now_ms = start + i * 1111
        issued = pow_.issue(CLIENT)
        challenge = issued["challenge"]
        for n in range(wrong_tries):
            assert not accepted(pow_, f"{challenge}:{wrong(challenge, 4, f'{n}-')}")
        assert accepted(pow_, f"{challenge}:{solve(challenge, issued['difficulty'])}")
    # counted: 0.9/s, 1.8/s or 2.7/s (with the accepted proofs it would be 1.8, 2.7, 3.6)
    assert pow_.issue(CLIENT)["difficulty"] == difficulty


def test_a_flood_of_new_keys_does_not_evict_a_heavy_client(clock: Clock) -> None:
    pow_ = adaptive(clock, difficulty=8, free=1.0, max_clients=64)
    assert run_at(pow_, clock, 8.5, 900) == 11
    for i in range(10_000):
        pow_.issue(client(i))
    assert pow_.tracked_clients == 64
    assert pow_.issue(CLIENT)["difficulty"] == 11


def test_an_evicted_client_starts_again_at_the_base_difficulty(clock: Clock) -> None:
    pow_ = adaptive(clock, difficulty=8, free=1.0, max_clients=1)
    assert run_at(pow_, clock, 4.0, 900) == 10
    assert pow_.issue(OTHER)["difficulty"] == 8  # takes the only slot: CLIENT's rate is not its
    assert pow_.issue(CLIENT)["difficulty"] == 8  # CLIENT was forgotten: a count of 1 again
    assert pow_.tracked_clients == 1


@pytest.mark.parametrize("max_clients", [1, 7, 8, 9, 100])
def test_any_table_size_holds_at_most_max_clients(clock: Clock, max_clients: int) -> None:
    pow_ = adaptive(clock, max_clients=max_clients)
    for i in range(50 * max_clients):
        pow_.issue(client(i))
        assert pow_.tracked_clients <= max_clients
    assert pow_.tracked_clients == max_clients
