"""How long each stage of a batch job took, and on how big a batch, as Prometheus histograms.

The scorer, the projector and the relay work batch by batch, and each batch goes through a few
stages (fetch, decode, prepare, plan, save, commit...). A stage is timed once per batch with
`time.perf_counter`, never per record, so timing costs a few microseconds a batch: nothing next to
the milliseconds a batch takes. Two histograms, labelled by job and stage:
`okr_stage_duration_seconds` (0.1 ms to 10 s) and `okr_stage_batch_size` (1 to 100,000 items:
records for the scorer, messages for the projector, events for the relay).

They are kept per job board (`projections.job_health.current_stages`): an app's jobs observe into
the app's histograms, rendered by its `/metrics`; `okr scorer`'s into the process's, served on
`--metrics-port`. Nothing goes to prometheus_client's global registry. Imports nothing of ours,
so `projections` and `services` can both time their stages.

The stages, in the order a batch goes through them (each job's module says more):
- scorer: fetch (from Kafka, until the scoring window closes), decode, prepare (per record: in a
  worker process for a backlog's batches), plan (stored state read, key results decided), save
  (the one transaction), commit (Kafka offsets, for lag monitoring);
- projector: fetch, decode, apply (objectives read and folded), save (rows and positions, one
  transaction), commit (Kafka offsets);
- relay: read (the notification log), publish (sent and acknowledged), record (the position).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from time import perf_counter

from prometheus_client import Histogram
from prometheus_client.core import Metric

DURATION_BUCKETS = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025),
    *(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
"""Seconds: from a tenth of a millisecond (a few offsets committed) to ten (a backlog's batch)."""
SIZE_BUCKETS = (
    *(1, 2, 5, 10, 20, 50, 100, 200),
    *(500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000),
)
"""Items in the batch: from one to twice the scorer's largest batch (50,000 records)."""
LABELS = ("job", "stage")
SCORER, PROJECTOR, RELAY = "scorer", "projector", "relay"
"""The `job` label of each batch job."""
STAGES = {
    SCORER: ("fetch", "decode", "prepare", "plan", "save", "commit"),
    PROJECTOR: ("fetch", "decode", "apply", "save", "commit"),
    RELAY: ("read", "publish", "record"),
}
"""Each job's `stage` labels, in the order a batch goes through them."""


class StageTimings:
    """The two histograms of one job board (one app, or one process)."""

    def __init__(self) -> None:
        self.duration = Histogram(
            "okr_stage_duration_seconds",
            "Wall time of one batch in one stage of a job (scorer, projector, relay).",
            LABELS,
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self.batch_size = Histogram(
            "okr_stage_batch_size",
            "Items of one batch in one stage of a job: records (scorer), messages (projector), "
            "events (relay).",
            LABELS,
            buckets=SIZE_BUCKETS,
            registry=None,
        )
        self._series: dict[tuple[str, str], tuple[Histogram, Histogram]] = {}

    def observe(self, job: str, stage: str, seconds: float, size: int) -> None:
        series = self._series.get((job, stage))
        if series is None:
            series = (self.duration.labels(job, stage), self.batch_size.labels(job, stage))
            self._series[(job, stage)] = series
        series[0].observe(seconds)
        series[1].observe(size)

    def timer(self, job: str) -> StageTimer:
        return StageTimer(job, self)

    def collect(self) -> Iterator[Metric]:
        yield from self.duration.collect()
        yield from self.batch_size.collect()


class StageTimer:
    """The stages of one batch, timed as they run and observed together once it is done.

    A stage that runs twice (a save retried after a lost race) adds up; a stage inside another
    (preparing inside planning) is not counted again in the outer one, so the stages of a batch
    add up to its time. A batch that fails is not observed: whoever retries it times it again.
    """

    __slots__ = ("_nested", "job", "seconds", "timings")

    def __init__(self, job: str, timings: StageTimings) -> None:
        self.job = job
        self.timings = timings
        self.seconds: dict[str, float] = {}
        self._nested = 0.0

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = perf_counter()
        outer, self._nested = self._nested, 0.0
        try:
            yield
        finally:
            elapsed = perf_counter() - started
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - self._nested
            self._nested = outer + elapsed

    def observe(self, size: int) -> None:
        """Every stage timed so far, as one batch of `size` items."""
        for name, seconds in self.seconds.items():
            self.timings.observe(self.job, name, seconds, size)
