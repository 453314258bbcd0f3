"""The pure fold of one OKR event into an objective's read model, timeline row and audit row.

No I/O and no clock: the same events always give the same rows, which is what makes a rebuild from
offset 0 equal to the incrementally built store. Scores come from `domain.scoring` on a spec built
from the key result row, so the read side can never disagree with the command side's formula.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache, singledispatch
from typing import Any
from uuid import UUID

from domain.errors import KeyResultNotFoundError, ObjectiveNotFoundError
from domain.measures import KeyResultSpec
from domain.objective import ObjectiveStatus
from domain.scoring import Score, objective_score, score_key_result
from events import okr
from events.commands import KeyResultDefinition
from projections.views import (
    AuditRow,
    FieldChange,
    KeyResultRow,
    ObjectiveRow,
    ProjectedObjective,
    TimelineCause,
    TimelineRow,
)

DEFINITION_FIELDS = (
    "title",
    "kind",
    "metric",
    "baseline",
    "target",
    "target_low",
    "target_high",
    "relative_target",
    "deadline",
    "weight",
)
OBJECTIVE_AUDITED = (
    "title",
    "description",
    "owner",
    "team",
    "period_start",
    "period_end",
    "parent_id",
    "status",
    "final_score",
    "retrospective",
)
KEY_RESULT_AUDITED = (*DEFINITION_FIELDS, "current", "confidence", "kpi_key", "aggregation")
"""Decisions and reported values; scores are derived (timeline), timestamps are the row's own."""


class InconsistentEventError(ValueError):
    """An event that cannot follow the projected state (e.g. it names an unknown key result)."""


@dataclass(frozen=True)
class ScoreEffect:
    """Marks an event as score-affecting: it gets a timeline row with this cause and detail."""

    cause: TimelineCause
    key_result_id: UUID | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reduction:
    projected: ProjectedObjective
    timeline: TimelineRow | None
    audit: AuditRow


Step = tuple[ProjectedObjective, ScoreEffect | None]


def reduce_event(
    state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope, payload: okr.OkrPayload
) -> Reduction:
    """Apply one event (already known to be the next version) to `state`."""
    evolved, effect = _evolve(payload, state, envelope)
    projected = rescore(evolved)
    audit = AuditRow(
        objective_id=envelope.objective_id,
        version=envelope.version,
        occurred_at=envelope.occurred_at,
        event_type=envelope.type,
        actor=envelope.actor,
        command_id=envelope.command_id,
        reason=envelope.reason,
        changes=diff(state, projected),
    )
    timeline = None if effect is None else _timeline_row(projected, envelope, effect)
    return Reduction(projected, timeline, audit)


# --- scores ---------------------------------------------------------------------------------------


MEMO_SIZE = 4096
"""Rows remembered by the memos below: an event changes one key result, and a batch of a live
stream brings many events per objective, so the other rows are scored and audited once."""


@lru_cache(maxsize=MEMO_SIZE)
def _score(definition: tuple[Any, ...], current: float | None) -> Score:
    """`score_key_result` is a pure function of the definition and the value: computed once."""
    spec = KeyResultSpec.model_validate(dict(zip(DEFINITION_FIELDS, definition, strict=True)))
    return score_key_result(spec, current)


def rescore(projected: ProjectedObjective) -> ProjectedObjective:
    """Number the key results in order and recompute every score from the stored values."""
    key_results = []
    for position, row in enumerate(projected.key_results):
        definition = tuple(getattr(row, name) for name in DEFINITION_FIELDS)
        result = _score(definition, row.current)
        key_results.append(
            row.model_copy(
                update={
                    "position": position,
                    "score": result.score,
                    "attainment": result.attainment,
                }
            )
        )
    score = objective_score((row.score, row.weight) for row in key_results)
    return ProjectedObjective(
        objective=projected.objective.model_copy(update={"score": score}),
        key_results=tuple(key_results),
    )


def _timeline_row(
    projected: ProjectedObjective, envelope: okr.OkrEventEnvelope, effect: ScoreEffect
) -> TimelineRow:
    # None for an objective-wide cause, and for a removed key result (it has no score any more).
    row = next((r for r in projected.key_results if r.key_result_id == effect.key_result_id), None)
    return TimelineRow(
        objective_id=envelope.objective_id,
        version=envelope.version,
        occurred_at=envelope.occurred_at,
        key_result_id=effect.key_result_id,
        value=row.current if row else None,
        kr_score=row.score if row else None,
        kr_attainment=row.attainment if row else None,
        objective_score=projected.objective.score,
        cause=effect.cause,
        actor=envelope.actor,
        detail=effect.detail,
    )


