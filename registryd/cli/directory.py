"""``registryd directory``: the node directory through the admin API (extensions spec §3.7).

    registryd directory list [--json]       the nodes as a table (or the admin API's JSON)
    registryd directory remove HOST         remove a node

The admin API needs a token from ``[admin] token_hashes``: read from ``--token-file`` or the
``REGISTRYD_ADMIN_TOKEN`` environment variable (never a command-line value, which other users
could read in the process list). Exit codes (:mod:`registryd.cli.common`): 0 success,
1 failure (server, network, TLS), 2 usage errors (no token).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
from pathlib import Path
from typing import Any

import httpx
import msgspec

from ..errors import ServerError, TransportError, UsageError
from ..wire import ErrorBody
from .common import command

ENV_TOKEN = "REGISTRYD_ADMIN_TOKEN"  # noqa: S105 - a variable name, not a token
DEFAULT_URL = "https://127.0.0.1:8443"
COLUMNS = ("status", "name", "host", "ip", "country", "latency", "uptime", "last seen", "key")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``directory`` sub-command (``list``, ``remove HOST``)."""
    p = subparsers.add_parser(
        "directory",
        help="list or remove node directory entries (admin API)",
        description="List or remove node directory entries through the admin API "
        f"(token from --token-file or ${ENV_TOKEN}).",
    )
    p.add_argument("--url", default=DEFAULT_URL, help=f"registry base URL ({DEFAULT_URL})")
    p.add_argument("--cafile", metavar="PEM", help="CA to verify the registry's certificate")
    p.add_argument("--cert", metavar="PEM", help="client certificate (mTLS)")
    p.add_argument("--key", metavar="PEM", help="client certificate's key (mTLS)")
    p.add_argument("--token-file", metavar="PATH", help=f"admin token file (else ${ENV_TOKEN})")
    sub = p.add_subparsers(dest="directory_command", required=True, metavar="ACTION")
    a = sub.add_parser("list", help="print the directory as a table")
    a.add_argument("--json", action="store_true", help="print the admin API's JSON instead")
    a.set_defaults(func=command(_list))
    a = sub.add_parser("remove", help="remove a node")
    a.add_argument("host", metavar="HOST")
    a.set_defaults(func=command(_remove))


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        return Path(args.token_file).read_text(encoding="utf-8").strip() or None
    return os.environ.get(ENV_TOKEN, "").strip() or None


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    token = _token(args)
    if token is None:
        raise UsageError(f"no admin token: use --token-file or set ${ENV_TOKEN}")
    verify: ssl.SSLContext | bool = True
    if args.cafile or args.cert:
        verify = ssl.create_default_context(cafile=args.cafile)
        if args.cert:
            verify.load_cert_chain(args.cert, args.key)
    try:
        with httpx.Client(base_url=args.url, verify=verify, timeout=30, trust_env=False) as http:
            response = http.request(
                method, path, json=body, headers={"authorization": f"Bearer {token}"}
            )
    except httpx.HTTPError as exc:
        raise TransportError(f"{method} {args.url}{path}: {exc or type(exc).__name__}") from exc
    status = response.status_code
    if status != 200:
        try:
            error = msgspec.json.decode(response.content, type=ErrorBody).error
        except msgspec.DecodeError:
            raise ServerError(status, f"HTTP_{status}", response.reason_phrase) from None
        raise ServerError(status, error.code, error.message)
    try:
        data = response.json()
    except ValueError:
        data = None
    return data


def _clean(value: object) -> str:
    """A table cell: text a node chose, with control characters shown escaped."""
    text = "-" if value is None else str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def table(nodes: list[dict[str, Any]]) -> str:
    """The directory as a text table, one node per line, in listing order."""
    rows: list[tuple[str, ...]] = [COLUMNS]
    for node in nodes:
        ratio = node.get("uptime_ratio")
        latency = node.get("last_latency_ms")
        rows.append(
            tuple(
                _clean(cell)
                for cell in (
                    node.get("status"),
                    node.get("name"),
                    node.get("host"),
                    node.get("ip"),
                    node.get("country_code"),
                    None if latency is None else f"{latency} ms",
                    None if ratio is None else f"{ratio:.0%}",
                    node.get("last_seen_at"),
                    str(node.get("pubkey_b64", ""))[:16],
                )
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _list(args: argparse.Namespace) -> int:
    data = _call(args, "GET", "/admin/directory")
    nodes = data.get("nodes", []) if isinstance(data, dict) else []
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else table(nodes))
    return 0


def _remove(args: argparse.Namespace) -> int:
    _call(args, "POST", "/admin/directory/remove", {"host": args.host})
    print(f"removed {_clean(args.host)}")
    return 0
