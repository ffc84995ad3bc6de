"""The wheel a consumer installs: it ships ``py.typed``, so a consumer's ``mypy --strict`` reads
the client library's annotations (PEP 561).

The wheel is built from a clean copy of the tree (``pyproject.toml``, ``README.md``,
``registryd/``: no stale ``build/`` directory can slip a file in), installed into a fresh
virtual environment whose only other path is this environment's site-packages (for httpx,
msgspec ...), and mypy runs there, outside the repository, so neither the source tree nor the
editable install can stand in for the wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

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


def build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "registryd", src / "registryd", ignore=shutil.ignore_patterns("__pycache__")
    )
    built = run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", "dist", src,
                cwd=tmp_path)  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("registryd-*.whl")
    return wheel


def test_the_wheel_ships_py_typed_and_a_strict_consumer_type_checks(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
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
