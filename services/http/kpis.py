"""Read API over the scorer's KPI tables: which KPIs arrive, their series, what they move.

What a team wiring a service to `kpi.events` asks first: did my events arrive, were they counted
(or dropped as duplicates, stale, outside every period, unbound), and which key results do they
move. Read from the event store's database, where the scorer keeps them in the transaction of its
effects, so the counts never disagree with the scores they produced.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field

from domain.kpi_series import EPOCH, epoch_us
from domain.objective import ObjectiveStatus
from domain.objective_events import Aggregation
from events.commands import Issue, KpiKey
from events.kpi import EARLIEST, LATEST
from services.commands.rejections import Rejection
from services.http.errors import REJECTION_RESPONSES, rejection_response
from services.scoring.scorer import kpi_reader
from services.scoring.series_queries import InvalidSeriesCursorError, StoredObservation, series_page
from services.scoring.series_store import Binding, KpiReader, KpiStats

router = APIRouter(prefix="/kpis", tags=["kpis"])

ALL_STATUSES = tuple(status.value for status in ObjectiveStatus)
KPI_PATH = "/{kpi_key:path}"
"""KPI keys may contain '/': the key takes the rest of the path (suffixed routes match first)."""


def get_kpi_reader(request: Request) -> KpiReader:
    return kpi_reader(request.app.state.application)


ReaderDep = Annotated[KpiReader, Depends(get_kpi_reader)]
KpiKeyPath = Annotated[KpiKey, Path()]
"""A key no KPI event could carry is refused (422) before it reaches a store."""


# --- views ----------------------------------------------------------------------------------------


class KpiView(BaseModel):
    kpi_key: str
    accepted: int = Field(description="Observations stored in the series.")
    duplicates: int = Field(description="Events whose event_id was already stored: ignored.")
    stale: int = Field(
        description="Accepted observations older than the KPI's latest when they arrived; "
        "they do not move a `latest` key result."
    )
    outside_period: int = Field(
        description="Accepted observations outside the period of every key result bound to the "
        "KPI when they arrived."
    )
    unbound: int = Field(description="Accepted observations no key result was bound to yet.")
    latest_value: float | None = Field(description="Value of the latest observation.")
    latest_observed_at: datetime | None = Field(description="Its time, in UTC.")
    latest_event_id: str | None
    last_received_at: datetime | None = Field(description="When the scorer last stored one.")
    key_results: int = Field(description="Key results bound to the KPI, in any status.")


class KpiListView(BaseModel):
    items: list[KpiView] = Field(description="Every KPI the scorer has seen, by key.")


class KpiObservationView(BaseModel):
    event_id: str
    value: float
    observed_at: datetime = Field(description="As the producer sent it, with its UTC offset.")
    source: str
    unit: str | None
    dimensions: dict[str, str]
    received_at: datetime = Field(description="When the scorer stored it.")


class KpiSeriesView(BaseModel):
    kpi_key: str
    items: list[KpiObservationView] = Field(description="Oldest first, by (observed_at, event_id).")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class KpiKeyResultView(BaseModel):
    objective_id: UUID
    key_result_id: UUID
    aggregation: Aggregation
    period_start: date
    period_end: date
    objective_status: ObjectiveStatus
    observations: int = Field(description="Observations of the KPI inside the period.")
    value: float | None = Field(description="What the aggregation gives over them.")


class KpiKeyResultsView(BaseModel):
    kpi_key: str
    items: list[KpiKeyResultView] = Field(description="By objective id, then key result id.")


def from_epoch_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


KPI_COUNTERS = ("accepted", "duplicates", "stale", "outside_period", "unbound")
"""The counters the scorer keeps of a KPI (`KpiStats`) that `KpiView` shows as they are."""


def kpi_view(stats: KpiStats, key_results: int) -> KpiView:
    latest = stats.latest
    return KpiView(
        kpi_key=stats.kpi_key,
        **{name: getattr(stats, name) for name in KPI_COUNTERS},
        latest_value=latest.value if latest else None,
        latest_observed_at=from_epoch_us(latest.observed_at_us) if latest else None,
        latest_event_id=latest.event_id if latest else None,
        last_received_at=(
            datetime.fromisoformat(stats.last_received_at) if stats.last_received_at else None
        ),
        key_results=key_results,
    )


def observation_view(observation: StoredObservation) -> KpiObservationView:
    """The stored observation's fields of the same names (not its `observed_at_us`)."""
    return KpiObservationView.model_validate(observation, from_attributes=True)


def key_result_view(binding: Binding) -> KpiKeyResultView:
    """The binding's fields (and `value`) of the same names; `observations` counts what the value
    aggregates."""
    named = {
        name: getattr(binding, name)
        for name in KpiKeyResultView.model_fields.keys() - {"observations"}
    }
    return KpiKeyResultView(**named, observations=binding.aggregate.count)


