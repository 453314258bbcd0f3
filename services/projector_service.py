"""Wires the projections to the process's `Settings`: which read store, which topic, which group.

`projections/` may not import `services/`, so it takes plain values; this is the one place that
turns settings into them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from events import topics
from projections.postgres import PostgresReadStore
from projections.projector import PROJECTOR_GROUP, BatchReport, run_projector
from projections.rebuild import RebuildReport, projector_members, rebuild
from projections.sqlite import SQLiteReadStore
from projections.views import ReadStore
from services.settings import Settings
from services.stores import is_postgres, sqlite_path


def open_read_store(settings: Settings) -> ReadStore:
    """Blocking (creates the tables if missing); the caller closes it."""
    url = settings.read_store_url
    if is_postgres(url):
        return PostgresReadStore(url)
    return SQLiteReadStore(sqlite_path(url))


def projector_group(settings: Settings) -> str:
    """Prefixed like the topics, so environments sharing a cluster keep separate groups."""
    return settings.consumer_group(PROJECTOR_GROUP)


async def run_projector_service(
    settings: Settings,
    store: ReadStore,
    *,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> None:
    """The background job: project `okr.events` into `store` until cancelled."""
    await run_projector(
        store,
        topic=settings.topic(topics.EVENTS),
        client_options=settings.kafka_client_options(),
        group_id=projector_group(settings),
        on_batch=on_batch,
    )


async def running_projectors(settings: Settings) -> int:
    return await projector_members(settings.kafka_client_options(), projector_group(settings))


async def rebuild_read_store(settings: Settings, store: ReadStore) -> RebuildReport:
    return await rebuild(
        store, topic=settings.topic(topics.EVENTS), client_options=settings.kafka_client_options()
    )


async def run_projector_job(settings: Settings, _application: object) -> None:
    """`okr serve`'s projector: its own store handle, so HTTP reads never wait on its writes."""
    store = await asyncio.to_thread(open_read_store, settings)
    try:
        await run_projector_service(settings, store)
    finally:
        await asyncio.to_thread(store.close)
