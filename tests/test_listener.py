"""The connection gate in process (issue 8, item 2): each client's share, the cap, who gives way
when it is full; the config keys that set them."""

from __future__ import annotations

import asyncio
import functools
import socket
import time

import pytest

from registryd import config as config_mod
from registryd.abuse.clientip import ClientKeys
from registryd.errors import ConfigError
from registryd.server import hypercorn_config
from registryd.transport import listener
from registryd.transport.listener import Gate
from tests.helpers import NO_RATE_LIMIT, config_text


def test_each_client_gets_its_share_and_ipv6_counts_by_64() -> None:
    gate = Gate(limit=10, per_client=2, keys=ClientKeys([]))
    a1, a2 = gate.admit("203.0.113.1"), gate.admit("203.0.113.1")
    assert a1 and a2 and gate.admit("203.0.113.1") is None
    assert gate.admit("2001:db8::1") and gate.admit("2001:db8::ffff")
    assert gate.admit("2001:db8::2") is None  # the same /64
    assert gate.admit("2001:db8:0:1::1")  # the next /64
    gate.release(a1)
    assert gate.admit("203.0.113.1") is not None
    assert (gate.open, gate.refused) == (5, 2)


def test_a_trusted_proxy_has_no_share() -> None:
    gate = Gate(limit=5, per_client=1, keys=ClientKeys(["10.0.0.0/8"]))
    assert all(gate.admit("10.1.2.3") for _ in range(5))


def test_when_full_the_longest_idle_gives_way() -> None:
    gate = Gate(limit=3, per_client=3, keys=ClientKeys([]))
    evicted: list[str] = []
    slots = [gate.admit(f"198.51.100.{i}") for i in range(3)]
    for name, slot in zip("abc", slots, strict=True):
        assert slot is not None
        gate.idle(slot, functools.partial(evicted.append, name))
    assert slots[0] is not None
    gate.idle(slots[0], None)  # a starts a request: busy, not evictable
    gate.idle(slots[0], lambda: evicted.append("a"))  # ...and is idle again, the newest
    assert gate.admit("198.51.100.9") is not None and evicted == ["b"]
    assert gate.admit("198.51.100.10") is not None and evicted == ["b", "c"]
    assert gate.admit("198.51.100.11") is not None and evicted == ["b", "c", "a"]
    assert gate.admit("198.51.100.12") is None  # nobody idle: refused
    assert (gate.open, gate.evicted, gate.refused) == (3, 3, 1)


def test_per_client_share_above_the_cap_is_a_config_error() -> None:
    server = "[server]\nmax_connections = 10\nmax_connections_per_client = 11\n"
    with pytest.raises(ConfigError) as err:
        config_mod.parse(config_text(tables=NO_RATE_LIMIT + server))
    assert err.value.path == "server.max_connections_per_client"


async def test_an_app_shutdown_that_hangs_is_given_up_after_shutdown_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The lifespan's shutdown is bounded by ``shutdown_timeout`` (the grace), not Hypercorn's
    60 s: a stop whose app cannot finish closing (a frozen Redis) still ends, and says so."""
    cfg = config_mod.parse(
        config_text(tables=NO_RATE_LIMIT + "[server]\nshutdown_grace_seconds = 1\n")
    )
    hc = hypercorn_config(cfg)
    assert hc.shutdown_timeout == 1

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        assert scope["type"] == "lifespan"
        assert (await receive())["type"] == "lifespan.startup"  # type: ignore[operator]
        await send({"type": "lifespan.startup.complete"})  # type: ignore[operator]
        await receive()  # type: ignore[operator]  # lifespan.shutdown...
        await asyncio.sleep(3600)  # ...never completed

    sock = socket.create_server(("127.0.0.1", 0))
    gate = Gate(limit=4, per_client=4, keys=ClientKeys([]))
    started = time.monotonic()
    await listener.serve(app, hc, sock, gate, lambda: asyncio.sleep(0.05))  # type: ignore[arg-type]
    assert time.monotonic() - started < 3
    assert "the app's shutdown did not finish within 1 s" in caplog.text
