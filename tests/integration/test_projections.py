"""The projector against the real broker, on both read stores (an SQLite file and PostgreSQL).

Commands go through `OkrApplication.handle`, the relay publishes them on `okr.events`, and the
projector folds the topic into the read store. Promised: the read models equal the command side's
state; a store built incrementally while commands kept arriving equals, row for row, the store
rebuilt from offset 0; and a restarted projector resumes at its stored positions, even when Kafka
lost its committed offsets, applying nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import date
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from typer.testing import CliRunner

from domain.objective_events import DomainEvent
from events import commands as wire
from events import topics
from projections.projector import BatchReport, RetryDelay, run_projector
from projections.views import ReadStore, ReadStoreDump
from services.application import OkrApplication
from services.cli import app as cli
from services.kafka_admin import ensure_topics
from services.projector_service import (
    open_read_store,
    projector_group,
    rebuild_read_store,
    run_projector_service,
)
from services.relay import relay_once, relay_producer, to_envelope
from services.settings import Settings

ALICE = "alice@example.com"
DEADLINE_S = 90.0

NPS = wire.KeyResultDefinition(
    title="Raise NPS to 80", metric="NPS points", baseline=62, target=80, deadline=date(2026, 9, 30)
)
PURCHASE_PATH = wire.KeyResultDefinition(
    title="Cut the purchase path to 3-4 minutes",
    kind="range",
    metric="minutes",
    baseline=7,
    target_low=3,
    target_high=4,
    deadline=date(2026, 9, 30),
    weight=2,
)
SALES = wire.KeyResultDefinition(
    title="Increase sales of product X by 30 % by Q3",
    metric="units",
    baseline=1000,
    relative_target="+30%",
    deadline=date(2026, 9, 30),
)


# --- fixtures: one read store per backend ---------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The test's settings, with the read store on SQLite (default) or on PostgreSQL."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_database")
        return settings.model_copy(update={"read_store_url": url})
    return settings


@pytest.fixture
async def topics_ready(store_settings: Settings) -> None:
    await ensure_topics(store_settings)


@pytest.fixture
def application(store_settings: Settings) -> Iterator[OkrApplication]:
    opened = OkrApplication(store_settings)
    yield opened
    opened.close()


@pytest.fixture
def store(store_settings: Settings) -> Iterator[ReadStore]:
    opened = open_read_store(store_settings)
    yield opened
    opened.close()


# --- writing through the command side -------------------------------------------------------------


class Writer:
    """Sends commands to the application as the HTTP API or the Kafka consumer would."""

    def __init__(self, application: OkrApplication) -> None:
        self.application = application

    def send(
        self, body: wire.CommandBody, objective_id: UUID | None = None, reason: str | None = None
    ) -> wire.CommandResult:
        command = wire.Command(
            command_id=str(uuid4()),
            objective_id=objective_id,
            actor=ALICE,
            reason=reason,
            body=body,
        )
        result = self.application.handle(command)
        assert result.status == "accepted", result
        return result

    def create(self, title: str, parent_id: UUID | None = None) -> tuple[UUID, list[UUID]]:
        objective_id = uuid4()
        self.send(
            wire.CreateObjective(
                objective_id=objective_id,
                title=title,
                owner=ALICE,
                team="growth",
                period_start=date(2026, 7, 1),
                period_end=date(2026, 9, 30),
                parent_id=parent_id,
                key_results=[NPS, PURCHASE_PATH],
            )
        )
        objective = self.application.get_objective(objective_id)
        assert objective is not None
        return objective_id, [kr.key_result_id for kr in objective.key_results]

    def live_quarter(self, objective_id: UUID, key_results: list[UUID], step: int) -> None:
        """Activation, check-ins, a new key result, a moved target: the events of a quarter."""
        nps, path = key_results
        if step == 0:
            self.send(wire.ActivateObjective(), objective_id)
            self.send(wire.CheckIn(key_result_id=nps, value=68, confidence=0.7), objective_id)
        elif step == 1:
            self.send(wire.CheckIn(key_result_id=path, value=5, note="new checkout"), objective_id)
            added = self.send(wire.AddKeyResult(key_result=SALES), objective_id)
            assert added.key_result_id is not None
            self.send(wire.CheckIn(key_result_id=added.key_result_id, value=1150), objective_id)
        else:
            moved = NPS.model_copy(update={"target": 85.0})
            self.send(
                wire.ReviseKeyResult(key_result_id=nps, key_result=moved),
                objective_id,
                reason="the board raised the bar",
            )
            self.send(wire.CheckIn(key_result_id=nps, value=77), objective_id)


# --- following the topic --------------------------------------------------------------------------


async def end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    topic = settings.topic(topics.EVENTS)
    partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
    consumer = AIOKafkaConsumer(**settings.kafka_client_options(), group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll to a deadline; never a fixed sleep."""
    try:
        async with asyncio.timeout(DEADLINE_S):
            while True:
                if await condition():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


