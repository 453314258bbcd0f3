"""What the scorer's tests share: objectives with KPI-bound key results, KPI events produced onto
the real broker, and waiting on the scorer's stored positions (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson

from domain.objective import Objective
from domain.objective_events import KpiProgressRecorded
from events import commands as wire
from events import topics
from events.dead_letters import DeadLetter
from services.commands.application import OkrApplication
from services.scoring.scorer import kpi_reader
from services.settings import Settings
from tests import kafka_support
from tests.kafka_support import eventually, read_until

ACTOR = "alice@example.com"
PERIOD_START = date(2026, 7, 1)
PERIOD_END = date(2026, 9, 30)
IN_PERIOD = datetime(2026, 8, 1, tzinfo=UTC)
AGGREGATIONS: tuple[wire.Aggregation, ...] = ("latest", "sum", "count", "avg", "min", "max")


def run(application: OkrApplication, body: wire.CommandBody, objective_id: UUID | None) -> Any:
    result = application.handle(
        wire.Command(
            command_id=str(uuid.uuid4()), objective_id=objective_id, actor=ACTOR, body=body
        )
    )
    assert result.status == "accepted", result
    return result


@dataclass(frozen=True)
class BoundObjective:
    objective_id: UUID
    key_results: tuple[UUID, ...]
    """In the order of `bindings`."""
    bindings: tuple[tuple[str, wire.Aggregation], ...]


def create_bound_objective(
    application: OkrApplication,
    bindings: Sequence[tuple[str, wire.Aggregation]],
    *,
    objective_id: UUID | None = None,
    activate: bool = True,
    bind: bool = True,
) -> BoundObjective:
    """An objective with one key result per (kpi key, aggregation), bound unless `bind=False`."""
    objective_id = objective_id or uuid.uuid4()
    run(
        application,
        wire.CreateObjective(
            objective_id=objective_id,
            title="Sell product X everywhere",
            owner=ACTOR,
            team="sales",
            period_start=PERIOD_START,
            period_end=PERIOD_END,
            key_results=[
                wire.KeyResultDefinition(
                    title=f"Move {kpi} ({aggregation}) to its target",
                    metric="units",
                    baseline=0,
                    target=1e12,
                    deadline=PERIOD_END,
                )
                for kpi, aggregation in bindings
            ],
        ),
        None,
    )
    objective = application.get_objective(objective_id)
    assert objective is not None
    key_results = tuple(kr.key_result_id for kr in objective.key_results)
    if activate:
        run(application, wire.ActivateObjective(), objective_id)
    if bind:
        for key_result_id, (kpi, aggregation) in zip(key_results, bindings, strict=True):
            bind_kpi(application, objective_id, key_result_id, kpi, aggregation)
    return BoundObjective(objective_id, key_results, tuple(bindings))


def bind_kpi(
    application: OkrApplication,
    objective_id: UUID,
    key_result_id: UUID,
    kpi: str,
    aggregation: wire.Aggregation,
) -> None:
    run(
        application,
        wire.BindKpi(key_result_id=key_result_id, kpi_key=kpi, aggregation=aggregation),
        objective_id,
    )


def current_values(application: OkrApplication, objective_id: UUID) -> list[float | None]:
    """The objective's key results' current values, in order (uncached: as stored)."""
    objective = application.get_objective(objective_id)
    assert objective is not None
    return [kr.current for kr in objective.key_results]


def progress_events(application: OkrApplication, objective_id: UUID) -> list[KpiProgressRecorded]:
    stored = application.repository.event_store.get(objective_id)
    return [event for event in stored if isinstance(event, KpiProgressRecorded)]


def objective(application: OkrApplication, objective_id: UUID) -> Objective:
    found = application.get_objective(objective_id)
    assert found is not None
    return found


# --- KPI events -----------------------------------------------------------------------------------


def kpi_event(
    kpi: str,
    value: float,
    *,
    event_id: str | None = None,
    observed_at: datetime = IN_PERIOD,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "kpi_key": kpi,
        "value": value,
        "observed_at": observed_at.isoformat(),
        "source": "sales-service",
        **extra,
    }


def at(minutes: int) -> datetime:
    """An instant inside the period, `minutes` after its reference point."""
    return IN_PERIOD + timedelta(minutes=minutes)


Message = tuple[bytes | None, bytes | None]
"""(key, value) as published; a value that is not a KPI event is sent as given."""


def as_message(event: dict[str, Any] | bytes) -> Message:
    if isinstance(event, bytes):
        return (b"bad", event)
    return (event["kpi_key"].encode(), orjson.dumps(event))


Offsets = dict[int, int]
"""Last offset written, per partition."""
Written = list[tuple[int, int]]
"""(partition, offset) of each message, in the order given."""


async def produce(settings: Settings, messages: Iterable[Message]) -> Written:
    """Publish on `kpi.events` as any service would; (partition, offset) of each."""
    sent = await kafka_support.produce(
        settings, topics.KPI_EVENTS, [(key, value, []) for key, value in messages]
    )
    return [(metadata.partition, metadata.offset) for metadata in sent]


def last_offsets(*written: Written) -> Offsets:
    last: Offsets = {}
    for each in written:
        for partition, offset in each:
            last[partition] = max(last.get(partition, -1), offset)
    return last


async def scored_up_to(application: OkrApplication, settings: Settings, offsets: Offsets) -> None:
    """Until the store's positions passed every offset in `offsets`."""
    topic = settings.topic(topics.KPI_EVENTS)
    reader = kpi_reader(application)

    async def done() -> bool:
        stored = await asyncio.to_thread(reader.positions, topic)
        return all(stored.get(p, 0) > offset for p, offset in offsets.items())

    await eventually(done, f"the scorer to pass offsets {offsets}")


class CollectedLetters:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]
    ) -> None:
        self.values.append(value)


async def dead_letters(settings: Settings, count: int) -> list[DeadLetter]:
    """The first `count` dead letters on `okr.dlq` (read from the beginning)."""
    records = await read_until(settings, topics.DEAD_LETTERS, lambda read: len(read) >= count)
    return [DeadLetter.model_validate_json(record.value) for record in records]


def kpi(name: str) -> str:
    """A KPI key no other test uses (KPIs are global to a store; stores are per test anyway)."""
    return f"{name}.{uuid.uuid4().hex[:8]}"
