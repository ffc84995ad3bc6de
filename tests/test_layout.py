"""The package's layout keeps its promises (issue 9): small modules, no import cycle, config as
data, and a client library and node agent that load no part of the daemon.

The figures come from :mod:`bench.layout`, which reads the source (module-level, function-level
and ``TYPE_CHECKING`` imports alike); ``python -m bench.layout`` prints them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import registryd
from bench.layout import Layout, analyse

LEAVES = {"registryd.errors", "registryd.secret", "registryd.encoding"}

DAEMON_PARTS = (  # what neither the client library nor the node agent may load
    "argon2",
    "_argon2_cffi_bindings",
    "plyvel",
    "plyvel_next",
    "hypercorn",
    "starlette",
    "registryd.keystore",
    "registryd.keyring",
    "registryd.config",
    "registryd.storage",
    "registryd.abuse",
    "registryd.api",
    "registryd.runtime",
    "registryd.app",
    "registryd.server",
    "registryd.cli",
)


def within(name: str, packages: tuple[str, ...]) -> bool:
    """Whether module ``name`` is one of ``packages`` or inside one."""
    return any(name == p or name.startswith(p + ".") for p in packages)


def loaded_by(statement: str) -> list[str]:
    """The modules a fresh interpreter has loaded after ``statement`` (this one has all)."""
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.split()


def test_importing_the_client_loads_no_daemon_part() -> None:
    loaded = loaded_by("import registryd.client")
    # it did import the client and what it needs, so the check below is not vacuous
    assert {"registryd.client", "registryd.client.clients", "httpx", "nacl"} <= set(loaded)
    assert [m for m in loaded if within(m, DAEMON_PARTS)] == []


def test_the_client_settings_file_loads_no_other_command() -> None:
    loaded = loaded_by("import registryd.cli.client_config")
    assert "registryd.cli.client_config" in loaded and "registryd.tomlfile" in loaded
    others = ("registryd.cli.parser", "registryd.cli.daemon", "registryd.cli.keys", "argon2")
    assert [m for m in loaded if within(m, others)] == []


def test_the_node_agent_loads_no_daemon_part() -> None:
    loaded = loaded_by("import registryd.node.agent")
    assert {"registryd.node.agent", "registryd.node.directory_client", "httpx"} <= set(loaded)
    daemon = tuple(p for p in DAEMON_PARTS if p.startswith("registryd."))  # its health
    assert [m for m in loaded if within(m, daemon)] == []  # endpoint serves with Hypercorn


@pytest.fixture(scope="module")
def layout() -> Layout:
    found = analyse(Path(registryd.__file__).parent)
    # the analysis sees the package and its imports, so the checks below are not vacuous
    assert len(found.paths) > 50 and "registryd.runtime" in found.imports["registryd.app"]
    assert ("registryd.node", "registryd.node.agent") in found.type_only
    return found


def test_no_module_is_over_500_lines_and_the_median_is_at_most_200(layout: Layout) -> None:
    assert {m: n for m, n in layout.lines.items() if n > 500} == {}
    assert layout.median <= 200


def test_no_import_cycle_type_only_imports_included(layout: Layout) -> None:
    assert layout.cycles() == []
    assert layout.package_cycles() == []  # nor between the top-level modules and packages


def test_the_config_is_data_it_loads_only_leaves(layout: Layout) -> None:
    reached = layout.reach("registryd.config")
    assert "registryd.tomlfile" in reached
    # every module the config loads loads nothing of registryd but errors, secret, encoding
    assert {m: layout.reach(m) for m in reached if not set(layout.reach(m)) <= LEAVES} == {}
    assert not {"registryd.keystore", "registryd.envelope", "registryd.wire"} & set(reached)


def test_the_envelope_crypto_does_not_climb_back_into_the_wire(layout: Layout) -> None:
    assert "registryd.envelope" in layout.imports["registryd.wire"]
    assert "registryd.wire" not in layout.reach("registryd.envelope")
