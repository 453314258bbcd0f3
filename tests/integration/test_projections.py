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
from collections.abc import Iterator
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from typer.testing import CliRunner

from domain.objective_events import DomainEvent
from events import commands as wire
from events import topics
from events.dead_letters import DeadLetter, RawBytes
from projections.backoff import Backoff
from projections.projector import BatchReport
from projections.views import ReadStore, ReadStoreDump
from services.cli.main import app as cli
from services.commands.application import OkrApplication
from services.kafka.admin import ensure_topics
from services.projector_service import (
    open_read_store,
    projector_group,
    rebuild_read_store,
    run_projector,
    run_projector_service,
)
from services.relay.publisher import relay_once, relay_producer, to_envelope
from services.settings import Settings
from tests import seed
from tests.kafka_support import (
    commit_offsets,
    committed_offsets,
    end_offsets,
    eventually,
    produce,
    read_to_end,
    running,
)

ALICE = "alice@example.com"

NPS = seed.NPS.as_definition()
PURCHASE_PATH = seed.PURCHASE_PATH.as_definition(weight=2)
SALES = seed.SALES.as_definition()


# --- fixtures: one read store per backend (`store_settings`) --------------------------------------


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
                period_start=seed.QUARTER_START,
                period_end=seed.QUARTER_END,
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


async def publish_and_project(
    settings: Settings, application: OkrApplication, store: ReadStore
) -> None:
    """Relay what is stored, then wait until the store's positions reach the topic's end."""
    await relay_once(settings, application)
    await projected_to_end(settings, store)


async def projected_to_end(settings: Settings, store: ReadStore) -> None:
    topic = settings.topic(topics.EVENTS)
    published = (await end_offsets(settings, topics.EVENTS)).items()
    ends = {(topic, partition): end for partition, end in published if end > 0}
    assert ends, "something was published"

    async def reached() -> bool:
        positions = await asyncio.to_thread(store.positions)
        return all(positions.get(key, 0) >= end for key, end in ends.items())

    await eventually(reached, f"the projector reaches {ends}")


def running_projector(
    settings: Settings, store: ReadStore, reports: list[BatchReport] | None = None
) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    on_batch = None if reports is None else reports.append
    return running(run_projector_service(settings, store, on_batch=on_batch))


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


async def test_messages_that_cannot_be_projected_are_dead_lettered_and_the_rest_goes_on(
    store_settings: Settings, topics_ready: None, application: OkrApplication, store: ReadStore
) -> None:
    writer = Writer(application)
    objective_id, _ = await asyncio.to_thread(writer.create, "Win the mid-market")
    await relay_once(store_settings, application)
    key = str(objective_id).encode()
    [created] = [cast(DomainEvent, e) for e in application.events.get(objective_id)]
    follows_nothing = to_envelope(created).model_copy(update={"version": 2})  # a second create
    await produce(
        store_settings,
        topics.EVENTS,
        [
            (key, b"{broken", [("origin", b"test")]),
            (key, follows_nothing.to_bytes(), []),
        ],
    )
    await asyncio.to_thread(writer.send, wire.ActivateObjective(), objective_id)

    async with running_projector(store_settings, store):
        await publish_and_project(store_settings, application, store)

        async def both_dead_lettered() -> bool:
            return len(await read_to_end(store_settings, topics.DEAD_LETTERS)) >= 2

        await eventually(both_dead_lettered, "two dead letters on okr.dlq")

    letters = [
        DeadLetter.model_validate_json(record.value)
        for record in await read_to_end(store_settings, topics.DEAD_LETTERS)
    ]
    assert [(d.reason, d.origin_offset, d.value) for d in letters] == [
        ("not_json", 1, RawBytes.of(b"{broken")),
        ("processing_failed", 2, RawBytes.of(follows_nothing.to_bytes())),
    ]
    assert all(d.origin_topic == store_settings.topic(topics.EVENTS) for d in letters)
    assert letters[0].headers[0].name == "origin"
    row = store.get_objective(objective_id)
    assert row is not None
    assert (row.version, row.status) == (2, "active")  # the activation after them, projected


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
    assert report.counts["audit"] == application.last_notification_id()
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
            return await projector_committed(store_settings, positions_at_stop) == positions_at_stop

        await eventually(committed_to_kafka_too, "Kafka's committed offsets follow the store's")
    published_first = application.last_notification_id()
    assert sum(r.applied for r in first_run) == published_first

    await rewind_kafka_offsets(store_settings, positions_at_stop)
    for objective_id, key_results in objectives:
        await asyncio.to_thread(writer.live_quarter, objective_id, key_results, 0)
    second_run: list[BatchReport] = []
    async with running_projector(store_settings, store, second_run):
        await publish_and_project(store_settings, application, store)

    new_events = application.last_notification_id() - published_first
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
    projector = run_projector(
        cast(ReadStore, flaky),
        topic=store_settings.topic(topics.EVENTS),
        client_options=store_settings.kafka_client_options(),
        group_id=projector_group(store_settings),
        backoff=Backoff(first_s=0.05, max_s=0.2),
        on_batch=reports.append,
    )
    async with running(projector):
        await projected_to_end(store_settings, store)

    assert flaky.failed
    assert sum(reports, BatchReport()) == BatchReport(applied=2 * len(objectives))


async def projector_committed(
    settings: Settings, positions: dict[tuple[str, int], int]
) -> dict[tuple[str, int], int | None]:
    """The projector group's committed offsets, keyed like the read store's positions."""
    committed = await committed_offsets(settings, projector_group(settings), topics.EVENTS)
    return {(topic, partition): committed[partition] for topic, partition in positions}


async def rewind_kafka_offsets(settings: Settings, positions: dict[tuple[str, int], int]) -> None:
    """Commit offset 0 for the (now empty) group: only the database position may count."""
    rewound = {partition: 0 for _, partition in positions}
    await commit_offsets(settings, projector_group(settings), topics.EVENTS, rewound)
    assert set((await projector_committed(settings, positions)).values()) == {0}


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
