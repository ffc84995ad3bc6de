"""What ``docker build .`` would send as its build context, with and without ``.dockerignore``.

No Docker engine runs here, so the context is made by docker-py's own builder
(``docker.utils.build.tar`` with the patterns its ``APIClient.build`` reads from
``.dockerignore``), the tar a ``docker build`` through docker-py uploads. ``python -m
bench.docker_context [DIR]`` prints files and bytes both ways for DIR (default: this checkout).
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path
from typing import NamedTuple

import docker.utils.build  # docker-py, a dev dependency

ROOT = Path(__file__).resolve().parent.parent


class Context(NamedTuple):
    files: dict[str, int]  # path in the context -> bytes
    tar_bytes: int  # the uncompressed tar docker would send


def dockerignore(root: Path) -> list[str]:
    """The patterns of ``root/.dockerignore`` as docker-py reads them (no blanks, no comments)."""
    lines = (root / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def build_context(root: Path, *, ignore: bool = True) -> Context:
    """The build context of ``root``, filtered by its ``.dockerignore`` when ``ignore``."""
    patterns = dockerignore(root) if ignore else None
    with docker.utils.build.tar(str(root), exclude=patterns, dockerfile=(None, None)) as archive:
        size = archive.seek(0, 2)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            files = {m.name: m.size for m in tar.getmembers() if m.isfile()}
    return Context(files, size)


def main(argv: list[str] | None = None) -> int:
    root = Path((argv or sys.argv[1:] or [str(ROOT)])[0])
    for label, ignore in (("without .dockerignore", False), ("with .dockerignore", True)):
        context = build_context(root, ignore=ignore)
        mib = context.tar_bytes / 2**20
        print(f"{label:>22}: {len(context.files):6d} files, {mib:9.2f} MiB tar")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
