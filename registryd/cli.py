"""The ``registryd`` command line: ``main(argv) -> exit code``, testable without a subprocess.

    registryd serve --config PATH           run the daemon
    registryd check-config PATH             validate a config, print it with secrets redacted
    registryd init --out PATH [--dev]       write a fresh config with new keys (mode 0600)
    registryd certs dev --out DIR           make a dev CA, server and client certificates
    registryd client ...                    talk to a registry (register, resolve, check, announce)
    registryd keys ...                      envelope keystore: list, generate, rotate, retire ...
    registryd hash-token                    Argon2id hash of a token read on stdin, for the config
    registryd directory list|remove HOST    the node directory, through the admin API

Exit codes: 0 success, 1 failure (config, storage, server errors), 2 usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from . import __version__, client_cli, config, keys_cli, scaffold
from .directory import cli as directory_cli
from .envelope import key_warnings, now_ms
from .errors import ConfigError, StorageError

log = logging.getLogger("registryd")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    _setup_logging(args.log_level)
    try:
        cfg = config.load(args.config)
        asyncio.run(serve(cfg, config_path=args.config))
    except ConfigError as exc:
        log.error("config error: %s", exc)
        return 1
    except StorageError as exc:
        log.error("storage error: %s", exc)
        return 1
    except OSError as exc:  # e.g. address in use
        log.error("cannot serve: %s", exc)
        return 1
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from .server import hypercorn_config

    _setup_logging("warning")
    try:
        cfg = config.load(args.path)
        hypercorn_config(cfg)
        keyring = cfg.keyring()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(config.summary(cfg, keyring), indent=2))
    for warning in key_warnings(keyring, now_ms(), cfg.envelope.expiry_warning_days):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.path}: OK", file=sys.stderr)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    out = Path(args.out)
    pepper_hex = scaffold.random_hex(32)
    server_text = scaffold.server_config(pepper_hex, dev=args.dev)
    written = [out]
    try:
        scaffold.write_private(out, server_text, force=args.force)
        if args.dev:
            client_out = Path(args.client_out) if args.client_out else out.with_name("client.toml")
            scaffold.write_private(client_out, scaffold.client_config(pepper_hex), force=args.force)
            written.append(client_out)
    except (FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path} (mode 0600)")
    return 0


def cmd_certs_dev(args: argparse.Namespace) -> int:
    from .certs import write_dev_certs

    try:
        made = write_dev_certs(Path(args.out), force=args.force)
    except (FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote development certificates to {args.out} (CA: {made.ca})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registryd",
        description="Privacy-focused, Enigma-compatible registry daemon.",
    )
    parser.add_argument("--version", action="version", version=f"registryd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the daemon", description="Run the registry daemon.")
    p.add_argument("--config", required=True, metavar="PATH", help="the TOML config file")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: info; no level logs secrets)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "check-config",
        help="validate a config file",
        description="Validate a config (and its TLS files); print it with secrets redacted.",
    )
    p.add_argument("path", metavar="PATH")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser(
        "init",
        help="write a fresh config with new keys",
        description="Write a new config with a random pepper, index key and one active "
        "envelope key (random 8-byte kid). The file is created with mode 0600.",
    )
    p.add_argument("--out", required=True, metavar="PATH", help="where to write the config")
    p.add_argument(
        "--dev",
        action="store_true",
        help="development setup: 127.0.0.1:8443, certs/ TLS files, LevelDB in ./data/registry, "
        "and a client.toml beside the config for `registryd client`",
    )
    p.add_argument("--client-out", metavar="PATH", help="with --dev: client config path")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("certs", help="certificate tools", description="Certificate tools.")
    certs_sub = p.add_subparsers(dest="certs_command", required=True, metavar="KIND")
    d = certs_sub.add_parser(
        "dev",
        help="make development certificates",
        description="Make a dev CA, a server certificate for localhost, 127.0.0.1 and ::1, and a "
        "client certificate for mTLS. For development only.",
    )
    d.add_argument(
        "--out", default="certs", metavar="DIR", help="output directory (default: certs)"
    )
    d.add_argument("--force", action="store_true", help="overwrite existing files")
    d.set_defaults(func=cmd_certs_dev)

    client_cli.add_parser(sub)
    directory_cli.add_parser(sub)  # node directory administration (extensions spec §3.7)
    keys_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
