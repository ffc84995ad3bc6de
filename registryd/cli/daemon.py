"""The daemon's commands: ``serve``, ``check-config``, ``init``, ``certs dev``.

``check-config`` prints the config with every secret redacted (:func:`summary`) and exits 1
when no envelope key can seal now (:func:`active_key_problem`), as the daemon would serve
degraded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from .. import config, eventloop, logs, scaffold
from ..config.file import redact_url
from ..errors import ConfigError, KeyUnavailable, MissingDependency, StorageError, UsageError
from ..keyring import KeyRing, describe_key, key_warnings
from ..keystore import load_keyring
from ..pidfile import PidFile
from ..timespec import iso, now_ms
from .common import command

log = logging.getLogger("registryd")


def _serve(cfg: config.Config, args: argparse.Namespace) -> None:
    """Serve ``cfg``; with ``--pid-file``, claimed before binding, written once bound and
    removed on exit (:mod:`registryd.pidfile`)."""
    from ..server import serve

    if args.worker_fds:  # one of [server] workers, on the sockets its supervisor bound
        from ..workers import serve_worker

        serve_worker(cfg, args.config, args.worker_fds, args.metrics_fd, args.metrics_dir)
        return
    pid_file = None if args.pid_file is None else PidFile(args.pid_file)
    if pid_file is not None:
        pid_file.claim()
    on_ready = (lambda _: None) if pid_file is None else (lambda _: pid_file.write())
    try:
        if cfg.server.workers > 1:
            from ..workers import supervise

            supervise(cfg, _worker_args(args), on_ready)
        else:
            eventloop.run(
                serve(cfg, config_path=args.config, on_ready=on_ready), cfg.server.event_loop
            )
    finally:
        if pid_file is not None:
            pid_file.remove()


def _worker_args(args: argparse.Namespace) -> list[str]:
    """The ``serve`` arguments a worker gets from its supervisor's (no pid file)."""
    out = ["--config", args.config]
    if args.log_level:
        out += ["--log-level", args.log_level]
    if args.log_format:
        out += ["--log-format", args.log_format]
    for name in args.debug_logger:
        out += ["--debug-logger", name]
    return out


# The daemon reports through its log; OSError is e.g. an address in use.
SERVE_LABELS: dict[type[BaseException], str] = {
    ConfigError: "config error",
    StorageError: "storage error",
    OSError: "cannot serve",
}


def _log_error(line: str) -> None:
    log.error("%s", line)


ENV_CONFIG = "REGISTRYD_CONFIG"  # the config path when --config (check-config: PATH) is not given


def config_path(given: str | None) -> str:
    """``given``, else ``$REGISTRYD_CONFIG``; a :class:`UsageError` when neither is set."""
    path = given or os.environ.get(ENV_CONFIG, "")
    if not path:
        raise UsageError(f"name the config file: --config PATH, or set {ENV_CONFIG}")
    return path


def cmd_serve(args: argparse.Namespace) -> int:
    """Log as the flags say until the config is read, then as ``[logging]`` says where no
    flag was given (``--log-level`` and ``--log-format`` win over the file)."""
    logs.setup(args.log_level or "info", args.debug_logger, fmt=args.log_format or "plain")
    args.config = config_path(args.config)
    cfg = config.load(args.config)
    level = args.log_level or cfg.logging.level
    logs.setup(level, args.debug_logger, fmt=args.log_format or cfg.logging.format)
    _serve(cfg, args)
    return 0


def active_key_problem(cfg: config.Config, keyring: KeyRing, at_ms: int) -> ConfigError | None:
    """Why no envelope key may seal at ``at_ms`` (every active key expired, or not yet valid),
    naming the key path, or None when one may. The daemon would answer ``/resolve`` and
    ``/envelope_pubkey`` with 503 KEY_UNAVAILABLE; ``check-config`` exits non-zero."""
    try:
        keyring.active(at_ms)
        return None
    except KeyUnavailable:
        pass
    reasons = []
    for key in (k for k in keyring.keys if k.active):
        if key.expired(at_ms):
            reasons.append(f"{key.kid.hex()} expired at {iso(key.not_after_ms)}")
        else:
            reasons.append(f"{key.kid.hex()} is valid only from {iso(key.not_before_ms)}")
    path = "envelope.keystore_path"
    if cfg.envelope.keystore_path is None:
        first = next(i for i, k in enumerate(cfg.envelope.keys) if k.active)
        path = f"envelope.keys[{first}].not_after_epoch_ms"
    keys = "active keys" if len(reasons) > 1 else "active key"
    return ConfigError(
        path,
        f"no active envelope key is valid now ({keys} {'; '.join(reasons)}): /resolve and "
        "/envelope_pubkey would answer 503 KEY_UNAVAILABLE; add or activate a key",
    )


def summary(cfg: config.Config, keyring: KeyRing | None = None) -> dict[str, Any]:
    """A printable view of ``cfg`` with every secret redacted (for ``check-config``); the
    envelope keys (from ``keyring``, default the config's own) by kid, public key and state."""
    out: dict[str, Any] = msgspec.to_builtins(cfg, enc_hook=lambda s: "<redacted>")
    now = now_ms()
    out["envelope"]["keys"] = [
        describe_key(key, now) for key in (keyring or load_keyring(cfg.envelope)).keys
    ]
    if cfg.storage.index_key_hex is None:
        out["storage"]["index_key_hex"] = "<derived from pepper>"
    out["storage"]["url"] = redact_url(cfg.storage.url)  # a Redis password
    out["rate_limit"]["storage_uri"] = redact_url(cfg.rate_limit.storage_uri)
    return out


