"""Client library for the registry protocol (spec 4.2, 4.5): sync and async, over httpx.

    from registryd.client import IdentityKeys, RegistryClient

    with RegistryClient("https://127.0.0.1:8443", pepper, cafile="certs/ca.pem") as client:
        keys = IdentityKeys.generate()
        client.register("alice", keys)
        identity = client.resolve("alice")  # PublicIdentity | None, its user_id checked

Each operation is written once as a *flow* (:mod:`~registryd.client.flows`) that both
:class:`RegistryClient` and :class:`AsyncRegistryClient` run (:mod:`~registryd.client.clients`);
the answers are checked in :mod:`~registryd.client.answers`; :class:`IdentityKeys` is a user's
keys and their keys file. A client's settings file is :mod:`registryd.cli.client_config`.
The library loads no part of the daemon (no config, keystore, storage or server).
"""

from __future__ import annotations

from .answers import ServerKey
from .clients import MIB, AsyncRegistryClient, RegistryClient
from .identity_keys import IdentityKeys

__all__ = ["MIB", "AsyncRegistryClient", "IdentityKeys", "RegistryClient", "ServerKey"]
