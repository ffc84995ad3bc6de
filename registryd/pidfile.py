"""``registryd serve --pid-file PATH``: the daemon's process id, for ``kill -HUP "$(cat PATH)"``.

The file holds the decimal PID and a newline. :meth:`PidFile.claim` runs before anything is
bound and refuses (:class:`~registryd.errors.ConfigError` naming ``--pid-file``) a file that
names a live ``registryd serve`` process; a file naming a dead process, another program or
this very process (a PID reused after a restart, as PID 1 in a container) is stale and is
replaced. :meth:`PidFile.write` runs once the sockets are bound and writes atomically
(:func:`~registryd.files.write_file`: a temporary file beside it, then a rename), so a reader
never sees a partial PID.
:meth:`PidFile.remove` deletes it on exit if it still names this process.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError
from .files import write_file

KEY = "--pid-file"


def _serving_registryd(pid: int) -> bool:
    """Whether ``pid`` is a live ``registryd serve`` (``python -m registryd serve`` or the
    ``registryd`` script). Without ``/proc``, any live process counts."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone meanwhile, or no /proc at all
    except OSError:
        return True
    names = [os.path.basename(arg) for arg in argv]
    return b"serve" in argv and b"registryd" in names


class PidFile:
    """The pid file at ``path`` for this process (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.pid = os.getpid()

    def claim(self) -> None:
        """Refuse to start if the file names another running registryd, or its directory is
        missing; raises ConfigError."""
        if not self.path.parent.is_dir():
            raise ConfigError(KEY, f"no such directory: {self.path.parent}")
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(KEY, f"cannot read {self.path}: {exc}") from None
        if text.isdigit() and int(text) != self.pid and _serving_registryd(int(text)):
            raise ConfigError(
                KEY,
                f"{self.path} names a running registryd (pid {text}); stop it first, "
                "or give this one another pid file",
            )

    def write(self) -> None:
        """Write this process's PID atomically (mode 0644 less the umask); raises OSError."""
        write_file(self.path, f"{self.pid}\n".encode("ascii"), mode=0o644, replace=True)

    def remove(self) -> None:
        """Delete the file if it still names this process (never another daemon's)."""
        try:
            if self.path.read_text(encoding="ascii").strip() == str(self.pid):
                self.path.unlink()
        except (OSError, UnicodeDecodeError):
            pass
