"""The outbox relay against the real broker, on both event stores (SQLite and PostgreSQL).

What a consumer of `okr.events` is promised: every stored event arrives, keyed by its objective,
in version order per objective; a Kafka outage delays events but loses none and never blocks a
write; a restarted relay republishes at most what it had not recorded as acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID, uuid4

import pytest

from events import commands as wire
from events import topics
from events.okr import OkrEventEnvelope, parse_okr_event
from projections.backoff import Backoff
from services.commands.application import OkrApplication
from services.kafka.admin import ensure_topics
from services.relay.publisher import (
    OutboxRelay,
    relay_once,
    relay_position,
    relay_producer,
    run_relay,
)
from services.settings import Settings
from tests import seed
from tests.kafka_support import eventually, read_to_end, running

ACTOR = "alice@example.com"
FAST_RETRIES = Backoff(first_s=0.05, max_s=0.2)

NPS = seed.NPS.as_definition()
SALES = seed.SALES.as_definition()

EventKey = tuple[UUID, int]
"""(objective id, version): what identifies an event, and what consumers dedupe on."""


# --- fixtures: one event store per backend (`store_settings`) -------------------------------------


@pytest.fixture
async def topics_ready(store_settings: Settings) -> None:
    await ensure_topics(store_settings)


# --- writing: several objectives, several events each ---------------------------------------------


def command(body: wire.CommandBody, objective_id: UUID | None = None) -> wire.Command:
    return wire.Command(command_id=str(uuid4()), objective_id=objective_id, actor=ACTOR, body=body)


def write_history(application: OkrApplication, check_ins: int) -> UUID:
    """Create, revise, add a key result, activate, and check in: 4 + `check_ins` events."""
    objective_id = uuid4()
    created = application.handle(
        command(
            wire.CreateObjective(
                objective_id=objective_id,
                title="Win the mid-market",
                owner=ACTOR,
                team="growth",
                period_start=seed.QUARTER_START,
                period_end=seed.QUARTER_END,
                key_results=[NPS],
            )
        )
    )
    assert created.status == "accepted"
    application.handle(
        command(wire.ReviseObjective(description="Where big ones do not look."), objective_id)
    )
    added = application.handle(command(wire.AddKeyResult(key_result=SALES), objective_id))
    assert added.key_result_id is not None
    application.handle(command(wire.ActivateObjective(), objective_id))
    for value in range(check_ins):
        result = application.handle(
            command(
                wire.CheckIn(key_result_id=added.key_result_id, value=1000 + value), objective_id
            )
        )
        assert result.status == "accepted"
    return objective_id


async def write_histories(application: OkrApplication, objectives: int) -> None:
    for index in range(objectives):
        await asyncio.to_thread(write_history, application, 1 + index % 3)


def stored_keys(application: OkrApplication) -> list[tuple[int, EventKey]]:
    """Every stored event, in notification order, with its notification id."""
    notifications = application.recorder.select_notifications(start=None, limit=100_000)
    return [(n.id, (n.originator_id, n.originator_version)) for n in notifications]


# --- reading okr.events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    key: bytes | None
    envelope: OkrEventEnvelope

    @property
    def event_key(self) -> EventKey:
        return (self.envelope.objective_id, self.envelope.version)


async def read_events(settings: Settings) -> list[Delivered]:
    """Everything on `okr.events` up to its end now, each partition in offset order."""
    delivered: list[Delivered] = []
    for record in await read_to_end(settings, topics.EVENTS):
        envelope, _ = parse_okr_event(record.value)
        delivered.append(Delivered(record.key, envelope))
    return delivered


def versions_by_objective(delivered: list[Delivered]) -> dict[UUID, list[int]]:
    """What each objective's consumer saw, in the order it saw it (one objective, one partition)."""
    seen: dict[UUID, list[int]] = defaultdict(list)
    for message in delivered:
        seen[message.envelope.objective_id].append(message.envelope.version)
    return seen


def assert_complete_and_ordered(
    stored: list[tuple[int, EventKey]], delivered: list[Delivered]
) -> None:
    """Every stored event arrived, keyed by its objective; deduped, each objective reads 1..n."""
    for message in delivered:
        assert message.key == str(message.envelope.objective_id).encode()
    assert {key for _, key in stored} == {message.event_key for message in delivered}
    expected: dict[UUID, list[int]] = defaultdict(list)
    for _, (objective_id, version) in stored:
        expected[objective_id].append(version)
    for objective_id, versions in versions_by_objective(delivered).items():
        first_seen = list(dict.fromkeys(versions))
        assert first_seen == expected[objective_id] == list(range(1, len(first_seen) + 1))
        for seen_so_far, version in enumerate(versions):
            assert version <= max(versions[:seen_so_far], default=0) + 1, "never a gap"


