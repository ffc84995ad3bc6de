"""The LevelDB binding, from the ``leveldb`` extra (``pip install "registryd[leveldb]"``).

Two bindings share plyvel's API under different module names: ``plyvel_next`` (a maintained
fork with wheels for CPython 3.12-3.14 on Linux x86_64/aarch64/musl, macOS and Windows, none for
3.11) and ``plyvel`` (1.5.1: a wheel for CPython <= 3.12 on Linux x86_64 only). The extra installs
plyvel-next on 3.12+ and plyvel on 3.11; :func:`leveldb_module` takes whichever is installed, so
an install without the extra (memory or Redis storage) never needs a compiler.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ConfigError

MODULES = ("plyvel_next", "plyvel")
INSTALL = 'pip install "registryd[leveldb]"'


def leveldb_module() -> ModuleType:
    """The installed LevelDB binding (``plyvel_next``, else ``plyvel``).

    Raises :class:`ConfigError` on ``storage.kind`` when neither is installed, naming the extra.
    """
    for name in MODULES:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the binding is there but something it needs is not
                raise
    raise ConfigError(
        "storage.kind",
        f'"leveldb" needs a LevelDB binding, and neither plyvel-next nor plyvel is installed: '
        f'{INSTALL}, or set kind = "memory"',
    )
