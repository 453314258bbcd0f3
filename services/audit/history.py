"""An objective's decision history for auditors: every decision up to a version or a moment, what
each one changed (before -> after), and the state and scores the objective had at that point.

Read from the event store, the system of record, never from the read models (they may have been
rebuilt or migrated since). The state is the exact as-of rebuild of `services.audit.past_states`;
each
decision's field changes come from the projection reducer (`projections.reducer.reduce_event`, fed
the same wire envelopes the projector folds), so `okr audit history`, `GET /audit/...` and the read
API's `/objectives/{id}/history` share one diff and cannot disagree about what a decision changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, cast
from uuid import UUID

from pydantic import BaseModel, Field

from domain.errors import ObjectiveNotFoundError
from domain.objective_events import DomainEvent
from events import okr
from projections.reducer import reduce_event
from projections.views import AuditRow, ProjectedObjective
from services.audit.past_state_view import ObjectiveAsOfBody, as_of_body
from services.audit.past_states import (
    ObjectiveAsOf,
    ObjectiveNotFoundAsOfError,
    objective_as_of,
    scored,
)
from services.audit.verify import VerifyReport, verify_objective
from services.relay.publisher import to_envelope

if TYPE_CHECKING:
    from services.commands.application import OkrApplication

EVENTS_PAGE = 500
"""Events read per query, so a long history is read in bounded steps."""


class AuditDecision(AuditRow):
    """One stored event as an auditor reads it: who, when, under which command, why, and what it
    changed (`changes`: every audited field whose value differs, before -> after)."""

    objective_score: float = Field(description="The objective's score right after this decision.")
    chain_hash: str | None = Field(
        description="The event's tamper-evidence hash (SHA-256 hex), chained per objective; "
        "null for events stored before the chain existed."
    )


class Integrity(BaseModel):
    """Whether the objective's stored history still fits its hash chain (`okr audit verify`, for
    this objective's events and snapshots), and the hash it ends with."""

    intact: bool
    events_checked: int = Field(
        description="Every stored event of the objective, not only those listed."
    )
    head_hash: str | None = Field(
        description="`chain_hash` of its newest event: noted down, it shows any later rewrite."
    )
    breaks: list[str] = Field(description="Each version that no longer fits, and why.")


class AuditHistory(BaseModel):
    """`okr audit history --format json` and `GET /audit/objectives/{id}/history`: one shape."""

    objective_id: UUID
    requested_as_of: datetime | None = Field(description="The moment asked for, if any.")
    requested_version: int | None = Field(description="The version asked for, if any.")
    state: ObjectiveAsOfBody = Field(
        description="The objective and its scores after the last decision listed."
    )
    decisions: list[AuditDecision] = Field(
        description="Every decision from version 1 to `state.version`, in version order."
    )
    integrity: Integrity = Field(
        description="The objective's whole stored chain, checked when this answer was made."
    )


# --- pure assembly --------------------------------------------------------------------------------


def audit_decisions(events: Iterable[DomainEvent]) -> Iterator[AuditDecision]:
    """Each event with its field changes, folded from version 1 exactly as the projector folds."""
    state: ProjectedObjective | None = None
    for event in events:
        envelope = to_envelope(event)
        payload = okr.PAYLOADS[envelope.type].model_validate(envelope.payload)
        reduction = reduce_event(state, envelope, payload)
        state = reduction.projected
        yield AuditDecision(
            **dict(reduction.audit),
            objective_score=state.objective.score,
            chain_hash=event.chain_hash or None,
        )


def assemble_history(
    found: ObjectiveAsOf,
    events: Iterable[DomainEvent],
    integrity: Integrity,
    *,
    as_of: datetime | None = None,
    version: int | None = None,
) -> AuditHistory:
    """The history of `found`: `events` must be its events from version 1 to its version."""
    decisions = list(audit_decisions(events))
    listed = [decision.version for decision in decisions]
    if listed != list(range(1, found.version + 1)):
        raise ValueError(
            f"the events of objective {found.objective.id} do not run from version 1 to "
            f"{found.version} (got {listed[:3]}...{listed[-3:]})"
        )
    return AuditHistory(
        objective_id=found.objective.id,
        requested_as_of=as_of,
        requested_version=version,
        state=as_of_body(found),
        decisions=decisions,
        integrity=integrity,
    )


# --- reading the event store ----------------------------------------------------------------------


def read_audit_history(
    application: OkrApplication,
    objective_id: UUID,
    *,
    as_of: datetime | None = None,
    version: int | None = None,
) -> AuditHistory:
    """The history up to `version`, or up to the moment `as_of` (aware), or up to now.

    Raises `ObjectiveNotFoundError` (HTTP 404) when the objective does not exist, or did not yet
    at that version or moment, and `NaiveDatetimeError` (422) for a moment without a time zone.
    Blocking: call it through `asyncio.to_thread` from async code.
    """
    if as_of is not None and version is not None:
        raise TypeError("give at most one of as_of= or version=")
    found = _state(application, objective_id, as_of=as_of, version=version)
    events = events_through(application, objective_id, found.version)
    return assemble_history(
        found, events, check_integrity(application, objective_id), as_of=as_of, version=version
    )


def check_integrity(application: OkrApplication, objective_id: UUID) -> Integrity:
    """The proof that goes with a history: the objective's chain verified as `okr audit verify`
    does, at the moment of reading."""
    report = VerifyReport()
    head_hash = verify_objective(application, objective_id, report)
    return Integrity(
        intact=report.intact,
        events_checked=report.events,
        head_hash=head_hash,
        breaks=[f"version {b.version}: {b.problem}" for b in report.breaks],
    )


def _state(
    application: OkrApplication,
    objective_id: UUID,
    *,
    as_of: datetime | None,
    version: int | None,
) -> ObjectiveAsOf:
    if as_of is None and version is None:
        current = application.get_objective(objective_id)
        if current is None:
            raise ObjectiveNotFoundError(objective_id)
        return scored(current)
    found = objective_as_of(application, objective_id, at=as_of, version=version)
    if found is not None:
        return found
    if application.get_objective(objective_id) is None:
        raise ObjectiveNotFoundError(objective_id)
    when = f"at version {version}" if version is not None else f"at {as_of}"
    raise ObjectiveNotFoundAsOfError(objective_id, when)


def events_through(
    application: OkrApplication, objective_id: UUID, version: int
) -> Iterator[DomainEvent]:
    """The objective's stored events from version 1 to `version`, a page at a time."""
    after: int | None = None
    while True:
        page = [
            cast(DomainEvent, event)
            for event in application.events.get(
                objective_id, gt=after, lte=version, limit=EVENTS_PAGE
            )
        ]
        yield from page
        if len(page) < EVENTS_PAGE:
            return
        after = page[-1].originator_version
