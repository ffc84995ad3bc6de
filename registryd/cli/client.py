"""``registryd client``: register, resolve, check and announce from the command line.

    registryd client register NAME          create or reuse NAME's keys, register them
    registryd client resolve NAME           print NAME's identity (user_id checked)
    registryd client check NAME             print {"exists": true|false}
    registryd client announce NAME ADDR     announce presence at ADDR, signed with NAME's keys
    registryd client presence NAME          print NAME's presence
    registryd client update NAME            replace NAME's keys by new ones (signed by the old)
    registryd client delete NAME            delete NAME's identity and presence (signed)

Settings: flags first, then the environment, then the client config (a ``[client]`` table, see
:class:`registryd.cli.client_config.ClientConfig`). Exit codes: 0 success, 1 failure (server,
network, config or keys file), 2 usage errors. Errors are one line on stderr; the pepper and private
keys are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ..client import IdentityKeys, RegistryClient
from ..encoding import decode_hex
from ..envelope import PEPPER_LEN
from ..errors import ConfigError, InvalidInput, UsageError
from ..identity import user_id
from ..secret import Secret
from .client_config import ClientConfig, load_client_config
from .common import command

ENV_CONFIG = "REGISTRYD_CLIENT_CONFIG"
ENV_PEPPER = "REGISTRYD_PEPPER_HEX"
DEFAULT_CONFIG = "client.toml"

EPILOG = f"""\
precedence: flags, then ${ENV_PEPPER} (pepper only), then the client config, which is
--client-config, else ${ENV_CONFIG}, else ./{DEFAULT_CONFIG} if it exists. A client config
has one [client] table with the keys url, ca_file, cert_file, key_file, pepper_hex and
keys_dir; relative paths are relative to the working directory.

exit codes: 0 success, 1 failure (server error, network or TLS failure, bad config or keys
file), 2 usage error (missing URL or pepper, invalid name or argument)."""


class _Settings(NamedTuple):
    url: str
    pepper: Secret
    cafile: str | None
    client_cert: tuple[str, str] | None
    keys_dir: Path


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``client`` sub-command; it sets ``func=run``."""
    p = subparsers.add_parser(
        "client",
        help="talk to a registry: register, resolve, check, announce",
        description="Talk to a registry over HTTPS: the envelope crypto is done here, so the "
        "server's pepper is needed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--url", help="registry base URL, e.g. https://127.0.0.1:8443 (default: config url)"
    )
    p.add_argument(
        "--cafile",
        metavar="PATH",
        help="PEM CA bundle to verify the server certificate with "
        "(default: config ca_file, else the system CAs)",
    )
    p.add_argument(
        "--cert",
        metavar="PATH",
        help="PEM client certificate for mTLS, with --key (default: config cert_file)",
    )
    p.add_argument(
        "--key", metavar="PATH", help="PEM private key of --cert (default: config key_file)"
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--pepper-hex",
        metavar="HEX",
        help=f"the server's 32-byte envelope pepper as 64 hex chars; other local users can "
        f"read it in the process list, so prefer ${ENV_PEPPER} or the client config",
    )
    source.add_argument(
        "--client-config",
        metavar="PATH",
        help=f"client config TOML (default: ${ENV_CONFIG}, else ./{DEFAULT_CONFIG} if present)",
    )
    p.add_argument(
        "--keys-dir",
        metavar="DIR",
        help="directory of identity keys files, <handle hex>.json, mode 0600 "
        "(default: config keys_dir, else ./data/client-keys)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="network timeout in seconds, also bounds reading each answer (default: 10)",
    )
    p.set_defaults(func=command(run), transport=None)  # tests put an httpx transport in it

    actions = p.add_subparsers(dest="client_command", required=True, metavar="ACTION")
    name_help = "username: 1-64 UTF-8 bytes after trimming, case-sensitive"
    a = actions.add_parser(
        "register",
        help="register NAME with its keys",
        description="Register NAME. Its keys are read from <keys-dir>/<handle hex>.json, or "
        "created there (mode 0600, directory 0700) on first use. Prints "
        '{"registered": true, "handle": ..., "keys_file": ...}.',
    )
    a.add_argument("name", metavar="NAME", help=name_help)
    a = actions.add_parser(
        "resolve",
        help="print NAME's public identity",
        description="Print NAME's identity as JSON, after checking that its user_id is NAME's "
        "handle; signature_valid says whether its Ed25519 signature verifies. Exits 1 with "
        '"not found" if NAME is not registered.',
    )
    a.add_argument("name", metavar="NAME", help=name_help)
    a = actions.add_parser(
        "check",
        help="print whether NAME is registered",
        description='Print {"exists": true} or {"exists": false}.',
    )
    a.add_argument("name", metavar="NAME", help=name_help)
    a = actions.add_parser(
        "announce",
        help="announce NAME's presence at ADDR",
        description="Announce that NAME is reachable at ADDR, signed with NAME's keys file "
        '(extensions spec §2.3). Prints {"ok": true}.',
    )
    a.add_argument("name", metavar="NAME", help=name_help)
    a.add_argument(
        "addr", metavar="ADDR", help="address, e.g. 203.0.113.7:51820 (at most 256 bytes)"
    )
    a.add_argument(
        "--ts-ms",
        type=int,
        metavar="N",
        help="time of the announcement in Unix milliseconds (default: now)",
    )
    a = actions.add_parser(
        "presence",
        help="print NAME's presence",
        description="Print NAME's unexpired presence as JSON (extensions spec §2.4). Exits 1 "
        'with "not found" if there is none.',
    )
    a.add_argument("name", metavar="NAME", help=name_help)
    a = actions.add_parser(
        "update",
        help="replace NAME's keys by new ones",
        description="Generate new keys for NAME and replace its identity with them, signed by "
        "the keys in its keys file (extensions spec §2.1); the keys file is replaced once the "
        'registry has accepted. Prints {"updated": true, "handle": ..., "keys_file": ...}.',
    )
    a.add_argument("name", metavar="NAME", help=name_help)
    a = actions.add_parser(
        "delete",
        help="delete NAME's identity and presence",
        description="Delete NAME, signed by the keys in its keys file (extensions spec §2.2); "
        'the keys file is kept. Prints {"deleted": true}.',
    )
    a.add_argument("name", metavar="NAME", help=name_help)


