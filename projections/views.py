"""The read models: one frozen row model per table, and the store interface the read API queries.

Rows are what dashboards and auditors read, folded from `okr.events` by the projector; they are
never written by anything else, so dropping them all and replaying the topic rebuilds them
(`projections.rebuild`). Every table has a natural key, so a dump ordered by it compares equal
between an incrementally built store and a rebuilt one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Collection, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any, NamedTuple, Protocol
from uuid import UUID

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from domain.measures import KeyResultKind
from domain.objective import ObjectiveDetails, ObjectiveStatus
from domain.objective_events import Aggregation
from events import okr
from events.commands import ShortText


class Row(BaseModel):
    # allow_inf_nan: an attainment can overflow to infinity (domain.scoring keeps it unclamped).
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=True)


class _ObjectiveKey(Row):
    objective_id: UUID


class ObjectiveRow(ObjectiveDetails, _ObjectiveKey):
    status: ObjectiveStatus
    score: float = Field(ge=0, le=100, description="Weighted mean of the key results' scores.")
    final_score: float | None = Field(None, description="Frozen when the objective was closed.")
    retrospective: str = ""
    version: int = Field(ge=1, description="Version of the last event applied.")
    created_at: datetime
    updated_at: datetime


class KeyResultRow(Row):
    objective_id: UUID
    key_result_id: UUID
    position: int = Field(ge=0, description="Order within the objective, from 0.")
    title: str
    kind: KeyResultKind
    metric: str | None
    baseline: float | None
    target: float | None
    target_low: float | None
    target_high: float | None
    relative_target: str | None
    deadline: date | None
    weight: float
    current: float | None = None
    score: float = Field(0.0, ge=0, le=100)
    attainment: float | None = Field(None, description="Unclamped percent; null before a value.")
    confidence: float | None = None
    last_update: datetime | None = None
    kpi_key: str | None = None
    aggregation: Aggregation | None = None


TIMELINE_CAUSES = frozenset(
    payload.timeline.cause for payload in okr.PAYLOADS.values() if payload.timeline is not None
)
"""Why a score may have moved: one cause per event type with a place on the timeline, as its
payload model declares it (`events.okr.Timeline`)."""


def _declared_cause(cause: str) -> str:
    if cause not in TIMELINE_CAUSES:
        raise ValueError(f"not a timeline cause: {cause!r}")
    return cause


TimelineCause = Annotated[
    str,
    AfterValidator(_declared_cause),
    Field(json_schema_extra={"enum": sorted(TIMELINE_CAUSES)}),
]


class TimelineRow(Row):
    """The scores right after one score-affecting event: what an auditor replays."""

    objective_id: UUID
    version: int
    occurred_at: datetime
    key_result_id: UUID | None
    value: float | None = Field(description="The key result's current value after the event.")
    kr_score: float | None
    kr_attainment: float | None
    objective_score: float
    cause: TimelineCause
    actor: str
    detail: dict[str, Any] = Field(default_factory=dict)


class FieldChange(Row):
    field: str = Field(description="e.g. 'title', 'key_results[<id>].target', 'status'.")
    before: Any
    after: Any


class AuditRow(Row):
    """Who changed what, when, under which command, and why: one row per event."""

    objective_id: UUID
    version: int
    occurred_at: datetime
    event_type: str
    actor: str
    command_id: str
    reason: str | None
    changes: tuple[FieldChange, ...]


def moment_text(moment: datetime) -> str:
    """A moment as the read store writes it in text: UTC ISO 8601 to the microsecond (fixed
    precision, so text order is time order; PostgreSQL reads it as its `timestamptz`)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


PROGRESS_FIELDS = {
    "objectives": ("version", "updated_at", "score"),
    "key_results": ("current", "last_update", "score", "attainment"),
}
"""Per table, the columns KPI progress moves (`KpiProgressRecorded`: a key result's value and
scores, the objective's version and score)."""


class TimelineEntry(NamedTuple):
    """A `TimelineRow` as the projector appends it: the same fields in the same order, already
    in the text both stores read (ids, the moment, `detail` as JSON). A plain tuple, not a
    validated model: a live stream brings one per message, made from validated events."""

    objective_id: str
    version: int
    occurred_at: str
    key_result_id: str | None
    value: float | None
    kr_score: float | None
    kr_attainment: float | None
    objective_score: float
    cause: str
    actor: str
    detail: str

    @classmethod
    def of(cls, row: TimelineRow) -> TimelineEntry:
        return cls(*_in_text(row, cls._fields))


class AuditEntry(NamedTuple):
    """An `AuditRow` as the projector appends it, in text as `TimelineEntry` (`changes`: the
    JSON list of {field, before, after} objects)."""

    objective_id: str
    version: int
    occurred_at: str
    event_type: str
    actor: str
    command_id: str
    reason: str | None
    changes: str

    @classmethod
    def of(cls, row: AuditRow) -> AuditEntry:
        return cls(*_in_text(row, cls._fields))


