"""What can happen to an objective: the stored, immutable facts, one class per decision.

These are domain events, the system of record. They are not the wire contract other services read
(`events/okr.py`): the relay translates, so the two can change for different reasons. Every event
says who took the decision, when, under which command, and (for decisions) why.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.measures import KeyResultSpec


class Immutable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Aggregation(StrEnum):
    """How a bound KPI's observations over the objective's period become a key result's value."""

    LATEST = "latest"
    SUM = "sum"
    COUNT = "count"
    AVG = "avg"
    MIN = "min"
    MAX = "max"


class KpiBinding(Immutable):
    kpi_key: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-/]+$")
    aggregation: Aggregation = Aggregation.LATEST


class NewKeyResult(Immutable):
    """A key result as it enters an objective: its identity and how it is measured."""

    key_result_id: UUID
    spec: KeyResultSpec


class DomainEvent(Immutable):
    """Fields every stored event carries; `originator_*` are eventsourcing's names."""

    class_version: ClassVar[int] = 1

    originator_id: UUID
    originator_version: int
    timestamp: datetime
    actor: str
    command_id: str
    reason: str | None = None
    chain_hash: str = ""
    """SHA-256 linking this event to the objective's previous one (`domain.chain`); set by
    `seal` once the event is decided, empty only on events never meant to be stored."""


class ObjectiveCreated(DomainEvent):
    title: str
    description: str = ""
    owner: str
    team: str
    period_start: date
    period_end: date
    parent_id: UUID | None = None
    key_results: tuple[NewKeyResult, ...]


class ObjectiveRevised(DomainEvent):
    """Only the fields that changed are set; `None` means unchanged."""

    title: str | None = None
    description: str | None = None
    owner: str | None = None
    team: str | None = None
    period_start: date | None = None
    period_end: date | None = None


class ObjectiveAligned(DomainEvent):
    parent_id: UUID | None


class ObjectiveActivated(DomainEvent):
    pass


class ObjectiveClosed(DomainEvent):
    final_score: float
    retrospective: str = ""


class ObjectiveArchived(DomainEvent):
    pass


class KeyResultAdded(DomainEvent):
    key_result: NewKeyResult


class KeyResultRevised(DomainEvent):
    key_result_id: UUID
    spec: KeyResultSpec


class KeyResultRemoved(DomainEvent):
    key_result_id: UUID


class KpiBound(DomainEvent):
    key_result_id: UUID
    binding: KpiBinding


class KpiUnbound(DomainEvent):
    key_result_id: UUID


class ProgressCheckedIn(DomainEvent):
    """A person's check-in. Version 2 added `confidence` (0..1); v1 events read as unknown."""

    class_version: ClassVar[int] = 2

    key_result_id: UUID
    value: float
    confidence: float | None = Field(None, ge=0, le=1)
    note: str = ""

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state.setdefault("confidence", None)


class KpiProgressRecorded(DomainEvent):
    """A KPI batch moved a bound key result: which KPI events it covers, so history says why."""

    key_result_id: UUID
    value: float
    kpi_key: str
    observations: int = Field(ge=1)
    last_kpi_event_id: str
    last_offset: int | None = None


DECISIONS_NEEDING_A_REASON: tuple[type[DomainEvent], ...] = (
    KeyResultRemoved,
    ObjectiveClosed,
    ObjectiveArchived,
)
"""Target changes need one too; `revise_key_result` decides that, as it depends on the change."""
