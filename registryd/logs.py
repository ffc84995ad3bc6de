"""The daemon's log: who logs at which level, and one formatter that keeps each record on one
line of plain text.

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
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterable
from types import TracebackType
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OWN = "registryd"
OTHERS_LEVEL = logging.WARNING

log = logging.getLogger(OWN)

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


class SafeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose output has no control or format characters but the
    line breaks between a traceback's lines (see the module docstring)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))

    def formatException(self, ei: _ExcInfo) -> str:
        exc = traceback.TracebackException(*ei, compact=True)  # as logging's own formatter
        _escape_messages(exc, set())
        return escape_lines("".join(exc.format()).rstrip("\n"))

    def formatStack(self, stack_info: str) -> str:
        return escape_lines(super().formatStack(stack_info))


def setup(level: str, debug_loggers: Iterable[str] = (), stream: TextIO | None = None) -> None:
    """Log to ``stream`` (default stderr) through :class:`SafeFormatter`: registryd's loggers
    at ``level`` (``"debug"``, ``"info"``, ``"warning"`` or ``"error"``), every other logger at
    WARNING (or ``level`` if higher), and each logger named in ``debug_loggers`` at DEBUG.

    Like :func:`logging.basicConfig`, it does nothing when the root logger already has handlers
    (a program embedding registryd, or pytest), so it never undoes someone else's set-up.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(SafeFormatter(FORMAT))
    root.addHandler(handler)
    own = logging.getLevelNamesMapping()[level.upper()]
    root.setLevel(max(own, OTHERS_LEVEL))
    log.setLevel(own)
    named = sorted(set(debug_loggers))
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
