"""`GET /objectives/{id}/as-of`: an objective and its scores as they were, for auditors.

Answered from the event store (`services.history`), not from the projections: the audit question
"what did this objective say, and score, on that day" must not depend on a read model.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, Field

from domain.measures import KeyResultKind
from domain.objective import ObjectiveStatus
from domain.objective_events import Aggregation
from events.commands import MAX_VERSION
from services.api.commands import get_application
from services.api.errors import REJECTION_RESPONSES
from services.application import OkrApplication
from services.history import ObjectiveAsOf, ObjectiveNotFoundAsOfError, objective_as_of

router = APIRouter(tags=["history"], responses=REJECTION_RESPONSES)


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


class ObjectiveAsOfBody(BaseModel):
    objective_id: UUID
    version: int = Field(description="The version the answer describes.")
    as_of: datetime = Field(description="When that version came to be (its last event).")
    created_on: datetime
    status: ObjectiveStatus
    title: str
    description: str
    owner: str
    team: str
    period_start: date
    period_end: date
    parent_id: UUID | None
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
        title=objective.title,
        description=objective.description,
        owner=objective.owner,
        team=objective.team,
        period_start=objective.period_start,
        period_end=objective.period_end,
        parent_id=objective.parent_id,
        score=found.score,
        final_score=objective.final_score,
        retrospective=objective.retrospective,
        key_results=key_results,
    )


def _exactly_one(at: datetime | None, version: int | None) -> None:
    if (at is None) != (version is None):
        return
    raise RequestValidationError(
        [
            {
                "type": "exactly_one_required",
                "loc": ("query", "at" if at is None else "version"),
                "msg": "give exactly one of ?at=ISO-8601 (with a time zone) or ?version=N",
            }
        ]
    )


@router.get(
    "/objectives/{objective_id}/as-of",
    summary="An objective and its scores as they were at a version or a moment",
    response_model=ObjectiveAsOfBody,
)
async def get_objective_as_of(
    objective_id: UUID,
    application: Annotated[OkrApplication, Depends(get_application)],
    at: Annotated[
        AwareDatetime | None,
        Query(description="A moment, ISO 8601 with a time zone, e.g. 2026-08-01T12:00:00Z."),
    ] = None,
    version: Annotated[
        int | None, Query(ge=1, le=MAX_VERSION, description="A version (1, 2, …).")
    ] = None,
) -> ObjectiveAsOfBody:
    _exactly_one(at, version)
    found = await asyncio.to_thread(
        objective_as_of, application, objective_id, at=at, version=version
    )
    if found is None:
        when = f"at version {version}" if version is not None else f"at {at}"
        raise ObjectiveNotFoundAsOfError(objective_id, when)
    return as_of_body(found)
