"""The registration loop (extensions spec §4) against a fake directory that checks signatures,
on a fake clock: every wait the agent makes is recorded, none is real."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
from pathlib import Path

import httpx
import pytest

from registryd.node import RegistrationAgent, State, load_config, read_state
from registryd.node.state import parse_rfc3339, rfc3339
from tests.node_fake import DOWN, HOST, FakeDirectory, FakeTime, Fault, make_node, run_until

SEED = 1234


def agent_for(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory, **keys: object
) -> RegistrationAgent:
    config = load_config(make_node(tmp_path, "http://registry.test", **keys))
    return RegistrationAgent(
        config,
        transport=directory.transport(),
        clock=time,
        sleep=time.sleep,
        rng=random.Random(SEED),  # noqa: S311 (seeded: reproducible jitter)
    )


def expected_backoff(attempts: list[int]) -> list[float]:
    """min(2**n, 60) x U(0.8, 1.2) for each n, drawn from the agent's seeded generator."""
    rng = random.Random(SEED)  # noqa: S311 (the same seeded sequence)
    return [min(2**n, 60) * rng.uniform(0.8, 1.2) for n in attempts]


def in_band(delay: float, n: int) -> bool:
    base = min(1 << n, 60)
    return 0.8 * base <= delay <= 1.2 * base


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def directory(time: FakeTime) -> FakeDirectory:
    return FakeDirectory(time)


async def test_success_parks_with_a_fresh_challenge_per_heartbeat(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory
) -> None:
    agent = agent_for(tmp_path, time, directory)
    await run_until(agent, time, 5)
    assert time.sleeps == [30] * 5
    assert directory.count("register") == 1
    assert directory.count("heartbeat") == 5  # one at once, then one after each of 4 waits
    assert directory.count("challenge") == 6  # every signed call had its own nonce
    assert not directory.nonces  # ... and spent it
    node = directory.nodes[HOST]
    assert node.status == "online" and node.last_seen_at == time.now - 30
    assert node.payload["features"] == {"max_peers": 64, "regions": ["eu", "us"], "relay": True}
    state = read_state(agent.config.state_path)
    assert state.state is State.DISCONNECTED  # written on stop
    assert state.last_heartbeat_at == rfc3339(time.now - 30)


async def test_state_file_follows_the_loop(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory
) -> None:
    agent = agent_for(tmp_path, time, directory)
    directory.fail("register", Fault(503))
    seen = []
    await run_until(agent, time, 2, lambda n: seen.append(read_state(agent.config.state_path)))
    failed, parked = seen
    assert failed.state is State.DISCONNECTED
    assert failed.last_error == "register: HTTP 503 UNAVAILABLE: try later"
    assert failed.last_heartbeat_at is None
    assert failed.next_attempt_at is not None and parked.last_heartbeat_at is not None
    assert parse_rfc3339(failed.next_attempt_at) == pytest.approx(time.now - 30, abs=0.002)
    assert parked.state is State.REGISTERED and parked.last_error is None
    assert parse_rfc3339(parked.last_heartbeat_at) == pytest.approx(time.now - 30, abs=0.002)
    assert parked.host == HOST and parked.pubkey_prefix == agent.key.pubkey_b64[:16]


async def test_503_storm_backs_off_exponentially_with_jitter(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory
) -> None:
    agent = agent_for(tmp_path, time, directory)
    directory.fail("register", *[Fault(503)] * 8)
    await run_until(agent, time, 10)
    storm = time.sleeps[:8]
    assert all(in_band(delay, n) for n, delay in enumerate(storm, 1)), storm
    assert storm == pytest.approx(expected_backoff(list(range(1, 9))))
    assert time.sleeps[8:] == [30, 30]  # then registered, parked
    assert directory.count("register") == 1 and directory.count("register", 503) == 8


