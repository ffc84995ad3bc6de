"""The event loop that serves: ``[server] event_loop`` (issue 15).

``"asyncio"`` (the default) is the standard library's loop; ``"uvloop"`` is uvloop's, built on
libuv (``pip install 'registryd[uvloop]'``), which runs the same daemon with less loop overhead
per request (README Performance gives the measured figure). Everything else is the same; one
difference operators see: uvloop runs TLS in its own code, so the 16 KiB TLS read buffer that
:mod:`registryd.transport.listener` sets on asyncio's (which bounds the memory of connections
stuck in their handshake) does not apply, and each such connection holds uvloop's buffer.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")
INSTALL = "pip install 'registryd[uvloop]'"


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``[server] event_loop`` = ``name`` (None: asyncio's default).

    Raises :class:`ConfigError` on ``server.event_loop`` when uvloop is asked for and not
    installed, naming the extra."""
    if name == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ModuleNotFoundError:
        raise ConfigError(
            "server.event_loop", f'"uvloop" is not installed: {INSTALL}, or use "asyncio"'
        ) from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """``asyncio.run(main)`` on the loop ``event_loop`` names (:func:`loop_factory`)."""
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        return runner.run(main)
