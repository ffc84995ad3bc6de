"""``registryd keys``: manage the envelope keystore; ``registryd hash-token``: hash a token.

    registryd keys list      STORE [--json]             kids, public keys, states, times
    registryd keys generate  STORE [--active] [--not-before WHEN] [--not-after WHEN]
    registryd keys rotate    STORE --grace DURATION [--not-after WHEN]
    registryd keys retire    STORE KID [--force]
    registryd keys prune     STORE
    registryd keys passwd    STORE (--new-passphrase-env NAME | --new-passphrase-file PATH
                                    | --no-passphrase)   (or a prompt when stdin is a terminal)
    registryd keys import    --from-config PATH --keystore PATH [passphrase]
    registryd hash-token     < token                    prints its Argon2id hash

``STORE`` is ``--config PATH`` (the config's ``[envelope] keystore_path`` and passphrase source)
or ``--keystore PATH`` with an optional ``--passphrase-env NAME`` / ``--passphrase-file PATH``.
A passphrase is never taken from the command line; an encrypted keystore without a passphrase
source is asked for one when stdin is a terminal.

``DURATION`` is a whole number with an optional unit: ``90s``, ``15m``, ``2h``, ``7d``; a bare
number is seconds. ``WHEN`` is a time: ``DURATION`` with a unit or a ``+`` (``7d``, ``+3600``)
means that long from now; a bare integer is Unix milliseconds; anything else is ISO-8601
(``2026-01-01T00:00:00Z``; no zone means UTC).

Exit codes: 0 success, 1 failure (one line on stderr), 2 usage errors. Private keys are never
printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from . import config
from .envelope import EnvelopeKey, KeyRing, now_ms
from .errors import ConfigError, KeystoreError, KeyUnavailable, RegistrydError
from .keystore import Keystore, passphrase_from, read_passphrase
from .secret import Secret

UNITS_MS = {"": 1000, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"(\+?)(\d+)([smhd]?)")

EPILOG = """\
STORE: --config PATH uses the config's [envelope] keystore_path and its passphrase source;
--keystore PATH names the file directly, with --passphrase-env NAME or --passphrase-file PATH
if it is encrypted (else you are asked when stdin is a terminal). Passphrases never go on the
command line.

DURATION: 90s, 15m, 2h, 7d; a bare number is seconds.
WHEN: a DURATION with a unit or a leading + is that long from now (7d, +3600); a bare integer
is Unix milliseconds; otherwise ISO-8601 (2026-01-01T00:00:00Z; no zone means UTC).

exit codes: 0 success, 1 failure, 2 usage error."""


class UsageError(Exception):
    """Bad arguments found after parsing: exit code 2."""


def parse_duration(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"7d"`` or a bare number of seconds, in milliseconds."""
    m = _DURATION.fullmatch(text.strip())
    if not m or m[1]:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 15m, 2h, 7d: {text!r}")
    return int(m[2]) * UNITS_MS[m[3]]


def parse_when(text: str, now: int) -> int:
    """A time in Unix ms: ``7d`` / ``+3600`` from ``now``, a bare integer (Unix ms), or
    ISO-8601 (UTC when no zone is given)."""
    text = text.strip()
    m = _DURATION.fullmatch(text)
    if m and (m[1] or m[3]):
        return now + int(m[2]) * UNITS_MS[m[3]]
    if m:
        return int(m[2])
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"expected a time (7d, +3600, Unix ms or ISO-8601): {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- opening the keystore -------------------------------------------------------------------


def _ask(prompt: str = "Keystore passphrase: ") -> bytes:
    return getpass.getpass(prompt).encode()


def _source(args: argparse.Namespace) -> tuple[str, bytes | None]:
    """The keystore path and passphrase named by ``--config`` or ``--keystore``."""
    if args.config:
        if args.passphrase_env or args.passphrase_file:
            raise UsageError("--passphrase-env/--passphrase-file go with --keystore, not --config")
        cfg = config.load(args.config)
        path = cfg.envelope.keystore_path
        if path is None:
            raise ConfigError(
                "envelope.keystore_path",
                f"{args.config} keeps its keys inline; move them with `registryd keys import`",
            )
        return path, read_passphrase(cfg.envelope)
    return args.keystore, passphrase_from(args.passphrase_env, args.passphrase_file, args.keystore)