async def test_jitter_covers_its_band(tmp_path: Path, time: FakeTime) -> None:
    directory = FakeDirectory(time)
    directory.always["challenge"] = Fault(503)
    agent = agent_for(tmp_path, time, directory)
    await run_until(agent, time, 200)
    factors = [delay / 60 for delay in time.sleeps[6:]]  # attempts 7.. are at the 60 s cap
    assert all(0.8 <= f <= 1.2 for f in factors)
    assert min(factors) < 0.85 and max(factors) > 1.15  # really random, not a constant


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, None])
async def test_retryable_answers_back_off(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory, status: int | None
) -> None:
    directory.fail("challenge", Fault(status), Fault(status))
    agent = agent_for(tmp_path, time, directory)
    await run_until(agent, time, 3)
    assert in_band(time.sleeps[0], 1) and in_band(time.sleeps[1], 2)
    assert time.sleeps[2] == 30


@pytest.mark.parametrize("status", [403, 409])
async def test_conflict_cools_down_and_warns_once_per_180_s(
    tmp_path: Path,
    time: FakeTime,
    directory: FakeDirectory,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory.fail("register", *[Fault(status)] * 5)
    agent = agent_for(tmp_path, time, directory)
    with caplog.at_level(logging.DEBUG, logger="registryd.node"):
        await run_until(agent, time, 6)
    assert time.sleeps == [120] * 5 + [30]
    refusals = [r for r in caplog.records if "refused (conflict" in r.getMessage()]
    assert len(refusals) == 5
    # Failures at t = 0, 120, 240, 360, 480 s: warnings at 0, 240 and 480 only.
    assert [r.levelno for r in refusals] == [
        logging.WARNING,
        logging.DEBUG,
        logging.WARNING,
        logging.DEBUG,
        logging.WARNING,
    ]


@pytest.mark.parametrize("status", [400, 404, 405, 413, 422, 302])
async def test_other_4xx_slow_retry_warned_once_per_180_s(
    tmp_path: Path,
    time: FakeTime,
    directory: FakeDirectory,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory.fail("register", *[Fault(status)] * 3)
    agent = agent_for(tmp_path, time, directory, register_interval_seconds=100)
    with caplog.at_level(logging.DEBUG, logger="registryd.node"):
        await run_until(agent, time, 4)
    assert time.sleeps == [100, 100, 100, 30]
    refusals = [r for r in caplog.records if "refused (slow retry" in r.getMessage()]
    # Failures at t = 0, 100, 200 s: warnings at 0 and 200.
    assert [r.levelno for r in refusals] == [logging.WARNING, logging.DEBUG, logging.WARNING]


async def test_max_retry_pauses_then_starts_again(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory
) -> None:
    directory.fail("register", *[Fault(503)] * 7)
    agent = agent_for(tmp_path, time, directory, max_retry=3)
    await run_until(agent, time, 8)
    backoff = expected_backoff([1, 2, 1, 2, 1])
    assert time.sleeps == pytest.approx(
        [backoff[0], backoff[1], 120, backoff[2], backoff[3], 120, backoff[4], 30]
    )


async def test_forever_never_pauses(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory
) -> None:
    directory.always["register"] = Fault(502)
    agent = agent_for(tmp_path, time, directory)  # max_retry = -1 by default
    await run_until(agent, time, 30)
    assert all(in_band(delay, n) for n, delay in enumerate(time.sleeps, 1))


async def test_401_on_heartbeat_registers_again_at_once(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory
) -> None:
    agent = agent_for(tmp_path, time, directory)
    await run_until(agent, time, 4, lambda n: directory.forget(HOST) if n == 2 else None)
    assert time.sleeps == [30] * 4  # no wait between the refused heartbeat and the register
    assert directory.count("heartbeat", 401) == 1
    assert directory.count("register") == 2
    assert directory.nodes[HOST].status == "online"


async def test_401_right_after_registering_slow_retries(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory
) -> None:
    directory.always["heartbeat"] = Fault(401)
    agent = agent_for(tmp_path, time, directory)
    await run_until(agent, time, 3)
    assert time.sleeps == [120] * 3  # cannot spin between register and heartbeat
    assert directory.count("register") == 3


async def test_a_failing_heartbeat_is_retried_without_registering_again(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory
) -> None:
    agent = agent_for(tmp_path, time, directory)
    states = []

    def hook(n: int) -> None:
        states.append(agent.state)
        if n == 1:
            directory.fail("heartbeat", DOWN, Fault(503))

    await run_until(agent, time, 4, hook)
    assert time.sleeps[0] == 30 and time.sleeps[3] == 30
    assert in_band(time.sleeps[1], 1) and in_band(time.sleeps[2], 2)
    assert states == [State.REGISTERED, State.DISCONNECTED, State.DISCONNECTED, State.REGISTERED]
    assert directory.count("register") == 1


async def test_a_conflict_on_heartbeat_registers_again_after_the_cool_down(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory
) -> None:
    agent = agent_for(tmp_path, time, directory)
    await run_until(
        agent, time, 3, lambda n: directory.fail("heartbeat", Fault(409)) if n == 1 else None
    )
    assert time.sleeps == [30, 120, 30]
    assert directory.count("register") == 2


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault(503, {"retry-after": "90"}), 90.0),  # longer than the ~2 s backoff: wins
        (Fault(429, {"retry-after": "600"}), 600.0),
        (Fault(409, {"retry-after": "300"}), 300.0),  # longer than the 120 s cool-down
        (Fault(409, {"retry-after": "30"}), 120.0),  # shorter: the cool-down stands
        (Fault(503, {"retry-after": "999999999"}), 3600.0),  # capped at an hour
        (Fault(503, {"retry-after": "soon"}), None),  # unparsable: ignored
    ],
)
async def test_retry_after_wins_when_longer(
    tmp_path: Path,
    time: FakeTime,
    directory: FakeDirectory,
    fault: Fault,
    expected: float | None,
) -> None:
    directory.fail("register", fault)
    agent = agent_for(tmp_path, time, directory)
    await run_until(agent, time, 1)
    if expected is None:
        assert in_band(time.sleeps[0], 1)
    else:
        assert time.sleeps == [expected]


