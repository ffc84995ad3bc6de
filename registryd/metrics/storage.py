"""Storage latency and errors, measured once at the :class:`~registryd.storage.Storage` facade
for every backend: :func:`instrument` wraps the public operations of one open storage.

The wrappers are instance attributes over the class's methods, so no backend carries timing code
and a backend added later is measured without a change; a test keeps :data:`OPERATIONS` equal
to the interface's public coroutines. The label is the operation's name.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import StorageError
from ..storage import Storage
from . import Metrics

OPERATIONS = (
    "register",
    "get_identity",
    "exists",
    "merge",
    "announce",
    "get_presence",
    "purge_expired",
    "add_nodes",
    "nodes",
    "put_directory_node",
    "get_directory_node",
    "directory_host_of_key",
    "list_directory_nodes",
    "delete_directory_node",
    "spend_nonce",
    "nonce_spent",
    "purge_spent_nonces",
    "owned",
    "swap_owned",
    "ping",
    "purge_tombstones",
    "import_records",
    "is_empty",
)
"""Every public coroutine of :class:`Storage` but ``close``."""

Operation = Callable[..., Awaitable[Any]]


def instrument(storage: Storage, metrics: Metrics) -> None:
    """Time every operation of ``storage`` into ``metrics`` and count its ``StorageError``\\ s;
    instrumenting again (a second app over one storage) replaces the earlier wrappers."""
    for name in OPERATIONS:
        vars(storage).pop(name, None)  # an earlier wrapper: measure into the new metrics only
        operation = getattr(storage, name)
        seconds = metrics.storage_seconds.labels(name)
        errors = metrics.storage_errors.labels(name)
        setattr(storage, name, _timed(operation, seconds.observe, errors.inc))


def _timed(
    operation: Operation, observe: Callable[[float], None], failed: Callable[[], None]
) -> Operation:
    @functools.wraps(operation)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await operation(*args, **kwargs)
        except StorageError:
            failed()
            raise
        finally:
            observe(time.perf_counter() - started)

    return timed
