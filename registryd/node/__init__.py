"""The node agent (extensions spec §4): keeps a node registered in a registry's directory (§3).

    from registryd.node import RegistrationAgent, load_config

    agent = RegistrationAgent(load_config("node.toml"))
    await agent.run()          # until agent.stop()

Modules: :mod:`~registryd.node.config` (``node.toml``), :mod:`~registryd.node.keys` (the Ed25519
key file), :mod:`~registryd.node.protocol` (§3 bodies and signed messages),
:mod:`~registryd.node.directory_client` (the HTTP calls), :mod:`~registryd.node.backoff`
(classification and waits), :mod:`~registryd.node.state` (the state file),
:mod:`~registryd.node.agent` (the loop), :mod:`~registryd.node.health` (``GET /health``),
:mod:`registryd.cli.node` (``registryd node init|run|status``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import NodeConfig, PayloadConfig
from .config import load as load_config
from .keys import NodeKey
from .state import AgentState, State, read_state

if TYPE_CHECKING:
    from .agent import RegistrationAgent

__all__ = [
    "AgentState",
    "NodeConfig",
    "NodeKey",
    "PayloadConfig",
    "RegistrationAgent",
    "State",
    "load_config",
    "read_state",
]


def __getattr__(name: str) -> Any:
    # The agent pulls in httpx, Hypercorn and the server module; `registryd --help` and the
    # other subcommands import this package through the CLI and need none of them (80 ms).
    if name == "RegistrationAgent":
        from .agent import RegistrationAgent

        return RegistrationAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
