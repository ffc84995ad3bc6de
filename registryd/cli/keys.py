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

``STORE``, ``DURATION`` and ``WHEN`` are explained in :data:`EPILOG` (and
:mod:`registryd.timespec`). Commands that change the keystore hold its lock
(:meth:`Keystore.editing`) from load to save; a passphrase that must be typed is asked for
before the lock is taken. Exit codes (:mod:`registryd.cli.common`): 0 success, 1 failure
(one line on stderr), 2 usage errors. Private keys are never printed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from .. import config, timespec
from ..errors import ConfigError, KeystoreError, KeyUnavailable, UsageError
from ..keyring import EnvelopeKey, KeyRing, describe_key
from ..keystore import Keystore, passphrase_from, read_passphrase
from ..secret import Secret
from ..timespec import iso, now_ms
from ..tokens import MIN_TOKEN_CHARS, hash_token
from .common import Command, command

RELOAD = "a running daemon loads it on SIGHUP (kill -HUP <pid>) or POST /admin/reload"

EPILOG = """\
STORE: --config PATH uses the config's [envelope] keystore_path and its passphrase source;
--keystore PATH names the file directly, with --passphrase-env NAME or --passphrase-file PATH
(mode 0600) if it is encrypted (else you are asked when stdin is a terminal). Passphrases
never go on the command line. A running daemon picks up changes on SIGHUP or POST
/admin/reload; no restart is needed.

DURATION: 90s, 15m, 2h, 7d; a bare number is seconds.
WHEN: a DURATION with a unit or a leading + is that long from now (7d, +3600); a bare integer
is Unix milliseconds; otherwise ISO-8601 (2026-01-01T00:00:00Z; no zone means UTC).

exit codes: 0 success, 1 failure, 2 usage error."""


def parse_duration(text: str) -> int:
    """:func:`registryd.timespec.parse_duration` for argparse (``type=``)."""
    try:
        return timespec.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _when(text: str | None, now: int) -> int | None:
    try:
        return None if text is None else timespec.parse_when(text, now)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


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


def _asker(args: argparse.Namespace, path: str, asked: list[bytes]) -> Callable[[], bytes]:
    """Ask for the passphrase of the encrypted keystore ``path`` (remembered in ``asked``)."""

    def ask() -> bytes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"{path} is encrypted: give --passphrase-env or --passphrase-file"
                if args.keystore
                else f"{path} is encrypted: set envelope.keystore_passphrase_env or _file"
            )
        asked.append(_ask())
        return asked[-1]

    return ask


def _unlock(args: argparse.Namespace, *, create: bool = False) -> tuple[str, bytes | None]:
    """The keystore path and passphrase; one that must be typed is asked for (and checked)
    now, so that :meth:`Keystore.editing` never holds the lock while someone types."""
    path, passphrase = _source(args)
    if passphrase is None and (not create or Path(path).exists()):
        asked: list[bytes] = []
        Keystore.load(path, None, ask=_asker(args, path, asked))
        passphrase = asked[0] if asked else None
    return path, passphrase


def _editing(args: argparse.Namespace, *, create: bool = False) -> AbstractContextManager[Keystore]:
    path, passphrase = _unlock(args, create=create)
    return Keystore.editing(path, passphrase, create=create)


def _sealing_kid(keys: list[EnvelopeKey], now: int) -> bytes | None:
    try:
        return KeyRing(Secret(b""), tuple(keys)).active(now).kid
    except KeyUnavailable:
        return None


