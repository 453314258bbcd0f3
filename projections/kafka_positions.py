"""Start consuming where a database says, not where Kafka committed.

The projector and the KPI scorer both keep their Kafka positions in the transaction of their
effects, so those are the authority; Kafka's committed offsets are written afterwards, for lag
tools only, and can lag behind (a crash in between) or be missing. The service's one Kafka
consumer (`services.kafka.consumer`) subscribes with this listener, and makes every consumer
quiet while idle (`IdleFetchWait`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

log = logging.getLogger(__name__)

StoredPositions = Callable[[Sequence[TopicPartition]], Mapping[TopicPartition, int]]
"""The stored next offset of each of these partitions; a partition left out starts from the
beginning. Blocking (it queries a database): the listener calls it in a worker thread."""

PartitionsHook = Callable[[set[TopicPartition]], None]

FETCH_MAX_WAIT_MS = 20
"""How long the broker may hold a fetch of the live consumers (scorer, projector) waiting for
data, while records come. aiokafka keeps one fetch in flight per broker and fetches a partition
it has just drained only after that one returns, so a fetch held for quiet partitions delays the
busy ones by up to this much (aiokafka's default, 500 ms, was most of the pipeline's latency).
Negligible for a broker, but not for the consumer's process: asked 50 times a second for
nothing, two such consumers kept an idle `okr serve` at ~4 % of a core, so an idle consumer
waits longer (`IdleFetchWait`)."""
IDLE_FETCH_MAX_WAIT_MS = 5_000
"""The fetch wait of a consumer that read nothing for `IDLE_AFTER_S`, and how often its fetch
routine looks around by itself (aiokafka's `consumer_timeout_ms`, 200 ms). It delays nothing:
while every partition is in the fetch, the broker answers as soon as any of them gets a record,
and the first records restore the short wait before the next fetch is built."""
IDLE_AFTER_S = 2.0


class IdleFetchWait:
    """A consumer's fetching, lively while its `getmany` returns records, and quiet once it
    returned none for `IDLE_AFTER_S`: then its fetches wait `IDLE_FETCH_MAX_WAIT_MS` at the
    broker, and its fetch routine wakes that seldom when nothing happens.

    aiokafka has no setters for either: its fetcher reads `_fetch_max_wait_ms` for every fetch it
    builds and `_fetcher_timeout` at every turn of its routine. Should a later aiokafka not have
    them, the consumer keeps what it was made with (tests/integration/test_idle_followers.py
    checks the installed one has them).
    """

    FETCHER_SETTINGS = ("_fetch_max_wait_ms", "_fetcher_timeout")

    def __init__(self, consumer: AIOKafkaConsumer, clock: Callable[[], float] = time.monotonic):
        self._consumer = consumer
        self._clock = clock
        self._last_records = clock()
        self._lively: tuple[Any, ...] | None = None
        """The fetcher's own settings, kept while it is quiet."""
        self.idle = False
        read = consumer.getmany

        async def getmany(*partitions: TopicPartition, **options: Any) -> Any:
            fetched = await read(*partitions, **options)
            self.saw(records=bool(fetched))
            return fetched

        consumer.getmany = getmany

    def saw(self, *, records: bool) -> None:
        now = self._clock()
        if records:
            self._last_records = now
            self._become(idle=False)
        elif now - self._last_records >= IDLE_AFTER_S:
            self._become(idle=True)

    def _become(self, *, idle: bool) -> None:
        if idle == self.idle:
            return
        fetcher = getattr(self._consumer, "_fetcher", None)  # made by `start()`
        if fetcher is None or not all(hasattr(fetcher, name) for name in self.FETCHER_SETTINGS):
            return
        if idle:
            self._lively = (fetcher._fetch_max_wait_ms, fetcher._fetcher_timeout)
            fetcher._fetch_max_wait_ms = IDLE_FETCH_MAX_WAIT_MS
            fetcher._fetcher_timeout = IDLE_FETCH_MAX_WAIT_MS / 1000
        elif self._lively is not None:
            fetcher._fetch_max_wait_ms, fetcher._fetcher_timeout = self._lively
        self.idle = idle


class SeekToStoredPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, seek each partition to its stored position before anything is fetched.

    aiokafka already starts fetching from the committed offset while this listener awaits the
    database, so the partitions stay paused until they are sought. If the positions cannot be
    read they stay paused and `raise_if_failed` stops the caller's loop, which restarts: falling
    back to Kafka's offsets could skip what the store never saw, or redo what it did.

    It also makes the consumer fetch less often while nothing comes (`IdleFetchWait`).
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        stored_positions: StoredPositions,
        *,
        name: str,
        on_assigned: PartitionsHook | None = None,
        on_revoked: PartitionsHook | None = None,
    ) -> None:
        self._consumer = consumer
        self.fetch_wait = IdleFetchWait(consumer)
        self._stored_positions = stored_positions
        self._name = name
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._failure: Exception | None = None

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        """Nothing to save: every applied batch stored its position already."""
        if self._on_revoked is not None:
            self._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        partitions = sorted(assigned)
        if not partitions:
            return
        self._consumer.pause(*partitions)
        try:
            positions = await asyncio.to_thread(self._stored_positions, partitions)
        except Exception as error:
            self._failure = error
            return
        unknown = []
        for partition in partitions:
            stored = positions.get(partition)
            if stored is None:
                unknown.append(partition)
            else:
                self._consumer.seek(partition, stored)
        if unknown:
            await self._consumer.seek_to_beginning(*unknown)
        self._consumer.resume(*partitions)
        if self._on_assigned is not None:
            self._on_assigned(set(partitions))
        log.info("%s: assigned %s", self._name, [f"{p.topic}[{p.partition}]" for p in partitions])

    def raise_if_failed(self) -> None:
        """Call after every fetch: a failed seek must stop the consumer, not go unnoticed."""
        if self._failure is not None:
            raise self._failure
