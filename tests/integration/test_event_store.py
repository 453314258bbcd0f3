"""OkrApplication over both event stores: one test body per behaviour, run on SQLite and PostgreSQL.

The event store is the system of record, so these tests go through the real recorders: what a
command writes must load back field for field, a repeated command must write nothing, a stale or
racing writer must be refused without losing anyone's update, old events must upcast, and
snapshots must change how fast an objective loads, never what it loads as.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

import services.commands.application
from domain.chain import EventRecord, chain_hash
from domain.errors import IdempotencyKeyReusedError, RuleViolationError, VersionConflictError
from domain.measures import KeyResultKind, KeyResultSpec
from domain.objective import Objective, ObjectiveStatus, replay
from domain.objective_events import (
    Aggregation,
    DomainEvent,
    KpiBinding,
    ProgressCheckedIn,
)
from events.commands import (
    ActivateObjective,
    BindKpi,
    CheckIn,
    Command,
    CommandBody,
    CommandResult,
    CreateObjective,
    KeyResultDefinition,
)
from services.commands.application import OkrApplication
from services.commands.event_store import LEGACY_SNAPSHOT_TOPIC, ObjectiveSnapshot
from services.settings import Settings
from tests import seed
from tests.store_support import execute

Q3_START = date(2025, 7, 1)
Q3_END = date(2025, 9, 30)
NOW = datetime(2025, 7, 15, 9, 30, 15, 123456, tzinfo=UTC)
RACERS = 8

SALES = seed.SALES.as_definition(deadline=Q3_END, weight=2.5)
CHURN = seed.CHURN.as_definition(deadline=Q3_END)
NPS = seed.NPS.as_definition(deadline=Q3_END)
PURCHASE_PATH = seed.PURCHASE_PATH.as_definition(deadline=Q3_END)
ERROR_RATE = KeyResultDefinition(
    title="Keep checkout errors at most 0.3 %",
    kind="at_most",
    metric="% of checkouts",
    baseline=0.1 + 0.2 + 0.4,  # a float that only survives an exact round trip
    target=0.1 + 0.2,
    deadline=date(2025, 9, 15),
    weight=0.1,
)
UPTIME = KeyResultDefinition(
    title="Keep uptime at least 99.9 %",
    kind="at_least",
    metric="% uptime",
    baseline=99.5,
    target=99.9,
    deadline=Q3_END,
)
LAUNCH = KeyResultDefinition(
    title="Launch the loyalty app", kind="milestone", deadline=date(2025, 8, 31)
)
EVERY_KIND = [SALES, CHURN, NPS, PURCHASE_PATH, ERROR_RATE, UPTIME, LAUNCH]

OpenApplication = Callable[..., OkrApplication]


@pytest.fixture
def open_application(store_settings: Settings) -> Iterator[OpenApplication]:
    """Open applications on the test's store (each one a separate process would be); closes all."""
    opened: list[OkrApplication] = []

    def open_one(**updates: Any) -> OkrApplication:
        application = OkrApplication(store_settings.model_copy(update=updates), clock=lambda: NOW)
        opened.append(application)
        return application

    yield open_one
    for application in opened:
        application.close()


@pytest.fixture
def application(open_application: OpenApplication) -> OkrApplication:
    return open_application()


def command(
    objective_id: UUID | None,
    body: CommandBody,
    *,
    command_id: str | None = None,
    expected_version: int | None = None,
    reason: str | None = None,
    actor: str = "alice",
) -> Command:
    return Command(
        command_id=command_id or f"cmd-{uuid4()}",
        objective_id=objective_id,
        expected_version=expected_version,
        actor=actor,
        reason=reason,
        body=body,
    )


def create(
    objective_id: UUID,
    key_results: Sequence[KeyResultDefinition] = (NPS,),
    parent_id: UUID | None = None,
) -> CreateObjective:
    return CreateObjective(
        objective_id=objective_id,
        title="Win the mid-market",
        description="Q3 push \u2014 \u00e9lan commercial",
        owner="alice",
        team="sales",
        period_start=Q3_START,
        period_end=Q3_END,
        parent_id=parent_id,
        key_results=list(key_results),
    )


