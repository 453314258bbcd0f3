"""Background loops whose store or broker may fail: the pause between attempts, and the loop.

One formula and one loop for every such job (relay, projector, KPI scorer, bindings follower).
They live here, importing nothing of ours, so both `projections` and `services` can use them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from aiokafka.errors import KafkaError


@dataclass(frozen=True)
class Backoff:
    """Capped exponential: `first_s` after the first failure, doubling, never above `max_s`."""

    first_s: float = 0.5
    max_s: float = 30.0

    def delay_s(self, failures: int) -> float:
        return min(self.max_s, self.first_s * 2.0 ** max(0, failures - 1))


class Attempt(Protocol):
    """One run of a background job until it fails; calls `succeeded()` after each unit of work
    done, so the next failure starts backing off from the first delay again."""

    def __call__(self, succeeded: Callable[[], None]) -> Awaitable[None]: ...


async def keep_running(
    what: str,
    attempt: Attempt,
    *,
    backoff: Backoff,
    resuming: str,
    log: logging.Logger,
) -> NoReturn:
    """Run `attempt` again and again: after a failure, log it, back off, and resume.

    Every exception is retried, not only Kafka's: these are background jobs, and one that died
    quietly would leave the service accepting work that nobody ever processes. A broker or
    store outage is logged in one line; anything else with its traceback. An exception raised
    while the task is being cancelled ends the loop as a cancellation: retrying would keep a
    stopping process alive.
    """
    failures = 0

    def succeeded() -> None:
        nonlocal failures
        failures = 0

    while True:
        try:
            await attempt(succeeded)
        except Exception as error:
            task = asyncio.current_task()
            if task is not None and task.cancelling() > 0:
                raise asyncio.CancelledError from error
            failures += 1
            delay = backoff.delay_s(failures)
            log.warning(
                "%s: %s: %s; %s in %.1fs",
                what,
                type(error).__name__,
                error,
                resuming,
                delay,
                exc_info=not isinstance(error, KafkaError | OSError),
            )
            await asyncio.sleep(delay)
