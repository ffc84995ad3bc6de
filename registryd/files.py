"""Secret files: created fresh with their mode, and refused when others may read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE = 0o600


def exposed(st: os.stat_result) -> str | None:
    """What is wrong with a secret file whose status is ``st``: group or others may access it."""
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return None
    what = "readable" if mode & 0o044 else "accessible"
    return f"is {what} by group or others (mode {mode:04o}); run chmod 600"


def write_new(path: Path, data: bytes, mode: int = PRIVATE, *, replace: bool = False) -> None:
    """Write ``data`` to a freshly created ``path`` with ``mode`` (private ones exactly), synced.

    Never writes into an existing file, which others might already be able to read: with
    ``replace`` the old file is unlinked first, otherwise :class:`FileExistsError`. A planted
    symlink is not followed (O_NOFOLLOW).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if replace:
        path.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise FileExistsError(
            f"{path} exists; refusing to overwrite it (pass --force to replace it)"
        ) from None
    with os.fdopen(fd, "wb") as f:
        if mode == PRIVATE:
            os.fchmod(f.fileno(), PRIVATE)  # the umask cannot make it stricter or looser
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
