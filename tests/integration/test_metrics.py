"""`GET /metrics` and the lag in `/health`, against the real broker and event store.

Lag is set up by hand: messages produced straight onto the test's `okr.events` partitions, offsets
committed under the projector's group id (prefixed per test, like the topics), so the expected
numbers are known exactly. Both endpoints answer from the health monitor's last round: a test
that changed something runs a round itself (`probed`) rather than wait for the monitor's timer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING
from uuid import uuid4

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from events import commands as wire
from events import topics
from projections.backoff import Backoff, keep_running
from projections.job_health import current_job
from projections.stage_timings import PROJECTOR, RELAY, STAGES
from services.bootstrap import pipeline_jobs
from services.commands.application import OkrApplication
from services.commands.consumer import GROUP_ID as COMMAND_HANDLER_GROUP
from services.http.app import BackgroundJob
from services.kafka.admin import ensure_topics
from services.kafka.lag import CONSUMED
from services.projector_service import projector_group
from services.relay.publisher import relay_once
from services.scoring.scorer import group_id_for
from services.settings import Settings
from tests import seed
from tests.health_support import READER, count_probes, serving
from tests.kafka_support import commit_offsets, eventually
from tests.kpi_support import create_bound_objective, kpi

if TYPE_CHECKING:
    from services.operations.health_monitor import Probe

PRODUCED = {0: 5, 1: 2}
"""Messages produced per partition of okr.events."""
COMMITTED = {0: 3}
"""Offsets the projector's group commits; partition 1 gets no commit, partition 2 no message."""

log = logging.getLogger(__name__)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def application(settings: Settings) -> Iterator[OkrApplication]:
    application = OkrApplication(settings)
    yield application
    application.close()


