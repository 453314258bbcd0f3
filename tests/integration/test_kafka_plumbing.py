"""The plumbing every component relies on, proven against the real broker we ship.

Idempotent producer, keyed messages over several partitions, a consumer group that commits, and a
restarted consumer that resumes at the committed position: nothing seen twice, nothing missed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.kafka.admin import ensure_topics, topic_specs
from services.settings import Settings
from tests.kafka_support import committed_offsets

PARTITIONS = 4
MESSAGES = 400
KEYS = 17
PLUMBING = "plumbing"
GROUP = "plumbing-group"


async def create_topic(settings: Settings, name: str) -> None:
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()


async def consume(settings: Settings, topic: str, group: str, limit: int) -> list[tuple[str, int]]:
    """Read up to `limit` messages as `group`, commit exactly what was read, and leave."""
    consumer = AIOKafkaConsumer(
        topic,
        **settings.kafka_client_options(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=25,
    )
    await consumer.start()
    seen: list[tuple[str, int]] = []
    try:
        async with asyncio.timeout(60):
            while len(seen) < limit:
                batch = await consumer.getmany(timeout_ms=500, max_records=limit - len(seen))
                offsets = {}
                for partition, records in batch.items():
                    for record in records:
                        assert record.key is not None and record.value is not None
                        seen.append((record.key.decode(), int(record.value)))
                    offsets[partition] = records[-1].offset + 1
                if offsets:
                    await consumer.commit(offsets)
    finally:
        await consumer.stop()
    return seen


async def test_keyed_idempotent_messages_resume_after_restart_without_loss_or_repeat(
    settings: Settings,
) -> None:
    topic = settings.topic(PLUMBING)
    await create_topic(settings, topic)
    producer = AIOKafkaProducer(**settings.kafka_client_options(), enable_idempotence=True)
    await producer.start()
    try:
        sends = [
            await producer.send(topic, key=f"k{i % KEYS}".encode(), value=str(i).encode())
            for i in range(MESSAGES)
        ]
        metadata = await asyncio.gather(*sends)
    finally:
        await producer.stop()
    assert {m.partition for m in metadata} == set(range(PARTITIONS)), "keys spread over partitions"

    first = await consume(settings, topic, GROUP, limit=MESSAGES // 3)
    rest = await consume(settings, topic, GROUP, limit=MESSAGES - len(first))

    values = [value for _, value in first + rest]
    assert sorted(values) == list(range(MESSAGES)), "every message exactly once across restart"
    per_key: dict[str, list[int]] = defaultdict(list)
    for key, value in first + rest:
        per_key[key].append(value)
    for key, key_values in per_key.items():
        assert key_values == sorted(key_values), f"order kept within key {key}"

    committed = await committed_offsets(settings, GROUP, PLUMBING, PARTITIONS)
    assert sum(c or 0 for c in committed.values()) == MESSAGES, (
        "the group's committed position is the end"
    )


async def test_service_topics_are_created_idempotently_with_unlimited_event_retention(
    settings: Settings,
) -> None:
    created = await ensure_topics(settings)
    assert sorted(created) == sorted(spec.name for spec in topic_specs(settings))
    assert await ensure_topics(settings) == [], "a second run creates nothing"

    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        described = await admin.describe_topics([settings.topic("okr.events")])
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.topic("okr.events"))]
        )
    finally:
        await admin.close()
    assert len(described[0]["partitions"]) == settings.topic_partitions
    configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
    assert configs["retention.ms"] == "-1"
    assert configs["retention.bytes"] == "-1"