def run(args: argparse.Namespace) -> int:
    """Run one ``registryd client`` action; returns the exit code (errors: see
    :func:`registryd.cli.common.command`, which wraps it)."""
    settings = _settings(args)
    with _open_client(settings, args) as client:
        return ACTIONS[args.client_command](client, settings.keys_dir, args)


def _settings(args: argparse.Namespace) -> _Settings:
    file = _client_config(args)
    url = args.url or file.url
    if not url:
        raise UsageError("no registry URL: pass --url or set url in the client config")
    if (args.cert is None) != (args.key is None):
        raise UsageError("--cert and --key must be given together")
    if args.cert is not None:
        client_cert: tuple[str, str] | None = (args.cert, args.key)
    elif file.cert_file is not None and file.key_file is not None:
        client_cert = (file.cert_file, file.key_file)
    else:
        client_cert = None
    return _Settings(
        url=url,
        pepper=_pepper(args, file),
        cafile=args.cafile or file.ca_file,
        client_cert=client_cert,
        keys_dir=Path(args.keys_dir or file.keys_dir),
    )


def _client_config(args: argparse.Namespace) -> ClientConfig:
    path = args.client_config or os.environ.get(ENV_CONFIG)
    if not path:
        if not Path(DEFAULT_CONFIG).is_file():
            return ClientConfig()
        path = DEFAULT_CONFIG
    try:
        return load_client_config(path)
    except ConfigError as exc:
        raise ConfigError(exc.path, f"{exc.message} (in {path})") from exc


def _pepper(args: argparse.Namespace, file: ClientConfig) -> Secret:
    for source, value in (
        ("--pepper-hex", args.pepper_hex),
        (ENV_PEPPER, os.environ.get(ENV_PEPPER)),
    ):
        if value:
            try:
                return Secret(decode_hex(value, PEPPER_LEN, source))
            except InvalidInput:
                raise UsageError(f"{source}: expected 64 hex characters (32 bytes)") from None
    if file.pepper_hex is None:
        raise UsageError(
            f"no pepper: pass --pepper-hex, set ${ENV_PEPPER} or pepper_hex in the client config"
        )
    return file.pepper_hex


