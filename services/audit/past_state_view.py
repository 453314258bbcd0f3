"""An objective's state and scores at a version, as a document: the one shape the as-of endpoint,
the audit history (HTTP and `okr audit history`) and any other reader of the past share.
"""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from pydantic import BaseModel, Field

from domain.measures import KeyResultKind
from domain.objective import ObjectiveDetails, ObjectiveStatus
from domain.objective_events import Aggregation
from services.audit.past_states import ObjectiveAsOf


class KeyResultAsOfBody(BaseModel):
    key_result_id: UUID
    title: str
    kind: KeyResultKind
    metric: str | None
    baseline: float | None
    target: float | None = Field(description="Absolute target (a relative one is resolved).")
    target_low: float | None
    target_high: float | None
    relative_target: str | None
    deadline: date | None
    weight: float
    current: float | None = Field(description="The last value checked in or recorded from a KPI.")
    confidence: float | None
    last_update: datetime | None
    kpi_key: str | None = Field(description="The KPI that moved it, when bound.")
    aggregation: Aggregation | None
    score: float = Field(description="0..100, clamped.")
    attainment: float | None = Field(description="Unclamped percent; null before any value.")


class _AsOfHeader(BaseModel):
    objective_id: UUID
    version: int = Field(description="The version the answer describes.")
    as_of: datetime = Field(description="When that version came to be (its last event).")
    created_on: datetime
    status: ObjectiveStatus


class ObjectiveAsOfBody(ObjectiveDetails, _AsOfHeader):
    score: float = Field(description="Weighted mean of the key results' scores (0..100).")
    final_score: float | None = Field(description="The score frozen when it was closed.")
    retrospective: str | None
    key_results: list[KeyResultAsOfBody]


def as_of_body(found: ObjectiveAsOf) -> ObjectiveAsOfBody:
    objective = found.objective
    key_results = []
    for scored_kr in found.key_results:
        kr, spec = scored_kr.key_result, scored_kr.key_result.spec
        key_results.append(
            KeyResultAsOfBody(
                key_result_id=kr.key_result_id,
                title=spec.title,
                kind=spec.kind,
                metric=spec.metric,
                baseline=spec.baseline,
                target=spec.target,
                target_low=spec.target_low,
                target_high=spec.target_high,
                relative_target=spec.relative_target,
                deadline=spec.deadline,
                weight=spec.weight,
                current=kr.current,
                confidence=kr.confidence,
                last_update=kr.last_update,
                kpi_key=kr.binding.kpi_key if kr.binding else None,
                aggregation=kr.binding.aggregation if kr.binding else None,
                score=scored_kr.score.score,
                attainment=scored_kr.score.attainment,
            )
        )
    return ObjectiveAsOfBody(
        objective_id=objective.id,
        version=objective.version,
        as_of=objective.modified_on,
        created_on=objective.created_on,
        status=objective.status,
        **objective.model_dump(include=set(ObjectiveDetails.model_fields)),
        score=found.score,
        final_score=objective.final_score,
        retrospective=objective.retrospective,
        key_results=key_results,
    )