# --- audit ----------------------------------------------------------------------------------------


def audited_fields(projected: ProjectedObjective | None) -> dict[str, Any]:
    """Field path -> JSON value, objective fields first, then each key result in order."""
    if projected is None:
        return {}
    fields = dict(_objective_audited(projected.objective))
    for row in projected.key_results:
        fields.update(_key_result_audited(row))
    return fields


@lru_cache(maxsize=MEMO_SIZE)
def _objective_audited(objective: ObjectiveRow) -> tuple[tuple[str, Any], ...]:
    """Rows are frozen, so their audited JSON values are computed once per distinct row."""
    values = objective.model_dump(mode="json", include=set(OBJECTIVE_AUDITED))
    return tuple((name, values[name]) for name in OBJECTIVE_AUDITED)


@lru_cache(maxsize=MEMO_SIZE)
def _key_result_audited(row: KeyResultRow) -> tuple[tuple[str, Any], ...]:
    values = row.model_dump(mode="json", include=set(KEY_RESULT_AUDITED))
    return tuple(
        (f"key_results[{row.key_result_id}].{name}", values[name]) for name in KEY_RESULT_AUDITED
    )


def diff(
    before: ProjectedObjective | None, after: ProjectedObjective | None
) -> tuple[FieldChange, ...]:
    """Every audited field whose value differs; a missing field (or objective) reads as null."""
    old, new = audited_fields(before), audited_fields(after)
    paths = dict.fromkeys([*old, *new])
    return tuple(
        FieldChange(field=path, before=old.get(path), after=new.get(path))
        for path in paths
        if old.get(path) != new.get(path)
    )


# --- one rule per event type ----------------------------------------------------------------------