# --- refusals -------------------------------------------------------------------------------------


def kpi_not_found(kpi_key: str) -> JSONResponse:
    message = f"no KPI {kpi_key!r}: no event of it was scored and no key result is bound to it"
    problem = Issue(code="kpi_not_found", field="kpi_key", message=message)
    return rejection_response(Rejection(404, "kpi_not_found", message, [problem]))


def invalid_query(code: str, field: str, message: str) -> JSONResponse:
    problem = Issue(code=code, field=field, message=message)
    return rejection_response(Rejection(422, code, message, [problem]))


# --- reads (blocking: run in a worker thread) -----------------------------------------------------


def _stats_and_bindings(reader: KpiReader, kpi_key: str) -> tuple[KpiStats, list[Binding]]:
    stats = reader.stats([kpi_key])[kpi_key]
    return stats, reader.bindings_of_kpis([kpi_key], statuses=ALL_STATUSES)


def _known(stats: KpiStats, bindings: list[Binding]) -> bool:
    """A stats row is written with the first observation or binding (version 0: no row)."""
    return stats.version > 0 or bool(bindings)


def _all_kpis(reader: KpiReader) -> list[KpiView]:
    bound: dict[str, int] = {}
    for binding in reader.all_bindings():
        bound[binding.kpi_key] = bound.get(binding.kpi_key, 0) + 1
    stats = {s.kpi_key: s for s in reader.all_stats()}
    # Bound but never fenced cannot happen while the follower writes both; listed all the same.
    stats |= {key: KpiStats(key) for key in bound.keys() - stats.keys()}
    return [kpi_view(stats[key], bound.get(key, 0)) for key in sorted(stats)]


# --- endpoints ------------------------------------------------------------------------------------

Bound = Annotated[AwareDatetime, Field(ge=EARLIEST, le=LATEST)]


@router.get(
    "",
    response_model=KpiListView,
    summary="Every KPI the scorer has seen, with its counters and latest value",
)
async def list_kpis(reader: ReaderDep) -> KpiListView:
    return KpiListView(items=await asyncio.to_thread(_all_kpis, reader))


@router.get(
    KPI_PATH + "/series",
    response_model=KpiSeriesView,
    summary="A KPI's observations in a time range, oldest first, page by page",
    responses=REJECTION_RESPONSES,
)
async def get_series(
    kpi_key: KpiKeyPath,
    reader: ReaderDep,
    from_: Bound | None = Query(
        None, alias="from", description="From this instant (inclusive), with a UTC offset."
    ),
    to: Bound | None = Query(
        None, description="Up to this instant (exclusive), with a UTC offset."
    ),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page."),
) -> KpiSeriesView | JSONResponse:
    if from_ is not None and to is not None and to <= from_:
        return invalid_query("invalid_range", "to", f"`to` ({to}) is not after `from` ({from_})")

    def read() -> tuple[bool, KpiSeriesView]:
        stats, bindings = _stats_and_bindings(reader, kpi_key)
        page = series_page(
            reader,
            kpi_key,
            start_us=epoch_us(from_) if from_ is not None else None,
            end_us=epoch_us(to) if to is not None else None,
            after=cursor,
            limit=limit,
        )
        view = KpiSeriesView(
            kpi_key=kpi_key,
            items=[observation_view(o) for o in page.items],
            next_cursor=page.next_cursor,
        )
        return _known(stats, bindings), view

    try:
        known, view = await asyncio.to_thread(read)
    except InvalidSeriesCursorError as error:
        return invalid_query("invalid_cursor", "cursor", str(error))
    return view if known else kpi_not_found(kpi_key)


@router.get(
    KPI_PATH + "/key-results",
    response_model=KpiKeyResultsView,
    summary="The key results a KPI moves: objective, aggregation, period, status, value",
    responses=REJECTION_RESPONSES,
)
async def get_key_results(
    kpi_key: KpiKeyPath, reader: ReaderDep
) -> KpiKeyResultsView | JSONResponse:
    stats, bindings = await asyncio.to_thread(_stats_and_bindings, reader, kpi_key)
    if not _known(stats, bindings):
        return kpi_not_found(kpi_key)
    ordered = sorted(bindings, key=lambda b: (str(b.objective_id), str(b.key_result_id)))
    return KpiKeyResultsView(kpi_key=kpi_key, items=[key_result_view(b) for b in ordered])


@router.get(
    KPI_PATH,
    response_model=KpiView,
    summary="One KPI's counters and latest value",
    responses=REJECTION_RESPONSES,
)
async def get_kpi(kpi_key: KpiKeyPath, reader: ReaderDep) -> KpiView | JSONResponse:
    stats, bindings = await asyncio.to_thread(_stats_and_bindings, reader, kpi_key)
    if not _known(stats, bindings):
        return kpi_not_found(kpi_key)
    return kpi_view(stats, len(bindings))