def _open(args: argparse.Namespace, *, create: bool = False) -> tuple[Keystore, bytes | None]:
    path, passphrase = _source(args)
    if create and not Path(path).exists():
        return Keystore(path=path), passphrase
    asked: list[bytes] = []

    def ask() -> bytes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"{path} is encrypted: give --passphrase-env or --passphrase-file"
                if args.keystore
                else f"{path} is encrypted: set envelope.keystore_passphrase_env or _file"
            )
        asked.append(_ask())
        return asked[0]

    store = Keystore.load(path, passphrase, ask=ask)
    if store.kdf is None:  # stays unencrypted: only `keys passwd` changes that
        return store, None
    return store, passphrase if passphrase is not None else asked[0]


def _describe(key: EnvelopeKey, now: int, sealing: bytes | None) -> dict[str, Any]:
    return {
        "kid_hex": key.kid.hex(),
        "x25519_public_key_hex": key.public.hex(),
        "state": key.state(now),
        "seals": key.kid == sealing,
        "created_ms": key.created_ms,
        "not_before_ms": key.not_before_ms,
        "not_after_ms": key.not_after_ms,
        "opens_until_ms": key.opens_until_ms,
    }


def _sealing_kid(store: Keystore, now: int) -> bytes | None:
    try:
        return KeyRing(Secret(b""), tuple(store.keys)).active(now).kid
    except KeyUnavailable:
        return None


