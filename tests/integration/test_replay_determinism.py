"""Replay determinism: the event store replayed from scratch gives exactly the projected state.

Hypothesis writes random valid histories (create, revise, align, add / revise / remove key results,
bind / unbind KPIs, activate, check in, KPI progress as the scorer records it, close, archive) for
up to three objectives through `OkrApplication.handle` on a fresh SQLite event store, under a clock
that only moves forward. The stored events, as the relay puts them on `okr.events`
(`to_envelope`, in notification order), are folded by the projector (`apply_batch`) into a real
SQLite read store in batches of a drawn size, then all delivered again (at-least-once). Then, per
objective, these must be equal, field for field and float for float: the domain replay of its
stored events (`domain.objective.replay`), the as-of rebuild at its last version and at its last
moment (`services.audit.past_states`, through snapshots), and the projected objective and key
results; and
the audit trail's changes (`services.audit.history`) must equal the projected history rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from domain.objective import Decision, Objective, ObjectiveStatus, record_kpi_progress, replay
from domain.objective_events import DomainEvent
from events import commands as wire
from projections.projector import Message, apply_batch
from projections.reducer import DEFINITION_FIELDS
from projections.views import AuditRow, KeyResultRow, ObjectiveRow, ReadStore
from services.audit.history import read_audit_history
from services.audit.past_states import ObjectiveAsOf, objective_as_of
from services.commands.application import OkrApplication
from services.projector_service import open_read_store
from services.relay.publisher import to_envelope
from services.settings import Settings

pytestmark = pytest.mark.slow

PERIOD_START = date(2026, 7, 1)
PERIOD_END = date(2026, 9, 30)
MAX_OBJECTIVES = 3
MAX_KEY_RESULTS = 5
KPI_KEYS = ("sales.units", "nps", "churn.rate")
AGGREGATIONS = ("latest", "sum", "count", "avg", "min", "max")

TEXT = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12
).filter(str.strip)
REASON = st.none() | TEXT
VALUE = st.integers(-2000, 2000).map(float) | st.floats(
    -2000, 2000, allow_nan=False, allow_infinity=False
)


@st.composite
def definitions(draw: st.DrawFn) -> wire.KeyResultDefinition:
    """A measurable key result of any kind (the quality rules would refuse anything else)."""
    kind = draw(
        st.sampled_from(["increase", "decrease", "range", "at_least", "at_most", "milestone"])
    )
    common: dict[str, Any] = {
        "title": draw(TEXT),
        "kind": kind,
        "deadline": PERIOD_END,
        "weight": draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])),
    }
    if kind == "milestone":
        return wire.KeyResultDefinition(**common)
    common |= {"metric": draw(st.sampled_from(["units", "%", "minutes"]))}
    baseline = float(draw(st.integers(-1000, 1000)))
    if kind == "range":
        low = float(draw(st.integers(-1000, 1000)))
        high = low + draw(st.integers(0, 500))
        return wire.KeyResultDefinition(
            **common, baseline=baseline, target_low=low, target_high=high
        )
    if kind in ("increase", "decrease") and baseline != 0 and draw(st.booleans()):
        sign = "+" if kind == "increase" else "-"
        relative = f"{sign}{draw(st.integers(1, 90))}%"
        return wire.KeyResultDefinition(**common, baseline=baseline, relative_target=relative)
    delta = draw(st.integers(1, 1000))
    if kind == "at_least" or kind == "at_most":
        delta *= draw(st.sampled_from([1, -1]))
    target = baseline + delta if kind in ("increase", "at_least") else baseline - delta
    return wire.KeyResultDefinition(**common, baseline=baseline, target=target)


class Clock:
    """Moves forward by a drawn step before each decision (possibly zero: equal timestamps)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 7, 1, 9, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Writer:
    def __init__(self, application: OkrApplication, clock: Clock, data: st.DataObject) -> None:
        self.application = application
        self.clock = clock
        self.data = data
        self.objective_ids: list[UUID] = []

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def step(self) -> bool:
        """One decision on a drawn objective; False when no objective can take one any more."""
        self.clock.now += timedelta(microseconds=self.draw(st.integers(0, 10**10)))
        open_ids = [i for i in self.objective_ids if self.actions(self.objective(i))]
        can_create = len(self.objective_ids) < MAX_OBJECTIVES
        if can_create and (not open_ids or self.draw(st.integers(0, 5)) == 0):
            self.create()
            return True
        if not open_ids:
            return False
        objective = self.objective(self.draw(st.sampled_from(open_ids)))
        action = self.draw(st.sampled_from(sorted(self.actions(objective))))
        event(action)  # shown by --hypothesis-show-statistics: every kind of decision is drawn
        self.actions(objective)[action]()
        return True

    def objective(self, objective_id: UUID) -> Objective:
        found = self.application.get_objective(objective_id)
        assert found is not None
        return found

    def run(self, objective_id: UUID, body: wire.CommandBody, reason: str | None = None) -> None:
        result = self.application.handle(
            wire.Command(
                command_id=str(uuid4()),
                objective_id=objective_id,
                actor=self.draw(st.sampled_from(["alice", "bob", "svc:sales"])),
                reason=reason,
                body=body,
            )
        )
        assert result.status == "accepted", result

    def create(self) -> None:
        objective_id = uuid4()
        body = wire.CreateObjective(
            title=self.draw(TEXT),
            description=self.draw(st.just("") | TEXT),
            owner=self.draw(TEXT),
            team=self.draw(TEXT),
            period_start=PERIOD_START,
            period_end=PERIOD_END,
            parent_id=self.draw(st.none() | st.sampled_from(self.objective_ids or [uuid4()])),
            key_results=self.draw(st.lists(definitions(), min_size=1, max_size=3)),
        )
        self.objective_ids.append(objective_id)
        self.run(objective_id, body, self.draw(REASON))

    def actions(self, objective: Objective) -> dict[str, Callable[[], None]]:
        """The decisions this objective can take now, each building a valid command."""
        oid, status, key_results = objective.id, objective.status, objective.key_results
        bound = [kr.key_result_id for kr in key_results if kr.binding is not None]
        unbound = [kr for kr in key_results if kr.binding is None]
        any_kr = st.sampled_from([kr.key_result_id for kr in key_results])
        found: dict[str, Callable[[], None]] = {}
        if status in (ObjectiveStatus.DRAFT, ObjectiveStatus.ACTIVE):
            found["revise"] = lambda: self.run(
                oid,
                wire.ReviseObjective(
                    title=self.draw(st.none() | TEXT),
                    description=self.draw(st.none() | TEXT),
                    owner=self.draw(st.none() | TEXT),
                    team=self.draw(st.none() | TEXT),
                ),
                self.draw(REASON),
            )
            others = [i for i in self.objective_ids if i != oid]
            found["align"] = lambda: self.run(
                oid,
                wire.AlignObjective(
                    parent_id=self.draw(st.none() | st.sampled_from(others or [uuid4()]))
                ),
            )
            if len(key_results) < MAX_KEY_RESULTS:
                found["add_key_result"] = lambda: self.run(
                    oid, wire.AddKeyResult(key_result=self.draw(definitions())), self.draw(REASON)
                )
            found["revise_key_result"] = lambda: self.run(
                oid,
                wire.ReviseKeyResult(
                    key_result_id=self.draw(any_kr), key_result=self.draw(definitions())
                ),
                self.draw(TEXT),
            )
            if len(key_results) > 1:
                found["remove_key_result"] = lambda: self.run(
                    oid, wire.RemoveKeyResult(key_result_id=self.draw(any_kr)), self.draw(TEXT)
                )
            found["bind_kpi"] = lambda: self.run(
                oid,
                wire.BindKpi(
                    key_result_id=self.draw(any_kr),
                    kpi_key=self.draw(st.sampled_from(KPI_KEYS)),
                    aggregation=self.draw(st.sampled_from(AGGREGATIONS)),
                ),
            )
            if bound:
                found["unbind_kpi"] = lambda: self.run(
                    oid, wire.UnbindKpi(key_result_id=self.draw(st.sampled_from(bound)))
                )
        if status is ObjectiveStatus.DRAFT:
            found["activate"] = lambda: self.run(oid, wire.ActivateObjective())
        if status is ObjectiveStatus.ACTIVE:
            if unbound:
                found["check_in"] = lambda: self.check_in(objective, unbound)
            if bound:
                found["kpi_progress"] = lambda: self.kpi_progress(objective, bound)
            found["close"] = lambda: self.run(
                oid,
                wire.CloseObjective(retrospective=self.draw(st.just("") | TEXT)),
                self.draw(TEXT),
            )
        if status is not ObjectiveStatus.ARCHIVED:
            found["archive"] = lambda: self.run(oid, wire.ArchiveObjective(), self.draw(TEXT))
        return found

    def check_in(self, objective: Objective, unbound: list[Any]) -> None:
        key_result = self.draw(st.sampled_from(unbound))
        milestone = key_result.spec.kind.value == "milestone"
        value = self.draw(st.sampled_from([0.0, 1.0]) if milestone else VALUE)
        body = wire.CheckIn(
            key_result_id=key_result.key_result_id,
            value=value,
            confidence=self.draw(st.none() | st.floats(0, 1)),
            note=self.draw(st.just("") | TEXT),
        )
        self.run(objective.id, body)

    def kpi_progress(self, objective: Objective, bound: list[UUID]) -> None:
        """What the scorer does for a KPI batch: decide, then store (not a command)."""
        key_result_id = self.draw(st.sampled_from(bound))
        decision = Decision(actor="scorer", command_id=f"kpi-{uuid4()}", now=self.clock())
        events = record_kpi_progress(
            objective,
            decision,
            key_result_id,
            self.draw(VALUE),
            observations=self.draw(st.integers(1, 50)),
            last_kpi_event_id=f"e-{uuid4()}",
        )
        if events:
            self.application.save_events(events)