def active_objective(
    application: OkrApplication, key_results: Sequence[KeyResultDefinition] = (NPS,)
) -> tuple[UUID, UUID]:
    """A fresh active objective (version 2) and its first key result's id."""
    objective_id = uuid4()
    application.handle(command(objective_id, create(objective_id, key_results)))
    application.handle(command(objective_id, ActivateObjective()))
    objective = loaded(application, objective_id)
    return objective_id, objective.key_results[0].key_result_id


def loaded(
    application: OkrApplication, objective_id: UUID, version: int | None = None
) -> Objective:
    objective = application.get_objective(objective_id, version=version)
    assert objective is not None
    return objective


def stored_events(application: OkrApplication, objective_id: UUID) -> list[DomainEvent]:
    return [cast(DomainEvent, event) for event in application.events.get(objective_id)]


def written(application: OkrApplication) -> int:
    """How many events the whole store holds: a write anywhere moves it."""
    return application.recorder.max_notification_id() or 0


def race(
    applications: Sequence[OkrApplication], commands: Sequence[Command]
) -> list[CommandResult | VersionConflictError]:
    """Start every command at once, from threads spread over the applications."""
    start = threading.Barrier(len(commands))

    def run(index: int) -> CommandResult | VersionConflictError:
        start.wait(timeout=60)
        try:
            return applications[index % len(applications)].handle(commands[index])
        except VersionConflictError as conflict:
            return conflict

    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(run, range(len(commands))))


# --- round trip ---------------------------------------------------------------------------------


def test_an_objective_loads_back_with_every_field(open_application: OpenApplication) -> None:
    application = open_application()
    objective_id, parent_id = uuid4(), uuid4()
    result = application.handle(command(objective_id, create(objective_id, EVERY_KIND, parent_id)))
    assert (result.status, result.objective_id, result.version) == ("accepted", objective_id, 1)
    assert result.events == ["ObjectiveCreated"]
    application.handle(command(objective_id, ActivateObjective()))
    created = loaded(application, objective_id)
    sales_id, nps_id = created.key_results[0].key_result_id, created.key_results[2].key_result_id
    application.handle(
        command(objective_id, BindKpi(key_result_id=sales_id, kpi_key="sales.x", aggregation="sum"))
    )
    application.handle(
        command(
            objective_id,
            CheckIn(key_result_id=nps_id, value=71.25, confidence=0.75, note="survey \u2714"),
        )
    )

    objective = loaded(open_application(), objective_id)  # another process: nothing cached

    assert objective == loaded(application, objective_id)
    assert (objective.id, objective.version, objective.parent_id) == (objective_id, 4, parent_id)
    assert isinstance(objective.parent_id, UUID)
    assert (objective.period_start, objective.period_end) == (Q3_START, Q3_END)
    assert (objective.created_on, objective.modified_on) == (NOW, NOW)
    assert objective.description == "Q3 push \u2014 \u00e9lan commercial"
    assert objective.status is ObjectiveStatus.ACTIVE
    specs = [key_result.spec for key_result in objective.key_results]
    assert specs[0] == KeyResultSpec(
        title=SALES.title,
        kind=KeyResultKind.INCREASE,
        metric="units",
        baseline=1000.0,
        target=1300.0,
        relative_target="+30%",
        deadline=Q3_END,
        weight=2.5,
    )
    assert (specs[1].target, specs[1].relative_target) == (7.6, "-5%")
    assert (specs[3].target_low, specs[3].target_high) == (3.0, 4.0)
    assert (specs[4].baseline, specs[4].target, specs[4].weight) == (
        0.1 + 0.2 + 0.4,
        0.1 + 0.2,
        0.1,
    )
    assert specs[4].deadline == date(2025, 9, 15)
    assert (specs[6].kind, specs[6].baseline, specs[6].target) == (
        KeyResultKind.MILESTONE,
        0.0,
        1.0,
    )
    sales, nps = objective.key_results[0], objective.key_results[2]
    assert sales.binding == KpiBinding(kpi_key="sales.x", aggregation=Aggregation.SUM)
    assert (nps.current, nps.confidence, nps.last_update) == (71.25, 0.75, NOW)

    events = stored_events(application, objective_id)
    assert [type(event).__name__ for event in events] == [
        "ObjectiveCreated",
        "ObjectiveActivated",
        "KpiBound",
        "ProgressCheckedIn",
    ]
    assert [event.originator_version for event in events] == [1, 2, 3, 4]
    assert all(event.actor == "alice" and event.timestamp == NOW for event in events)


