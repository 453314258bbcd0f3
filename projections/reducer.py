"""The pure fold of one OKR event into an objective's read model, timeline row and audit row.

No I/O and no clock: the same events always give the same rows, which is what makes a rebuild from
offset 0 equal to the incrementally built store. Scores come from `domain.scoring` on a spec built
from the key result row, so the read side can never disagree with the command side's formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache, singledispatch
from operator import attrgetter
from typing import Any
from uuid import UUID

from domain.errors import KeyResultNotFoundError, ObjectiveNotFoundError
from domain.measures import KeyResultSpec
from domain.objective import ObjectiveStatus
from domain.scoring import Score, Scorer, key_result_scorer, objective_score
from events import okr
from events.commands import KeyResultDefinition
from projections.views import (
    AuditRow,
    FieldChange,
    KeyResultRow,
    ObjectiveRow,
    ProjectedObjective,
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

definition_of = attrgetter(*DEFINITION_FIELDS)
_objective_audited_values = attrgetter(*OBJECTIVE_AUDITED)
_key_result_audited_values = attrgetter(*KEY_RESULT_AUDITED)


class InconsistentEventError(ValueError):
    """An event that cannot follow the projected state (e.g. it names an unknown key result)."""


@dataclass(frozen=True)
class Reduction:
    projected: ProjectedObjective
    timeline: TimelineRow | None
    audit: AuditRow


def reduce_event(
    state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope, payload: okr.OkrPayload
) -> Reduction:
    """Apply one event (already known to be the next version) to `state`; its timeline row, if
    its payload model declares a place on the timeline (`events.okr.Timeline`)."""
    projected = rescore(_evolve(payload, state, envelope))
    audit = AuditRow(
        objective_id=envelope.objective_id,
        version=envelope.version,
        occurred_at=envelope.occurred_at,
        event_type=envelope.type,
        actor=envelope.actor,
        command_id=envelope.command_id,
        reason=envelope.reason,
        changes=diff(state, projected) + said(payload),
    )
    place = type(payload).timeline
    timeline = None if place is None else _timeline_row(state, projected, envelope, payload, place)
    return Reduction(projected, timeline, audit)


# --- scores ---------------------------------------------------------------------------------------


MEMO_SIZE = 4096
"""Rows remembered by the memos below: an event changes one key result, and a batch of a live
stream brings many events per objective, so the other rows are scored and audited once."""
SCORERS = 16_384
"""Key result definitions whose scorer is kept: more than the key results of the objectives the
read store keeps (`projections.sql.CACHE_SIZE`) at their usual few each, so a live stream over
thousands of objectives does not validate its definitions again and again."""


@lru_cache(maxsize=SCORERS)
def scorer(definition: tuple[Any, ...]) -> Scorer:
    """A key result's definition as the domain scores it, validated once per distinct one."""
    spec = KeyResultSpec.model_validate(dict(zip(DEFINITION_FIELDS, definition, strict=True)))
    return key_result_scorer(spec)


@lru_cache(maxsize=MEMO_SIZE)
def _score(definition: tuple[Any, ...], current: float | None) -> Score:
    """A pure function of the definition and the value: computed once."""
    return scorer(definition)(current)


@lru_cache(maxsize=MEMO_SIZE)
def _objective_score(items: tuple[tuple[float, float], ...]) -> float:
    """The exact weighted mean, computed once per distinct set of key result scores."""
    return objective_score(items)


def rescore(projected: ProjectedObjective) -> ProjectedObjective:
    """Number the key results in order and recompute every score from the stored values.

    A row whose position and scores are unchanged is kept as the same object, so the audit
    `diff` and the writer see at a glance which rows an event changed.
    """
    key_results = []
    for position, row in enumerate(projected.key_results):
        result = _score(definition_of(row), row.current)
        if (
            row.position != position
            or row.score != result.score
            or row.attainment != result.attainment
        ):
            row = row.model_copy(
                update={
                    "position": position,
                    "score": result.score,
                    "attainment": result.attainment,
                }
            )
        key_results.append(row)
    score = _objective_score(tuple((row.score, row.weight) for row in key_results))
    objective = projected.objective
    if objective.score != score:
        objective = objective.model_copy(update={"score": score})
    return ProjectedObjective(objective=objective, key_results=tuple(key_results))


