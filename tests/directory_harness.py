"""In-process harness for the node directory's API tests: the app over each backend."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from registryd.config import Config
from registryd.directory import Directory
from registryd.runtime import Runtime
from registryd.storage import Storage
from tests.directory_support import fake_resolver
from tests.helpers import NO_RATE_LIMIT, Clock, app_with_state, make_config

HOST_A, HOST_B, HOST_C = "127.0.0.2", "127.0.0.4", "127.0.0.5"
DIRECTORY_TABLE = '[directory]\nprobe_allow_cidrs = ["127.0.0.2/32"]\nprobe_timeout_ms = 1000\n'


@dataclass
class Harness:
    config: Config
    storage: Storage
    clock: Clock
    state: Runtime
    directory: Directory
    client: httpx.AsyncClient


@contextlib.asynccontextmanager
async def serving(config: Config, clock: Clock) -> AsyncIterator[Harness]:
    """The app over a freshly opened storage, in-process; storage closed on exit."""
    async with app_with_state(config, clock=clock, resolver=fake_resolver) as (state, c):
        yield Harness(config, state.storage, clock, state, state.directory, c)


@pytest.fixture(params=["memory", "leveldb"], name="harness")
async def harness_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    kind = str(request.param)
    config = make_config(
        kind=kind,
        path=str(tmp_path / "db") if kind == "leveldb" else "",
        tables=NO_RATE_LIMIT + DIRECTORY_TABLE,
    )
    async with serving(config, Clock()) as h:
        yield h


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return response.status_code, body["error"]["code"], body["error"]["message"]


async def nodes(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/api/nodes")
    assert response.status_code == 200
    listed: list[dict[str, Any]] = response.json()["nodes"]
    return listed
