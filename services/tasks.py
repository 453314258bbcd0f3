"""Background coroutines tied to a block: started on entry, cancelled and awaited on exit."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def running(
    *jobs: Coroutine[Any, Any, None], context: contextvars.Context | None = None
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Awaiting the cancelled tasks lets each job close its clients before the block returns.

    Given a `context` (e.g. `projections.job_health.context_reporting_to(board)`), each task runs
    in a copy of it of its own: what one job sets in its context (its entry on the board) is
    never seen by another.
    """
    tasks = [
        asyncio.create_task(job, context=context.copy() if context is not None else None)
        for job in jobs
    ]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
