"""The Objective aggregate: current state folded from its events, and the decisions it allows.

Functional style (state is immutable; a decision returns the events it produces; `evolve` applies
one event). Decisions check every rule before any event exists, so a rejected command leaves
nothing behind, and replaying the same events always rebuilds the same state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import singledispatch
from typing import Any, cast
from uuid import UUID, uuid4

from pydantic import BaseModel

from domain.chain import GENESIS_HASH, seal
from domain.errors import (
    InvalidTransitionError,
    KeyResultNotFoundError,
    NotScorableError,
    ObjectiveNotFoundError,
    ReasonRequiredError,
    RuleViolationError,
)
from domain.measures import MILESTONE_DONE, KeyResultKind, KeyResultSpec
from domain.objective_events import (
    DomainEvent,
    Immutable,
    KpiBinding,
    binding_of,
    definition_of,
    spec_of,
    stored,
)
from domain.quality import QualityReport, lint_key_result, lint_objective, require_quality
from domain.scoring import Score, objective_score, score_key_result
from events import okr


class ObjectiveStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    CLOSED = "closed"
    ARCHIVED = "archived"


class KeyResult(Immutable):
    key_result_id: UUID
    spec: KeyResultSpec
    current: float | None = None
    confidence: float | None = None
    last_update: datetime | None = None
    binding: KpiBinding | None = None

    @property
    def score(self) -> Score:
        return score_key_result(self.spec, self.current)


class ObjectiveDetails(BaseModel):
    """What an objective says of itself, declared once for every model that shows it: the
    aggregate, the read model's row (`projections.views.ObjectiveRow`) and the as-of document
    (`services.audit.past_state_view.ObjectiveAsOfBody`). Each adds its own fields around these.

    Pydantic orders a model's fields base by base, the last base first, then the model's own: a
    model that lists its leading fields in a base after this one keeps them first, so its JSON and
    columns keep their order. No configuration here: each model keeps its own.
    """

    title: str
    description: str
    owner: str
    team: str
    period_start: date
    period_end: date
    parent_id: UUID | None


class _ObjectiveHeader(Immutable):
    id: UUID
    version: int
    created_on: datetime
    modified_on: datetime


class Objective(ObjectiveDetails, _ObjectiveHeader):
    status: ObjectiveStatus
    key_results: tuple[KeyResult, ...]
    final_score: float | None = None
    retrospective: str | None = None
    chain_hash: str = GENESIS_HASH
    """The hash of the last event applied: where the next event's chain link starts."""

    @property
    def score(self) -> float:
        """Weighted mean of the key results' scores (0..100)."""
        return objective_score((kr.score.score, kr.spec.weight) for kr in self.key_results)

    def key_result(self, key_result_id: UUID) -> KeyResult:
        for key_result in self.key_results:
            if key_result.key_result_id == key_result_id:
                return key_result
        raise KeyResultNotFoundError(self.id, key_result_id)

    def quality(self) -> QualityReport:
        return lint_objective(
            self.title, self.period_start, self.period_end, [kr.spec for kr in self.key_results]
        )


@dataclass(frozen=True)
class Decision:
    """Who decides, under which command, when (the domain never reads a clock), and why."""

    actor: str
    command_id: str
    now: datetime
    reason: str | None = None

    def header(self, objective_id: UUID, version: int) -> dict[str, Any]:
        return {
            "originator_id": objective_id,
            "originator_version": version,
            "timestamp": self.now,
            "actor": self.actor,
            "command_id": self.command_id,
            "reason": self.reason,
        }

    def event(
        self, objective: Objective, declared: type[okr.OkrPayload], **fields: Any
    ) -> DomainEvent:
        """The objective's next event, of the type `declared` declares, taken by this decision."""
        return stored(declared, **self.header(objective.id, objective.version + 1), **fields)

    def require_reason(self, what: str) -> None:
        if not self.reason or not self.reason.strip():
            raise ReasonRequiredError(what)