def _in_text(row: Row, fields: tuple[str, ...]) -> list[Any]:
    """A row's values as an entry holds them: ids and moments in text, the last field (its JSON
    column) as JSON text."""
    *plain, json_field = fields
    values: list[Any] = []
    for name in plain:
        value = getattr(row, name)
        if isinstance(value, UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = moment_text(value)
        values.append(value)
    values.append(json_text(row.model_dump(mode="json", include={json_field})[json_field]))
    return values


class PositionRow(Row):
    topic: str
    partition: int
    next_offset: int = Field(ge=0, description="The next offset to read: last applied + 1.")


class ProjectedObjective(Row):
    """An objective and its key results (in position order), as the reducer folds them."""

    objective: ObjectiveRow
    key_results: tuple[KeyResultRow, ...]


class ObjectiveDetail(Row):
    """An objective, its key results and the objectives aligned to it, read as of one moment."""

    objective: ObjectiveRow
    key_results: tuple[KeyResultRow, ...]
    children: tuple[ObjectiveRow, ...]


class ObjectivePage(Row):
    items: tuple[ObjectiveRow, ...]
    next_cursor: str | None = Field(description="Pass back as `after_cursor`; null at the end.")


class ReadStoreDump(Row):
    """Every row of every table, each in its key order, for equality checks."""

    objectives: tuple[ObjectiveRow, ...]
    key_results: tuple[KeyResultRow, ...]
    timeline: tuple[TimelineRow, ...]
    audit: tuple[AuditRow, ...]
    positions: tuple[PositionRow, ...]


class ObjectiveFilter(Row):
    """Filters of `list_objectives`; the period filters keep objectives overlapping the window.
    The read API takes them as they are declared here, as query parameters."""

    period_from: date | None = Field(None, description="Overlapping periods from this day.")
    period_to: date | None = Field(None, description="Overlapping periods up to this day.")
    owner: ShortText | None = None
    team: ShortText | None = None
    status: ObjectiveStatus | None = None
    parent_id: UUID | None = None


# --- paging ---------------------------------------------------------------------------------------


class InvalidCursorError(ValueError):
    """A cursor that this store did not hand out (or from an incompatible version)."""


def encode_cursor(row: ObjectiveRow) -> str:
    """Opaque to clients; it names the last row seen in the (created_at, objective_id) order."""
    raw = orjson.dumps([row.created_at.isoformat(), str(row.objective_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, objective_id = orjson.loads(raw)
        # A forged time must fail here, not in the store: naive, or not representable in UTC
        # (year 1 at +14:00), it would be read as local time or overflow the SQLite adapter.
        moment = datetime.fromisoformat(created_at)
        if moment.tzinfo is None:
            raise ValueError("the cursor's time has no UTC offset")
        return moment.astimezone(UTC), UUID(objective_id)
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError, OverflowError) as error:
        raise InvalidCursorError(f"not a cursor of this listing: {cursor!r}") from error


# --- the store ------------------------------------------------------------------------------------


class ProjectionWriter(Protocol):
    """What the projector does inside one transaction; nothing is visible until it commits."""

    def load(self, objective_id: UUID) -> ProjectedObjective | None: ...

    def load_many(self, objective_ids: Sequence[UUID]) -> dict[UUID, ProjectedObjective]:
        """The projected objectives among `objective_ids` (absent ones are left out)."""

    def save(self, projected: ProjectedObjective) -> None:
        """Upsert the objective and make its key result rows exactly `projected.key_results`."""

    def save_many(
        self, projected: Sequence[ProjectedObjective], *, progressed: Collection[UUID] = ()
    ) -> None:
        """`save` for each, in as few statements as the database allows. `progressed`: those
        whose rows differ from the loaded ones only in `PROGRESS_FIELDS` (KPI progress), which
        may then be all that is written."""

    def append_timeline(self, entries: Sequence[TimelineEntry]) -> None: ...

    def append_audit(self, entries: Sequence[AuditEntry]) -> None: ...

    def advance(self, topic: str, partition: int, next_offset: int) -> None:
        """Record the next offset to read; a position never moves backwards."""


class ReadStore(Protocol):
    """The projection store: written by the projector only, read by the read API."""

    def transaction(self) -> contextlib.AbstractContextManager[ProjectionWriter]: ...

    def list_objectives(
        self,
        filters: ObjectiveFilter = ObjectiveFilter(),
        *,
        limit: int = 50,
        after_cursor: str | None = None,
    ) -> ObjectivePage: ...

    def get_objective(self, objective_id: UUID) -> ObjectiveRow | None: ...

    def objective_detail(self, objective_id: UUID) -> ObjectiveDetail | None:
        """The objective with its key results and children, all from ONE read transaction.

        Three separate reads could straddle a projector commit and pair an objective at version
        N with key results at N+1; one snapshot cannot.
        """

    def key_results(self, objective_id: UUID) -> list[KeyResultRow]: ...

    def children(self, parent_id: UUID) -> list[ObjectiveRow]: ...

    def timeline(
        self, objective_id: UUID, key_result_id: UUID | None = None
    ) -> list[TimelineRow]: ...

    def history(self, objective_id: UUID) -> list[AuditRow]: ...

    def objective_version(self, objective_id: UUID) -> int | None: ...

    def positions(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> next offset to read."""
        ...

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        ...

    def dump(self) -> ReadStoreDump: ...

    def reset(self) -> None:
        """Drop and recreate every table, positions included: the first step of a rebuild."""

    def close(self) -> None: ...
