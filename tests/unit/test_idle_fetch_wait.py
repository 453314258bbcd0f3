"""`projections.kafka_positions.IdleFetchWait`: short fetch waits while records come, long ones
once the consumer is idle (a fetch every 20 ms cost an idle process ~2 % of a core)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from projections.kafka_positions import (
    FETCH_MAX_WAIT_MS,
    IDLE_AFTER_S,
    IDLE_FETCH_MAX_WAIT_MS,
    IdleFetchWait,
)

LOOK_AROUND_S = 0.2
"""aiokafka's `consumer_timeout_ms`."""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeConsumer:
    """What `IdleFetchWait` touches of an `AIOKafkaConsumer`: `getmany` and, once started, the
    fetcher's wait."""

    def __init__(self) -> None:
        self.next: dict[Any, list[Any]] = {}
        self._fetcher = SimpleNamespace(
            _fetch_max_wait_ms=FETCH_MAX_WAIT_MS, _fetcher_timeout=LOOK_AROUND_S
        )

    async def getmany(self, *partitions: Any, timeout_ms: int = 0, **_: Any) -> dict[Any, Any]:
        fetched, self.next = self.next, {}
        return fetched


async def test_an_idle_consumer_fetches_with_the_long_wait_and_records_bring_the_short_back() -> (
    None
):
    clock, consumer = Clock(), FakeConsumer()
    wait = IdleFetchWait(consumer, clock=clock)

    await consumer.getmany(timeout_ms=500)
    assert not wait.idle  # not for long enough

    clock.now += IDLE_AFTER_S
    await consumer.getmany(timeout_ms=500)
    assert wait.idle
    assert consumer._fetcher._fetch_max_wait_ms == IDLE_FETCH_MAX_WAIT_MS
    assert consumer._fetcher._fetcher_timeout == IDLE_FETCH_MAX_WAIT_MS / 1000

    consumer.next = {"tp": ["record"]}
    assert await consumer.getmany(timeout_ms=500) == {"tp": ["record"]}
    assert not wait.idle
    assert consumer._fetcher._fetch_max_wait_ms == FETCH_MAX_WAIT_MS
    assert consumer._fetcher._fetcher_timeout == LOOK_AROUND_S


async def test_a_consumer_not_started_or_without_the_attribute_keeps_its_wait() -> None:
    clock, consumer = Clock(), FakeConsumer()
    del consumer._fetcher
    wait = IdleFetchWait(consumer, clock=clock)
    clock.now += IDLE_AFTER_S
    await consumer.getmany()
    assert not wait.idle
