"""The agent's ``GET /health`` endpoint (``health_listen``), served by Hypercorn on loopback."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx
import pytest

from registryd.node import RegistrationAgent, State, load_config, read_state
from registryd.sockets import bind_socket
from tests.node_fake import DOWN, FakeDirectory, FakeTime, make_node


class ParkedSleep:
    """A sleep that parks the agent until the test stops it; counts the sleeps."""

    def __init__(self) -> None:
        self.sleeping = asyncio.Event()
        self.sleeps: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleeping.set()
        await asyncio.Event().wait()  # until cancelled by stop()


def agent_on(
    tmp_path: Path, listen: str, directory: FakeDirectory, sleep: ParkedSleep
) -> RegistrationAgent:
    config = load_config(make_node(tmp_path, "http://registry.test", health_listen=listen))
    return RegistrationAgent(
        config,
        transport=directory.transport(),
        sleep=sleep,
        rng=random.Random(1),  # noqa: S311 (jitter only)
    )


async def test_health_answers_while_the_agent_runs(tmp_path: Path) -> None:
    directory, sleep = FakeDirectory(FakeTime()), ParkedSleep()
    agent = agent_on(tmp_path, "127.0.0.1:0", directory, sleep)
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(sleep.sleeping.wait(), 30)
    assert agent.health_url is not None and agent.health_url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(base_url=agent.health_url) as client:
        ok = await client.get("/health")
        assert ok.status_code == 200
        assert ok.json() == {"status": "ok", "state": "registered"}
        assert (await client.post("/health")).status_code == 405
        assert (await client.get("/metrics")).status_code == 404
    agent.stop()
    await asyncio.wait_for(task, 30)
    assert sleep.sleeps == [30]
    assert read_state(agent.config.state_path).state is State.DISCONNECTED
    async with httpx.AsyncClient(base_url=agent.health_url) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/health")  # stopped with the agent


async def test_health_reports_a_disconnected_agent(tmp_path: Path) -> None:
    directory, sleep = FakeDirectory(FakeTime()), ParkedSleep()
    directory.always["challenge"] = DOWN
    agent = agent_on(tmp_path, "127.0.0.1:0", directory, sleep)
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(sleep.sleeping.wait(), 30)
    assert agent.health_url is not None
    async with httpx.AsyncClient(base_url=agent.health_url) as client:
        answer = await client.get("/health")
    assert answer.status_code == 200 and answer.json()["state"] == "disconnected"
    agent.stop()
    await asyncio.wait_for(task, 30)


async def test_a_taken_health_address_stops_the_agent_before_any_call(tmp_path: Path) -> None:
    taken = bind_socket("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        directory, sleep = FakeDirectory(FakeTime()), ParkedSleep()
        agent = agent_on(tmp_path, f"127.0.0.1:{port}", directory, sleep)
        with pytest.raises(OSError):
            await asyncio.wait_for(agent.run(), 30)
    finally:
        taken.close()
    assert directory.calls == []
    assert read_state(agent.config.state_path).state is State.DISCONNECTED