# --- decisions ------------------------------------------------------------------------------------


def create_objective(
    decision: Decision,
    details: ObjectiveDetails,
    key_results: Sequence[KeyResultSpec],
    *,
    objective_id: UUID | None = None,
) -> tuple[list[DomainEvent], QualityReport]:
    """A new objective, in draft, with its key results; rejected unless every KR is measurable.

    The specs are linted as written and resolved only once they pass: resolving first would stop
    at an unreadable relative target and hide every other problem.
    """
    report = lint_objective(details.title, details.period_start, details.period_end, key_results)
    require_quality(report)
    resolved = [spec.resolved() for spec in key_results]
    created = stored(
        okr.ObjectiveCreated,
        **decision.header(objective_id or uuid4(), 1),
        **details.model_dump(),
        key_results=[_new_key_result(uuid4(), spec) for spec in resolved],
    )
    return [created], report


def revise_objective(
    objective: Objective, decision: Decision, requested: okr.ObjectiveRevised
) -> tuple[list[DomainEvent], QualityReport]:
    """`requested` names the fields to change (None: unchanged); the event records only those
    that differ from what the objective says now."""
    _require_open(objective, "revise")
    changes = {
        name: value
        for name, value in requested.model_dump().items()
        if value is not None and getattr(objective, name) != value
    }
    if not changes:
        return [], objective.quality()
    revised = objective.model_copy(update=changes)
    report = revised.quality()
    require_quality(report)
    return [decision.event(objective, okr.ObjectiveRevised, **changes)], report


def align_objective(
    objective: Objective, decision: Decision, parent_id: UUID | None
) -> list[DomainEvent]:
    _require_open(objective, "align")
    if parent_id == objective.id:
        raise RuleViolationError("an objective cannot be aligned to itself")
    if parent_id == objective.parent_id:
        return []
    return [decision.event(objective, okr.ObjectiveAligned, parent_id=parent_id)]


def activate_objective(
    objective: Objective, decision: Decision
) -> tuple[list[DomainEvent], QualityReport]:
    """Draft to active; the quality rules are checked again on what the draft has become."""
    _require_status(objective, "activate", ObjectiveStatus.DRAFT)
    report = objective.quality()
    require_quality(report)
    return [decision.event(objective, okr.ObjectiveActivated)], report


def close_objective(
    objective: Objective, decision: Decision, retrospective: str = ""
) -> list[DomainEvent]:
    """Active to closed, freezing the final score; a decision, so it needs a reason."""
    _require_status(objective, "close", ObjectiveStatus.ACTIVE)
    decision.require_reason("closing an objective")
    closed = decision.event(
        objective, okr.ObjectiveClosed, final_score=objective.score, retrospective=retrospective
    )
    return [closed]


def archive_objective(objective: Objective, decision: Decision) -> list[DomainEvent]:
    if objective.status is ObjectiveStatus.ARCHIVED:
        raise InvalidTransitionError(objective.id, objective.status, "archive")
    decision.require_reason("archiving an objective")
    return [decision.event(objective, okr.ObjectiveArchived)]


def add_key_result(
    objective: Objective, decision: Decision, spec: KeyResultSpec
) -> tuple[list[DomainEvent], QualityReport, UUID]:
    _require_open(objective, "add a key result to")
    report = lint_key_result(spec, len(objective.key_results), objective.period_end)
    require_quality(report)
    resolved = spec.resolved()
    key_result_id = uuid4()
    added = _new_key_result(key_result_id, resolved)
    return [decision.event(objective, okr.KeyResultAdded, key_result=added)], report, key_result_id