def _timeline_row(
    before: ProjectedObjective | None,
    projected: ProjectedObjective,
    envelope: okr.OkrEventEnvelope,
    payload: okr.OkrPayload,
    place: okr.Timeline,
) -> TimelineRow:
    key_result_id = _key_result_named(payload)
    # None for an objective-wide cause, and for a removed key result (it has no score any more).
    row = _row(projected, key_result_id)
    declared = _declared_fields(type(payload))
    detail = {
        name: getattr(payload, name)
        if name in declared
        else getattr(_row(before, key_result_id), name, None)
        for name in place.detail
    }
    return TimelineRow(
        objective_id=envelope.objective_id,
        version=envelope.version,
        occurred_at=envelope.occurred_at,
        key_result_id=key_result_id,
        value=row.current if row else None,
        kr_score=row.score if row else None,
        kr_attainment=row.attainment if row else None,
        objective_score=projected.objective.score,
        cause=place.cause,
        actor=envelope.actor,
        detail=detail,
    )


@cache
def _declared_fields(payload_type: type[okr.OkrPayload]) -> frozenset[str]:
    return frozenset(payload_type.model_fields)


def _key_result_named(payload: okr.OkrPayload) -> UUID | None:
    """The key result an event is about: its `key_result_id`, or its new key result's id."""
    key_result_id = getattr(payload, "key_result_id", None)
    if key_result_id is None:
        key_result_id = getattr(getattr(payload, "key_result", None), "key_result_id", None)
    return key_result_id if isinstance(key_result_id, UUID) else None


def _row(projected: ProjectedObjective | None, key_result_id: UUID | None) -> KeyResultRow | None:
    if projected is None or key_result_id is None:
        return None
    return next((r for r in projected.key_results if r.key_result_id == key_result_id), None)


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
    """Every audited field whose value differs; a missing field (or objective) reads as null.

    In the order of `audited_fields(before)` then the paths only `after` has. Rows that are the
    same object on both sides (`rescore` keeps unchanged rows) are skipped, and of a changed row
    only the fields whose values differ are rendered as JSON (none of the audited fields is a
    datetime, so equal Python values are equal JSON values).
    """
    changes: list[FieldChange] = []
    old_objective = before.objective if before is not None else None
    new_objective = after.objective if after is not None else None
    if old_objective is None or new_objective is None:
        if old_objective is not new_objective:
            changes += _whole_row_changes(
                _objective_audited(old_objective) if old_objective is not None else (),
                _objective_audited(new_objective) if new_objective is not None else (),
            )
    else:
        changes += _changed_fields(
            old_objective,
            new_objective,
            OBJECTIVE_AUDITED,
            _objective_audited_values,
            "",
        )
    old_rows = {r.key_result_id: r for r in before.key_results} if before is not None else {}
    new_rows = {r.key_result_id: r for r in after.key_results} if after is not None else {}
    for key_result_id, old_row in old_rows.items():
        new_row = new_rows.get(key_result_id)
        if new_row is None:
            changes += _whole_row_changes(_key_result_audited(old_row), ())
        elif new_row is not old_row:
            changes += _changed_fields(
                old_row,
                new_row,
                KEY_RESULT_AUDITED,
                _key_result_audited_values,
                f"key_results[{key_result_id}].",
            )
    for key_result_id, new_row in new_rows.items():
        if key_result_id not in old_rows:
            changes += _whole_row_changes((), _key_result_audited(new_row))
    return tuple(changes)


def _changed_fields(
    old: ObjectiveRow | KeyResultRow,
    new: ObjectiveRow | KeyResultRow,
    names: tuple[str, ...],
    values_of: attrgetter[Any],
    prefix: str,
) -> list[FieldChange]:
    differing = {
        name
        for name, was, now in zip(names, values_of(old), values_of(new), strict=True)
        if was != now
    }
    if not differing:
        return []
    was_json = old.model_dump(mode="json", include=differing)
    now_json = new.model_dump(mode="json", include=differing)
    return [
        FieldChange(field=f"{prefix}{name}", before=was_json[name], after=now_json[name])
        for name in names
        if name in differing and was_json[name] != now_json[name]
    ]


def _whole_row_changes(
    old_fields: tuple[tuple[str, Any], ...], new_fields: tuple[tuple[str, Any], ...]
) -> list[FieldChange]:
    old, new = dict(old_fields), dict(new_fields)
    return [
        FieldChange(field=path, before=old.get(path), after=new.get(path))
        for path in dict.fromkeys([*old, *new])
        if old.get(path) != new.get(path)
    ]


@singledispatch
def said(payload: okr.OkrPayload) -> tuple[FieldChange, ...]:
    """What an event says without changing a field (a comment), audited as a change from null
    so that the history shows it; nothing for the other events."""
    return ()


@said.register
def _comment(payload: okr.KeyResultCommented) -> tuple[FieldChange, ...]:
    path = f"key_results[{payload.key_result_id}].comment"
    return (FieldChange(field=path, before=None, after=payload.text),)


# --- one rule per event type ----------------------------------------------------------------------


