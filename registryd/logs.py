"""The daemon's log: who logs at which level, two formats that keep each record on one line
(plain text, or one JSON object), and the audit lines.

``--log-level`` applies to registryd's own loggers only. Every other logger (Hypercorn, asyncio,
h2, hpack ...) stays at WARNING, whatever the level: at DEBUG, hpack logs every decoded header,
``authorization: Bearer ...`` and ``:path /check_user/<handle>`` included. An operator who needs
one of them names it (``--debug-logger hpack``), knowing that its lines may hold tokens and
handles.

Log lines can carry text from requests (an exception's message, a third-party library's debug
line). :class:`SafeFormatter` escapes every character that is not printable (control and format
characters: ESC, NUL, VT, CR, LF, U+2028, bidi overrides, lone surrogates ...) as ``\\n``,
``\\xNN``, ``\\uNNNN`` ..., so a client cannot forge log lines, rewrite a terminal or reorder
text. Tracebacks keep the line breaks between their frames; exception messages and everything
inside the lines are escaped too.

``format = "json"`` (:class:`JsonLogFormatter`, python-json-logger's stdlib formatter) writes
one JSON object per line: ``time`` (UTC, ms), ``level``, ``logger``, ``message``, the record's
extra fields (an audit line's ``event`` ...) and ``exc_info`` for a traceback. Every string in
it is escaped as in the plain format before JSON encoding, so a decoded value is printable too.

Audit lines (:func:`audit`) go to the ``registryd.audit`` logger at INFO, written whatever the
level: admin calls (done, failed or refused), key changes, reloads and rate-limit bans. They
never hold a bearer token, a handle or a client address.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("plain", "json")
LEVELS = ("debug", "info", "warning", "error")
OWN = "registryd"
AUDIT = "registryd.audit"
OTHERS_LEVEL = logging.WARNING

log = logging.getLogger(OWN)
audit_log = logging.getLogger(AUDIT)

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escape(text: str) -> str:
    """``text`` with every non-printable character (``str.isprintable``: Unicode "Other" and
    "Separator" categories, but the ASCII space) escaped; printable text is returned as is."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape_char(char) for char in text)


def escape_lines(text: str) -> str:
    """:func:`escape` applied to each line of a multi-line text (a traceback)."""
    return "\n".join(escape(line) for line in text.split("\n"))


def _escape_messages(exc: traceback.TracebackException, seen: set[int]) -> None:
    """Escape, in place, the messages and notes of ``exc`` and of the exceptions chained to
    it: they may hold request data, and a line break in one would start a forged log line
    (the line breaks between frames are the traceback's own and stay)."""
    if id(exc) in seen:
        return
    seen.add(id(exc))
    # TracebackException keeps str(exception) in `_str` (CPython 3.11 to 3.13); without it,
    # escape_lines still escapes everything within the message's lines.
    message = getattr(exc, "_str", None)
    if isinstance(message, str):
        setattr(exc, "_str", escape(message))  # noqa: B010 - private, so not in the type stubs
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        exc.__notes__ = [escape(str(note)) for note in notes]
    for chained in (exc.__cause__, exc.__context__, *(getattr(exc, "exceptions", None) or ())):
        if chained is not None:
            _escape_messages(chained, seen)


def format_exception(ei: _ExcInfo) -> str:
    """A traceback as logging formats it, with its messages and lines escaped."""
    exc = traceback.TracebackException(*ei, compact=True)  # as logging's own formatter
    _escape_messages(exc, set())
    return escape_lines("".join(exc.format()).rstrip("\n"))


class SafeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose output has no control or format characters but the
    line breaks between a traceback's lines (see the module docstring)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))

    def formatException(self, ei: _ExcInfo) -> str:
        return format_exception(ei)

    def formatStack(self, stack_info: str) -> str:
        return escape_lines(super().formatStack(stack_info))


