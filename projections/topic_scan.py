"""Read a whole topic once, from its first offsets to the end offsets it had when the scan began.

A rebuild and an audit both need "everything on the topic now", not a live subscription: no
consumer group, no committed offsets, and an end that new messages cannot push away.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

SCAN_POLL_TIMEOUT_MS = 500


@contextlib.asynccontextmanager
async def kafka_admin(
    client_options: Mapping[str, Any], client_id: str
) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**client_options, client_id=client_id)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def topic_partitions(client_options: Mapping[str, Any], topic: str) -> list[TopicPartition]:
    """Every partition of `topic`; LookupError if it does not exist."""
    async with kafka_admin(client_options, "okr-topic-scan") as admin:
        (described,) = await admin.describe_topics([topic])
    numbers = sorted(partition["partition"] for partition in described["partitions"])
    if described["error_code"] or not numbers:
        raise LookupError(f"topic {topic!r} does not exist (error {described['error_code']})")
    return [TopicPartition(topic, number) for number in numbers]


@contextlib.asynccontextmanager
async def scan_topic(
    client_options: Mapping[str, Any], partitions: list[TopicPartition]
) -> AsyncIterator[TopicScan]:
    """A consumer of no group, assigned `partitions`, seeked to their first offsets."""
    # "earliest" too: aiokafka may still run the reset an assignment triggers after our seek.
    consumer = AIOKafkaConsumer(
        **client_options, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        for partition, first in (await consumer.beginning_offsets(partitions)).items():
            consumer.seek(partition, first)
        yield TopicScan(consumer, end)
    finally:
        await consumer.stop()


class TopicScan:
    """One pass over a topic up to `end_offsets`, the ends it had when the scan began."""

    def __init__(self, consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> None:
        self._consumer = consumer
        self._end = end

    @property
    def end_offsets(self) -> dict[int, int]:
        return {tp.partition: offset for tp, offset in self._end.items()}

    async def batches(self, batch_size: int) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
        """Every record before the ends, in offset order per partition (none across them)."""
        consumer, end = self._consumer, self._end
        pending = [tp for tp in end if await consumer.position(tp) < end[tp]]
        while pending:
            fetched = await consumer.getmany(
                *pending, timeout_ms=SCAN_POLL_TIMEOUT_MS, max_records=batch_size
            )
            batch = [
                record
                for tp, records in fetched.items()
                for record in records
                if record.offset < end[tp]
            ]
            if batch:
                yield batch
            pending = [tp for tp in pending if await consumer.position(tp) < end[tp]]