@singledispatch
def _evolve(
    payload: okr.OkrPayload, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> ProjectedObjective:
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


def _changed(
    state: ProjectedObjective | None,
    envelope: okr.OkrEventEnvelope,
    key_result_id: UUID,
    **changes: Any,
) -> ProjectedObjective:
    """The objective after an event that changes one key result's row (validated again)."""
    current = _require(state, envelope)
    _find(current, key_result_id)
    key_results = tuple(
        KeyResultRow.model_validate({**row.model_dump(), **changes})
        if row.key_result_id == key_result_id
        else row
        for row in current.key_results
    )
    return _touch(current, envelope, key_results=key_results)


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
) -> ProjectedObjective:
    if state is not None:
        raise InconsistentEventError(f"objective {envelope.objective_id} exists already")
    objective = ObjectiveRow(
        **payload.model_dump(exclude={"key_results"}),
        objective_id=envelope.objective_id,
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
    return ProjectedObjective(objective=objective, key_results=key_results)


@_evolve.register
def _revised(
    payload: okr.ObjectiveRevised, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> ProjectedObjective:
    changes = payload.model_dump(exclude_none=True)
    return _touch(_require(state, envelope), envelope, **changes)


@_evolve.register
def _aligned(
    payload: okr.ObjectiveAligned, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> ProjectedObjective:
    return _touch(_require(state, envelope), envelope, parent_id=payload.parent_id)


@_evolve.register
def _activated(
    _: okr.ObjectiveActivated, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> ProjectedObjective:
    return _touch(_require(state, envelope), envelope, status=ObjectiveStatus.ACTIVE)


@_evolve.register
def _closed(
    payload: okr.ObjectiveClosed, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> ProjectedObjective:
    return _touch(
        _require(state, envelope),
        envelope,
        status=ObjectiveStatus.CLOSED,
        final_score=payload.final_score,
        retrospective=payload.retrospective,
    )


@_evolve.register
def _archived(
    _: okr.ObjectiveArchived, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> ProjectedObjective:
    return _touch(_require(state, envelope), envelope, status=ObjectiveStatus.ARCHIVED)


@_evolve.register
def _kr_added(
    payload: okr.KeyResultAdded, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> ProjectedObjective:
    current = _require(state, envelope)
    added_id = payload.key_result.key_result_id
    if any(row.key_result_id == added_id for row in current.key_results):
        raise InconsistentEventError(f"key result {added_id} exists already")
    added = _new_key_result(envelope.objective_id, payload.key_result, len(current.key_results))
    return _touch(current, envelope, key_results=(*current.key_results, added))


@_evolve.register
def _kr_revised(
    payload: okr.KeyResultRevised, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> ProjectedObjective:
    return _changed(state, envelope, payload.key_result_id, **_definition(payload.key_result))


@_evolve.register
def _kr_removed(
    payload: okr.KeyResultRemoved, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> ProjectedObjective:
    current = _require(state, envelope)
    removed = _find(current, payload.key_result_id)
    remaining = tuple(row for row in current.key_results if row is not removed)
    return _touch(current, envelope, key_results=remaining)


@_evolve.register
def _kpi_bound(
    payload: okr.KpiBound, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> ProjectedObjective:
    binding = {"kpi_key": payload.kpi_key, "aggregation": payload.aggregation}
    return _changed(state, envelope, payload.key_result_id, **binding)


@_evolve.register
def _kpi_unbound(
    payload: okr.KpiUnbound, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> ProjectedObjective:
    return _changed(state, envelope, payload.key_result_id, kpi_key=None, aggregation=None)


@_evolve.register
def _checked_in(
    payload: okr.ProgressCheckedIn, state: ProjectedObjective | None, envelope: okr.OkrEventEnvelope
) -> ProjectedObjective:
    return _changed(
        state,
        envelope,
        payload.key_result_id,
        current=payload.value,
        confidence=payload.confidence,
        last_update=envelope.occurred_at,
    )


@_evolve.register
def _kpi_progress(
    payload: okr.KpiProgressRecorded,
    state: ProjectedObjective | None,
    envelope: okr.OkrEventEnvelope,
) -> ProjectedObjective:
    current = _require(state, envelope)
    # The scorer's stream of value changes: copy the one row (both values come validated from
    # the payload and the envelope) rather than dump and re-validate it as `_changed` does.
    changed = _find(current, payload.key_result_id).model_copy(
        update={"current": payload.value, "last_update": envelope.occurred_at}
    )
    key_results = tuple(
        changed if row.key_result_id == payload.key_result_id else row
        for row in current.key_results
    )
    return _touch(current, envelope, key_results=key_results)


@_evolve.register
def _kr_commented(
    payload: okr.KeyResultCommented,
    state: ProjectedObjective | None,
    envelope: okr.OkrEventEnvelope,
) -> ProjectedObjective:
    current = _require(state, envelope)
    _find(current, payload.key_result_id)
    return _touch(current, envelope)
