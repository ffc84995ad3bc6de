"""Storage backends behind one interface: :class:`Storage`; pick one with :func:`open_storage`."""

from __future__ import annotations

from ..config import Config
from .base import Storage

__all__ = ["Storage", "open_storage"]


def open_storage(config: Config) -> Storage:
    """Open the backend named by ``[storage] kind`` (``"memory"``, ``"leveldb"`` or ``"redis"``).

    Raises :class:`~registryd.errors.StorageError` (or its subclasses) if it cannot be opened,
    and :class:`~registryd.errors.ConfigError` on ``storage.kind`` when ``"leveldb"`` is asked
    for without the ``leveldb`` extra installed (:mod:`registryd.storage.binding`).
    """
    if config.storage.kind == "memory":
        from .memory import MemoryStorage

        return MemoryStorage(config.index_key())
    if config.storage.kind == "redis":
        from .redis import RedisStorage

        storage = config.storage
        return RedisStorage(
            config.index_key(),
            storage.url,
            ca_file=storage.ca_file,
            timeout_ms=storage.timeout_ms,
            wait_replicas=storage.wait_replicas,
        )
    from .leveldb import LevelDBStorage

    return LevelDBStorage(config.index_key(), config.storage.path)
