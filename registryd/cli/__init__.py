"""The ``registryd`` command line: ``main(argv) -> exit code``, testable without a subprocess.

parser.py         the argument parser and :func:`main`
common.py         the one way errors become exit codes (0 success, 1 failure, 2 usage)
daemon.py         serve, check-config, init, certs dev, hash-token
keys.py           keys list|generate|rotate|retire|prune|passwd|import
client.py         client register|resolve|check|announce; client_config.py: its settings file
directory.py      directory list|remove (the node directory, through the admin API)
node.py           node init|run|status (the node agent)
health.py         health --url URL: a running daemon's /health, for Docker and monitors
storage.py        storage export|import: sealed records to a file and back

Modules are loaded when a command needs them: importing ``registryd.cli.client_config`` (the
client's settings, for library users) loads no other command.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    """Run ``registryd`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    from .parser import main as run

    return run(argv)


def build_parser() -> argparse.ArgumentParser:
    """The ``registryd`` argument parser, every subcommand included."""
    from .parser import build_parser as build

    return build()