@singledispatch
def _evolve(
    payload: okr.OkrPayload, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> Step:
    raise InconsistentEventError(f"no projection rule for {type(payload).__name__}")


def _require(
    state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> ProjectedObjective:
    if state is None:
        raise InconsistentEventError(str(ObjectiveNotFoundError(envelope.objective_id)))
    return state


def _touch(
    state: ProjectedObjective,
    envelope: okr.OkrEventEnvelope,
    key_results: tuple[KeyResultRow, ...] | None = None,
    **changes: Any,
) -> ProjectedObjective:
    objective = state.objective.model_copy(
        update={"version": envelope.version, "updated_at": envelope.occurred_at, **changes}
    )
    return ProjectedObjective(
        objective=objective,
        key_results=state.key_results if key_results is None else key_results,
    )


def _find(projected: ProjectedObjective, key_result_id: UUID) -> KeyResultRow:
    for row in projected.key_results:
        if row.key_result_id == key_result_id:
            return row
    raise InconsistentEventError(
        str(KeyResultNotFoundError(projected.objective.objective_id, key_result_id))
    )


def _replace(
    state: ProjectedObjective, key_result_id: UUID, **changes: Any
) -> tuple[KeyResultRow, ...]:
    _find(state, key_result_id)
    return tuple(
        KeyResultRow.model_validate({**row.model_dump(), **changes})
        if row.key_result_id == key_result_id
        else row
        for row in state.key_results
    )


def _new_key_result(objective_id: UUID, key_result: okr.KeyResult, position: int) -> KeyResultRow:
    return KeyResultRow(
        objective_id=objective_id,
        key_result_id=key_result.key_result_id,
        position=position,
        **_definition(key_result),
    )


def _definition(definition: KeyResultDefinition) -> dict[str, Any]:
    return definition.model_dump(include=set(DEFINITION_FIELDS))


@_evolve.register
def _created(
    payload: okr.ObjectiveCreated, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> Step:
    if state is not None:
        raise InconsistentEventError(f"objective {envelope.objective_id} exists already")
    objective = ObjectiveRow(
        objective_id=envelope.objective_id,
        title=payload.title,
        description=payload.description,
        owner=payload.owner,
        team=payload.team,
        period_start=payload.period_start,
        period_end=payload.period_end,
        parent_id=payload.parent_id,
        status=ObjectiveStatus.DRAFT,
        score=0.0,
        version=envelope.version,
        created_at=envelope.occurred_at,
        updated_at=envelope.occurred_at,
    )
    key_results = tuple(
        _new_key_result(envelope.objective_id, kr, index)
        for index, kr in enumerate(payload.key_results)
    )
    return ProjectedObjective(objective=objective, key_results=key_results), ScoreEffect(
        TimelineCause.CREATED
    )


@_evolve.register
def _revised(
    payload: okr.ObjectiveRevised, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> Step:
    changes = payload.model_dump(exclude_none=True)
    return _touch(_require(state, envelope), envelope, **changes), None


@_evolve.register
def _aligned(
    payload: okr.ObjectiveAligned, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> Step:
    return _touch(_require(state, envelope), envelope, parent_id=payload.parent_id), None


@_evolve.register
def _activated(
    _: okr.ObjectiveActivated, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> Step:
    return _touch(_require(state, envelope), envelope, status=ObjectiveStatus.ACTIVE), None


@_evolve.register
def _closed(
    payload: okr.ObjectiveClosed, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> Step:
    closed = _touch(
        _require(state, envelope),
        envelope,
        status=ObjectiveStatus.CLOSED,
        final_score=payload.final_score,
        retrospective=payload.retrospective,
    )
    return closed, ScoreEffect(TimelineCause.CLOSED, detail={"final_score": payload.final_score})


@_evolve.register
def _archived(
    _: okr.ObjectiveArchived, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> Step:
    return _touch(_require(state, envelope), envelope, status=ObjectiveStatus.ARCHIVED), None


@_evolve.register
def _kr_added(
    payload: okr.KeyResultAdded, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> Step:
    current = _require(state, envelope)
    added_id = payload.key_result.key_result_id
    if any(row.key_result_id == added_id for row in current.key_results):
        raise InconsistentEventError(f"key result {added_id} exists already")
    added = _new_key_result(envelope.objective_id, payload.key_result, len(current.key_results))
    evolved = _touch(current, envelope, key_results=(*current.key_results, added))
    return evolved, ScoreEffect(TimelineCause.KEY_RESULT_ADDED, added_id)


@_evolve.register
def _kr_revised(
    payload: okr.KeyResultRevised, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> Step:
    current = _require(state, envelope)
    key_results = _replace(current, payload.key_result_id, **_definition(payload.key_result))
    evolved = _touch(current, envelope, key_results=key_results)
    return evolved, ScoreEffect(TimelineCause.KEY_RESULT_REVISED, payload.key_result_id)


@_evolve.register
def _kr_removed(
    payload: okr.KeyResultRemoved, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> Step:
    current = _require(state, envelope)
    removed = _find(current, payload.key_result_id)
    remaining = tuple(row for row in current.key_results if row is not removed)
    evolved = _touch(current, envelope, key_results=remaining)
    return evolved, ScoreEffect(
        TimelineCause.KEY_RESULT_REMOVED, payload.key_result_id, {"title": removed.title}
    )


@_evolve.register
def _kpi_bound(
    payload: okr.KpiBound, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> Step:
    current = _require(state, envelope)
    key_results = _replace(
        current,
        payload.key_result_id,
        kpi_key=payload.kpi_key,
        aggregation=payload.aggregation,
    )
    return _touch(current, envelope, key_results=key_results), None


@_evolve.register
def _kpi_unbound(
    payload: okr.KpiUnbound, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> Step:
    current = _require(state, envelope)
    key_results = _replace(current, payload.key_result_id, kpi_key=None, aggregation=None)
    return _touch(current, envelope, key_results=key_results), None


@_evolve.register
def _checked_in(
    payload: okr.ProgressCheckedIn, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> Step:
    current = _require(state, envelope)
    key_results = _replace(
        current,
        payload.key_result_id,
        current=payload.value,
        confidence=payload.confidence,
        last_update=envelope.occurred_at,
    )
    detail = {"note": payload.note, "confidence": payload.confidence}
    evolved = _touch(current, envelope, key_results=key_results)
    return evolved, ScoreEffect(TimelineCause.CHECK_IN, payload.key_result_id, detail)


@_evolve.register
def _kpi_progress(
    payload: okr.KpiProgressRecorded,
    state: ProjectedObjective | None,
    envelope: okr.OkrEventEnvelope,
) -> Step:
    current = _require(state, envelope)
    key_results = _replace(
        current, payload.key_result_id, current=payload.value, last_update=envelope.occurred_at
    )
    detail = payload.model_dump(
        mode="json", include={"kpi_key", "observations", "last_kpi_event_id", "last_offset"}
    )
    evolved = _touch(current, envelope, key_results=key_results)
    return evolved, ScoreEffect(TimelineCause.KPI, payload.key_result_id, detail)