def _open_client(settings: _Settings, args: argparse.Namespace) -> RegistryClient:
    try:
        return RegistryClient(
            settings.url,
            settings.pepper.reveal(),
            transport=args.transport,
            cafile=settings.cafile,
            client_cert=settings.client_cert,
            timeout=args.timeout,
        )
    except ValueError as exc:  # a URL without http(s)://
        raise UsageError(f"{exc}, got {settings.url!r}") from exc
    except OSError as exc:  # ssl.SSLError included
        files = [settings.cafile, *(settings.client_cert or ())]
        names = ", ".join(f for f in files if f)
        raise ConfigError("", f"cannot load TLS files ({names}): {exc}") from exc


def _print(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def _register(client: RegistryClient, keys_dir: Path, args: argparse.Namespace) -> int:
    handle = user_id(args.name).hex()
    path = keys_dir / f"{handle}.json"
    if path.exists():
        keys = IdentityKeys.load(path)
    else:
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = IdentityKeys.generate()
        keys.save(path)
    client.register(args.name, keys)
    _print({"registered": True, "handle": handle, "keys_file": str(path)})
    return 0


def _resolve(client: RegistryClient, keys_dir: Path, args: argparse.Namespace) -> int:
    identity = client.resolve(args.name)
    if identity is None:
        print(f"not found: {args.name}", file=sys.stderr)
        return 1
    shown = json.loads(identity.to_json()) | {"signature_valid": identity.verify_signature()}
    fields = (f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in shown.items())
    print("{\n" + ",\n".join(fields) + "\n}")  # one field a line, byte arrays kept on theirs
    return 0


def _check(client: RegistryClient, keys_dir: Path, args: argparse.Namespace) -> int:
    _print({"exists": client.check_user(args.name)})
    return 0


def _keys_file(keys_dir: Path, name: str) -> Path:
    return keys_dir / f"{user_id(name).hex()}.json"


def _owner_keys(keys_dir: Path, name: str) -> IdentityKeys:
    path = _keys_file(keys_dir, name)
    if not path.exists():
        raise UsageError(f"no keys file for {name} in {keys_dir}: register it from here first")
    return IdentityKeys.load(path)


def _announce(client: RegistryClient, keys_dir: Path, args: argparse.Namespace) -> int:
    keys = _owner_keys(keys_dir, args.name)
    client.announce(args.name, args.addr, args.ts_ms, keys=keys)
    _print({"ok": True})
    return 0


def _presence(client: RegistryClient, keys_dir: Path, args: argparse.Namespace) -> int:
    presence = client.presence(args.name)
    if presence is None:
        print(f"not found: {args.name}", file=sys.stderr)
        return 1
    _print({"user_id": presence.user_id, "addr": presence.addr, "ts_ms": presence.ts_ms})
    return 0


def _update(client: RegistryClient, keys_dir: Path, args: argparse.Namespace) -> int:
    keys = _owner_keys(keys_dir, args.name)
    path = _keys_file(keys_dir, args.name)
    pending = path.with_name(path.name + ".new")  # durable before the registry switches keys
    pending.unlink(missing_ok=True)
    new_keys = IdentityKeys.generate()
    new_keys.save(pending)
    try:
        client.update(args.name, keys, new_keys)
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    os.replace(pending, path)
    _print({"updated": True, "handle": user_id(args.name).hex(), "keys_file": str(path)})
    return 0


def _delete(client: RegistryClient, keys_dir: Path, args: argparse.Namespace) -> int:
    client.delete(args.name, _owner_keys(keys_dir, args.name))
    _print({"deleted": True})
    return 0


ACTIONS: dict[str, Callable[[RegistryClient, Path, argparse.Namespace], int]] = {
    "register": _register,
    "resolve": _resolve,
    "check": _check,
    "announce": _announce,
    "presence": _presence,
    "update": _update,
    "delete": _delete,
}