def cmd_check_config(args: argparse.Namespace) -> int:
    from ..server import hypercorn_config
    from ..transport.peers import peer_hypercorn_config

    logs.setup("warning")
    now = now_ms()
    args.path = config_path(args.path)
    cfg = config.load(args.path)
    peer_hypercorn_config(cfg, hypercorn_config(cfg))
    if cfg.storage.kind == "leveldb":
        from ..storage.binding import leveldb_module

        leveldb_module()  # the daemon would stop here: the leveldb extra is not installed
    warnings = []
    if cfg.storage.kind == "redis":
        from ..storage.redis_conn import server_warnings

        s = cfg.storage
        warnings = server_warnings(s.url, s.ca_file, s.timeout_ms / 1000)
    keyring = load_keyring(cfg.envelope)
    print(json.dumps(summary(cfg, keyring), indent=2))
    if problem := active_key_problem(cfg, keyring, now):
        print(f"config error: {problem}", file=sys.stderr)  # the daemon would start degraded
        return 1
    warnings += key_warnings(keyring, now, cfg.envelope.expiry_warning_days)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.path}: OK", file=sys.stderr)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    out = Path(args.out)
    pepper_hex = scaffold.random_hex(32)
    server_text = scaffold.server_config(pepper_hex, dev=args.dev)
    written = [out]
    scaffold.write_private(out, server_text, force=args.force)
    if args.dev:
        client_out = Path(args.client_out) if args.client_out else out.with_name("client.toml")
        scaffold.write_private(client_out, scaffold.client_config(pepper_hex), force=args.force)
        written.append(client_out)
    for path in written:
        print(f"wrote {path} (mode 0600)")
    return 0


def cmd_certs_dev(args: argparse.Namespace) -> int:
    try:
        from ..certs import write_dev_certs
    except ModuleNotFoundError as exc:
        if exc.name != "trustme":
            raise
        raise MissingDependency(
            "registryd certs dev needs trustme, a development dependency that production "
            'installs leave out: pip install "registryd[dev]" (or pip install trustme)'
        ) from None

    made = write_dev_certs(Path(args.out), force=args.force)
    print(f"wrote development certificates to {args.out} (CA: {made.ca})")
    return 0


def _logger_name(text: str) -> str:
    if not text.strip() or text == "root":
        raise argparse.ArgumentTypeError("name a library's logger, e.g. hpack")
    return text


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``, ``check-config``, ``init`` and ``certs dev``."""
    p = sub.add_parser("serve", help="run the daemon", description="Run the registry daemon.")
    p.add_argument(
        "--config", metavar="PATH", help=f"the TOML config file (default: ${ENV_CONFIG})"
    )
    p.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        help="verbosity of registryd's own log (default: [logging] level, else info; no level "
        "logs secrets or handles); other libraries log warnings and errors only",
    )
    p.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help="plain text or one JSON object per line (default: [logging] format, else plain); "
        "applies from the first line, before the config is read",
    )
    p.add_argument(
        "--debug-logger",
        action="append",
        default=[],
        metavar="NAME",
        type=_logger_name,
        help="also log this library's logger at debug level (hpack, h2, hypercorn.error, "
        "asyncio ...); repeatable. UNSAFE: their lines may hold bearer tokens and handles",
    )
    p.add_argument(
        "--pid-file",
        metavar="PATH",
        help='write the daemon\'s PID here once listening (for kill -HUP "$(cat PATH)"); '
        "removed on exit; refuses to start if it names a running registryd",
    )
    p.add_argument("--worker-fds", help=argparse.SUPPRESS)  # [server] workers: the supervisor's
    p.add_argument("--metrics-fd", type=int, help=argparse.SUPPRESS)  # worker 0's
    p.add_argument("--metrics-dir", help=argparse.SUPPRESS)  # multiprocess metrics
    p.set_defaults(func=command(cmd_serve, labels=SERVE_LABELS, report=_log_error))

    p = sub.add_parser(
        "check-config",
        help="validate a config file",
        description="Validate a config (and its TLS files); print it with secrets redacted. "
        "Exits 1 on any config error, and when no envelope key is valid now (the daemon would "
        "answer 503 to /resolve and /envelope_pubkey).",
    )
    p.add_argument("path", metavar="PATH", nargs="?", help=f"the config (default: ${ENV_CONFIG})")
    p.set_defaults(func=command(cmd_check_config, labels={ConfigError: "config error"}))

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
        help="development setup: 127.0.0.1:8443, certs/ TLS files, LevelDB in ./data/db, "
        "friendly rate limits (burst 100, 10 s bans), and a client.toml beside the config for "
        "`registryd client`",
    )
    p.add_argument("--client-out", metavar="PATH", help="with --dev: client config path")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=command(cmd_init))

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
    d.set_defaults(func=command(cmd_certs_dev))
