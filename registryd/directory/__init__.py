"""The HushNet-compatible node directory (extensions spec §3).

challenges.py   stateless MAC'd challenge nonces bound to a key, and their spent set
payload.py      request bodies, keys, signatures and the §3.2 payload checks
records.py      the stored node record, its listing views and order
ssrf.py         the prober's address policy and an httpx transport pinned to one address
geoip.py        country lookups in a local MaxMind DB
prober.py       health-probe rounds
service.py      :class:`Directory`: register, heartbeat, list, remove (one writer at a time)
cli.py          ``registryd directory list|remove``

Its HTTP routes are :mod:`registryd.api.directory`; the :class:`~registryd.runtime.Runtime`
holds the one :class:`Directory` of a running registry.
"""

from __future__ import annotations

from .service import Directory

__all__ = ["Directory"]
