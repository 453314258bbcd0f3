"""The projector as a service: which read store, which topic, which group, and its Kafka loop.

`projections/` may not import `services/`, so it is the pure side (fold a batch into the store
with its positions, `projections.projector.apply_isolating`); this module turns settings into its
values and runs it on the service's one Kafka consumer (`services.kafka.consumer`, ADR 26), which
seeks to the read store's positions and commits the same offsets to Kafka afterwards, for lag
tools only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from events import topics
from projections.backoff import Backoff
from projections.failures import SetAsideStreak
from projections.postgres import PostgresReadStore
from projections.projector import (
    MAX_RECORDS,
    PROJECTOR_GROUP,
    BatchReport,
    Message,
    Rejected,
    apply_isolating,
)
from projections.rebuild import RebuildReport, projector_members, rebuild
from projections.sqlite import SQLiteReadStore
from projections.stage_timings import PROJECTOR
from projections.views import ReadStore
from services.kafka.consumer import (
    Consumer,
    Subscription,
    just,
    new_acknowledged_producer,
    offsets_after,
    run_consumer,
)
from services.kafka.dead_letters import DeadLetterPublisher, send_with_producer
from services.scoring.gc_tuning import freeze_start_up_objects
from services.settings import Settings
from services.stores import is_postgres, sqlite_path

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 500


def open_read_store(settings: Settings) -> ReadStore:
    """Blocking (creates the tables if missing); the caller closes it."""
    url = settings.read_store_url
    if is_postgres(url):
        return PostgresReadStore(url)
    return SQLiteReadStore(sqlite_path(url))


def projector_group(settings: Settings) -> str:
    """Prefixed like the topics, so environments sharing a cluster keep separate groups."""
    return settings.consumer_group(PROJECTOR_GROUP)


class ProjectorDeadLetters:
    """Publishes the messages the projector skipped on `okr.dlq`, with the reason and origin,
    through a producer of its own started on first use (most runs never need one)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._publisher: DeadLetterPublisher | None = None

    async def __call__(self, rejected: Sequence[Rejected]) -> None:
        try:
            publisher = await self._started()
            await asyncio.gather(
                *(publisher.publish(r.message, r.reason, r.detail) for r in rejected)
            )
        except Exception:
            for r in rejected:
                log.error(
                    "projector: could not dead-letter %s[%d]@%d (%s); it stays on the topic",
                    r.message.topic,
                    r.message.partition,
                    r.message.offset,
                    r.reason,
                )
            raise

    async def _started(self) -> DeadLetterPublisher:
        if self._publisher is None:
            producer = new_acknowledged_producer(self.settings.kafka_client_options())
            await producer.start()
            self._producer = producer
            self._publisher = DeadLetterPublisher(
                self.settings,
                send_with_producer(producer),
                consumer_group=projector_group(self.settings),
            )
        return self._publisher

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = self._publisher = None


def stored_positions(
    store: ReadStore, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """The read store's next offset of each partition it has a position for."""
    positions = store.positions()
    return {
        tp: positions[(tp.topic, tp.partition)]
        for tp in partitions
        if (tp.topic, tp.partition) in positions
    }


async def run_projector(
    store: ReadStore,
    *,
    topic: str,
    client_options: Mapping[str, Any],
    group_id: str = PROJECTOR_GROUP,
    max_records: int = MAX_RECORDS,
    backoff: Backoff = Backoff(),
    on_batch: Callable[[BatchReport], None] | None = None,
    dead_letters: Callable[[Sequence[Rejected]], Awaitable[None]] | None = None,
) -> None:
    """Project `topic` until cancelled. A failure restarts the consumer from the stored positions.

    `client_options` are aiokafka's connection keywords (bootstrap servers, security). Records
    fetched but not applied when a batch fails are simply read again after the re-seek.
    `on_batch` sees each applied batch's report (metrics, tests); `dead_letters` is handed the
    messages a batch skipped as unusable, to publish them on `okr.dlq`.
    """
    streak = SetAsideStreak()
    subscription = Subscription(
        name="projector",
        topics=(topic,),
        group_id=group_id,
        client_options=client_options,
        stored_positions=partial(stored_positions, store),
        stage_job=PROJECTOR,
    )

    async def project(consumer: Consumer, succeeded: Callable[[], None]) -> None:
        while True:
            fetched = await consumer.fetch(POLL_TIMEOUT_MS, max_records)
            messages = [Message.of(r) for records in fetched.values() for r in records]
            if not messages:
                continue
            report = await asyncio.to_thread(apply_isolating, store, messages, streak)
            if report.rejected and dead_letters is not None:
                # After the batch's commit: the rejected messages stay on okr.events (kept
                # forever), so a crash before this only loses the notice, never the message.
                await dead_letters(report.rejected)
            succeeded()
            log.debug("projector: %s", report)
            if on_batch is not None:
                on_batch(report)
            consumer.commit(offsets_after(fetched), len(messages))

    await run_consumer(
        subscription,
        just(project),
        backoff=backoff,
        resuming="restarting from the stored positions",
        log=log,
    )


async def run_projector_service(
    settings: Settings,
    store: ReadStore,
    *,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> None:
    """The background job: project `okr.events` into `store` until cancelled; what cannot be
    projected is dead-lettered. Its process collects garbage rarely (`freeze_start_up_objects`):
    the projector keeps thousands of objectives' rows alive, and a collection walking them
    used to stall a batch (benchmark (c): projector batch p99 141 → 50-58 ms, ADR 14)."""
    freeze_start_up_objects()
    dead_letters = ProjectorDeadLetters(settings)
    try:
        await run_projector(
            store,
            topic=settings.topic(topics.EVENTS),
            client_options=settings.kafka_client_options(),
            group_id=projector_group(settings),
            on_batch=on_batch,
            dead_letters=dead_letters,
        )
    finally:
        await dead_letters.close()


async def running_projectors(settings: Settings) -> int:
    return await projector_members(settings.kafka_client_options(), projector_group(settings))


async def rebuild_read_store(settings: Settings, store: ReadStore) -> RebuildReport:
    return await rebuild(
        store, topic=settings.topic(topics.EVENTS), client_options=settings.kafka_client_options()
    )


async def run_projector_job(
    settings: Settings,
    _application: object,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> None:
    """`okr serve`'s projector: its own store handle, so HTTP reads never wait on its writes.
    `on_batch` hears of each committed batch (the dashboard's live feed)."""
    store = await asyncio.to_thread(open_read_store, settings)
    try:
        await run_projector_service(settings, store, on_batch=on_batch)
    finally:
        await asyncio.to_thread(store.close)
