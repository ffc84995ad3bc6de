"""``registryd health``: is a running daemon healthy? For Docker's HEALTHCHECK and monitors.

    registryd health --url URL [--cafile CA] [--cert C [--key K]] [--servername NAME]
                     [--timeout S]

GETs ``URL`` (``/health`` is added to a URL without a path) over TLS (``--cafile``: the CA
bundle to trust instead of the system's; ``--cert``/``--key``: a client certificate for mTLS;
``--servername``: the name to send as SNI and to verify the certificate against, for
``https://127.0.0.1:8443`` when the certificate names the public host) or plain HTTP, follows
no redirect and ignores proxy variables. Exit 0 with ``ok: ...`` on stdout when the answer is
``200 {"status": "ok"}``; otherwise exit 1 with one line on stderr saying why (connection
refused, TLS failure, timeout, ``503 degraded`` ...).

Each option defaults to an environment variable, ``REGISTRYD_HEALTH_URL``, ``_CAFILE``,
``_CERT``, ``_KEY`` and ``_SERVERNAME``, so a container's HEALTHCHECK is set with ``docker run
-e``.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..logs import escape

MAX_BODY = 64 * 1024
FAILURE = 1
ENV_PREFIX = "REGISTRYD_HEALTH_"


def health_url(url: str) -> str:
    """``url``, with ``/health`` as its path when it has none (a base URL)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/health")
    return urlunsplit(parts)


def _tls(args: argparse.Namespace) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=args.cafile)
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    return context


def _sni(args: argparse.Namespace) -> dict[str, str]:
    return {"sni_hostname": args.servername} if args.servername else {}


def _read(response: httpx.Response) -> bytes:
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_BODY:
            break
    return body


def check(args: argparse.Namespace) -> tuple[bool, str]:
    """(healthy, one-line reason) for the daemon at ``args.url``."""
    if not args.url:
        return False, f"cannot check: no --url (or {ENV_PREFIX}URL)"
    if args.key and not args.cert:
        return False, "cannot check: --key goes with --cert"
    try:
        url = health_url(args.url)
        verify = _tls(args) if url.startswith("https:") else False
    except (ValueError, OSError, ssl.SSLError) as exc:
        return False, f"cannot check: {exc}"
    try:
        with (
            httpx.Client(verify=verify, timeout=args.timeout, trust_env=False) as client,
            client.stream("GET", url, extensions=_sni(args)) as response,
        ):
            body = _read(response)
    except httpx.TimeoutException:
        return False, f"no answer from {url} within {args.timeout:g} s"
    except httpx.HTTPError as exc:
        return False, f"{url}: {exc or type(exc).__name__}"
    try:
        answer = json.loads(body)
        status = answer.get("status") if isinstance(answer, dict) else None
    except ValueError:
        answer, status = None, None
    if response.status_code == 200 and status == "ok":
        kid = answer.get("active_kid") if isinstance(answer, dict) else None
        return True, f"{url}: 200 ok (active kid {kid})"
    shown = f" {status}" if isinstance(status, str) else ""
    reason = answer.get("reason") if isinstance(answer, dict) else None
    because = f": {reason}" if isinstance(reason, str) else ""
    return False, f"{url}: {response.status_code}{shown}{because}"


def cmd_health(args: argparse.Namespace) -> int:
    healthy, reason = check(args)
    line = escape(" ".join(reason.splitlines()))  # it may quote the server
    if healthy:
        print(f"ok: {line}")
        return 0
    print(f"unhealthy: {line}", file=sys.stderr)
    return FAILURE


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError("expected seconds, more than 0 and at most 300")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``health``."""
    p = sub.add_parser(
        "health",
        help="check a running daemon's /health (exit 0 healthy, 1 not)",
        description="GET a daemon's /health over HTTP, TLS or mTLS. Exit 0 when it answers "
        '200 {"status": "ok"}; exit 1, with one line saying why, for anything else.',
    )
    env = os.environ.get
    p.add_argument(
        "--url",
        default=env(f"{ENV_PREFIX}URL"),
        help=f"the daemon's base URL (https://127.0.0.1:8443) or its /health URL "
        f"(default: ${ENV_PREFIX}URL)",
    )
    p.add_argument(
        "--cafile",
        metavar="CA",
        default=env(f"{ENV_PREFIX}CAFILE"),
        help=f"CA bundle to trust (default: ${ENV_PREFIX}CAFILE, else the system's)",
    )
    p.add_argument(
        "--cert",
        metavar="C",
        default=env(f"{ENV_PREFIX}CERT"),
        help=f"client certificate (PEM) for mTLS (default: ${ENV_PREFIX}CERT)",
    )
    p.add_argument(
        "--key",
        metavar="K",
        default=env(f"{ENV_PREFIX}KEY"),
        help=f"its private key, if not in --cert (default: ${ENV_PREFIX}KEY)",
    )
    p.add_argument(
        "--servername",
        metavar="NAME",
        default=env(f"{ENV_PREFIX}SERVERNAME"),
        help="the host name the certificate must name, when the URL's host is an address "
        f"(default: ${ENV_PREFIX}SERVERNAME, else the URL's host)",
    )
    p.add_argument(
        "--timeout", type=_seconds, default=5.0, metavar="S", help="seconds (default: 5)"
    )
    p.set_defaults(func=cmd_health)
