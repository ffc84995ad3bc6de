"""A background task that lives as long as a block: started on entry, cancelled on exit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def background(work: Coroutine[Any, Any, object] | None) -> AsyncIterator[None]:
    """Run ``work`` (a coroutine; None runs nothing) as a task during the block, then cancel it
    and wait for it to end, so no task outlives the block that started it."""
    task = None if work is None else asyncio.create_task(work)
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
