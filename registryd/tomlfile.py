"""The one TOML loader, for the daemon's config, the client's and the node agent's.

Every problem is one :class:`~registryd.errors.ConfigError`:

- a file that cannot be read: ``cannot read {what} {path}: {reason}`` (the OS's reason, ``not
  UTF-8``, or ``larger than N bytes``), with an empty key path;
- text that is not TOML: ``invalid TOML[ in {path}]: {tomllib's reason}``;
- a value the schema refuses, by its dotted key path (``client.urll: unknown key``,
  ``envelope.pepper_hex: expected 64 hex characters (32 bytes)``, ``rate_limit.burst: expected
  int >= 1``).

Schemas are msgspec structs decoded strictly (``forbid_unknown_fields``); a
:class:`~registryd.secret.Secret` field takes 64 hex characters (32 bytes).
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Any, TypeVar

import msgspec

from .errors import ConfigError
from .secret import Secret

T = TypeVar("T")

_MSGSPEC_ERROR = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD = re.compile(r"^Object (?P<what>contains unknown|missing required) field `(?P<name>[^`]+)`$")


def dec_hook(type_: type, obj: Any) -> Any:
    """msgspec's hook for the types TOML has no form of: :class:`Secret` from 64 hex chars."""
    if type_ is Secret:
        if not isinstance(obj, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", obj):
            raise ValueError("expected 64 hex characters (32 bytes)")
        return Secret(bytes.fromhex(obj))
    raise NotImplementedError


def config_error(exc: msgspec.ValidationError) -> ConfigError:
    """msgspec's validation error as a :class:`ConfigError` naming the dotted key path."""
    m = _MSGSPEC_ERROR.match(str(exc))
    msg, path = (m["msg"], (m["path"] or "").lstrip(".")) if m else (str(exc), "")
    field = _FIELD.match(msg)
    if field:
        path = f"{path}.{field['name']}".lstrip(".")
        msg = "unknown key" if field["what"] == "contains unknown" else "required key is missing"
    else:
        msg = msg.replace("`", "")
        msg = msg[0].lower() + msg[1:] if msg else msg
    return ConfigError(path, msg)


def read(
    path: str | os.PathLike[str], *, what: str, max_bytes: int | None = None
) -> tuple[str, os.stat_result]:
    """The UTF-8 text of the file at ``path`` (at most ``max_bytes``) and the status of the
    file that was read (for mode checks that a swapped file cannot slip past)."""
    try:
        with open(path, "rb") as f:
            status = os.fstat(f.fileno())
            raw = f.read(-1 if max_bytes is None else max_bytes + 1)
    except OSError as exc:
        raise ConfigError("", f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if max_bytes is not None and len(raw) > max_bytes:
        raise ConfigError("", f"cannot read {what} {path}: larger than {max_bytes} bytes")
    try:
        return raw.decode("utf-8"), status
    except UnicodeDecodeError:
        raise ConfigError("", f"cannot read {what} {path}: not UTF-8") from None


def loads(text: str, *, source: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The TOML ``text`` as a table; ``source`` (a path) is named in the error."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = f" in {source}" if source is not None else ""
        raise ConfigError("", f"invalid TOML{where}: {exc}") from None


def convert(table: dict[str, Any], schema: type[T]) -> T:
    """``table`` decoded strictly as ``schema``."""
    try:
        return msgspec.convert(table, schema, strict=True, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        raise config_error(exc) from None


def load(
    path: str | os.PathLike[str], schema: type[T], *, what: str, max_bytes: int | None = None
) -> T:
    """Read, parse and decode the file at ``path`` as ``schema``; ``what`` names the file in
    errors (``client config``)."""
    text, _ = read(path, what=what, max_bytes=max_bytes)
    return convert(loads(text, source=path), schema)
