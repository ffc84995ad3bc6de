"""``registryd storage``: export a store's sealed records to a file, import one into an empty
store (backup, and migration between backends: :mod:`registryd.storage.transfer`).

    registryd storage export [--config C] --out FILE [--force] [--dry-run]
    registryd storage import [--config C] --in FILE [--dry-run]

Both open the store named by the config's ``[storage]`` (so the daemon must be stopped: one
process owns a LevelDB) with its index key; the file holds blind indexes and sealed values
only. ``--dry-run`` counts what would move and, for import, checks the whole file and that
the target is empty, writing nothing. A progress bar (tqdm) shows on a terminal only. Exit
codes (:mod:`registryd.cli.common`): 0 success, 1 failure (a bad or foreign file, a non-empty
target, storage errors), 2 usage errors (a memory store, an existing ``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import config
from ..config.file import redact_url
from ..errors import StorageError, StorageLockedError, TransferError, UsageError
from ..storage import Storage, open_storage
from ..storage.memory import MemoryStorage
from ..storage.transfer import Summary, export_store, import_file, verify_file
from ..timespec import now_ms
from .common import command
from .daemon import ENV_CONFIG, config_path

LABELS: dict[type[BaseException], str] = {
    TransferError: "cannot import",
    StorageError: "storage error",
}


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``storage export`` and ``storage import``."""
    p = sub.add_parser(
        "storage",
        help="export or import the sealed records (backup, migration between backends)",
        description="Move a store's sealed records (blind indexes and ciphertext, never "
        "plaintext) to a file and into another, empty store with the same index key. Stop "
        "the daemon first. The file format is described in README, 'Backup and migration'.",
    )
    actions = p.add_subparsers(dest="storage_command", required=True, metavar="ACTION")
    e = actions.add_parser(
        "export",
        help="write every record to a file",
        description="Write every record of the config's store to FILE, sealed as stored "
        "(mode 0600, written to a temporary file and renamed when complete); presences and "
        "spent nonces already expired are left out. Stop the daemon first.",
        epilog="example: registryd storage export --config /etc/registryd/registry.toml "
        "--out /var/backups/registry.rex",
    )
    e.add_argument("--out", required=True, metavar="FILE", help="the export file to write")
    e.add_argument("--force", action="store_true", help="replace FILE if it exists")
    i = actions.add_parser(
        "import",
        help="fill an empty store from a file",
        description="Check FILE completely (format, index key, every record, checksum), "
        "then write it into the config's store, which must be empty. The config must have "
        "the source's index key. A file that does not verify is refused before anything "
        "is written.",
        epilog="example (LevelDB to Redis): registryd storage import --config redis.toml "
        "--in /var/backups/registry.rex",
    )
    i.add_argument("--in", dest="input", required=True, metavar="FILE", help="an export file")
    for a in (e, i):
        a.add_argument("--config", metavar="PATH", help=f"the config (default: ${ENV_CONFIG})")
        a.add_argument(
            "--dry-run", action="store_true", help="count what would move; write nothing"
        )
    e.set_defaults(func=command(cmd_export, labels=LABELS))
    i.set_defaults(func=command(cmd_import, labels=LABELS))


def _config(args: argparse.Namespace) -> config.Config:
    cfg = config.load(config_path(args.config))
    if cfg.storage.kind == "memory":
        raise UsageError(
            '[storage] kind is "memory": that store lives inside a running daemon and is gone '
            "when it stops, so there is nothing to export from or import into here; point "
            "--config at a persistent store (leveldb)"
        )
    return cfg


def _open(cfg: config.Config) -> Storage:
    try:
        return open_storage(cfg)
    except StorageLockedError as exc:
        raise StorageLockedError(f"{exc}; stop the daemon first") from exc


def _bar(desc: str, total: int | None = None) -> Any:
    """A progress bar on stderr when it is a terminal; quiet (disabled) otherwise."""
    return tqdm(total=total, desc=desc, unit=" records", unit_scale=True, disable=None)


class _Bars:
    """Import's two bars: "checking" the file, then "importing" (its total known by then)."""

    def __init__(self) -> None:
        self.bar = _bar("checking")

    def update(self, n: int) -> None:
        self.bar.update(n)

    def next(self, checked: Summary) -> None:
        self.bar.close()
        self.bar = _bar("importing", checked.records)


def _where(cfg: config.Config) -> str:
    if cfg.storage.kind == "redis":  # the URL, without a password it may hold
        return f"redis store at {redact_url(cfg.storage.url)}"
    return f"{cfg.storage.kind} store at {cfg.storage.path}"


def cmd_export(args: argparse.Namespace) -> int:
    cfg = _config(args)
    out = Path(args.out)
    if cfg.storage.kind == "leveldb" and not Path(cfg.storage.path).is_dir():
        raise StorageError(
            f"no LevelDB store at {cfg.storage.path} (storage.path): nothing to export"
        )
    if not args.dry_run and out.exists() and not args.force:
        raise UsageError(f"{out} exists: use --force to replace it")
    started = time.monotonic()
    summary = asyncio.run(_export(cfg, None if args.dry_run else out))
    took = time.monotonic() - started
    if args.dry_run:
        print(f"would export {summary.records:,} records from the {_where(cfg)}: ", end="")
        print(f"{summary.describe()}; about {summary.size:,} bytes")
    else:
        print(f"exported {summary.records:,} records from the {_where(cfg)} to {out} ", end="")
        print(f"({summary.size:,} bytes) in {took:.1f} s: {summary.describe()}")
    return 0


async def _export(cfg: config.Config, out: Path | None) -> Summary:
    storage = _open(cfg)
    try:
        with _bar("exporting") as bar:
            if out is None:
                return await export_store(storage, None, now_ms(), bar.update)
            fd, partial = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as stream:
                    summary = await export_store(storage, stream, now_ms(), bar.update)
                    stream.flush()
                    os.fsync(stream.fileno())
                os.replace(partial, out)  # complete, or not there at all
            finally:
                Path(partial).unlink(missing_ok=True)
            return summary
    finally:
        await storage.close()


def cmd_import(args: argparse.Namespace) -> int:
    cfg = _config(args)
    started = time.monotonic()
    summary = asyncio.run(_import(cfg, Path(args.input), args.dry_run))
    took = time.monotonic() - started
    if args.dry_run:
        print(f"{args.input} verifies; would import {summary.records:,} records into the ", end="")
        print(f"empty {_where(cfg)}: {summary.describe()}")
    else:
        print(f"imported {summary.records:,} records from {args.input} into the ", end="")
        print(f"{_where(cfg)} in {took:.1f} s: {summary.describe()}")
    return 0


async def _import(cfg: config.Config, path: Path, dry_run: bool) -> Summary:
    with path.open("rb") as stream:
        if dry_run and cfg.storage.kind == "leveldb" and not Path(cfg.storage.path).exists():
            with _bar("checking") as bar:  # the target would be created empty: nothing to open
                return verify_file(MemoryStorage(cfg.index_key()), stream, str(path), bar.update)
        storage = _open(cfg)
        try:
            if dry_run:
                if not await storage.is_empty():
                    raise TransferError(f"the target {_where(cfg)} is not empty")
                with _bar("checking") as bar:
                    return verify_file(storage, stream, str(path), bar.update)
            bars = _Bars()
            try:
                name = str(path)
                return await import_file(storage, stream, name, now_ms(), bars.update, bars.next)
            finally:
                bars.bar.close()
        finally:
            await storage.close()
