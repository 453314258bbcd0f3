"""What an objective was, and how it scored, at a past version or moment, read from the event store.

The event store is the system of record, so a past state is rebuilt from its events, never taken
from a read model that may have been rebuilt or migrated since. Scores are derived from that state
with the scoring rules (`domain.scoring`), exactly as the aggregate derives them for the present.

At a moment: the state after the longest run of events, from version 1, whose timestamps are all
at or before it. Versions are the order decisions were taken in; should a clock ever step back, a
later version stamped earlier than its predecessor does not leak into a state it did not follow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, cast
from uuid import UUID

from domain.errors import NaiveDatetimeError, ObjectiveNotFoundError
from domain.objective import KeyResult, Objective, evolve
from domain.objective_events import DomainEvent
from domain.scoring import Score

if TYPE_CHECKING:
    from services.commands.application import OkrApplication

EVENTS_PAGE = 200
"""Events read per query while looking for a moment, so an old moment stops reading early."""


@dataclass(frozen=True)
class ScoredKeyResult:
    key_result: KeyResult
    score: Score


@dataclass(frozen=True)
class ObjectiveAsOf:
    """An objective's state at one version, with the scores that state had."""

    objective: Objective
    key_results: tuple[ScoredKeyResult, ...]
    score: float

    @property
    def version(self) -> int:
        return self.objective.version

    @property
    def as_of(self) -> datetime:
        """When this version came to be (the timestamp of its last event)."""
        return self.objective.modified_on


class ObjectiveNotFoundAsOfError(ObjectiveNotFoundError):
    """The objective exists now but did not at the requested version or moment (HTTP 404)."""

    def __init__(self, objective_id: UUID, when: str) -> None:
        super().__init__(objective_id)
        self.when = when
        self.args = (f"objective {objective_id} did not exist {when}",)


def scored(objective: Objective) -> ObjectiveAsOf:
    return ObjectiveAsOf(
        objective=objective,
        key_results=tuple(ScoredKeyResult(kr, kr.score) for kr in objective.key_results),
        score=objective.score,
    )


def objective_as_of(
    application: OkrApplication,
    objective_id: UUID,
    *,
    at: datetime | None = None,
    version: int | None = None,
) -> ObjectiveAsOf | None:
    """The objective at `version`, or at the moment `at` (aware); None if it did not exist then.

    Blocking (it reads the event store): call it through `asyncio.to_thread` from async code.
    """
    if (at is None) == (version is None):
        raise TypeError("give exactly one of at= or version=")
    if version is not None:
        objective = objective_at_version(application, objective_id, version)
    else:
        assert at is not None
        objective = objective_at_moment(application, objective_id, at)
    return scored(objective) if objective is not None else None


def objective_at_version(
    application: OkrApplication, objective_id: UUID, version: int
) -> Objective | None:
    """Exactly that version: the repository would answer a version beyond the last with the last."""
    if version < 1:
        return None
    objective = application.get_objective(objective_id, version=version)
    if objective is None or objective.version != version:
        return None
    return objective


def objective_at_moment(
    application: OkrApplication, objective_id: UUID, at: datetime
) -> Objective | None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise NaiveDatetimeError(f"as-of moment {at.isoformat()} has no time zone")
    objective: Objective | None = None
    for event in _events_in_order(application, objective_id):
        if event.timestamp > at:
            break
        objective = evolve(event, objective)
    return objective


def _events_in_order(application: OkrApplication, objective_id: UUID) -> Iterator[DomainEvent]:
    """The objective's stored events from version 1, a page at a time (snapshots are skipped:
    they hold a state, not a moment)."""
    after: int | None = None
    while True:
        page = [
            cast(DomainEvent, event)
            for event in application.events.get(objective_id, gt=after, limit=EVENTS_PAGE)
        ]
        yield from page
        if len(page) < EVENTS_PAGE:
            return
        after = page[-1].originator_version
