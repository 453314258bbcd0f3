"""What each background job of this process is doing now, kept by the jobs themselves.

`/health` and `/metrics` read this board instead of asking Kafka and the stores on every call: a
job knows best whether it is working (its last attempt succeeded), retrying an outage (since
when, how many attempts, the last error) or setting records aside (dead letters, by reason),
and, for a job that one instance of a fleet runs at a time (the relay), who holds it (`Lease`).

The board in force is a context variable: an app's lifespan sets its own before it starts its
jobs, and every task they create inherits it, so two apps in one process (tests) never mix their
jobs, and nothing has to be threaded through every call. Outside any app the process-wide board
is used. The board also keeps how long its jobs' batches take in each stage
(`projections.stage_timings`). It imports nothing of ours but that neighbour, so `projections` and
`services` can both report to it.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from projections.stage_timings import StageTimings

JobState = Literal["starting", "running", "retrying"]

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Lease:
    """Who runs a job that one instance of a fleet runs at a time (the relay), as this process
    last saw it."""

    instance: str
    """This process's instance id (`OKR_INSTANCE_ID`, else host:pid)."""
    holder: str | None
    """The instance that holds the job's lock; None when nobody is known to."""
    holding: bool
    """Whether this process holds it (and runs the job)."""
    since: datetime
    """When this process saw the holder change."""

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "holder": self.holder,
            "holding": self.holding,
            "since": self.since.isoformat(),
        }


@dataclass
class JobHealth:
    """One running job. Updated from its task (and dead letters from worker threads: locked)."""

    name: str
    clock: Clock = _utc_now
    state: JobState = "starting"
    since: datetime = field(default_factory=_utc_now)
    """When the job entered its current state."""
    failures: int = 0
    """Failed attempts since the job last worked (0 while it works)."""
    last_error: str | None = None
    failures_total: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    """Records set aside, by dead-letter reason, since the job started."""
    lease: Lease | None = None
    """For a job only one instance runs at a time: who holds it."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def working(self) -> None:
        """The job did a unit of work (or is connected and waiting for work)."""
        with self._lock:
            if self.state != "running":
                self.state, self.since = "running", self.clock()
            self.failures = 0

    def failed(self, error: str) -> None:
        with self._lock:
            if self.state != "retrying":
                self.state, self.since = "retrying", self.clock()
            self.failures += 1
            self.failures_total += 1
            self.last_error = error

    def dead_lettered(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.dead_letters[reason] += count

    def leased(self, holder: str | None, holding: bool, instance: str) -> None:
        """Who holds the job's lock now; `since` moves only when that changes."""
        with self._lock:
            lease = self.lease
            if lease is None or (lease.holder, lease.holding) != (holder, holding):
                self.lease = Lease(instance, holder, holding, self.clock())

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "state": self.state,
                "since": self.since.isoformat(),
                "failures": self.failures,
                "failures_total": self.failures_total,
                **({"last_error": self.last_error} if self.last_error else {}),
                "dead_letters": dict(sorted(self.dead_letters.items())),
                **({"lease": self.lease.to_json()} if self.lease else {}),
            }


class JobBoard:
    """The jobs of one app (or process), in the order they started."""

    def __init__(self, clock: Clock = _utc_now) -> None:
        self.clock = clock
        self._jobs: list[JobHealth] = []
        self._lock = threading.Lock()
        self.stages = StageTimings()
        """Batch size and duration per stage of the board's jobs (`/metrics`)."""

    @contextlib.contextmanager
    def job(self, name: str) -> Iterator[JobHealth]:
        """A job's entry for as long as the block runs (two entries may share a name)."""
        entry = JobHealth(name, clock=self.clock, since=self.clock())
        with self._lock:
            self._jobs.append(entry)
        try:
            yield entry
        finally:
            with self._lock:
                self._jobs.remove(entry)

    def jobs(self) -> list[JobHealth]:
        with self._lock:
            return list(self._jobs)

    def retrying(self) -> list[JobHealth]:
        """The jobs that are not working right now: what makes a service `degraded`."""
        return [job for job in self.jobs() if job.state == "retrying"]


_PROCESS_BOARD = JobBoard()
_CURRENT: contextvars.ContextVar[JobBoard] = contextvars.ContextVar(
    "okr_job_board", default=_PROCESS_BOARD
)


def current_board() -> JobBoard:
    return _CURRENT.get()


def current_stages() -> StageTimings:
    """Where the current job's stage timings go. A worker thread sees them only if it runs in a
    copy of the job's context (`asyncio.to_thread` copies it; `run_in_executor` does not)."""
    return _CURRENT.get().stages


def context_reporting_to(board: JobBoard) -> contextvars.Context:
    """A copy of the current context in which jobs report to `board`: create the app's job
    tasks with it (`asyncio.create_task(job, context=...)`), and all they start inherits it."""
    context = contextvars.copy_context()
    context.run(_CURRENT.set, board)
    return context


_CURRENT_JOB: contextvars.ContextVar[JobHealth | None] = contextvars.ContextVar(
    "okr_current_job", default=None
)


def current_job() -> JobHealth | None:
    """The entry of the job running this task (set by `keep_running`), if any."""
    return _CURRENT_JOB.get()


def report_to(job: JobHealth) -> None:
    """Make `job` the current task's entry (tasks it creates inherit it)."""
    _CURRENT_JOB.set(job)
