"""Rebuild: drop every read model, replay `okr.events` from offset 0, and get the same tables.

The replay goes through `apply_batch`, the very code the live projector runs, so a rebuilt store
equals an incrementally built one row for row (the reducer reads no clock). It stops at the end
offsets captured when it started, leaving positions there: a projector started afterwards resumes
exactly where the rebuild ended. Run it with the projector stopped: a live projector would move
positions under the replay (`projector_members` lets a caller refuse).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from projections.projector import MAX_RECORDS, POLL_TIMEOUT_MS, BatchReport, Message, apply_batch
from projections.views import ReadStore

INACTIVE_GROUP_STATES = frozenset({"Empty", "Dead"})


@dataclass(frozen=True)
class RebuildReport:
    events: BatchReport
    end_offsets: dict[int, int]
    """Partition -> the offset the replay stopped at (the topic's end when it started)."""
    counts: dict[str, int]
    """Rows per table afterwards."""


async def rebuild(
    store: ReadStore,
    *,
    topic: str,
    client_options: Mapping[str, Any],
    batch_size: int = MAX_RECORDS,
) -> RebuildReport:
    partitions = await topic_partitions(client_options, topic)
    await asyncio.to_thread(store.reset)
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
        report = BatchReport()
        pending = [tp for tp in partitions if await consumer.position(tp) < end[tp]]
        while pending:
            fetched = await consumer.getmany(
                *pending, timeout_ms=POLL_TIMEOUT_MS, max_records=batch_size
            )
            messages = [
                Message.of(record)
                for tp, records in fetched.items()
                for record in records
                if record.offset < end[tp]
            ]
            if messages:
                report += await asyncio.to_thread(apply_batch, store, messages)
            pending = [tp for tp in pending if await consumer.position(tp) < end[tp]]
    finally:
        await consumer.stop()
    counts = await asyncio.to_thread(store.counts)
    return RebuildReport(report, {tp.partition: end[tp] for tp in partitions}, counts)


@contextlib.asynccontextmanager
async def _admin(client_options: Mapping[str, Any]) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**client_options, client_id="okr-projections-rebuild")
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def topic_partitions(client_options: Mapping[str, Any], topic: str) -> list[TopicPartition]:
    """Every partition of `topic`; LookupError before anything is reset if it does not exist."""
    async with _admin(client_options) as admin:
        (described,) = await admin.describe_topics([topic])
    numbers = sorted(partition["partition"] for partition in described["partitions"])
    if described["error_code"] or not numbers:
        raise LookupError(f"topic {topic!r} does not exist (error {described['error_code']})")
    return [TopicPartition(topic, number) for number in numbers]


async def projector_members(client_options: Mapping[str, Any], group_id: str) -> int:
    """How many consumers are in the projector's group now (0 when none runs)."""
    async with _admin(client_options) as admin:
        responses = await admin.describe_consumer_groups([group_id])
    members = 0
    for response in responses:
        for group in response.groups:
            # DescribeGroups v0+: (error_code, group_id, state, protocol_type, protocol, members…)
            state, group_members = group[2], group[5]
            if state not in INACTIVE_GROUP_STATES:
                members += len(group_members)
    return members