# -- commands -------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    store, _ = _open(args)
    now = now_ms()
    sealing = _sealing_kid(store, now)
    rows = [_describe(k, now, sealing) for k in store.keys]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headings = ["KID", "STATE", "CREATED", "NOT BEFORE", "NOT AFTER", "OPENS UNTIL", "PUBLIC KEY"]
    table = [headings]
    for r in rows:
        times = [
            iso(r[f]) for f in ("created_ms", "not_before_ms", "not_after_ms", "opens_until_ms")
        ]
        state = r["state"] + ("*" if r["seals"] else "")
        table.append([r["kid_hex"], state, *times, r["x25519_public_key_hex"]])
    widths = [16, 9, 20, 20, 20, 20, 0]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    if sealing is None:
        print("no key can seal resolves now: the daemon answers 503 KEY_UNAVAILABLE")
    else:
        print("* = the key that seals resolves now")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    store, passphrase = _open(args, create=True)
    now = now_ms()
    key = store.generate(
        now,
        active=args.active,
        not_before_ms=None if args.not_before is None else parse_when(args.not_before, now),
        not_after_ms=None if args.not_after is None else parse_when(args.not_after, now),
    )
    store.save(None, passphrase)
    print(f"generated {key.kid.hex()} ({key.state(now)}), public key {key.public.hex()}")
    print(f"wrote {store.path} (mode 0600)")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    store, passphrase = _open(args)
    now = now_ms()
    not_after = None if args.not_after is None else parse_when(args.not_after, now)
    key, old = store.rotate(now, args.grace, not_after_ms=not_after)
    store.save(None, passphrase)
    print(f"new active key {key.kid.hex()}, public key {key.public.hex()}")
    for k in old:
        print(f"{k.kid.hex()} opens registrations until {iso(k.opens_until_ms)}, then retires")
    print(f"wrote {store.path}; reload the daemon to use it: kill -HUP <pid> or POST /admin/reload")
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"[0-9a-fA-F]{16}", args.kid):
        raise UsageError(f"KID must be 16 hex characters: {args.kid!r}")
    kid = bytes.fromhex(args.kid)
    store, passphrase = _open(args)
    now = now_ms()
    sealing = _sealing_kid(store, now)
    store.retire(kid)
    if sealing == kid and _sealing_kid(store, now) is None and not args.force:
        raise KeystoreError(
            str(store.path),
            f"refusing to retire {kid.hex()}, the only key that seals resolves (the daemon "
            "would answer 503): run `keys rotate` first, or pass --force",
        )
    store.save(None, passphrase)
    print(f"retired {kid.hex()}; wrote {store.path}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    store, passphrase = _open(args)
    gone = store.prune(now_ms())
    if not gone:
        print("nothing to prune")
        return 0
    store.save(None, passphrase)
    for kid in gone:
        print(f"removed {kid.hex()}")
    print(f"wrote {store.path}")
    return 0


def _new_passphrase(args: argparse.Namespace, keystore: str) -> bytes | None:
    if args.no_passphrase:
        return None
    new = passphrase_from(args.new_passphrase_env, args.new_passphrase_file, keystore)
    if new is not None:
        return new
    if not sys.stdin.isatty():
        raise UsageError(
            "give --new-passphrase-env, --new-passphrase-file or --no-passphrase "
            "(or run on a terminal to be asked)"
        )
    new = _ask("New passphrase: ")
    if not new or new != _ask("Repeat the new passphrase: "):
        raise UsageError("the passphrases are empty or do not match")
    return new


def cmd_passwd(args: argparse.Namespace) -> int:
    store, _ = _open(args)
    new = _new_passphrase(args, str(store.path))
    store.save(None, new)
    if store.kdf is None:
        print(f"{store.path} is now stored unencrypted (keep it mode 0600)")
    else:
        k = store.kdf
        cost = f"t={k.time_cost}, m={k.memory_cost} KiB, p={k.parallelism}"
        print(f"{store.path} is now encrypted (Argon2id {cost})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    cfg = config.load(args.from_config)
    if cfg.envelope.keystore_path is not None or not cfg.envelope.keys:
        raise ConfigError("envelope.keys", f"{args.from_config} has no inline keys to import")
    target = Path(args.keystore)
    if target.exists():
        raise KeystoreError(args.keystore, "already exists; import writes a new keystore only")
    passphrase = passphrase_from(args.passphrase_env, args.passphrase_file, args.keystore)
    store = Keystore(path=target)
    now = now_ms()
    # created_ms = now - position keeps the config's order, which decides the sealing key.
    for i, entry in enumerate(cfg.envelope.keys):
        kid, private = bytes.fromhex(entry.kid_hex), entry.x25519_private_key_hex.reveal()
        times = {"not_after_ms": entry.not_after_epoch_ms, "created_ms": now - i}
        store.add(EnvelopeKey.from_private(kid, private, active=entry.active, **times))
    store.save(None, passphrase)
    print(f"wrote {target} with {len(store.keys)} keys (mode 0600)", file=sys.stderr)
    print(f"# In [envelope] of {args.from_config}, replace the [[envelope.keys]] tables with:")
    print(f"keystore_path = {json.dumps(str(target.resolve()))}")
    if args.passphrase_env:
        print(f"keystore_passphrase_env = {json.dumps(args.passphrase_env)}")
    if args.passphrase_file:
        print(f"keystore_passphrase_file = {json.dumps(str(Path(args.passphrase_file).resolve()))}")
    return 0


def cmd_hash_token(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        token = getpass.getpass("Token: ").strip()
    else:
        token = sys.stdin.readline().strip()
    if not token:
        print("error: no token on stdin", file=sys.stderr)
        return 1
    print(PasswordHasher().hash(token))
    return 0


Command = Callable[[argparse.Namespace], int]


def _run(func: Command) -> Command:
    """Wrap a command: errors become one line on stderr and exit code 1 (2 for usage)."""

    def run(args: argparse.Namespace) -> int:
        try:
            code: int = func(args)
        except UsageError as exc:
            print(f"usage error: {exc}", file=sys.stderr)
            return 2
        except RegistrydError as exc:  # ConfigError, KeystoreError ...
            print(f"error: {exc}".replace("\n", " "), file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"error: {exc.strerror or exc}", file=sys.stderr)
            return 1
        except (KeyboardInterrupt, EOFError):
            print("error: interrupted", file=sys.stderr)
            return 1
        return code

    return run


# -- parsers --------------------------------------------------------------------------------


def _store_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="PATH", help="config whose [envelope] names the store")
    where.add_argument("--keystore", metavar="PATH", help="the keystore file itself")
    _passphrase_options(parser)


def _passphrase_options(parser: argparse.ArgumentParser) -> None:
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--passphrase-env", metavar="NAME", help="with --keystore: env variable holding it"
    )
    how.add_argument(
        "--passphrase-file", metavar="PATH", help="with --keystore: file holding it (one line)"
    )


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys`` (list, generate, rotate, retire, prune, passwd, import) and ``hash-token``;
    each sets ``func`` to a function returning the exit code."""
    fmt = argparse.RawDescriptionHelpFormatter
    keys = subparsers.add_parser(
        "keys",
        help="manage the envelope keystore",
        description="Manage the envelope keystore ([envelope] keystore_path): list, generate, "
        "rotate with a grace period, retire, prune, change the passphrase, import inline keys.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    def action(name: str, summary: str, description: str, func: Command) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=summary, description=description, epilog=EPILOG, formatter_class=fmt
        )
        p.set_defaults(func=_run(func))
        return p

    p = action(
        "list",
        "list keys and their states",
        "List each key: kid, state (active, pending, grace, inactive, retired, expired; * marks "
        "the key that seals resolves), times (UTC) and public key. Never private keys.",
        cmd_list,
    )
    _store_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON array instead of a table")

    p = action(
        "generate",
        "add a new key (creates the keystore if missing)",
        "Add a new random key. With --active it seals resolves (from --not-before, if given: "
        "until then it is pending and the current key keeps sealing). Without --active it "
        "opens registrations but never seals. Creates the keystore when it does not exist "
        "(encrypted if a passphrase source is given).",
        cmd_generate,
    )
    _store_options(p)
    p.add_argument("--active", action="store_true", help="make the key active")
    p.add_argument("--not-before", metavar="WHEN", help="valid from WHEN (default: now)")
    p.add_argument("--not-after", metavar="WHEN", help="valid until WHEN (default: forever)")

    p = action(
        "rotate",
        "make a new active key; old ones open registrations for a grace period",
        "Add a new active key, which seals every resolve from now on. The previously active "
        "keys become inactive and keep opening registrations for --grace, then count as "
        "retired. Restart the daemon to load the new keys.",
        cmd_rotate,
    )
    _store_options(p)
    p.add_argument(
        "--grace",
        required=True,
        type=parse_duration,
        metavar="DURATION",
        help="how long old keys still open registrations (e.g. 7d; 0 ends them now)",
    )
    p.add_argument("--not-after", metavar="WHEN", help="the new key is valid until WHEN")

    p = action(
        "retire",
        "retire a key: it opens nothing any more",
        "Retire KID: it neither seals nor opens anything. Refuses to retire the only key that "
        "seals resolves unless --force.",
        cmd_retire,
    )
    _store_options(p)
    p.add_argument("kid", metavar="KID", help="the key's kid (16 hex characters)")
    p.add_argument("--force", action="store_true", help="retire even the sealing key")

    p = action(
        "prune",
        "drop expired and retired keys",
        "Remove expired keys, retired keys and keys whose grace period has ended.",
        cmd_prune,
    )
    _store_options(p)

    p = action(
        "passwd",
        "change, set or remove the keystore passphrase",
        "Re-encrypt the keystore with a new passphrase (Argon2id, then XChaCha20-Poly1305), "
        "encrypt a plaintext one, or store it unencrypted with --no-passphrase. The new "
        "passphrase comes from --new-passphrase-env/--new-passphrase-file, or a prompt when "
        "stdin is a terminal. Remember to update the config's passphrase source.",
        cmd_passwd,
    )
    _store_options(p)
    new = p.add_mutually_exclusive_group()
    new.add_argument("--new-passphrase-env", metavar="NAME", help="env variable holding it")
    new.add_argument("--new-passphrase-file", metavar="PATH", help="file holding it (one line)")
    new.add_argument("--no-passphrase", action="store_true", help="store the keystore unencrypted")

    p = action(
        "import",
        "move a config's inline [[envelope.keys]] into a new keystore",
        "Write a new keystore holding the inline [[envelope.keys]] of a config (kids, private "
        "keys, active flags, not_after kept; their order is kept too), then print the lines to "
        "put in the config's [envelope] instead of the keys. The config is not changed.",
        cmd_import,
    )
    p.add_argument("--from-config", required=True, metavar="PATH", help="config with inline keys")
    p.add_argument("--keystore", required=True, metavar="PATH", help="the keystore to create")
    _passphrase_options(p)

    p = subparsers.add_parser(
        "hash-token",
        help="print the Argon2id hash of a token read on stdin",
        description="Read a bearer token on stdin (first line, surrounding whitespace removed; "
        "a prompt without echo on a terminal) and print its Argon2id hash for [peers] "
        "token_hashes or [admin] token_hashes. Make a token with e.g. "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`.",
    )
    p.set_defaults(func=_run(cmd_hash_token))