def revise_key_result(
    objective: Objective, decision: Decision, key_result_id: UUID, spec: KeyResultSpec
) -> tuple[list[DomainEvent], QualityReport]:
    """A new definition for a key result; moving its target is a decision and needs a reason."""
    _require_open(objective, "revise a key result of")
    current = objective.key_result(key_result_id)
    index = objective.key_results.index(current)
    report = lint_key_result(spec, index, objective.period_end)
    require_quality(report)
    resolved = spec.resolved()
    if resolved == current.spec:
        return [], report
    if _target_of(resolved) != _target_of(current.spec):
        decision.require_reason("changing a key result's target")
    revised = decision.event(
        objective,
        okr.KeyResultRevised,
        key_result_id=key_result_id,
        key_result=definition_of(resolved),
    )
    return [revised], report


def remove_key_result(
    objective: Objective, decision: Decision, key_result_id: UUID
) -> list[DomainEvent]:
    _require_open(objective, "remove a key result from")
    objective.key_result(key_result_id)
    decision.require_reason("removing a key result")
    if len(objective.key_results) == 1:
        raise RuleViolationError("an objective keeps at least one key result")
    return [decision.event(objective, okr.KeyResultRemoved, key_result_id=key_result_id)]


def bind_kpi(
    objective: Objective, decision: Decision, key_result_id: UUID, binding: KpiBinding
) -> list[DomainEvent]:
    _require_open(objective, "bind a KPI in")
    key_result = objective.key_result(key_result_id)
    if key_result.binding == binding:
        return []
    bound = decision.event(
        objective,
        okr.KpiBound,
        key_result_id=key_result_id,
        kpi_key=binding.kpi_key,
        aggregation=binding.aggregation.value,
    )
    return [bound]


def unbind_kpi(objective: Objective, decision: Decision, key_result_id: UUID) -> list[DomainEvent]:
    _require_open(objective, "unbind a KPI in")
    if objective.key_result(key_result_id).binding is None:
        return []
    return [decision.event(objective, okr.KpiUnbound, key_result_id=key_result_id)]


def check_in(
    objective: Objective,
    decision: Decision,
    key_result_id: UUID,
    value: float,
    confidence: float | None = None,
    note: str = "",
) -> list[DomainEvent]:
    """A person reports a key result's current value; bound key results follow their KPI only."""
    _require_status(objective, "check in on", ObjectiveStatus.ACTIVE)
    key_result = objective.key_result(key_result_id)
    if key_result.binding is not None:
        raise RuleViolationError(
            f"key result {key_result_id} follows KPI {key_result.binding.kpi_key!r}; "
            "unbind it before checking in by hand"
        )
    _require_value(key_result.spec, value)
    checked_in = decision.event(
        objective,
        okr.ProgressCheckedIn,
        key_result_id=key_result_id,
        value=value,
        confidence=confidence,
        note=note,
    )
    return [checked_in]


def comment_key_result(
    objective: Objective, decision: Decision, key_result_id: UUID, text: str
) -> list[DomainEvent]:
    """A remark on a key result, kept in its history and on its timeline; nothing else changes.
    Taken while the objective is open, like every other change to its key results."""
    _require_open(objective, "comment on a key result of")
    objective.key_result(key_result_id)
    if not text.strip():
        raise RuleViolationError("a comment needs some text")
    commented = decision.event(
        objective, okr.KeyResultCommented, key_result_id=key_result_id, text=text
    )
    return [commented]


def record_kpi_progress(
    objective: Objective,
    decision: Decision,
    key_result_id: UUID,
    value: float,
    *,
    observations: int,
    last_kpi_event_id: str,
    last_offset: int | None = None,
    binding: KpiBinding | None = None,
) -> list[DomainEvent]:
    """A KPI batch moved a bound key result; no event when nothing changed.

    `binding` is the binding the value was computed for: a key result rebound since (another KPI
    or aggregation) takes no progress from it, or its history would credit the wrong KPI.

    KPI batches race with people: a key result unbound or removed, or an objective closed, since
    the batch was computed simply takes no progress. A milestone's KPI counts as done at >= 1.
    """
    if objective.status is not ObjectiveStatus.ACTIVE:
        return []
    key_result = next(
        (kr for kr in objective.key_results if kr.key_result_id == key_result_id), None
    )
    if key_result is None or key_result.binding is None:
        return []
    if binding is not None and key_result.binding != binding:
        return []
    if key_result.spec.kind is KeyResultKind.MILESTONE:
        value = MILESTONE_DONE if value >= MILESTONE_DONE else 0.0
    if key_result.current == value:
        return []
    _require_value(key_result.spec, value)
    progress = decision.event(
        objective,
        okr.KpiProgressRecorded,
        key_result_id=key_result_id,
        value=value,
        kpi_key=key_result.binding.kpi_key,
        observations=observations,
        last_kpi_event_id=last_kpi_event_id,
        last_offset=last_offset,
    )
    return seal(objective.chain_hash, [progress])


