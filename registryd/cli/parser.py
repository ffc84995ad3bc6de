"""The ``registryd`` command line: ``main(argv) -> exit code``, testable without a subprocess.

    registryd serve --config PATH           run the daemon ([--log-level L] [--debug-logger NAME]
                                            [--pid-file PATH]: its PID, for kill -HUP)
    registryd check-config PATH             validate a config, print it with secrets redacted
                                            (exit 1 also when no envelope key can seal now)
    registryd init --out PATH [--dev]       write a fresh config with new keys (mode 0600)
    registryd certs dev --out DIR           make a dev CA, server and client certificates
    registryd client ...                    talk to a registry (register, resolve, check, announce)
    registryd keys ...                      envelope keystore: list, generate, rotate, retire ...
    registryd hash-token                    Argon2id hash of a token read on stdin, for the config
    registryd directory list|remove HOST    the node directory, through the admin API
    registryd node init|run|status          the node agent (extensions spec section 4)
    registryd health --url URL [--cafile CA] is a running daemon healthy? (exit 0 / 1)
    registryd storage export|import ...     sealed records to a file and back (backup, migration)

Exit codes (:mod:`registryd.cli.common`): 0 success, 1 failure (config, storage, server
errors), 2 usage errors; ``node status`` also 3 (not registered).
"""

from __future__ import annotations

import argparse

from .. import __version__
from . import client, daemon, directory, health, keys, node, storage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registryd",
        description="Privacy-focused, Enigma-compatible registry daemon.",
    )
    parser.add_argument("--version", action="version", version=f"registryd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    daemon.add_parsers(sub)
    client.add_parser(sub)
    directory.add_parser(sub)  # node directory administration (extensions spec §3.7)
    keys.add_parsers(sub)
    node.add_parsers(sub)
    health.add_parser(sub)
    storage.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
