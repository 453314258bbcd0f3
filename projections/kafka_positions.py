"""Start consuming where a database says, not where Kafka committed.

The projector and the KPI scorer both keep their Kafka positions in the transaction of their
effects, so those are the authority; Kafka's committed offsets are written afterwards, for lag
tools only, and can lag behind (a crash in between) or be missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

log = logging.getLogger(__name__)

StoredPositions = Callable[[Sequence[TopicPartition]], Mapping[TopicPartition, int]]
"""The stored next offset of each of these partitions; a partition left out starts from the
beginning. Blocking (it queries a database): the listener calls it in a worker thread."""

PartitionsHook = Callable[[set[TopicPartition]], None]

FETCH_MAX_WAIT_MS = 20
"""How long the broker may hold a fetch of the live consumers (scorer, projector) waiting for
data. aiokafka keeps one fetch in flight per broker and fetches a partition it has just drained
only after that one returns, so a fetch held for quiet partitions delays the busy ones by up to
this much (aiokafka's default, 500 ms, was most of the pipeline's latency). An idle consumer
then asks 50 times a second: negligible for a broker."""


class SeekToStoredPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, seek each partition to its stored position before anything is fetched.

    aiokafka already starts fetching from the committed offset while this listener awaits the
    database, so the partitions stay paused until they are sought. If the positions cannot be
    read they stay paused and `raise_if_failed` stops the caller's loop, which restarts: falling
    back to Kafka's offsets could skip what the store never saw, or redo what it did.
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
