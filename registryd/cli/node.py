"""``registryd node``: run a node agent (extensions spec §4).

    registryd node init   --config node.toml     make the node key (and a template node.toml)
    registryd node run    --config node.toml     keep the node registered until SIGINT/SIGTERM
    registryd node status --config node.toml     print the agent's state file

Exit codes: 0 success (``status``: the node is registered), 1 failure (config, key, files),
2 usage errors, 3 (``status`` only) the node is not registered or the state file is stale.
The private key is never printed; the public key only as its first 16 characters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import ConfigError
from ..files import write_file
from ..node import config as node_config
from ..node.keys import NodeKey
from ..node.state import State, parse_rfc3339, read_state
from .common import command

if TYPE_CHECKING:
    from ..node.agent import RegistrationAgent

log = logging.getLogger("registryd.node")

NOT_REGISTERED = 3
TEMPLATE_KEY_PATH = "node.key"
STALE_MARGIN_SECONDS = 30

INIT_HELP = """\
Create the node's Ed25519 key (PKCS#8 PEM, mode 0600) at the config's key_path; an existing key
is never overwritten. If the config file does not exist yet, first write a template node.toml
there (key_path = "node.key" beside it) to fill in: registry_url and [payload]."""

RUN_HELP = """\
Register the node with the registry and keep it registered: challenge, register, then a signed
heartbeat every heartbeat_interval_seconds; failures are retried as the extensions spec (section
4) says. The state goes to state_path. SIGINT or SIGTERM stops the agent cleanly (exit 0, state
written as disconnected)."""

STATUS_HELP = """\
Print the state the agent last wrote to state_path: disconnected, registering or registered,
since when, the last heartbeat and the last error. Exit code 0 when registered, 3 when not
registered or when a registered state has not been updated for two heartbeat intervals (is the
agent running?), 1 when the config or state file cannot be read."""


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="PATH", help="the node.toml file")


def add_parsers(sub: Any) -> None:
    """Add ``node init|run|status`` to the ``registryd`` subcommands ``sub``."""
    p = sub.add_parser(
        "node",
        help="node agent: keep a node registered in a registry's directory",
        description="Node agent (extensions spec section 4): keep a node registered.",
    )
    node_sub = p.add_subparsers(dest="node_command", required=True, metavar="COMMAND")

    init = node_sub.add_parser("init", help="make the node key", description=INIT_HELP)
    _config_arg(init)
    init.set_defaults(func=command(cmd_init, labels=LABELS))

    run = node_sub.add_parser("run", help="run the agent", description=RUN_HELP)
    _config_arg(run)
    run.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: info; no level logs the private key)",
    )
    run.set_defaults(func=command(cmd_run, labels=RUN_LABELS, report=_log_error))

    status = node_sub.add_parser("status", help="print the agent's state", description=STATUS_HELP)
    _config_arg(status)
    status.add_argument("--json", action="store_true", help="print the state file as JSON")
    status.set_defaults(func=command(cmd_status, labels=LABELS))


LABELS: dict[type[BaseException], str] = {ConfigError: "config error"}
# The agent reports through its log; OSError is a key or state file it cannot read or write,
# or a health address in use.
RUN_LABELS: dict[type[BaseException], str] = {
    ConfigError: "config error",
    OSError: "cannot run the node agent",
}


def _log_error(line: str) -> None:
    log.error("%s", line)


def _key_exists(key_path: Path) -> FileExistsError:
    return FileExistsError(f"{key_path} exists; refusing to overwrite a node key")


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.config)
    template = not path.exists()
    key_path = Path(
        path.parent / TEMPLATE_KEY_PATH if template else node_config.load(path).key_path
    )
    if key_path.exists() or key_path.is_symlink():
        raise _key_exists(key_path)
    key = NodeKey.generate()
    if template:
        write_file(path, node_config.TEMPLATE.encode("utf-8"), mode=0o644)
    try:
        key.save(key_path)
    except FileExistsError:
        raise _key_exists(key_path) from None
    if template:
        print(f"wrote {path}: fill in registry_url and [payload]")
    print(f"wrote {key_path} (mode 0600), public key {key.pubkey_prefix}...")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..node.agent import RegistrationAgent

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.log_level != "debug":  # httpx logs every request at info: two lines per heartbeat
        logging.getLogger("httpx").setLevel(logging.WARNING)
    agent = RegistrationAgent(node_config.load(args.config))
    asyncio.run(_run(agent))
    return 0


async def _run(agent: RegistrationAgent) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, agent.stop)
    await agent.run()


def cmd_status(args: argparse.Namespace) -> int:
    cfg = node_config.load(args.config)
    try:
        state = read_state(cfg.state_path)
    except FileNotFoundError:
        print(f"state: unknown (no state file at {cfg.state_path}: has the agent run?)")
        return NOT_REGISTERED
    stale_after = 2 * cfg.heartbeat_interval_seconds + STALE_MARGIN_SECONDS
    age = time.time() - parse_rfc3339(state.updated_at)
    stale = state.state is State.REGISTERED and age > stale_after
    if args.json:
        print(json.dumps({**msgspec.to_builtins(state), "stale": stale}, indent=2))
    else:
        for label, value in (
            ("state", state.state.value + (" (stale)" if stale else "")),
            ("since", state.since),
            ("last heartbeat", state.last_heartbeat_at or "-"),
            ("last error", state.last_error or "-"),
            ("next attempt", state.next_attempt_at or "-"),
            ("updated", f"{state.updated_at} ({age:.0f} s ago, pid {state.pid})"),
            ("registry", state.registry_url),
            ("host", state.host),
            ("node key", f"{state.pubkey_prefix}..."),
        ):
            print(f"{label + ':':16}{value}")
        if stale:
            print(
                f"warning: no update for {age:.0f} s (more than {stale_after} s): "
                "is the agent running?",
                file=sys.stderr,
            )
    return 0 if state.state is State.REGISTERED and not stale else NOT_REGISTERED