def require_objective(objective: Objective | None, objective_id: UUID) -> Objective:
    if objective is None:
        raise ObjectiveNotFoundError(objective_id)
    return objective


def _require_open(objective: Objective, action: str) -> None:
    if objective.status in (ObjectiveStatus.CLOSED, ObjectiveStatus.ARCHIVED):
        raise InvalidTransitionError(objective.id, objective.status, action)


def _require_status(objective: Objective, action: str, status: ObjectiveStatus) -> None:
    if objective.status is not status:
        raise InvalidTransitionError(objective.id, objective.status, action)


def _require_value(spec: KeyResultSpec, value: float) -> None:
    if not math.isfinite(value):
        raise NotScorableError(f"a key result's value must be a finite number, got {value!r}")
    if spec.kind is KeyResultKind.MILESTONE and value not in (0, 1):
        raise NotScorableError("a milestone is 0 (not done) or 1 (done)")


def _target_of(spec: KeyResultSpec) -> tuple[float | None, float | None, float | None]:
    return (spec.target, spec.target_low, spec.target_high)


def _new_key_result(key_result_id: UUID, spec: KeyResultSpec) -> okr.KeyResult:
    return okr.KeyResult(key_result_id=key_result_id, **dict(definition_of(spec)))


# --- evolution ------------------------------------------------------------------------------------


@singledispatch
def evolve(event: DomainEvent, objective: Objective | None) -> Objective:
    """Apply one event to the state it follows: the rule its payload model registered with
    `_apply` (a stored event is that model plus its header, `header_of`)."""
    if not isinstance(event, okr.OkrPayload):
        raise TypeError(f"no evolution rule for {type(event).__name__}")
    return _apply(event, objective)


@singledispatch
def _apply(payload: okr.OkrPayload, objective: Objective | None) -> Objective:
    raise TypeError(f"no evolution rule for {type(payload).__name__}")


def header_of(event: okr.OkrPayload) -> DomainEvent:
    """The stored event a rule was given as its payload: evolve only ever sees stored events."""
    return cast(DomainEvent, event)


def _touch(objective: Objective | None, payload: okr.OkrPayload, **changes: Any) -> Objective:
    event = header_of(payload)
    current = require_objective(objective, event.originator_id)
    return current.model_copy(
        update={
            "version": event.originator_version,
            "modified_on": event.timestamp,
            # An event stored before hashing began has none: the chain goes on from the last.
            "chain_hash": event.chain_hash or current.chain_hash,
            **changes,
        }
    )


def _current(objective: Objective | None, payload: okr.OkrPayload) -> Objective:
    return require_objective(objective, header_of(payload).originator_id)


def _changed(
    objective: Objective | None, payload: okr.OkrPayload, key_result_id: UUID, **changes: Any
) -> Objective:
    """The objective after an event that changes one key result's fields."""
    current = _current(objective, payload)
    key_results = tuple(
        kr.model_copy(update=changes) if kr.key_result_id == key_result_id else kr
        for kr in current.key_results
    )
    return _touch(current, payload, key_results=key_results)


def _declared(payload: okr.OkrPayload, model: type[okr.OkrPayload], *but: str) -> dict[str, Any]:
    """The fields `model` declares, by name (a stored event also has its header); the
    objective's own fields have the same names."""
    return {name: getattr(payload, name) for name in model.model_fields if name not in but}