# --- the two sides, in one shape ------------------------------------------------------------------


def replayed_view(
    objective: Objective, score: float, key_result_scores: list[Any]
) -> dict[str, Any]:
    return {
        "objective_id": objective.id,
        "version": objective.version,
        "created": objective.created_on,
        "updated": objective.modified_on,
        **{name: getattr(objective, name) for name in ("title", "description", "owner", "team")},
        **{name: getattr(objective, name) for name in ("period_start", "period_end", "parent_id")},
        "status": objective.status,
        "score": score,
        "final_score": objective.final_score,
        "retrospective": objective.retrospective or "",
        "key_results": [
            {
                "key_result_id": kr.key_result_id,
                **{name: getattr(kr.spec, name) for name in DEFINITION_FIELDS},
                "current": kr.current,
                "confidence": kr.confidence,
                "last_update": kr.last_update,
                "kpi_key": kr.binding.kpi_key if kr.binding else None,
                "aggregation": kr.binding.aggregation if kr.binding else None,
                "score": result.score,
                "attainment": result.attainment,
            }
            for kr, result in zip(objective.key_results, key_result_scores, strict=True)
        ],
    }


def as_of_view(found: ObjectiveAsOf) -> dict[str, Any]:
    return replayed_view(found.objective, found.score, [kr.score for kr in found.key_results])


