"""How far behind each consumer is: Kafka consumer groups per partition.

Measured by the health monitor (`services.operations.health_monitor`) on its timer, never per
request: its
last round feeds `/metrics` and `/health`, so both say the same thing. The groups are data
(`CONSUMED`): a new consumer is one more row, not more code.

A group's position is what it committed to Kafka. The projector keeps its authoritative position
in its database and commits the same offsets to Kafka right after, so its Kafka lag may run a
batch behind, never ahead. A partition where a group committed nothing yet is counted from the
partition's first retained offset: every group here starts at the earliest, so a fresh group
shows all it still has to read.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from events import topics
from projections.projector import PROJECTOR_GROUP
from services.kafka.admin import HeldClients
from services.kafka.groups import COMMAND_HANDLER_GROUP, SCORER_GROUP

if TYPE_CHECKING:
    from services.settings import Settings

LAG_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ConsumedTopic:
    """A consumer group (unprefixed name) and the (logical) topic it reads."""

    group: str
    topic: str

    def group_id(self, settings: Settings) -> str:
        return settings.consumer_group(self.group)


CONSUMED: tuple[ConsumedTopic, ...] = (
    ConsumedTopic(COMMAND_HANDLER_GROUP, topics.COMMANDS),
    ConsumedTopic(PROJECTOR_GROUP, topics.EVENTS),
    ConsumedTopic(SCORER_GROUP, topics.KPI_EVENTS),
)
"""The groups `okr serve` runs."""


@dataclass(frozen=True)
class PartitionLag:
    group_id: str
    topic: str
    """The concrete (prefixed) topic name, as Kafka knows it."""
    partition: int
    committed: int | None
    """The next offset the group will read; None while it committed nothing on the partition."""
    end_offset: int
    lag: int


@dataclass(frozen=True)
class KafkaLag:
    """Per group and partition; `error` says why nothing could be measured (Kafka unreachable)."""

    partitions: tuple[PartitionLag, ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.error is None,
            **({"error": self.error} if self.error else {}),
            "partitions": [asdict(partition) for partition in self.partitions],
        }


async def kafka_lag(
    settings: Settings,
    consumed: tuple[ConsumedTopic, ...] = CONSUMED,
    timeout_s: float = LAG_TIMEOUT_S,
    held: HeldClients | None = None,
) -> KafkaLag:
    """Measure every group's lag on every partition of its topic; never raises for an outage.
    With `held` clients (the health monitor's), nothing is opened or closed but after a failure."""
    clients = held or HeldClients(settings, timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            return KafkaLag(await _measure(settings, consumed, clients))
    except (KafkaError, OSError, TimeoutError) as error:
        await clients.close()
        return KafkaLag(error=f"{type(error).__name__}: {error}".rstrip(": "))
    finally:
        if held is None:
            await clients.close()


async def _measure(
    settings: Settings, consumed: tuple[ConsumedTopic, ...], clients: HeldClients
) -> tuple[PartitionLag, ...]:
    reader = await clients.reader()
    admin = await clients.admin()
    partitions_of = await _partitions(admin, {settings.topic(entry.topic) for entry in consumed})
    every_partition = [tp for tps in partitions_of.values() for tp in tps]
    if not every_partition:
        return ()
    end = await reader.end_offsets(every_partition)
    start = await reader.beginning_offsets(every_partition)
    measured: list[PartitionLag] = []
    for entry in consumed:
        tps = partitions_of.get(settings.topic(entry.topic), [])
        if not tps:
            continue
        group_id = entry.group_id(settings)
        offsets = await admin.list_consumer_group_offsets(group_id, partitions=tps)
        for tp in tps:
            stored = offsets.get(tp)
            committed = stored.offset if stored is not None and stored.offset >= 0 else None
            position = committed if committed is not None else start[tp]
            measured.append(
                PartitionLag(
                    group_id=group_id,
                    topic=tp.topic,
                    partition=tp.partition,
                    committed=committed,
                    end_offset=end[tp],
                    lag=max(0, end[tp] - position),
                )
            )
    return tuple(measured)


async def _partitions(
    admin: AIOKafkaAdminClient, names: set[str]
) -> dict[str, list[TopicPartition]]:
    """The partitions of those topics that exist. Only existing topics are described: asking a
    broker that auto-creates topics about a missing one would create it, with the wrong layout."""
    existing = names & set(await admin.list_topics())
    if not existing:
        return {}
    return {
        described["topic"]: sorted(
            TopicPartition(described["topic"], p["partition"]) for p in described["partitions"]
        )
        for described in await admin.describe_topics(sorted(existing))
    }
