"""Read API over the projection store: objectives, their key results, timeline and history.

Reads are eventually consistent with writes. A client that just wrote version N can ask for
`?min_version=N`: the read waits (bounded) until the projection has applied N, so it reads its
own write without sleeping and guessing.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from domain.errors import ObjectiveNotFoundError
from domain.pace import PaceStatus, PaceThresholds, pace_status
from events.commands import Issue
from projections.views import (
    AuditRow,
    InvalidCursorError,
    KeyResultRow,
    ObjectiveFilter,
    ObjectiveRow,
    ReadStore,
    TimelineRow,
)
from services.commands.application import OkrApplication
from services.commands.rejections import Rejection
from services.http.commands import get_application
from services.http.errors import REJECTION_RESPONSES, rejection_response
from services.settings import Settings

router = APIRouter(prefix="/objectives", tags=["reads"], responses=REJECTION_RESPONSES)

WAIT_POLL_S = 0.02
MAX_WAIT_S = 30.0


def get_read_store(request: Request) -> ReadStore:
    store: ReadStore = request.app.state.read_store
    return store


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ReadStoreDep = Annotated[ReadStore, Depends(get_read_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


class KeyResultView(KeyResultRow):
    pace: PaceStatus


class ObjectiveView(BaseModel):
    objective: ObjectiveRow
    pace: PaceStatus = Field(
        description="Score against the elapsed part of the period; `ended` once it is over."
    )
    final_score: float | None = Field(
        None,
        description="Once the period is over (`pace` is `ended`) or the objective closed: the "
        "score it ended with (frozen at closing, else the score now). Null while it runs.",
    )
    key_results: list[KeyResultView]
    children: list[ObjectiveRow] = Field(description="Objectives aligned to this one.")


class ObjectiveListView(BaseModel):
    items: list[ObjectiveRow]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


def period_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """A period runs from its first day's midnight to the midnight after its last day (UTC)."""
    return (
        datetime.combine(start, clock_time.min, UTC),
        datetime.combine(end + timedelta(days=1), clock_time.min, UTC),
    )


def pace_of(
    settings: Settings, row: ObjectiveRow, score: float, last_update: datetime | None, now: datetime
) -> PaceStatus:
    start, end = period_bounds(row.period_start, row.period_end)
    return pace_status(
        score,
        start,
        end,
        now,
        last_update,
        timedelta(days=settings.stale_after_days),
        PaceThresholds(on_track=settings.pace_on_track, at_risk=settings.pace_at_risk),
    )


def final_score_of(row: ObjectiveRow, pace: PaceStatus) -> float | None:
    """The score an objective ended with: frozen when it was closed, else its score once the
    period is over; None while it still runs."""
    if row.final_score is not None:
        return row.final_score
    return row.score if pace is PaceStatus.ENDED else None


def objective_view(
    settings: Settings,
    row: ObjectiveRow,
    key_results: list[KeyResultRow],
    children: list[ObjectiveRow],
    now: datetime,
) -> ObjectiveView:
    updates = [kr.last_update for kr in key_results if kr.last_update is not None]
    pace = pace_of(settings, row, row.score, max(updates, default=None), now)
    return ObjectiveView(
        objective=row,
        pace=pace,
        final_score=final_score_of(row, pace),
        key_results=[
            KeyResultView(
                **kr.model_dump(), pace=pace_of(settings, row, kr.score, kr.last_update, now)
            )
            for kr in key_results
        ],
        children=children,
    )


async def wait_for_version(
    store: ReadStore, objective_id: UUID, min_version: int | None, wait_s: float
) -> int | None:
    """The projected version, after waiting (bounded) for it to reach `min_version`."""
    deadline = time.monotonic() + wait_s
    while True:
        version = await asyncio.to_thread(store.objective_version, objective_id)
        reached = min_version is None or (version is not None and version >= min_version)
        if reached or time.monotonic() >= deadline:
            return version
        await asyncio.sleep(WAIT_POLL_S)