async def test_retry_after_as_an_http_date(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory
) -> None:
    when = email.utils.formatdate(time.now + 450, usegmt=True)
    directory.fail("challenge", Fault(503, {"retry-after": when}))
    agent = agent_for(tmp_path, time, directory)
    await run_until(agent, time, 1)
    assert time.sleeps == [450.0]


async def test_a_short_retry_after_does_not_shorten_the_backoff(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory
) -> None:
    directory.fail("register", *[Fault(503, {"retry-after": "1"})] * 4)
    agent = agent_for(tmp_path, time, directory)
    await run_until(agent, time, 4)
    assert time.sleeps == pytest.approx(expected_backoff([1, 2, 3, 4]))


async def test_an_oversized_or_garbled_answer_is_retryable(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory
) -> None:
    directory.fail("challenge", Fault(200, body=b"x" * (65 * 1024)), Fault(200, body=b"[1]"))
    agent = agent_for(tmp_path, time, directory)
    await run_until(agent, time, 3)
    assert in_band(time.sleeps[0], 1) and in_band(time.sleeps[1], 2) and time.sleeps[2] == 30
    assert read_state(agent.config.state_path).last_heartbeat_at is not None


async def test_stop_before_any_call_writes_disconnected(
    tmp_path: Path, time: FakeTime, directory: FakeDirectory
) -> None:
    agent = agent_for(tmp_path, time, directory)
    agent.stop()
    await agent.run()
    assert directory.calls == []
    assert read_state(agent.config.state_path).state is State.DISCONNECTED


async def test_stop_abandons_a_call_in_flight(tmp_path: Path, time: FakeTime) -> None:
    started = asyncio.Event()

    async def hanging(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.Event().wait()  # a registry that never answers
        raise AssertionError("unreachable")

    config = load_config(make_node(tmp_path, "http://registry.test"))
    agent = RegistrationAgent(
        config, transport=httpx.MockTransport(hanging), clock=time, sleep=time.sleep
    )
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(started.wait(), 30)
    assert read_state(config.state_path).state is State.REGISTERING
    agent.stop()
    agent.stop()  # a second signal changes nothing
    await asyncio.wait_for(task, 30)
    assert not task.cancelled() and time.sleeps == []
    assert read_state(config.state_path).state is State.DISCONNECTED
