"""Idle followers cost nothing, and still see every write at once, whichever process made it.

The outbox relay and the scorer's bindings follower wake when a save is committed, by their own
process or by another one on the same event store (`okr scorer` writes what `okr serve`'s relay
publishes): through the store's doorbell on SQLite, LISTEN/NOTIFY on PostgreSQL. So they look at
the store only about once a second when nothing happens, instead of polling every 10 ms, and a
write by another process is not left to that slow look.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer

from events import commands as wire
from events import topics
from projections.backoff import Backoff
from projections.kafka_positions import (
    FETCH_MAX_WAIT_MS,
    IDLE_FETCH_MAX_WAIT_MS,
    SeekToStoredPositions,
)
from services.commands.application import OkrApplication
from services.kafka.admin import ensure_topics
from services.relay.publisher import relay_position, run_relay
from services.scoring.bindings import run_bindings_follower
from services.settings import Settings
from tests import seed
from tests.kafka_support import eventually, produce, running
from tests.store_support import execute

ACTOR = "alice@example.com"
FAST_RETRIES = Backoff(first_s=0.05, max_s=0.2)
REPOSITORY = Path(__file__).resolve().parents[2]
AT_ONCE_S = 10.0
"""Far below the relay's safety poll in these tests (60 s), far above a loaded machine's wake-up."""

WRITER = """
import uuid
from datetime import date

from events import commands as wire
from services.commands.application import OkrApplication
from services.settings import Settings
from tests import seed

application = OkrApplication(Settings())
try:
    application.handle(
        wire.Command(
            command_id=str(uuid.uuid4()),
            actor="bob@example.com",
            body=wire.CreateObjective(
                title="Written by another process",
                owner="bob@example.com",
                team="ops",
                period_start=seed.QUARTER_START,
                period_end=seed.QUARTER_END,
                key_results=[seed.NPS.as_definition()],
            ),
        )
    )
    print("written", flush=True)
finally:
    application.close()
"""


@pytest.fixture
async def topics_ready(store_settings: Settings) -> None:
    await ensure_topics(store_settings)


def create_objective(application: OkrApplication) -> None:
    application.handle(
        wire.Command(
            command_id=str(uuid4()),
            actor=ACTOR,
            body=wire.CreateObjective(
                title="Written by the relay's process",
                owner=ACTOR,
                team="growth",
                period_start=seed.QUARTER_START,
                period_end=seed.QUARTER_END,
                key_results=[seed.NPS.as_definition()],
            ),
        )
    )


def writer_environment(settings: Settings) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OKR_")}
    return env | {
        "PYTHONPATH": str(REPOSITORY),
        "OKR_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "OKR_TOPIC_PREFIX": settings.topic_prefix,
        "OKR_EVENT_STORE_URL": settings.event_store_url,
        "OKR_READ_STORE_URL": settings.read_store_url,
    }


async def write_from_another_process(settings: Settings) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        cwd=REPOSITORY,
        env=writer_environment(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    assert out.strip() == b"written"


async def relayed_up_to(application: OkrApplication, notification_id: int) -> bool:
    return await asyncio.to_thread(relay_position, application) >= notification_id


async def test_a_write_by_another_process_is_relayed_at_once_not_at_the_next_poll(
    store_settings: Settings,
    topics_ready: None,
    open_application: Callable[[], OkrApplication],
) -> None:
    application = open_application()
    relay = run_relay(store_settings, application, idle_poll_s=60, backoff=FAST_RETRIES)
    async with running(relay):
        await asyncio.to_thread(create_objective, application)
        mine = application.last_notification_id()
        await eventually(lambda: relayed_up_to(application, mine), "the relay published ours")

        await write_from_another_process(store_settings)
        written = time.monotonic()
        theirs = application.last_notification_id()
        assert theirs > mine
        await eventually(
            lambda: relayed_up_to(application, theirs),
            "the relay published the other process's write",
            deadline_s=AT_ONCE_S,
        )

    assert time.monotonic() - written < AT_ONCE_S


async def test_idle_followers_look_at_the_store_about_once_a_second(
    store_settings: Settings,
    topics_ready: None,
    open_application: Callable[[], OkrApplication],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    application = open_application()
    looks = 0
    select_notifications = application.recorder.select_notifications

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal looks
        looks += 1
        return select_notifications(*args, **kwargs)

    monkeypatch.setattr(application.recorder, "select_notifications", counted)
    async with (
        running(run_relay(store_settings, application, backoff=FAST_RETRIES)),
        running(run_bindings_follower(store_settings, application, backoff=FAST_RETRIES)),
    ):
        await asyncio.sleep(1.5)  # both started and looked once
        before = looks
        await asyncio.sleep(3.0)
        idle_looks = looks - before

    # Two followers, 3 s, one look a second each (and slack for a loaded machine). Polling every
    # 10 ms and 200 ms, they looked ~315 times.
    assert idle_looks <= 10


async def test_an_idle_consumer_asks_the_broker_less_often_and_records_bring_it_back(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_options(),
        group_id=settings.consumer_group("idle-fetch"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    listener = SeekToStoredPositions(consumer, lambda partitions: {}, name="test")
    consumer.subscribe([settings.topic(topics.EVENTS)], listener=listener)
    await consumer.start()
    try:

        async def idle() -> bool:
            await consumer.getmany(timeout_ms=200)
            return listener.fetch_wait.idle

        await eventually(idle, "the consumer found itself idle")
        assert consumer._fetcher._fetch_max_wait_ms == IDLE_FETCH_MAX_WAIT_MS
        assert consumer._fetcher._fetcher_timeout == IDLE_FETCH_MAX_WAIT_MS / 1000

        await produce(settings, topics.EVENTS, [(b"k", b"v", [])])

        async def fetched() -> bool:
            return bool(await consumer.getmany(timeout_ms=200))

        started = time.monotonic()
        await eventually(fetched, "the record was read")
        assert time.monotonic() - started < IDLE_FETCH_MAX_WAIT_MS / 1000  # not held by the wait
        assert consumer._fetcher._fetch_max_wait_ms == FETCH_MAX_WAIT_MS
    finally:
        await consumer.stop()


@pytest.mark.postgres
async def test_a_lost_listen_connection_is_opened_again_and_wakes_as_before(
    postgres_database: str, settings: Settings
) -> None:
    store = settings.model_copy(
        update={"event_store_url": postgres_database, "read_store_url": postgres_database}
    )
    follower, writer = OkrApplication(store), OkrApplication(store)
    try:
        with follower.saved.listen() as saved:

            async def listening() -> list[int]:
                rows = await asyncio.to_thread(
                    execute,
                    store,
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND starts_with(query, 'LISTEN')",
                )
                return [pid for (pid,) in rows]

            async def has_listener() -> bool:
                return bool(await listening())

            await eventually(has_listener, "the follower listens", deadline_s=AT_ONCE_S)
            (lost,) = await listening()
            await asyncio.to_thread(execute, store, "SELECT pg_terminate_backend(?)", lost)

            async def listens_again() -> bool:
                return bool(set(await listening()) - {lost})

            await eventually(listens_again, "the follower listens again", deadline_s=AT_ONCE_S)
            await asyncio.sleep(0.2)  # the wake-up it gives itself on reconnecting
            saved.clear()
            await asyncio.to_thread(create_objective, writer)
            await asyncio.wait_for(saved.wait(), AT_ONCE_S)
    finally:
        writer.close()
        follower.close()