@pytest.fixture
async def served(
    settings: Settings, application: OkrApplication
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with serving(settings, application) as (app, client):
        client.headers.update(READER)
        yield app, client


@pytest.fixture
def client(served: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]


@pytest.fixture
def probed(served: tuple[FastAPI, httpx.AsyncClient]) -> Callable[[], Awaitable[Probe]]:
    """Runs a round of the app's health monitor now: what the endpoints show next."""
    probe: Callable[[], Awaitable[Probe]] = served[0].state.health.probe
    return probe


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


Probed = Callable[[], Awaitable["Probe"]]


@pytest.mark.usefixtures("projector_behind")
async def test_metrics_show_each_partitions_lag(
    settings: Settings, client: httpx.AsyncClient, probed: Probed
) -> None:
    await probed()
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
    for dependency in ("kafka", "event_store", "read_store"):
        assert found[("okr_dependency_up", (("dependency", dependency),))] == 1
    assert 0 <= found[("okr_health_checked_age_seconds", ())] < settings.health_interval_s


@pytest.mark.usefixtures("projector_behind")
async def test_health_reports_the_same_lag(
    settings: Settings, client: httpx.AsyncClient, probed: Probed
) -> None:
    await probed()
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
    settings: Settings, application: OkrApplication, client: httpx.AsyncClient, probed: Probed
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
    await probed()
    found = samples((await client.get("/metrics")).text)
    assert {name: found[(name, ())] for name in relay} == relay
    assert await relay_once(settings, application, limit=1) == 1
    found = samples((await client.get("/metrics")).text)
    assert found[("okr_relay_pending_events", ())] == 2, "a scrape shows the last probe's figures"
    await probed()
    found = samples((await client.get("/metrics")).text)
    assert found[("okr_relay_pending_events", ())] == 1
    assert found[("okr_relay_position", ())] == 1
    assert found[("okr_lag_source_up", (("source", "event_store"),))] == 1


async def test_a_dead_broker_is_reported_not_raised(settings: Settings) -> None:
    dead = settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    async with serving(dead) as (_, client):
        metrics = await client.get("/metrics", headers=READER)
        health = await client.get("/health", headers=READER)
    assert metrics.status_code == 200, metrics.text
    found = samples(metrics.text)
    assert found[("okr_lag_source_up", (("source", "kafka"),))] == 0
    assert found[("okr_dependency_up", (("dependency", "kafka"),))] == 0
    assert not [key for key in found if key[0] == "okr_consumer_lag"]
    assert health.status_code == 503
    lag = health.json()["lag"]
    assert lag["ok"] is False
    assert lag["error"]
    assert lag["partitions"] == []


async def test_a_scrape_measures_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    interval_s = 30.0
    slow = settings.model_copy(update={"health_interval_s": interval_s})
    async with serving(slow) as (_, client):
        probes = count_probes(monkeypatch)
        began = time.monotonic()
        for _ in range(20):
            response = await client.get("/metrics", headers=READER)
            assert response.status_code == 200, response.text
        elapsed = time.monotonic() - began
    rounds = 1 + int(elapsed / interval_s)  # the monitor's own, at most (one may be under way)
    assert probes.calls["probe_kafka"] <= rounds, probes.calls
    assert probes.calls["probe_store"] <= 2 * rounds, probes.calls
    assert probes.calls["kafka_lag"] <= rounds, probes.calls
    assert probes.calls["relay_lag"] <= rounds, probes.calls
    assert "okr_health_checked_age_seconds" in response.text


def job(name: str, *, failing: bool, dead_letters: dict[str, int]) -> BackgroundJob:
    """A background job run as the service runs its own (`keep_running`): it sets records aside
    as dead letters, then fails (again and again) or waits for work that never comes."""

    async def run(_: OkrApplication) -> None:
        async def attempt(succeeded: Callable[[], None]) -> None:
            await asyncio.sleep(0.1)  # every job has started: each still has its own entry
            entry = current_job()
            assert entry is not None
            if entry.failures_total == 0:
                for reason, count in dead_letters.items():
                    entry.dead_lettered(reason, count)
            if failing:
                raise RuntimeError("the store said no")
            succeeded()
            await asyncio.Event().wait()

        await keep_running(
            name, attempt, backoff=Backoff(first_s=0.05, max_s=0.05), resuming="again", log=log
        )

    return run


async def test_each_job_has_its_series(settings: Settings) -> None:
    jobs = [
        job("projector", failing=True, dead_letters={"bad_json": 2}),
        job("relay", failing=False, dead_letters={"schema": 1, "bad_json": 1}),
    ]
    async with serving(settings, background=jobs) as (_, client):

        async def failed_twice_while_the_other_works() -> bool:
            found = samples((await client.get("/metrics", headers=READER)).text)
            return (
                found.get(("okr_job_failures_total", (("job", "projector"),)), 0) >= 2
                and found.get(("okr_job_up", (("job", "relay"),))) == 1
            )

        await eventually(failed_twice_while_the_other_works, "the jobs' attempts", deadline_s=20)
        found = samples((await client.get("/metrics", headers=READER)).text)
    assert found[("okr_job_up", (("job", "projector"),))] == 0
    assert found[("okr_job_up", (("job", "relay"),))] == 1
    assert found[("okr_job_up", (("job", "health monitor"),))] == 1
    assert found[("okr_job_failures_total", (("job", "relay"),))] == 0
    dead = {
        tuple(value for _, value in labels): count
        for (name, labels), count in found.items()
        if name == "okr_dead_letters_total"
    }
    assert dead == {("projector", "bad_json"): 2, ("relay", "bad_json"): 1, ("relay", "schema"): 1}


async def test_metrics_show_the_stage_histograms_of_the_relay_and_the_projector(
    settings: Settings, application: OkrApplication
) -> None:
    """As `okr serve` runs them: each batch observed once per stage, with its size."""
    await ensure_topics(settings)
    async with serving(settings, application, background=pipeline_jobs(settings)) as (_, client):
        for name in ("sales", "nps", "churn"):  # created, activated, bound: 9 events
            create_bound_objective(application, [(kpi(name), "sum")])
        stored = application.last_notification_id()

        async def scraped() -> Samples:
            return samples((await client.get("/metrics", headers=READER)).text)

        def items(found: Samples, job: str, stage: str) -> float:
            return found.get(("okr_stage_batch_size_sum", (("job", job), ("stage", stage))), 0)

        async def all_projected() -> bool:
            return items(await scraped(), "projector", "commit") == stored

        await eventually(all_projected, "every stored event projected and committed")
        found = await scraped()
    for job, stages in {"relay": STAGES[RELAY], "projector": STAGES[PROJECTOR]}.items():
        counts = {
            stage: found[("okr_stage_duration_seconds_count", (("job", job), ("stage", stage)))]
            for stage in stages
        }
        assert min(counts.values()) >= 1 and len(set(counts.values())) == 1, (job, counts)
        assert {stage: items(found, job, stage) for stage in stages} == dict.fromkeys(
            stages, stored
        )

    def bucket(name: str, le: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (name, (("job", "projector"), ("le", le), ("stage", "save")))

    assert bucket("okr_stage_duration_seconds_bucket", "0.0001") in found
    assert found[bucket("okr_stage_duration_seconds_bucket", "10.0")] >= 1
    assert bucket("okr_stage_batch_size_bucket", "1.0") in found
    assert found[bucket("okr_stage_batch_size_bucket", "100000.0")] >= 1