async def publish_and_project(
    settings: Settings, application: OkrApplication, store: ReadStore
) -> None:
    """Relay what is stored, then wait until the store's positions reach the topic's end."""
    await relay_once(settings, application)
    await projected_to_end(settings, store)


async def projected_to_end(settings: Settings, store: ReadStore) -> None:
    ends = {key: end for key, end in (await end_offsets(settings)).items() if end > 0}
    assert ends, "something was published"

    async def reached() -> bool:
        positions = await asyncio.to_thread(store.positions)
        return all(positions.get(key, 0) >= end for key, end in ends.items())

    await eventually(reached, f"the projector reaches {ends}")


@contextlib.asynccontextmanager
async def running_projector(
    settings: Settings, store: ReadStore, reports: list[BatchReport] | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(
        run_projector_service(settings, store, on_batch=None if reports is None else reports.append)
    )
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def assert_same_rows(rebuilt: ReadStoreDump, incremental: ReadStoreDump) -> None:
    """Table by table, row by row, so a failure names the first row that differs."""
    for table in ReadStoreDump.model_fields:
        built, kept = getattr(rebuilt, table), getattr(incremental, table)
        for index, (left, right) in enumerate(zip(built, kept, strict=False)):
            assert left == right, f"{table}[{index}] differs"
        assert len(built) == len(kept), table
    assert rebuilt == incremental


# --- the promises ---------------------------------------------------------------------------------


async def test_read_models_follow_the_command_side(
    store_settings: Settings, topics_ready: None, application: OkrApplication, store: ReadStore
) -> None:
    writer = Writer(application)
    parent, _ = await asyncio.to_thread(writer.create, "Company: grow profitably")
    child, key_results = await asyncio.to_thread(writer.create, "Win the mid-market", parent)
    for step in range(3):
        await asyncio.to_thread(writer.live_quarter, child, key_results, step)

    async with running_projector(store_settings, store):
        await publish_and_project(store_settings, application, store)

    state = application.get_objective(child)
    assert state is not None
    row = store.get_objective(child)
    assert row is not None
    assert (row.version, row.status, row.parent_id) == (state.version, "active", parent)
    assert row.score == pytest.approx(state.score)
    projected = store.key_results(child)
    assert [(kr.key_result_id, kr.current) for kr in projected] == [
        (kr.key_result_id, kr.current) for kr in state.key_results
    ]
    assert [kr.score for kr in projected] == pytest.approx(
        [kr.score.score for kr in state.key_results]
    )
    assert [o.objective_id for o in store.children(parent)] == [child]
    assert [a.version for a in store.history(child)] == list(range(1, state.version + 1))
    target_change = next(a for a in store.history(child) if a.event_type == "KeyResultRevised")
    assert target_change.reason == "the board raised the bar"
    assert [(c.field, c.before, c.after) for c in target_change.changes] == [
        (f"key_results[{key_results[0]}].target", 80, 85)
    ]
    causes = [t.cause for t in store.timeline(child)]
    assert causes == [
        "created",
        "check_in",
        "check_in",
        "key_result_added",
        "check_in",
        "key_result_revised",
        "check_in",
    ]
    assert store.timeline(child)[-1].objective_score == pytest.approx(state.score)
    listed = store.list_objectives(limit=10).items
    assert [o.objective_id for o in listed] == [parent, child]


async def test_incremental_store_equals_the_store_rebuilt_from_offset_zero(
    store_settings: Settings, topics_ready: None, application: OkrApplication, store: ReadStore
) -> None:
    writer = Writer(application)
    objectives = [await asyncio.to_thread(writer.create, f"Objective {n}") for n in range(6)]
    async with running_projector(store_settings, store):
        await publish_and_project(store_settings, application, store)
        for step in range(3):  # commands keep arriving while the projector runs
            for objective_id, key_results in objectives:
                await asyncio.to_thread(writer.live_quarter, objective_id, key_results, step)
            await publish_and_project(store_settings, application, store)
        # A relay that crashed before recording its acknowledgements sends some events twice.
        stored = await asyncio.to_thread(list, application.events.get(objectives[0][0]))
        tail = [to_envelope(cast(DomainEvent, event)) for event in stored[-3:]]
        async with relay_producer(store_settings) as producer:
            for envelope in tail:
                await producer.send_and_wait(
                    store_settings.topic(topics.EVENTS),
                    key=str(envelope.objective_id).encode(),
                    value=envelope.to_bytes(),
                )
        await projected_to_end(store_settings, store)
    incremental = await asyncio.to_thread(store.dump)

    report = await rebuild_read_store(store_settings, store)

    assert report.events.applied == len(incremental.audit)
    assert report.events.duplicates == 3
    assert (report.events.gaps, report.events.invalid) == (0, 0)
    assert report.counts["audit"] == application.stored_event_count()
    assert_same_rows(await asyncio.to_thread(store.dump), incremental)


async def test_a_restarted_projector_resumes_at_its_stored_positions(
    store_settings: Settings, topics_ready: None, application: OkrApplication, store: ReadStore
) -> None:
    writer = Writer(application)
    objectives = [await asyncio.to_thread(writer.create, f"Objective {n}") for n in range(4)]
    first_run: list[BatchReport] = []
    async with running_projector(store_settings, store, first_run):
        await publish_and_project(store_settings, application, store)
        positions_at_stop = await asyncio.to_thread(store.positions)

        async def committed_to_kafka_too() -> bool:
            return await committed_offsets(store_settings, positions_at_stop) == positions_at_stop

        await eventually(committed_to_kafka_too, "Kafka's committed offsets follow the store's")
    published_first = application.stored_event_count()
    assert sum(r.applied for r in first_run) == published_first

    await rewind_kafka_offsets(store_settings, positions_at_stop)
    for objective_id, key_results in objectives:
        await asyncio.to_thread(writer.live_quarter, objective_id, key_results, 0)
    second_run: list[BatchReport] = []
    async with running_projector(store_settings, store, second_run):
        await publish_and_project(store_settings, application, store)

    new_events = application.stored_event_count() - published_first
    total = sum(second_run, BatchReport())
    assert total == BatchReport(applied=new_events), "nothing read twice, nothing skipped"
    for objective_id, _ in objectives:
        versions = [a.version for a in store.history(objective_id)]
        assert versions == [1, 2, 3]


class PositionsFailOnce:
    """A read store whose first `positions()` fails, as when the database blips at assignment."""

    def __init__(self, store: ReadStore) -> None:
        self.store = store
        self.failed = False

    def positions(self) -> dict[tuple[str, int], int]:
        if not self.failed:
            self.failed = True
            raise OSError("read store unreachable")
        return self.store.positions()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.mark.fault
async def test_unreadable_positions_at_assignment_never_fall_back_to_kafka_offsets(
    store_settings: Settings, topics_ready: None, application: OkrApplication, store: ReadStore
) -> None:
    writer = Writer(application)
    objectives = [await asyncio.to_thread(writer.create, f"Objective {n}") for n in range(4)]
    async with running_projector(store_settings, store):
        await publish_and_project(store_settings, application, store)
    await rewind_kafka_offsets(store_settings, await asyncio.to_thread(store.positions))
    for objective_id, key_results in objectives:
        await asyncio.to_thread(writer.live_quarter, objective_id, key_results, 0)
    await relay_once(store_settings, application)

    flaky = PositionsFailOnce(store)
    reports: list[BatchReport] = []
    projector = asyncio.create_task(
        run_projector(
            cast(ReadStore, flaky),
            topic=store_settings.topic(topics.EVENTS),
            client_options=store_settings.kafka_client_options(),
            group_id=projector_group(store_settings),
            retry=RetryDelay(first_s=0.05, max_s=0.2),
            on_batch=reports.append,
        )
    )
    try:
        await projected_to_end(store_settings, store)
    finally:
        projector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await projector

    assert flaky.failed
    assert sum(reports, BatchReport()) == BatchReport(applied=2 * len(objectives))


@contextlib.asynccontextmanager
async def group_consumer(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer in the projector's group that never joins it: it only reads or sets offsets."""
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_options(),
        group_id=projector_group(settings),
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def committed_offsets(
    settings: Settings, positions: dict[tuple[str, int], int]
) -> dict[tuple[str, int], int | None]:
    async with group_consumer(settings) as consumer:
        return {key: await consumer.committed(TopicPartition(*key)) for key in positions}


async def rewind_kafka_offsets(settings: Settings, positions: dict[tuple[str, int], int]) -> None:
    """Commit offset 0 for the (now empty) group: only the database position may count."""
    partitions = [TopicPartition(*key) for key in positions]
    async with group_consumer(settings) as consumer:
        consumer.assign(partitions)
        await consumer.commit(dict.fromkeys(partitions, 0))
        assert {await consumer.committed(partition) for partition in partitions} == {0}


async def test_cli_rebuild_refuses_while_a_projector_runs(
    store_settings: Settings, topics_ready: None, application: OkrApplication, store: ReadStore
) -> None:
    writer = Writer(application)
    objective_id, _ = await asyncio.to_thread(writer.create, "Objective")
    env = {
        "OKR_KAFKA_BOOTSTRAP_SERVERS": store_settings.kafka_bootstrap_servers,
        "OKR_TOPIC_PREFIX": store_settings.topic_prefix,
        "OKR_READ_STORE_URL": store_settings.read_store_url,
    }
    runner = CliRunner()
    async with running_projector(store_settings, store):
        await publish_and_project(store_settings, application, store)
        refused = await asyncio.to_thread(runner.invoke, cli, ["projections", "rebuild"], env=env)
    rebuilt = await asyncio.to_thread(runner.invoke, cli, ["projections", "rebuild"], env=env)

    assert refused.exit_code == 1
    assert "refusing: 1 projector(s) running" in refused.output
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "replayed 1 messages: 1 applied" in rebuilt.output
    assert "objectives: 1" in rebuilt.output
    assert store.objective_version(objective_id) == 1
