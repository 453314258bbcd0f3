"""Timers around each pipeline stage's batch function, to find where the latency run queues.

The stages may run in other processes (`bench.pipeline_process`), so each batch is recorded with
its wall-clock start (`time.time()`, comparable across processes) and the benchmark keeps only
the batches that started while it offered events.
"""

from __future__ import annotations

import contextlib
import cProfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from projections import projector as projector_module
from services.relay import publisher as relay_module
from services.scoring.scorer import KpiScorer

STAGES = ("scorer", "relay_read", "relay_publish", "project")
"""Sizes are records scored, events read / published, messages applied."""


@dataclass
class StageTimes:
    """Wall time and size of each batch of one pipeline stage."""

    started: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def add(self, started: float, seconds: float, size: int) -> None:
        self.started.append(started)
        self.seconds.append(seconds)
        self.sizes.append(size)

    def within(self, start: float, end: float) -> StageTimes:
        """The batches that started in [start, end) (wall clock)."""
        kept = StageTimes()
        for at, seconds, size in zip(self.started, self.seconds, self.sizes, strict=True):
            if start <= at < end:
                kept.add(at, seconds, size)
        return kept

    def extend(self, other: StageTimes) -> None:
        for at, seconds, size in zip(other.started, other.seconds, other.sizes, strict=True):
            self.add(at, seconds, size)

    def to_json(self) -> dict[str, list[Any]]:
        return {"started": self.started, "seconds": self.seconds, "sizes": self.sizes}

    @classmethod
    def from_json(cls, document: dict[str, list[Any]]) -> StageTimes:
        return cls(list(document["started"]), list(document["seconds"]), list(document["sizes"]))

    def summary(self) -> dict[str, float]:
        total_s = sum(self.seconds)
        return {
            "batches": len(self.seconds),
            "mean_ms": round(1000 * total_s / len(self.seconds), 1) if self.seconds else 0.0,
            "p99_ms": round(1000 * percentile(self.seconds, 0.99), 1) if self.seconds else 0.0,
            "mean_size": round(sum(self.sizes) / len(self.sizes), 1) if self.sizes else 0.0,
            "items_per_busy_s": round(sum(self.sizes) / total_s) if total_s else 0.0,
        }


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


@contextlib.contextmanager
def timed_stages(
    profiles: dict[str, cProfile.Profile] | None = None,
) -> Iterator[dict[str, StageTimes]]:
    """Wrap the scorer's, the relay's and the projector's batch functions with timers (and,
    given `profiles`, one cProfile per stage: they run in worker threads, out of reach of a
    profile of the main thread)."""
    stages = {name: StageTimes() for name in STAGES}
    if profiles is not None:
        profiles.update({name: cProfile.Profile() for name in ("scorer", "relay_read", "project")})

    @contextlib.contextmanager
    def profiled(name: str) -> Iterator[None]:
        profile = profiles.get(name) if profiles is not None else None
        if profile is None:
            yield
            return
        profile.enable()
        try:
            yield
        finally:
            profile.disable()

    score = KpiScorer.score
    read_pending = relay_module.OutboxRelay.read_pending
    publish_batch = relay_module.OutboxRelay.publish_batch
    apply_batch = projector_module.apply_batch

    def timed_score(self: KpiScorer, items: Any, prepared: Any = None) -> Any:
        wall, started = time.time(), time.perf_counter()
        try:
            with profiled("scorer"):
                return score(self, items, prepared)
        finally:
            stages["scorer"].add(wall, time.perf_counter() - started, len(items))

    def timed_read(self: Any, limit: int) -> Any:
        wall, started = time.time(), time.perf_counter()
        with profiled("relay_read"):
            batch = read_pending(self, limit)
        if batch:
            stages["relay_read"].add(wall, time.perf_counter() - started, len(batch))
        return batch

    async def timed_publish(self: Any, producer: Any, batch: Any) -> None:
        wall, started = time.time(), time.perf_counter()
        try:
            await publish_batch(self, producer, batch)
        finally:
            stages["relay_publish"].add(wall, time.perf_counter() - started, len(batch))

    def timed_apply(store: Any, messages: Any) -> Any:
        wall, started = time.time(), time.perf_counter()
        try:
            with profiled("project"):
                return apply_batch(store, messages)
        finally:
            stages["project"].add(wall, time.perf_counter() - started, len(messages))

    KpiScorer.score = timed_score  # type: ignore[method-assign]
    relay_module.OutboxRelay.read_pending = timed_read  # type: ignore[method-assign]
    relay_module.OutboxRelay.publish_batch = timed_publish  # type: ignore[method-assign]
    projector_module.apply_batch = timed_apply
    try:
        yield stages
    finally:
        KpiScorer.score = score  # type: ignore[method-assign]
        relay_module.OutboxRelay.read_pending = read_pending  # type: ignore[method-assign]
        relay_module.OutboxRelay.publish_batch = publish_batch  # type: ignore[method-assign]
        projector_module.apply_batch = apply_batch