async def never_written(
    application: OkrApplication, objective_id: UUID, wanted: int
) -> JSONResponse | None:
    """Only a version the event store holds is worth waiting for: the projection will get there.
    Waiting for any other would end in 503 "retry shortly", and retries could never succeed."""
    stored = await asyncio.to_thread(application.receipts.current_versions, [objective_id])
    version = stored.get(objective_id)
    if version is None:
        raise ObjectiveNotFoundError(objective_id)
    if version >= wanted:
        return None
    message = (
        f"objective {objective_id} is at version {version}; version {wanted} was never written"
    )
    problem = Issue(code="version_not_found", field="min_version", message=message)
    return rejection_response(Rejection(404, "version_not_found", message, [problem]))


def projection_behind(objective_id: UUID, wanted: int, projected: int | None) -> JSONResponse:
    message = (
        f"objective {objective_id} is projected at version {projected}, not yet {wanted}; "
        "retry shortly"
    )
    response = rejection_response(
        Rejection(
            503,
            "projection_behind",
            message,
            [Issue(code="projection_behind", field="min_version", message=message)],
        )
    )
    response.headers["Retry-After"] = "1"
    return response


class ObjectiveListQuery(ObjectiveFilter):
    """The query of `GET /objectives`: the filters, then the page. Parameters it does not know
    are ignored, as FastAPI ignores them on any route."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, description="`next_cursor` of the previous page.")


@router.get(
    "",
    response_model=ObjectiveListView,
    summary="List objectives, filtered, in a stable order, page by page",
)
async def list_objectives(
    store: ReadStoreDep, query: Annotated[ObjectiveListQuery, Query()]
) -> ObjectiveListView | JSONResponse:
    try:
        page = await asyncio.to_thread(
            store.list_objectives, query, limit=query.limit, after_cursor=query.cursor
        )
    except InvalidCursorError as error:
        problem = Issue(code="invalid_cursor", field="cursor", message=str(error))
        return rejection_response(Rejection(422, "invalid_cursor", str(error), [problem]))
    return ObjectiveListView(items=list(page.items), next_cursor=page.next_cursor)


@router.get(
    "/{objective_id}",
    response_model=ObjectiveView,
    summary="One objective with its key results, pace and aligned children",
)
async def get_objective(
    objective_id: UUID,
    store: ReadStoreDep,
    settings: SettingsDep,
    application: Annotated[OkrApplication, Depends(get_application)],
    min_version: int | None = Query(
        None, ge=1, description="Wait until the projection has applied this version."
    ),
    wait: float = Query(5.0, ge=0, le=MAX_WAIT_S, description="Longest wait, in seconds."),
) -> ObjectiveView | JSONResponse:
    if min_version is not None and (
        refused := await never_written(application, objective_id, min_version)
    ):
        return refused
    version = await wait_for_version(store, objective_id, min_version, wait)
    if version is None and min_version is None:
        raise ObjectiveNotFoundError(objective_id)
    if min_version is not None and (version is None or version < min_version):
        return projection_behind(objective_id, min_version, version)

    detail = await asyncio.to_thread(store.objective_detail, objective_id)
    if detail is None:
        raise ObjectiveNotFoundError(objective_id)
    return objective_view(
        settings,
        detail.objective,
        list(detail.key_results),
        list(detail.children),
        datetime.now(UTC),
    )


@router.get(
    "/{objective_id}/timeline",
    summary="Every score change with its time and cause",
)
async def get_timeline(
    objective_id: UUID, store: ReadStoreDep, key_result_id: UUID | None = None
) -> list[TimelineRow]:
    await require_projected(store, objective_id)
    return await asyncio.to_thread(store.timeline, objective_id, key_result_id)


@router.get(
    "/{objective_id}/history",
    summary="Every decision: who, when, what changed (before -> after) and why",
)
async def get_history(objective_id: UUID, store: ReadStoreDep) -> list[AuditRow]:
    await require_projected(store, objective_id)
    return await asyncio.to_thread(store.history, objective_id)


async def require_projected(store: ReadStore, objective_id: UUID) -> None:
    if await asyncio.to_thread(store.objective_version, objective_id) is None:
        raise ObjectiveNotFoundError(objective_id)
