"""What every ``registryd`` command shares: the one way an error becomes an exit code.

A command is ``func(args) -> exit code``; :func:`command` wraps it so that an error ends it
with one line, ``{label}: {message}``, on stderr (or in the daemon's log) and an exit code:

- 2 for usage errors: :class:`~registryd.errors.UsageError`, an
  :class:`~registryd.errors.InvalidInput` argument (a bad username, hex ...), or a
  command line that is not valid UTF-8 (``UnicodeError``);
- 1 for failures: any other :class:`~registryd.errors.RegistrydError` (config, keystore,
  storage, server answers, network), ``OSError`` (files, TLS, addresses in use) and an
  interrupted prompt (``KeyboardInterrupt``, ``EOFError``).

The label is ``error`` unless the command names one for the error's type (``config error``).
Messages are made one line and their control characters escaped: they may quote a server or
a file. argparse's own usage errors also exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping

from ..errors import InvalidInput, RegistrydError, UsageError
from ..logs import escape

Command = Callable[[argparse.Namespace], int]
USAGE = 2
FAILURE = 1


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def describe(exc: BaseException) -> str:
    """``exc`` as one printable line: an OS error by its reason (and file), else its text."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return escape(" ".join(text.splitlines()))


def command(
    func: Command,
    *,
    labels: Mapping[type[BaseException], str] | None = None,
    report: Callable[[str], object] = _stderr,
) -> Command:
    """``func`` with its errors turned into an exit code and one line for ``report`` (see the
    module docstring); ``labels`` maps error types to the line's label, first match wins."""

    def line(exc: BaseException) -> str:
        label = next((v for k, v in (labels or {}).items() if isinstance(exc, k)), "error")
        return f"{label}: {describe(exc)}"

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (UsageError, InvalidInput, UnicodeError) as exc:
            report(line(exc))
            return USAGE
        except (RegistrydError, OSError) as exc:
            report(line(exc))
            return FAILURE
        except (KeyboardInterrupt, EOFError):
            report("error: interrupted")
            return FAILURE

    return run
