"""Reading the real broker from tests: topics from their start, offsets, and waiting to a deadline.

Every helper takes the test's `Settings` and a logical topic name, so it reads the test's own
prefixed topics. None of them sleeps a fixed time: they read or poll until what the test waits for
is there, and fail with what they saw when the deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.settings import Settings

DEADLINE_S = 90.0
"""Long enough for a loaded two-core machine; only a failing test ever waits this long."""

Headers = list[tuple[str, bytes]]
Message = tuple[bytes | None, bytes | None, Headers]
"""(key, value, headers) as a producer sends them; a None value is sent as it is."""


async def eventually(
    condition: Callable[[], Awaitable[bool]], what: str, deadline_s: float = DEADLINE_S
) -> None:
    """Poll `condition` until it holds; fail naming `what` at the deadline."""
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                if await condition():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


@contextlib.asynccontextmanager
async def running(service: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run a consumer or relay loop as a task for the block, then cancel it and wait for it."""
    task = asyncio.create_task(service)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def produce(
    settings: Settings,
    logical_topic: str,
    messages: Iterable[Message],
    *,
    max_request_size: int = 1024 * 1024,
) -> list[Any]:
    """Send in order with an idempotent producer, as any service would; returns each one's
    RecordMetadata. Sends are pipelined (the idempotent producer keeps them in order), so tens of
    thousands of messages take seconds, not minutes. `max_request_size` lets a test send what
    the broker takes but our own producers' defaults would refuse (a 1 MB message)."""
    producer = AIOKafkaProducer(
        **settings.kafka_client_options(),
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_request_size=max_request_size,
    )
    await producer.start()
    try:
        topic = settings.topic(logical_topic)
        pending = [
            await producer.send(topic, value=value, key=key, headers=headers or None)
            for key, value, headers in messages
        ]
        return list(await asyncio.gather(*pending))
    finally:
        await producer.stop()


async def read_until(
    settings: Settings,
    logical_topic: str,
    done: Callable[[list[Any]], bool],
    *,
    watch: asyncio.Task[None] | None = None,
) -> list[Any]:
    """Every record of a topic from its start, read until `done(records)` holds.

    Fails at the deadline with what was read, or as soon as `watch` (the task that should write
    the records) has stopped, raising its error if it had one.
    """
    reader = AIOKafkaConsumer(
        settings.topic(logical_topic),
        **settings.kafka_client_options(),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not done(records):
                if watch is not None and watch.done():
                    watch.result()
                    raise AssertionError(f"the task writing {logical_topic} stopped")
                batch = await reader.getmany(timeout_ms=300)
                for partition_records in batch.values():
                    records.extend(partition_records)
    except TimeoutError:
        raise AssertionError(f"gave up waiting on {logical_topic}; read {records}") from None
    finally:
        await reader.stop()
    return records


async def read_to_end(settings: Settings, logical_topic: str) -> list[Any]:
    """Every record a topic holds right now (up to its end offsets when called), each partition
    in offset order."""
    reader = AIOKafkaConsumer(
        **settings.kafka_client_options(), group_id=None, enable_auto_commit=False
    )
    await reader.start()
    try:
        partitions = partitions_of(settings, logical_topic)
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        records: list[Any] = []
        async with asyncio.timeout(DEADLINE_S):
            while [p for p, end in ends.items() if await reader.position(p) < end]:
                batch = await reader.getmany(*partitions, timeout_ms=300)
                for partition_records in batch.values():
                    records.extend(partition_records)
    finally:
        await reader.stop()
    return records


async def end_offsets(settings: Settings, logical_topic: str) -> dict[int, int]:
    """The next offset to be written, per partition."""
    reader = AIOKafkaConsumer(**settings.kafka_client_options(), group_id=None)
    await reader.start()
    try:
        ends = await reader.end_offsets(partitions_of(settings, logical_topic))
    finally:
        await reader.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


@contextlib.asynccontextmanager
async def outside_the_group(settings: Settings, group_id: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of `group_id` that never joins it: it only reads or sets the group's offsets."""
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_options(), group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def committed_offsets(
    settings: Settings, group_id: str, logical_topic: str, partitions: int | None = None
) -> dict[int, int | None]:
    """The group's committed position per partition (None where it never committed)."""
    async with outside_the_group(settings, group_id) as consumer:
        return {
            tp.partition: await consumer.committed(tp)
            for tp in partitions_of(settings, logical_topic, partitions)
        }


async def commit_offsets(
    settings: Settings, group_id: str, logical_topic: str, offsets: Mapping[int, int]
) -> None:
    """Commit `offsets` (partition -> next offset to read) for the group, as its consumers would."""
    topic = settings.topic(logical_topic)
    committed = {TopicPartition(topic, p): offset for p, offset in offsets.items()}
    async with outside_the_group(settings, group_id) as consumer:
        consumer.assign(list(committed))
        await consumer.commit(committed)


def partitions_of(
    settings: Settings, logical_topic: str, partitions: int | None = None
) -> list[TopicPartition]:
    """The topic's partitions: as many as the service creates, unless the test made its own."""
    topic = settings.topic(logical_topic)
    return [TopicPartition(topic, p) for p in range(partitions or settings.topic_partitions)]
