"""The package's layout keeps its promises: the client library loads no part of the daemon."""

from __future__ import annotations

import subprocess
import sys

DAEMON_PARTS = (
    "argon2",
    "_argon2_cffi_bindings",
    "plyvel",
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