_MULTI_LINE = ("exc_info", "stack_info")  # escaped line by line by the format* methods


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, list | tuple):
        return [_escaped(item) for item in value]
    if isinstance(value, dict):
        return {escape(str(key)): _escaped(item) for key, item in value.items()}
    return value


class JsonLogFormatter(JsonFormatter):
    """One JSON object per record, on one line: ``{"time", "level", "logger", "message", ...}``.

    ``time`` is RFC 3339 UTC with milliseconds. Extra fields of the record (``extra=``) follow;
    ``exc_info`` holds an escaped traceback (its frames separated by ``\\n`` inside the JSON
    string). Every string is escaped with :func:`escape` before encoding (UTF-8 output, printable
    characters raw), so neither the line nor a decoded value holds a control character.
    """

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        log_data["time"] = stamp.replace("+00:00", "Z")
        super().add_fields(log_data, record, message_dict)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {
            key: value if key in _MULTI_LINE else _escaped(value) for key, value in log_data.items()
        }

    def formatException(self, ei: _ExcInfo) -> str:
        return format_exception(ei)

    def formatStack(self, stack_info: str) -> str:
        return escape_lines(stack_info)


AuditValue = str | int | bool | list[str] | None


def audit(event: str, **fields: AuditValue) -> None:
    """Write one audit line: ``event`` (``admin``, ``key.rotated``, ``reload``, ``ban``) and
    ``fields`` (None values left out). Plain: ``INFO registryd.audit: admin action=keys.list
    outcome=ok ...``; JSON: the same as top-level fields beside ``message``.

    Callers pass no bearer token, handle or client address: what the fields say is logged.
    """
    shown = {key: value for key, value in fields.items() if value is not None}
    text = " ".join(
        f"{key}={(','.join(value) or 'none') if isinstance(value, list) else value}"
        for key, value in shown.items()
    )
    audit_log.info("%s %s", event, text, extra={"event": event, **shown})


_MARK = "_registryd_settings"  # on the handler setup() installed: a second call reconfigures it


def setup(
    level: str,
    debug_loggers: Iterable[str] = (),
    stream: TextIO | None = None,
    fmt: str = "plain",
) -> None:
    """Log to ``stream`` (default stderr) in ``fmt`` (``"plain"``: :class:`SafeFormatter`;
    ``"json"``: :class:`JsonLogFormatter`): registryd's loggers at ``level`` (``"debug"``,
    ``"info"``, ``"warning"`` or ``"error"``), every other logger at WARNING (or ``level`` if
    higher), each logger named in ``debug_loggers`` at DEBUG, and audit lines always (INFO).

    Like :func:`logging.basicConfig`, it does nothing when the root logger already has handlers
    that it did not install (a program embedding registryd, or pytest), so it never undoes
    someone else's set-up. Called again (once the config file is read), it changes the format
    and levels of its own handler.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, _MARK, None) is not None]
    if root.handlers and not ours:
        return
    named = sorted(set(debug_loggers))
    settings = (level, fmt, named)
    if ours:
        handler = ours[0]
        if getattr(handler, _MARK) == settings:
            return
    else:
        handler = logging.StreamHandler(sys.stderr if stream is None else stream)
        root.addHandler(handler)
    setattr(handler, _MARK, settings)
    handler.setFormatter(JsonLogFormatter() if fmt == "json" else SafeFormatter(FORMAT))
    own = logging.getLevelNamesMapping()[level.upper()]
    root.setLevel(max(own, OTHERS_LEVEL))
    log.setLevel(own)
    audit_log.setLevel(logging.INFO)  # an audit trail that a verbosity flag turns off is none
    for name in named:
        logging.getLogger(name).setLevel(logging.DEBUG)
    if named:
        log.warning(
            "debug logging for %s: their lines may hold bearer tokens and handles", ", ".join(named)
        )
    log.debug(
        "debug logging for registryd only; other loggers at %s (--debug-logger NAME for one)",
        logging.getLevelName(root.level),
    )
