"""The one Kafka consumer (`services.kafka.consumer`) against the real broker.

Where it starts (the job's stored positions, else Kafka's committed offsets), what a fetch
returns (a window gathers more, an unreadable position stops it), that its commits reach Kafka
and are flushed before it closes, and that a job run by `run_consumer` is on the board and
restarts after a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from events import topics
from projections.backoff import Backoff
from projections.job_health import JobBoard, context_reporting_to
from services.kafka.admin import ensure_topics
from services.kafka.consumer import (
    Consumer,
    Fetched,
    Subscription,
    consuming,
    just,
    offsets_after,
    run_consumer,
)
from services.settings import Settings
from services.tasks import running
from tests.kafka_support import commit_offsets, committed_offsets, eventually, partitions_of

TOPIC = topics.EVENTS
"""Any of the service's topics will do: each test has its own prefix, so its own topics."""
FAST = Backoff(first_s=0.05, max_s=0.2)


@pytest.fixture
async def topics_ready(settings: Settings) -> None:
    await ensure_topics(settings)


def subscription(
    settings: Settings,
    stored: Callable[[Sequence[TopicPartition]], dict[TopicPartition, int]] | None = None,
    name: str = "test consumer",
) -> Subscription:
    return Subscription(
        name=name,
        topics=(settings.topic(TOPIC),),
        group_id=settings.consumer_group("block-test"),
        client_options=settings.kafka_client_options(),
        stored_positions=stored,
    )


async def send(settings: Settings, partition: int, *values: bytes) -> None:
    """Records to one partition, in order."""
    producer = AIOKafkaProducer(**settings.kafka_client_options(), acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(settings.topic(TOPIC), value, partition=partition)
    finally:
        await producer.stop()


async def fetch_until(consumer: Consumer, count: int) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of what the consumer fetches, until `count` came."""
    seen: list[tuple[int, int, bytes]] = []

    async def enough() -> bool:
        fetched = await consumer.fetch(200, 100)
        seen.extend((tp.partition, r.offset, r.value) for tp, rs in fetched.items() for r in rs)
        return len(seen) >= count

    await eventually(enough, f"{count} records fetched")
    return sorted(seen)


@pytest.mark.usefixtures("topics_ready")
async def test_stored_positions_decide_where_each_partition_starts_not_kafkas_offsets(
    settings: Settings,
) -> None:
    for partition in range(3):
        await send(settings, partition, b"a", b"b", b"c")
    group = settings.consumer_group("block-test")
    await commit_offsets(settings, group, TOPIC, {0: 0, 1: 3, 2: 3})  # to be ignored
    [p0, p1, _] = partitions_of(settings, TOPIC)

    def stored(partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: {p0: 2, p1: 1}[tp] for tp in partitions if tp in (p0, p1)}

    async with consuming(subscription(settings, stored)) as consumer:
        seen = await fetch_until(consumer, 1 + 2 + 3)

    assert seen == [
        (0, 2, b"c"),
        (1, 1, b"b"),
        (1, 2, b"c"),
        (2, 0, b"a"),  # no stored position: from the beginning
        (2, 1, b"b"),
        (2, 2, b"c"),
    ]


@pytest.mark.usefixtures("topics_ready")
async def test_without_stored_positions_it_starts_after_kafkas_committed_offsets(
    settings: Settings,
) -> None:
    await send(settings, 0, b"done", b"next")
    await commit_offsets(settings, settings.consumer_group("block-test"), TOPIC, {0: 1})

    async with consuming(subscription(settings)) as consumer:
        assert await fetch_until(consumer, 1) == [(0, 1, b"next")]


@pytest.mark.usefixtures("topics_ready")
async def test_commits_reach_kafka_and_are_finished_before_it_closes(settings: Settings) -> None:
    await send(settings, 1, b"a", b"b")
    await send(settings, 2, b"c")
    async with consuming(subscription(settings)) as consumer:
        fetched: Fetched = {}

        async def both_partitions() -> bool:
            more = await consumer.fetch(200, 100)
            for tp, records in more.items():
                fetched.setdefault(tp, []).extend(records)
            return sum(len(records) for records in fetched.values()) == 3

        await eventually(both_partitions, "the three records fetched")
        consumer.commit(offsets_after(fetched), 3)
        # Not awaited: closing waits for the commit in flight.

    committed = await committed_offsets(settings, settings.consumer_group("block-test"), TOPIC)
    assert committed == {0: None, 1: 2, 2: 1}


@pytest.mark.usefixtures("topics_ready")
async def test_a_window_gathers_what_arrives_after_the_first_records(settings: Settings) -> None:
    async with consuming(subscription(settings)) as consumer:
        await consumer.fetch(500, 10)  # joined the group: assignment done
        fetching = asyncio.create_task(consumer.fetch(10_000, 2, window_s=30.0))
        await send(settings, 0, b"first")
        await asyncio.sleep(0.3)
        assert not fetching.done(), "the window keeps the batch open"
        await send(settings, 1, b"second")
        fetched = await asyncio.wait_for(fetching, 20.0)  # full (2 records): the window ends

    assert sorted(r.value for records in fetched.values() for r in records) == [
        b"first",
        b"second",
    ]


class Unreadable(RuntimeError):
    pass


@pytest.mark.usefixtures("topics_ready")
async def test_stored_positions_that_cannot_be_read_stop_the_fetch(settings: Settings) -> None:
    await send(settings, 0, b"never read from Kafka's offsets")

    def unreadable(partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        raise Unreadable("the store is away")

    async with consuming(subscription(settings, unreadable)) as consumer:
        with pytest.raises(Unreadable):
            async with asyncio.timeout(60):
                while not await consumer.fetch(200, 100):
                    pass


@pytest.mark.usefixtures("topics_ready")
async def test_a_job_is_on_the_board_and_restarts_from_its_positions_after_a_failure(
    settings: Settings,
) -> None:
    await send(settings, 0, b"a", b"b")
    board = JobBoard()
    done: dict[int, int] = {}
    """Per partition, the next offset the job's effects reached: its stored positions."""
    attempts = 0
    seen: list[bytes] = []

    def stored(partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: done[tp.partition] for tp in partitions if tp.partition in done}

    async def work(consumer: Consumer, succeeded: Callable[[], None]) -> None:
        nonlocal attempts
        attempts += 1
        while True:
            fetched = await consumer.fetch(200, 1)
            for tp, records in fetched.items():
                if attempts == 1 and records[0].value == b"b":
                    raise RuntimeError("a bug met once")
                seen.extend(record.value for record in records)
                done[tp.partition] = records[-1].offset + 1
            if fetched:
                succeeded()
                consumer.commit(offsets_after(fetched), 1)

    job = run_consumer(
        subscription(settings, stored, name="block test"),
        just(work),
        backoff=FAST,
        resuming="from the stored positions",
        log=logging.getLogger("tests.block"),
    )
    async with running(job, context=context_reporting_to(board)):

        async def both_seen() -> bool:
            return seen == [b"a", b"b"]

        await eventually(both_seen, "both records, each once")
        [entry] = [entry.to_json() for entry in board.jobs() if entry.name == "block test"]

    assert attempts == 2
    assert entry["state"] == "running"
    assert entry["failures_total"] == 1
