"""systemd readiness (``Type=notify``): ``READY=1`` to ``$NOTIFY_SOCKET`` once the daemon listens.

The protocol is one datagram of ``KEY=value`` lines on the AF_UNIX socket systemd names in
``NOTIFY_SOCKET`` (``@name`` is an abstract socket); sd_notify(3). It is these few lines rather
than the ``sdnotify`` package (0.3.2, unchanged since 2017), which does the same and silently
swallows every error; without ``NOTIFY_SOCKET`` (not under systemd) nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("registryd")


def notify(state: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=listening"``) to ``$NOTIFY_SOCKET``; True if
    sent. A socket that cannot be reached is logged as a warning, never raised: readiness is a
    courtesy to the service manager, and the daemon serves either way."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("could not notify systemd through NOTIFY_SOCKET: %s", exc.strerror or exc)
        return False
    return True
