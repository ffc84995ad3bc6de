"""The node agent (extensions spec §4): keeps a node registered in a registry's directory (§3).

    from registryd.node import RegistrationAgent, load_config

    agent = RegistrationAgent(load_config("node.toml"))
    await agent.run()          # until agent.stop()

Modules: :mod:`~registryd.node.config` (``node.toml``), :mod:`~registryd.node.keys` (the Ed25519
key file), :mod:`~registryd.node.protocol` (§3 bodies and signed messages),
:mod:`~registryd.node.directory_client` (the HTTP calls), :mod:`~registryd.node.backoff`
(classification and waits), :mod:`~registryd.node.state` (the state file),
:mod:`~registryd.node.agent` (the loop), :mod:`~registryd.node.health` (``GET /health``),
:mod:`~registryd.node.cli` (``registryd node init|run|status``).
"""

from .agent import RegistrationAgent
from .config import NodeConfig, PayloadConfig
from .config import load as load_config
from .keys import NodeKey
from .state import AgentState, State, read_state

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
