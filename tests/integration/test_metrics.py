"""`GET /metrics` and the lag in `/health`, against the real broker and event store.

Lag is set up by hand: messages produced straight onto the test's `okr.events` partitions, offsets
committed under the projector's group id (prefixed per test, like the topics), so the expected
numbers are known exactly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from events import commands as wire
from events import topics
from services.api.app import create_app
from services.application import OkrApplication
from services.command_consumer import GROUP_ID as COMMAND_HANDLER_GROUP
from services.kafka_admin import ensure_topics
from services.lag import CONSUMED
from services.projector_service import projector_group
from services.relay import relay_once
from services.scorer import group_id_for
from services.settings import Settings
from tests import seed
from tests.auth_support import auth_headers
from tests.kafka_support import commit_offsets

PRODUCED = {0: 5, 1: 2}
"""Messages produced per partition of okr.events."""
COMMITTED = {0: 3}
"""Offsets the projector's group commits; partition 1 gets no commit, partition 2 no message."""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def application(settings: Settings) -> Iterator[OkrApplication]:
    application = OkrApplication(settings)
    yield application
    application.close()


@pytest.fixture
async def client(
    settings: Settings, application: OkrApplication
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, application)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://okr", headers=auth_headers("reader")
    ) as client:
        yield client


@pytest.fixture
async def projector_behind(settings: Settings) -> None:
    """okr.events holds PRODUCED messages; the projector's group committed COMMITTED."""
    await ensure_topics(settings)
    topic = settings.topic(topics.EVENTS)
    producer = AIOKafkaProducer(**settings.kafka_client_options())
    await producer.start()
    try:
        for partition, count in PRODUCED.items():
            for n in range(count):
                await producer.send_and_wait(topic, f"m{n}".encode(), partition=partition)
    finally:
        await producer.stop()
    await commit_offsets(settings, projector_group(settings), topics.EVENTS, COMMITTED)


def samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def partition_labels(group: str, topic: str, partition: int) -> tuple[tuple[str, str], ...]:
    return (("group", group), ("partition", str(partition)), ("topic", topic))


def test_the_groups_are_those_the_consumers_use(settings: Settings) -> None:
    group_ids = {entry.topic: entry.group_id(settings) for entry in CONSUMED}
    assert group_ids == {
        topics.COMMANDS: settings.consumer_group(COMMAND_HANDLER_GROUP),
        topics.EVENTS: projector_group(settings),
        topics.KPI_EVENTS: group_id_for(settings),
    }
    assert projector_group(settings) == f"{settings.topic_prefix}okr-projector"
    assert group_id_for(settings) == f"{settings.topic_prefix}okr-scorer"


@pytest.mark.usefixtures("projector_behind")
async def test_metrics_show_each_partitions_lag(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    topic = settings.topic(topics.EVENTS)
    for partition in range(settings.topic_partitions):
        labels = partition_labels(projector_group(settings), topic, partition)
        end = PRODUCED.get(partition, 0)
        committed = COMMITTED.get(partition)
        assert found[("okr_consumer_end_offset", labels)] == end
        assert found[("okr_consumer_lag", labels)] == end - (committed or 0)
        assert found.get(("okr_consumer_committed_offset", labels)) == committed
    commands_topic = settings.topic(topics.COMMANDS)
    for partition in range(settings.topic_partitions):
        command_group = settings.consumer_group(COMMAND_HANDLER_GROUP)
        labels = partition_labels(command_group, commands_topic, partition)
        assert found[("okr_consumer_lag", labels)] == 0
    assert found[("okr_lag_source_up", (("source", "kafka"),))] == 1


@pytest.mark.usefixtures("projector_behind")
async def test_health_reports_the_same_lag(settings: Settings, client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200, response.text
    lag = response.json()["lag"]
    assert lag["ok"] is True
    topic = settings.topic(topics.EVENTS)
    projector = {
        entry["partition"]: entry
        for entry in lag["partitions"]
        if (entry["group_id"], entry["topic"]) == (projector_group(settings), topic)
    }
    assert projector[0] == {
        "group_id": projector_group(settings),
        "topic": topic,
        "partition": 0,
        "committed": 3,
        "end_offset": 5,
        "lag": 2,
    }
    assert (projector[1]["committed"], projector[1]["lag"]) == (None, 2)
    assert projector[2]["lag"] == 0


async def test_relay_backlog_is_what_is_stored_but_not_published(
    settings: Settings, application: OkrApplication, client: httpx.AsyncClient
) -> None:
    await ensure_topics(settings)
    objective_id = uuid4()
    create = wire.CreateObjective(
        objective_id=objective_id,
        title="Grow product X",
        owner="alice",
        team="sales",
        period_start=seed.QUARTER_START,
        period_end=seed.QUARTER_END,
        key_results=[seed.NPS.as_definition()],
    )
    for body in (create, wire.ActivateObjective()):
        application.handle(
            wire.Command(
                command_id=str(uuid4()), objective_id=objective_id, actor="alice", body=body
            )
        )
    relay = {
        "okr_relay_position": 0,
        "okr_event_store_notifications": 2,
        "okr_relay_pending_events": 2,
    }
    found = samples((await client.get("/metrics")).text)
    assert {name: found[(name, ())] for name in relay} == relay
    assert await relay_once(settings, application, limit=1) == 1
    found = samples((await client.get("/metrics")).text)
    assert found[("okr_relay_pending_events", ())] == 1
    assert found[("okr_relay_position", ())] == 1
    assert found[("okr_lag_source_up", (("source", "event_store"),))] == 1


async def test_a_dead_broker_is_reported_not_raised(settings: Settings) -> None:
    dead = settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    app = create_app(dead)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://okr", headers=auth_headers("reader")
    ) as client:
        metrics = await client.get("/metrics")
        health = await client.get("/health")
    assert metrics.status_code == 200, metrics.text
    found = samples(metrics.text)
    assert found[("okr_lag_source_up", (("source", "kafka"),))] == 0
    assert not [key for key in found if key[0] == "okr_consumer_lag"]
    assert health.status_code == 503
    lag = health.json()["lag"]
    assert lag["ok"] is False
    assert lag["error"]
    assert lag["partitions"] == []