def test_a_create_keyed_by_its_envelope_creates_that_objective(
    application: OkrApplication,
) -> None:
    objective_id = uuid4()
    body = create(objective_id).model_copy(update={"objective_id": None})
    result = application.handle(command(objective_id, body))
    assert result.objective_id == objective_id
    assert loaded(application, objective_id).version == 1

    before = written(application)
    with pytest.raises(RuleViolationError):
        application.handle(command(uuid4(), create(uuid4())))
    assert written(application) == before


def test_creating_an_objective_that_exists_conflicts(application: OkrApplication) -> None:
    objective_id = uuid4()
    application.handle(command(objective_id, create(objective_id)))
    before = written(application)
    with pytest.raises(VersionConflictError) as raised:
        application.handle(command(objective_id, create(objective_id)))
    assert (raised.value.expected, raised.value.actual) == (0, 1)
    assert written(application) == before


def test_a_change_without_an_objective_id_is_refused(application: OkrApplication) -> None:
    with pytest.raises(RuleViolationError, match="objective_id"):
        application.handle(command(None, ActivateObjective()))


# --- idempotency --------------------------------------------------------------------------------


def test_a_repeated_command_id_is_applied_once(open_application: OpenApplication) -> None:
    application = open_application()
    objective_id, nps_id = active_objective(application)
    check_in = command(objective_id, CheckIn(key_result_id=nps_id, value=70.0))

    first = application.handle(check_in)
    before = written(application)
    again = application.handle(check_in)
    elsewhere = open_application().handle(check_in)  # a second instance sees the same receipt

    assert not first.replayed
    assert again.replayed and elsewhere.replayed
    assert again == elsewhere == first.model_copy(update={"replayed": True})
    assert written(application) == before
    assert loaded(application, objective_id).version == first.version == 3


def test_a_command_id_reused_for_another_request_is_refused(application: OkrApplication) -> None:
    objective_id, nps_id = active_objective(application)
    application.handle(
        command(objective_id, CheckIn(key_result_id=nps_id, value=70.0), command_id="once")
    )
    before = written(application)
    changed = command(objective_id, CheckIn(key_result_id=nps_id, value=71.0), command_id="once")
    with pytest.raises(IdempotencyKeyReusedError):
        application.handle(changed)
    assert written(application) == before
    assert loaded(application, objective_id).key_results[0].current == 70.0


def test_a_command_id_is_scoped_to_its_actor(application: OkrApplication) -> None:
    """Bob's "once" is not Alice's: his command is new, applied, and hers still replays."""
    objective_id, nps_id = active_objective(application)
    alices = command(objective_id, CheckIn(key_result_id=nps_id, value=70.0), command_id="once")
    first = application.handle(alices)
    bobs = application.handle(
        command(
            objective_id, CheckIn(key_result_id=nps_id, value=72.0), command_id="once", actor="bob"
        )
    )
    assert (bobs.version, bobs.replayed) == (first.version + 1, False)
    assert application.handle(alices) == first.model_copy(update={"replayed": True})
    assert loaded(application, objective_id).key_results[0].current == 72.0