def domain_view(objective: Objective) -> dict[str, Any]:
    return replayed_view(objective, objective.score, [kr.score for kr in objective.key_results])


def projected_view(row: ObjectiveRow, key_results: list[KeyResultRow]) -> dict[str, Any]:
    return {
        "objective_id": row.objective_id,
        "version": row.version,
        "created": row.created_at,
        "updated": row.updated_at,
        **{name: getattr(row, name) for name in ("title", "description", "owner", "team")},
        **{name: getattr(row, name) for name in ("period_start", "period_end", "parent_id")},
        "status": row.status,
        "score": row.score,
        "final_score": row.final_score,
        "retrospective": row.retrospective,
        "key_results": [
            {
                "key_result_id": kr.key_result_id,
                **{name: getattr(kr, name) for name in DEFINITION_FIELDS},
                **{
                    name: getattr(kr, name)
                    for name in ("current", "confidence", "last_update", "kpi_key", "aggregation")
                },
                "score": kr.score,
                "attainment": kr.attainment,
            }
            for kr in key_results
        ],
    }


def project(application: OkrApplication, store: ReadStore, batch_size: int) -> None:
    notifications = application.recorder.select_notifications(start=None, limit=100_000)
    messages = [
        Message(
            "okr.events",
            0,
            offset,
            to_envelope(cast(DomainEvent, application.mapper.to_domain_event(n))).to_bytes(),
        )
        for offset, n in enumerate(notifications)
    ]
    applied = 0
    for start in range(0, len(messages), batch_size):
        applied += apply_batch(store, messages[start : start + batch_size]).applied
    assert applied == len(messages)
    again = apply_batch(store, messages)  # at-least-once: a redelivery changes nothing
    assert (again.applied, again.duplicates) == (0, len(messages))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), steps=st.integers(1, 30), batch_size=st.integers(1, 12))
def test_replaying_the_event_store_gives_the_projected_state(
    data: st.DataObject, steps: int, batch_size: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        store_settings = Settings(
            event_store_url=f"sqlite:///{root / 'events.sqlite'}",
            read_store_url=f"sqlite:///{root / 'read.sqlite'}",
            snapshot_interval=4,
        )
        clock = Clock()
        application = OkrApplication(store_settings, clock=clock)
        store = open_read_store(store_settings)
        try:
            writer = Writer(application, clock, data)
            for _ in range(steps):
                if not writer.step():
                    break
            project(application, store, batch_size)
            for objective_id in writer.objective_ids:
                check_objective(application, store, objective_id)
        finally:
            store.close()
            application.close()


def check_objective(application: OkrApplication, store: ReadStore, objective_id: UUID) -> None:
    events = [cast(DomainEvent, e) for e in application.events.get(objective_id)]
    replayed = replay(events)
    assert replayed is not None
    row = store.get_objective(objective_id)
    assert row is not None
    projected = projected_view(row, store.key_results(objective_id))
    assert domain_view(replayed) == projected

    at_version = objective_as_of(application, objective_id, version=replayed.version)
    at_moment = objective_as_of(application, objective_id, at=replayed.modified_on)
    assert at_version is not None and at_moment is not None
    assert as_of_view(at_version) == projected
    assert as_of_view(at_moment) == projected

    decisions = read_audit_history(application, objective_id).decisions
    audit = [
        AuditRow.model_validate(d.model_dump(include=set(AuditRow.model_fields))) for d in decisions
    ]
    assert audit == store.history(objective_id)