# -- commands -------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    path, passphrase = _source(args)
    store = Keystore.load(path, passphrase, ask=_asker(args, path, []))
    now = now_ms()
    if args.json:
        print(json.dumps([describe_key(k, now) for k in store.keys], indent=2))
        return 0
    sealing = _sealing_kid(store.keys, now)
    table = [["KID", "STATE", "CREATED", "NOT BEFORE", "NOT AFTER", "OPENS UNTIL", "PUBLIC KEY"]]
    for k in store.keys:
        times = (k.created_ms, k.not_before_ms, k.not_after_ms, k.opens_until_ms)
        state = k.state(now) + ("*" if k.kid == sealing else "")
        table.append([k.kid.hex(), state, *map(iso, times), k.public.hex()])
    widths = [16, 9, 20, 20, 20, 20, 0]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    if sealing is None:
        print("no key can seal resolves now: the daemon answers 503 KEY_UNAVAILABLE")
    else:
        print("* = the key that seals resolves now")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    now = now_ms()
    times = {
        "not_before_ms": _when(args.not_before, now),
        "not_after_ms": _when(args.not_after, now),
    }
    with _editing(args, create=True) as store:
        key = store.generate(now, active=args.active, **times)
    print(f"generated {key.kid.hex()} ({key.state(now)}), public key {key.public.hex()}")
    print(f"wrote {store.path} (mode 0600); {RELOAD}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    now = now_ms()
    not_after = _when(args.not_after, now)
    with _editing(args) as store:
        key, old = store.rotate(now, args.grace, not_after_ms=not_after)
    print(f"new active key {key.kid.hex()}, public key {key.public.hex()}")
    for k in old:
        print(f"{k.kid.hex()} opens registrations until {iso(k.opens_until_ms)}, then retires")
    if not old:
        print("no key was sealing resolves: none rotated out")
    for k in store.keys:
        if k.state(now) == "pending":
            print(
                f"{k.kid.hex()} stays pending until {iso(k.not_before_ms)}, but will not seal "
                f"while the newer {key.kid.hex()} is valid"
            )
    print(f"wrote {store.path}; {RELOAD}")
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"[0-9a-fA-F]{16}", args.kid):
        raise UsageError(f"KID must be 16 hex characters: {args.kid!r}")
    kid = bytes.fromhex(args.kid)
    now = now_ms()
    with _editing(args) as store:
        sealing = _sealing_kid(store.keys, now)
        store.retire(kid)
        if sealing == kid and _sealing_kid(store.keys, now) is None and not args.force:
            raise KeystoreError(
                str(store.path),
                f"refusing to retire {kid.hex()}, the only key that seals resolves (the daemon "
                "would answer 503): run `keys rotate` first, or pass --force",
            )
    print(f"retired {kid.hex()}; wrote {store.path}; {RELOAD}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    with _editing(args) as store:
        gone = store.prune(now_ms())
    if not gone:
        print("nothing to prune")
        return 0
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
    path, passphrase = _unlock(args)
    new = _new_passphrase(args, path)  # typed before the lock is taken
    with Keystore.editing(path, passphrase) as store:
        store.save(None, new)  # the keys are unchanged: editing saves nothing more
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
    exists = KeystoreError(args.keystore, "already exists; import writes a new keystore only")
    if target.exists():
        raise exists
    passphrase = passphrase_from(args.passphrase_env, args.passphrase_file, args.keystore)
    with Keystore.editing(target, passphrase, create=True) as store:
        if store.keys:  # made while we were not looking
            raise exists
        now = now_ms()  # created_ms = now - position keeps the config's order (sealing key)
        for i, entry in enumerate(cfg.envelope.keys):
            kid, private = bytes.fromhex(entry.kid_hex), entry.x25519_private_key_hex.reveal()
            times = {"not_after_ms": entry.not_after_epoch_ms, "created_ms": now - i}
            store.add(EnvelopeKey.from_private(kid, private, active=entry.active, **times))
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
    try:
        print(hash_token(token))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


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
        "--passphrase-file",
        metavar="PATH",
        help="with --keystore: file holding it (one line, mode 0600)",
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
        p.set_defaults(func=command(func))
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
        "Add a new active key, which seals every resolve from now on. The keys sealing now "
        "become inactive and keep opening registrations for --grace, then count as retired; "
        "a staged key (pending: generate --active --not-before) is left as it is. A running "
        "daemon loads the change on SIGHUP or POST /admin/reload, without a restart.",
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
    new.add_argument(
        "--new-passphrase-file", metavar="PATH", help="file holding it (one line, mode 0600)"
    )
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
        "a prompt without echo on a terminal) and print its Argon2id hash (t=3, 4 MiB, p=1) for "
        "[peers] token_hashes or [admin] token_hashes. The token must be random and at least "
        f"{MIN_TOKEN_CHARS} characters long; make one with e.g. "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`.",
    )
    p.set_defaults(func=command(cmd_hash_token))