def test_receipts_stored_under_the_bare_command_id_still_replay_for_their_actor(
    open_application: OpenApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stores written before receipts were scoped keep answering their retries (once the process
    of the new version opens them: it looks for bare receipts only in a store that has some)."""
    before_upgrade = open_application()
    objective_id, nps_id = active_objective(before_upgrade)
    check_in = command(objective_id, CheckIn(key_result_id=nps_id, value=70.0), command_id="old")
    with monkeypatch.context() as legacy:
        legacy.setattr(
            services.commands.application, "receipt_key", lambda _actor, command_id: command_id
        )
        first = before_upgrade.handle(check_in)
    application = open_application()
    before = written(application)
    assert application.handle(check_in) == first.model_copy(update={"replayed": True})
    assert written(application) == before
    with pytest.raises(IdempotencyKeyReusedError):
        application.handle(
            check_in.model_copy(update={"body": CheckIn(key_result_id=nps_id, value=1.0)})
        )
    bobs = application.handle(check_in.model_copy(update={"actor": "bob"}))
    assert (bobs.version, bobs.replayed) == (first.version + 1, False)


# --- optimistic concurrency ---------------------------------------------------------------------


def test_a_stale_expected_version_conflicts_and_writes_nothing(
    application: OkrApplication,
) -> None:
    objective_id, nps_id = active_objective(application)
    before = written(application)
    body = CheckIn(key_result_id=nps_id, value=70.0)
    with pytest.raises(VersionConflictError) as raised:
        application.handle(command(objective_id, body, command_id="late", expected_version=1))
    assert (raised.value.expected, raised.value.actual) == (1, 2)
    assert written(application) == before
    assert loaded(application, objective_id).version == 2

    # Not even a receipt was kept: the same id, now at the right version, is applied.
    retried = application.handle(command(objective_id, body, command_id="late", expected_version=2))
    assert (retried.version, retried.replayed) == (3, False)


def test_racing_writers_at_the_same_version_one_wins_the_others_conflict(
    open_application: OpenApplication,
) -> None:
    first, second = open_application(), open_application()
    objective_id, nps_id = active_objective(first)
    before = written(first)
    values = [60.0 + index for index in range(RACERS)]
    commands = [
        command(objective_id, CheckIn(key_result_id=nps_id, value=value), expected_version=2)
        for value in values
    ]

    outcomes = race([first, second], commands)

    winners = [o for o in outcomes if isinstance(o, CommandResult)]
    conflicts = [o for o in outcomes if isinstance(o, VersionConflictError)]
    assert len(winners) == 1
    assert len(conflicts) == RACERS - 1
    assert all(conflict.expected == 2 for conflict in conflicts)
    assert winners[0].version == 3
    assert written(first) == before + 1
    winning_value = values[outcomes.index(winners[0])]
    for application in (first, second, open_application()):
        objective = loaded(application, objective_id)
        assert objective.version == 3
        assert objective.key_results[0].current == winning_value


def test_unversioned_concurrent_check_ins_are_all_applied(
    open_application: OpenApplication,
) -> None:
    first, second = open_application(), open_application()
    objective_id, nps_id = active_objective(first)
    values = [60.0 + index for index in range(RACERS)]
    commands = [
        command(objective_id, CheckIn(key_result_id=nps_id, value=value)) for value in values
    ]

    outcomes = race([first, second], commands)

    assert all(isinstance(outcome, CommandResult) for outcome in outcomes), outcomes
    versions = sorted(o.version for o in outcomes if isinstance(o, CommandResult) and o.version)
    assert versions == list(range(3, 3 + RACERS))
    events = stored_events(open_application(), objective_id)
    assert [event.originator_version for event in events] == list(range(1, 3 + RACERS))
    checked_in = [event.value for event in events if isinstance(event, ProgressCheckedIn)]
    assert sorted(checked_in) == values


# --- upcasting ----------------------------------------------------------------------------------


def test_a_version_1_check_in_is_read_back_as_version_2(
    open_application: OpenApplication,
) -> None:
    application = open_application()
    objective_id, nps_id = active_objective(application)
    transcoder = application.mapper.transcoder
    version_1_state = {  # as written before `confidence` existed: no field, no class_version
        "timestamp": "2024-11-02T08:00:00+00:00",
        "actor": "legacy-ui",
        "command_id": "v1-check-in",
        "reason": None,
        "key_result_id": str(nps_id),
        "value": 66.5,
        "note": "written by v1",
    }
    version_1_state["chain_hash"] = chain_hash(
        loaded(application, objective_id).chain_hash,
        EventRecord.from_stored(objective_id, 3, "ProgressCheckedIn", version_1_state),
    )
    application.recorder.insert_events(
        [
            StoredEvent(
                originator_id=objective_id,
                originator_version=3,
                topic=get_topic(ProgressCheckedIn),
                state=transcoder.encode(version_1_state),
            )
        ]
    )

    reader = open_application()
    [event] = [e for e in stored_events(reader, objective_id) if e.originator_version == 3]
    assert isinstance(event, ProgressCheckedIn)
    assert (event.value, event.confidence, event.note) == (66.5, None, "written by v1")
    assert event.timestamp == datetime(2024, 11, 2, 8, tzinfo=UTC)
    nps = loaded(reader, objective_id).key_results[0]
    assert (nps.current, nps.confidence) == (66.5, None)
    assert transcoder.decode(reader.mapper.to_stored_event(event).state)["class_version"] == 2

    # What the application writes today is version 2, with its confidence.
    application.handle(
        command(objective_id, CheckIn(key_result_id=nps_id, value=70.0, confidence=0.4))
    )
    [raw] = application.recorder.select_events(objective_id, gt=3)
    state = transcoder.decode(raw.state)
    assert (state["class_version"], state["confidence"]) == (2, 0.4)


# --- snapshots, cache and the past --------------------------------------------------------------


def test_snapshots_change_how_an_objective_loads_not_what_it_loads_as(
    open_application: OpenApplication,
) -> None:
    application = open_application(snapshot_interval=5)
    objective_id, nps_id = active_objective(application)
    for step in range(10):
        application.handle(
            command(objective_id, CheckIn(key_result_id=nps_id, value=62.0 + 1.5 * step))
        )
    events = stored_events(application, objective_id)
    assert len(events) == 12

    assert application.snapshots is not None
    snapshots = [cast(ObjectiveSnapshot, s) for s in application.snapshots.get(objective_id)]
    assert [snapshot.originator_version for snapshot in snapshots] == [5, 10]
    for snapshot in snapshots:
        assert snapshot.state == replay(events[: snapshot.originator_version])

    fresh = open_application(snapshot_interval=5)
    assert loaded(fresh, objective_id) == loaded(application, objective_id) == replay(events)
    assert loaded(fresh, objective_id).key_results[0].current == 62.0 + 1.5 * 9


def test_snapshots_stored_under_their_old_topic_still_load(
    open_application: OpenApplication, store_settings: Settings
) -> None:
    """Snapshots written before the command side had its own package name their class
    `services.persistence:ObjectiveSnapshot`; stored topics are never rewritten."""
    application = open_application(snapshot_interval=5)
    objective_id, nps_id = active_objective(application)
    for step in range(4):
        application.handle(command(objective_id, CheckIn(key_result_id=nps_id, value=70.0 + step)))
    assert application.snapshots is not None
    table = application.snapshots.recorder.events_table_name  # type: ignore[attr-defined]
    execute(store_settings, f"UPDATE {table} SET topic = ?", LEGACY_SNAPSHOT_TOPIC)
    assert execute(store_settings, f"SELECT DISTINCT topic FROM {table}") == [
        (LEGACY_SNAPSHOT_TOPIC,)
    ]

    fresh = open_application(snapshot_interval=5)
    assert loaded(fresh, objective_id) == replay(stored_events(application, objective_id))


def test_get_objective_at_a_past_version_returns_the_past_state(
    open_application: OpenApplication,
) -> None:
    application = open_application(snapshot_interval=5)
    objective_id, nps_id = active_objective(application)
    for step in range(10):
        application.handle(command(objective_id, CheckIn(key_result_id=nps_id, value=63.0 + step)))
    events = stored_events(application, objective_id)

    reader = open_application(snapshot_interval=5)
    for version in range(1, len(events) + 1):
        past = loaded(reader, objective_id, version)
        assert past == replay(events[:version])
        assert past.version == version
    assert loaded(reader, objective_id, 1).status is ObjectiveStatus.DRAFT
    assert loaded(reader, objective_id, 3).key_results[0].current == 63.0
    assert reader.get_objective(uuid4()) is None


def test_the_cache_holds_the_latest_state(application: OkrApplication) -> None:
    """A busy objective must not be replayed from its first cached version on every load."""
    objective_id, nps_id = active_objective(application)
    for value in (63.0, 64.0, 65.0):
        application.handle(command(objective_id, CheckIn(key_result_id=nps_id, value=value)))
        application.get_objective(objective_id)
    cache = application.repository.cache
    assert cache is not None
    cached = cast(Objective, cache.get(objective_id))
    assert cached.version == 5
    assert cached.key_results[0].current == 65.0
