"""Files registryd writes and the secret files it reads.

:func:`write_file` is the one writer, for every file registryd creates: configs (``init``),
certificates and keys (``certs dev``), the keystore, identity keys files, the node key, the
node agent's state file and the pid file. :func:`exposed` says what is wrong with a secret
file that group or others may access.
"""

from __future__ import annotations

import contextlib
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


def write_file(
    path: str | os.PathLike[str], data: bytes, *, mode: int = PRIVATE, replace: bool = False
) -> None:
    """Write ``data`` to ``path`` atomically and durably, as a file created with ``mode``.

    ``data`` goes to a fresh temporary file beside ``path`` (created ``O_EXCL | O_NOFOLLOW``
    with ``mode``: 0600 exactly whatever the umask, other modes less the umask), which is
    fsynced and then renamed over ``path`` (``replace``) or hard-linked to it (otherwise: an
    existing ``path`` is never overwritten, :class:`FileExistsError` "... exists; refusing to
    overwrite it"); then the directory is fsynced. So a reader sees the old file or the whole
    new one, a file someone else may already read is never written into, a symlink planted
    at ``path`` is replaced or refused but never followed, and no temporary file is left
    behind, whatever fails. Missing parent directories are created. Raises ``OSError``.
    """
    target = Path(path)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{target.name}.{os.urandom(4).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode == PRIVATE:
                os.fchmod(f.fileno(), PRIVATE)  # the umask cannot make it stricter or looser
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # atomic, and unlike a rename it never replaces a file
            except FileExistsError:
                raise FileExistsError(f"{target} exists; refusing to overwrite it") from None
    finally:
        with contextlib.suppress(FileNotFoundError):  # gone once renamed
            tmp.unlink()
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