# --- driving the relay ----------------------------------------------------------------------------


async def relay_reaches(application: OkrApplication, notification_id: int) -> None:
    async def reached() -> bool:
        return await asyncio.to_thread(relay_position, application) >= notification_id

    await eventually(reached, f"relay position reaches {notification_id}")


def running_relay(
    settings: Settings, application: OkrApplication
) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    return running(run_relay(settings, application, backoff=FAST_RETRIES))


# --- the promises ---------------------------------------------------------------------------------


async def test_every_stored_event_arrives_keyed_by_objective_in_version_order(
    store_settings: Settings,
    topics_ready: None,
    open_application: Callable[[], OkrApplication],
) -> None:
    application = open_application()
    async with running_relay(store_settings, application):
        await write_histories(application, objectives=5)
        stored = stored_keys(application)
        await relay_reaches(application, stored[-1][0])

    delivered = await read_events(store_settings)

    assert len({objective_id for _, (objective_id, _) in stored}) == 5
    assert_complete_and_ordered(stored, delivered)
    assert len(delivered) == len(stored), "no failure, so no event was published twice"


@pytest.mark.fault
async def test_kafka_outage_blocks_no_write_and_loses_no_event(
    store_settings: Settings,
    topics_ready: None,
    open_application: Callable[[], OkrApplication],
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead_broker = store_settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    application = open_application()
    caplog.set_level(logging.DEBUG, logger="services.relay.publisher")

    async with running_relay(dead_broker, application) as relay:
        await write_histories(application, objectives=4)

        def said() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "services.relay.publisher"]

        async def retried_twice() -> bool:
            return len(said()) >= 3

        await eventually(retried_twice, "the relay logs its failure and retries")
        assert not relay.done(), "the relay outlives the outage"
        warned = [r for r in said() if r.levelno >= logging.WARNING]
        assert len(warned) == 1, "the outage is said once, the retries only at DEBUG"
        assert await asyncio.to_thread(relay_position, application) == 0

    stored = stored_keys(application)
    async with running_relay(store_settings, application):
        await relay_reaches(application, stored[-1][0])

    delivered = await read_events(store_settings)
    assert_complete_and_ordered(stored, delivered)
    assert len(delivered) == len(stored)


@pytest.mark.fault
async def test_restarted_relay_republishes_at_most_the_unacknowledged_tail(
    store_settings: Settings,
    topics_ready: None,
    open_application: Callable[[], OkrApplication],
) -> None:
    first_process = open_application()
    await write_histories(first_process, objectives=4)
    before_stop = stored_keys(first_process)
    half = len(before_stop) // 2

    assert await relay_once(store_settings, first_process, batch_size=3, limit=half) == half
    stop_point = await asyncio.to_thread(relay_position, first_process)
    assert stop_point == before_stop[half - 1][0]

    # The crash window: the next events reached Kafka, the process died before recording them.
    relay = await OutboxRelay.open(store_settings, first_process)
    tail = await asyncio.to_thread(relay.read_pending, 4)
    async with relay_producer(store_settings) as producer:
        for _, envelope in tail:
            await producer.send_and_wait(
                relay.topic, key=str(envelope.objective_id).encode(), value=envelope.to_bytes()
            )

    second_process = open_application()
    await write_histories(second_process, objectives=2)
    await relay_once(store_settings, second_process, batch_size=3)

    stored = stored_keys(second_process)
    delivered = await read_events(store_settings)
    assert_complete_and_ordered(stored, delivered)
    counts = Counter(message.event_key for message in delivered)
    unacknowledged = {(envelope.objective_id, envelope.version) for _, envelope in tail}
    assert len(unacknowledged) == 4
    for notification_id, key in stored:
        if notification_id <= stop_point:
            assert counts[key] == 1, f"{key} was acknowledged before the stop: never resent"
        elif key in unacknowledged:
            assert counts[key] == 2, f"{key} was in the unacknowledged tail: sent again"
        else:
            assert counts[key] == 1