def _key_result(new: okr.KeyResult) -> KeyResult:
    return KeyResult(key_result_id=new.key_result_id, spec=spec_of(new))


@_apply.register
def _created(payload: okr.ObjectiveCreated, _: Objective | None) -> Objective:
    event = header_of(payload)
    return Objective(
        id=event.originator_id,
        version=event.originator_version,
        created_on=event.timestamp,
        modified_on=event.timestamp,
        chain_hash=event.chain_hash or GENESIS_HASH,
        status=ObjectiveStatus.DRAFT,
        key_results=tuple(_key_result(kr) for kr in payload.key_results),
        **_declared(payload, okr.ObjectiveCreated, "key_results"),
    )


@_apply.register
def _revised(payload: okr.ObjectiveRevised, objective: Objective | None) -> Objective:
    declared = _declared(payload, okr.ObjectiveRevised)
    return _touch(objective, payload, **{k: v for k, v in declared.items() if v is not None})


@_apply.register
def _aligned(payload: okr.ObjectiveAligned, objective: Objective | None) -> Objective:
    return _touch(objective, payload, parent_id=payload.parent_id)


@_apply.register
def _activated(payload: okr.ObjectiveActivated, objective: Objective | None) -> Objective:
    return _touch(objective, payload, status=ObjectiveStatus.ACTIVE)


@_apply.register
def _closed(payload: okr.ObjectiveClosed, objective: Objective | None) -> Objective:
    return _touch(
        objective,
        payload,
        status=ObjectiveStatus.CLOSED,
        final_score=payload.final_score,
        retrospective=payload.retrospective,
    )


@_apply.register
def _archived(payload: okr.ObjectiveArchived, objective: Objective | None) -> Objective:
    return _touch(objective, payload, status=ObjectiveStatus.ARCHIVED)


@_apply.register
def _kr_added(payload: okr.KeyResultAdded, objective: Objective | None) -> Objective:
    current = _current(objective, payload)
    added = _key_result(payload.key_result)
    return _touch(current, payload, key_results=(*current.key_results, added))


@_apply.register
def _kr_revised(payload: okr.KeyResultRevised, objective: Objective | None) -> Objective:
    return _changed(objective, payload, payload.key_result_id, spec=spec_of(payload.key_result))


@_apply.register
def _kr_removed(payload: okr.KeyResultRemoved, objective: Objective | None) -> Objective:
    current = _current(objective, payload)
    removed = payload.key_result_id
    remaining = tuple(kr for kr in current.key_results if kr.key_result_id != removed)
    return _touch(current, payload, key_results=remaining)


@_apply.register
def _kpi_bound(payload: okr.KpiBound, objective: Objective | None) -> Objective:
    return _changed(objective, payload, payload.key_result_id, binding=binding_of(payload))


@_apply.register
def _kpi_unbound(payload: okr.KpiUnbound, objective: Objective | None) -> Objective:
    return _changed(objective, payload, payload.key_result_id, binding=None)


@_apply.register
def _checked_in(payload: okr.ProgressCheckedIn, objective: Objective | None) -> Objective:
    return _changed(
        objective,
        payload,
        payload.key_result_id,
        current=payload.value,
        confidence=payload.confidence,
        last_update=header_of(payload).timestamp,
    )


@_apply.register
def _kpi_progress(payload: okr.KpiProgressRecorded, objective: Objective | None) -> Objective:
    last_update = header_of(payload).timestamp
    return _changed(
        objective, payload, payload.key_result_id, current=payload.value, last_update=last_update
    )


@_apply.register
def _kr_commented(payload: okr.KeyResultCommented, objective: Objective | None) -> Objective:
    return _touch(objective, payload)


def replay(events: Iterable[DomainEvent], objective: Objective | None = None) -> Objective | None:
    """Fold events into state: the one way state is ever computed."""
    for event in events:
        objective = evolve(event, objective)
    return objective
