"""The agent over real TLS (Hypercorn, dev CA): ``cafile`` is what it trusts."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from registryd.certs import DevCerts
from registryd.errors import ConfigError
from registryd.node import RegistrationAgent, State, load_config, read_state
from tests.node_fake import HOST, FakeDirectory, make_node, serving


class FirstSleep:
    """Records the first wait, then stops the agent."""

    def __init__(self) -> None:
        self.agent: RegistrationAgent | None = None
        self.sleeps: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        assert self.agent is not None
        self.agent.stop()
        await asyncio.sleep(0)


async def run_once(config_path: Path) -> tuple[RegistrationAgent, list[float]]:
    sleep = FirstSleep()
    agent = RegistrationAgent(
        load_config(config_path),
        sleep=sleep,
        rng=random.Random(3),  # noqa: S311 (jitter only)
    )
    sleep.agent = agent
    await asyncio.wait_for(asyncio.create_task(agent.run()), 60)
    return agent, sleep.sleeps


@pytest.mark.e2e
async def test_registers_over_tls_with_the_cafile(tmp_path: Path, certs: DevCerts) -> None:
    directory = FakeDirectory(time.time)
    async with serving(directory.app(), certs) as url:
        assert url.startswith("https://127.0.0.1:")
        agent, sleeps = await run_once(make_node(tmp_path, url, cafile=str(certs.ca)))
    assert sleeps == [30]
    assert directory.nodes[HOST].status == "online"
    assert read_state(agent.config.state_path).last_heartbeat_at is not None


@pytest.mark.e2e
async def test_an_untrusted_certificate_is_a_retryable_failure(
    tmp_path: Path, certs: DevCerts
) -> None:
    directory = FakeDirectory(time.time)
    async with serving(directory.app(), certs) as url:
        agent, sleeps = await run_once(make_node(tmp_path, url))  # system store only
    assert directory.calls == []  # nothing was sent over the unverified connection
    assert 1.6 <= sleeps[0] <= 2.4
    state = read_state(agent.config.state_path)
    assert state.state is State.DISCONNECTED
    assert state.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in state.last_error


def test_an_unreadable_cafile_stops_the_agent_before_it_starts(tmp_path: Path) -> None:
    config = load_config(make_node(tmp_path, "https://registry.example", cafile="missing.pem"))
    with pytest.raises(ConfigError, match=r"^cafile: cannot load .*missing\.pem"):
        RegistrationAgent(config)
