"""The wheel a consumer installs: it ships ``py.typed``, so a consumer's ``mypy --strict`` reads
the client library's annotations (PEP 561); and it installs on its own, without the ``dev`` and
``leveldb`` extras, into a fresh virtual environment that serves ``kind = "memory"``.

The wheel is built once per run from a clean copy of the tree (``pyproject.toml``,
``README.md``, ``LICENSE``, ``registryd/``: no stale ``build/`` directory can slip a file in).
For the type check it is installed into a fresh virtual environment whose only other path is
this environment's site-packages (for httpx, msgspec ...), and mypy runs there, outside the
repository, so neither the source tree nor the editable install can stand in for the wheel. For
the serve check, pip installs it with its runtime dependencies from the package index, as an
operator would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from registryd import __version__
from tests.helpers import config_text, write_config

ROOT = Path(__file__).resolve().parent.parent
CONSUMER = Path(__file__).with_name("typed_consumer.py")
MISUSE = """\
from registryd.client import IdentityKeys, RegistryClient

with RegistryClient("https://127.0.0.1:8443", bytes(32)) as client:
    client.register(1, IdentityKeys.generate())
"""


def run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "registryd", src / "registryd", ignore=shutil.ignore_patterns("__pycache__")
    )
    built = run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", "dist", src,
                cwd=tmp_path)  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("registryd-*.whl")
    return wheel


def test_the_wheel_ships_py_typed_and_a_strict_consumer_type_checks(
    wheel: Path, tmp_path: Path
) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "registryd/py.typed" in names and "registryd/client/clients.py" in names

    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python = venv / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    site = Path(purelib.stdout.strip())
    installed = run(
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
        "--target", site, wheel,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    shutil.copy(CONSUMER, tmp_path / "consumer.py")
    (tmp_path / "misuse.py").write_text(MISUSE)
    checked = run(
        sys.executable, "-m", "mypy", "--strict", "--python-executable", python,
        "--cache-dir", tmp_path / "mypy-cache", "consumer.py", "misuse.py", cwd=tmp_path,
    )  # fmt: skip
    # The consumer passes; the misuse fails on the annotation (so the types were read, and
    # an untyped package, which mypy would skip with import-untyped, cannot pass).
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    assert errors == [
        'misuse.py:4: error: Argument 1 to "register" of "RegistryClient" has incompatible '
        'type "int"; expected "str"  [arg-type]'
    ], checked.stdout + checked.stderr


def test_the_wheel_alone_installs_and_serves_memory_storage(wheel: Path, tmp_path: Path) -> None:
    """No dev extra (no trustme, pytest ...), no leveldb extra (no plyvel): a production install
    of the wheel serves kind = "memory"; its version and license come from the one source."""
    meta = zipfile.ZipFile(wheel).read(f"registryd-{__version__}.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in meta.splitlines()
    assert (
        f"registryd-{__version__}.dist-info/licenses/LICENSE" in zipfile.ZipFile(wheel).namelist()
    )

    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    bin_dir = venv / "bin"
    installed = run(bin_dir / "python", "-m", "pip", "install", "--quiet", wheel)
    assert installed.returncode == 0, installed.stderr
    absent = run(bin_dir / "python", "-c", "import plyvel, plyvel_next, trustme, pytest")
    assert "ModuleNotFoundError: No module named 'plyvel'" in absent.stderr
    for name in ("plyvel_next", "trustme", "pytest"):
        found = run(
            bin_dir / "python", "-c", f"import importlib.util as u; print(u.find_spec({name!r}))"
        )
        assert found.stdout.strip() == "None", name
    assert run(bin_dir / "registryd", "--version").stdout == f"registryd {__version__}\n"

    config = write_config(tmp_path / "registry.toml", config_text(kind="memory", mode="http"))
    log = tmp_path / "stderr.log"
    with open(log, "wb") as out:  # outside the repository: nothing imports the source tree
        proc = subprocess.Popen(
            [bin_dir / "registryd", "serve", "--config", config], stderr=out, cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )  # fmt: skip
    try:
        url = _listening_url(log, proc)
        answer = httpx.get(f"{url}/health", timeout=30)
        assert answer.status_code == 200 and answer.json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    assert "storage=memory" in log.read_text()


def _listening_url(log: Path, proc: subprocess.Popen[bytes]) -> str:
    """The URL from the daemon's 'listening on' line (waits up to 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"listening on (\S+)", log.read_text())
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"not listening (exit {proc.poll()}): {log.read_text()}")
