"""Rebuild: drop every read model, replay `okr.events` from offset 0, and get the same tables.

The replay goes through `apply_isolating`, the very code the live projector runs, so a rebuilt store
equals an incrementally built one row for row (the reducer reads no clock). It stops at the end
offsets captured when it started, leaving positions there: a projector started afterwards resumes
exactly where the rebuild ended. Run it with the projector stopped: a live projector would move
positions under the replay (`projector_members` lets a caller refuse).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from projections.failures import SetAsideStreak
from projections.projector import MAX_RECORDS, BatchReport, Message, apply_isolating
from projections.topic_scan import kafka_admin, scan_topic, topic_partitions
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
    report = BatchReport()
    streak = SetAsideStreak()
    async with scan_topic(client_options, partitions) as scan:
        async for records in scan.batches(batch_size):
            messages = [Message.of(record) for record in records]
            report += await asyncio.to_thread(apply_isolating, store, messages, streak)
    counts = await asyncio.to_thread(store.counts)
    return RebuildReport(report, scan.end_offsets, counts)


async def projector_members(client_options: Mapping[str, Any], group_id: str) -> int:
    """How many consumers are in the projector's group now (0 when none runs)."""
    async with kafka_admin(client_options, "okr-projections-rebuild") as admin:
        responses = await admin.describe_consumer_groups([group_id])
    members = 0
    for response in responses:
        for group in response.groups:
            # DescribeGroups v0+: (error_code, group_id, state, protocol_type, protocol, members…)
            state, group_members = group[2], group[5]
            if state not in INACTIVE_GROUP_STATES:
                members += len(group_members)
    return members
