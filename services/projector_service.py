"""Wires the projections to the process's `Settings`: which read store, which topic, which group.

`projections/` may not import `services/`, so it takes plain values; this is the one place that
turns settings into them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer

from events import topics
from projections.postgres import PostgresReadStore
from projections.projector import PROJECTOR_GROUP, BatchReport, Rejected, run_projector
from projections.rebuild import RebuildReport, projector_members, rebuild
from projections.sqlite import SQLiteReadStore
from projections.views import ReadStore
from services.kafka.dead_letters import DeadLetterPublisher, send_with_producer
from services.scoring.gc_tuning import freeze_start_up_objects
from services.settings import Settings
from services.stores import is_postgres, sqlite_path

log = logging.getLogger(__name__)


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
            producer = AIOKafkaProducer(
                **self.settings.kafka_client_options(), enable_idempotence=True, acks="all"
            )
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
