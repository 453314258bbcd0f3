"""Background loops whose store or broker may fail: the pause between attempts, and the loop.

One formula and one loop for every such job (relay, projector, KPI scorer, bindings follower).
They live here, importing nothing of ours but their neighbours, so both `projections` and
`services` can use them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from projections.failures import describe, is_transient
from projections.job_health import JobHealth, current_board, report_to


@dataclass(frozen=True)
class Backoff:
    """Capped exponential: `first_s` after the first failure, doubling, never above `max_s`."""

    first_s: float = 0.5
    max_s: float = 30.0

    def delay_s(self, failures: int) -> float:
        return min(self.max_s, self.first_s * 2.0 ** max(0, failures - 1))


class Attempt(Protocol):
    """One run of a background job until it fails; calls `succeeded()` once connected and after
    each unit of work done, so the next failure starts backing off from the first delay again."""

    def __call__(self, succeeded: Callable[[], None]) -> Awaitable[None]: ...


class Outage:
    """Says once that a job stopped working and once that it is back, not at every retry, and
    keeps the job's entry on the board (if it has one) saying the same."""

    def __init__(self, what: str, job: JobHealth | None, log: logging.Logger) -> None:
        self.what, self.job, self.log = what, job, log
        self.started: float | None = None
        self.retries = 0

    def succeeded(self) -> None:
        if self.started is not None:
            self.log.warning(
                "%s: working again after %.1fs (%d attempt(s) retried)",
                self.what,
                time.monotonic() - self.started,
                self.retries,
            )
            self.started, self.retries = None, 0
        if self.job is not None:
            self.job.working()

    def failed(self, error: Exception, resuming: str, delay_s: float) -> None:
        if self.job is not None:
            self.job.failed(describe(error))
        transient = is_transient(error)
        if self.started is None:
            self.started = time.monotonic()
            self.log.log(
                logging.WARNING if transient else logging.ERROR,
                "%s: %s; %s, retrying every %.1fs at most until it works (said once)",
                self.what,
                describe(error),
                resuming,
                delay_s,
                exc_info=not transient,
            )
        else:
            self.retries += 1
            self.log.debug("%s: still failing: %s; next try in %.1fs", self.what, error, delay_s)


async def keep_running(
    what: str,
    attempt: Attempt,
    *,
    backoff: Backoff,
    resuming: str,
    log: logging.Logger,
) -> NoReturn:
    """Run `attempt` again and again: after a failure, back off, and resume.

    Every exception is retried, not only Kafka's: these are background jobs, and one that died
    quietly would leave the service accepting work that nobody ever processes. Each job isolates
    the records that can never be processed itself (dead letters), so what reaches this loop is
    an outage (a broker or store away), or a fault that the next attempt must route around. The
    job's entry on the board says `retrying` (since when, the last error) until it works again;
    the log says it once when it stops and once when it is back. An exception raised while the
    task is being cancelled ends the loop as a cancellation: retrying would keep a stopping
    process alive.
    """
    with current_board().job(what) as job:
        # The loop runs in a context of its own in which `job` is current: what it starts
        # (dead-letter publishers) reports to this job even when tasks share a context.
        context = contextvars.copy_context()
        context.run(report_to, job)
        await asyncio.create_task(
            _retrying(what, attempt, backoff, resuming, log, job), context=context
        )
    raise AssertionError("unreachable: the loop only ends by an exception")


async def _retrying(
    what: str,
    attempt: Attempt,
    backoff: Backoff,
    resuming: str,
    log: logging.Logger,
    job: JobHealth,
) -> None:
    outage = Outage(what, job, log)
    while True:
        try:
            await attempt(outage.succeeded)
        except Exception as error:
            task = asyncio.current_task()
            if task is not None and task.cancelling() > 0:
                raise asyncio.CancelledError from error
            delay = backoff.delay_s(job.failures + 1)
            outage.failed(error, resuming, delay)
            await asyncio.sleep(delay)
