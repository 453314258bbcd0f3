"""The Objective aggregate: every decision's rules, the audit header, and replay.

Pure: decisions return events, `evolve` folds them; nothing here touches a store. The property at
the end round-trips the events through the stored form (the mapper, in memory) to prove that what
is written is enough to rebuild exactly what the decisions saw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import objective as decide
from domain.chain import GENESIS_HASH, seal
from domain.errors import (
    InvalidTransitionError,
    KeyResultNotFoundError,
    NotScorableError,
    ObjectiveNotFoundError,
    QualityRejectedError,
    ReasonRequiredError,
    RuleViolationError,
)
from domain.measures import KeyResultKind, KeyResultSpec
from domain.objective import (
    Decision,
    Objective,
    ObjectiveDetails,
    ObjectiveStatus,
    evolve,
    replay,
)
from domain.objective_events import (
    Aggregation,
    DomainEvent,
    KeyResultAdded,
    KeyResultRemoved,
    KeyResultRevised,
    KpiBinding,
    KpiBound,
    KpiProgressRecorded,
    KpiUnbound,
    ObjectiveActivated,
    ObjectiveAligned,
    ObjectiveArchived,
    ObjectiveClosed,
    ObjectiveCreated,
    ObjectiveRevised,
    ProgressCheckedIn,
    definition_of,
    spec_of,
)
from domain.quality import QualityReport
from events import okr
from services.commands.event_store import OrjsonTranscoder, PydanticMapper
from tests import seed

Q3_START = date(2025, 7, 1)
Q3_END = date(2025, 9, 30)
NOW = datetime(2025, 7, 15, 9, 30, tzinfo=UTC)

GOOD_EXAMPLES = tuple(example.as_spec(deadline=Q3_END) for example in seed.GOOD)
SALES, CHURN, NPS, PURCHASE_PATH = GOOD_EXAMPLES
LAUNCH = KeyResultSpec(
    title="Launch the loyalty app", kind=KeyResultKind.MILESTONE, deadline=Q3_END
)

LEAD_GENERATION, CHURN_OBSTACLES = (example.as_spec() for example in seed.BAD)

SALES_KPI = KpiBinding(kpi_key="sales.product_x.units", aggregation=Aggregation.SUM)


def decision(
    reason: str | None = None, *, actor: str = "alice", command_id: str | None = None
) -> Decision:
    return Decision(
        actor=actor, command_id=command_id or f"cmd-{uuid4().hex[:8]}", now=NOW, reason=reason
    )


@dataclass
class History:
    """The events decided so far and the state folded from them, one event at a time."""

    events: list[DomainEvent] = field(default_factory=list)
    states: list[Objective] = field(default_factory=list)
    state: Objective | None = None

    def record(self, events: Sequence[DomainEvent]) -> Objective:
        """Fold the events in, sealed onto the chain as the application seals them."""
        previous_hash = self.state.chain_hash if self.state is not None else GENESIS_HASH
        for event in seal(previous_hash, events):
            self.state = evolve(event, self.state)
            self.events.append(event)
            self.states.append(self.state)
        return self.objective

    @property
    def objective(self) -> Objective:
        assert self.state is not None
        return self.state


def create(
    key_results: Sequence[KeyResultSpec] = GOOD_EXAMPLES,
    *,
    made: Decision | None = None,
    objective_id: UUID | None = None,
    **fields: Any,
) -> tuple[list[DomainEvent], QualityReport]:
    """`create_objective` for alice's sales team in Q3; `fields` override or add to that."""
    defaults: dict[str, Any] = {
        "title": "Win the mid-market",
        "description": "",
        "owner": "alice",
        "team": "sales",
        "period_start": Q3_START,
        "period_end": Q3_END,
        "parent_id": None,
    }
    details = ObjectiveDetails(**defaults | fields)
    return decide.create_objective(
        made or decision(), details, key_results, objective_id=objective_id
    )


def created(*key_results: KeyResultSpec, **fields: Any) -> History:
    history = History()
    events, _ = create(key_results or GOOD_EXAMPLES, **fields)
    history.record(events)
    return history


def activated(*key_results: KeyResultSpec) -> History:
    history = created(*key_results)
    events, _ = decide.activate_objective(history.objective, decision())
    history.record(events)
    return history


def closed(*key_results: KeyResultSpec) -> History:
    history = activated(*key_results)
    history.record(decide.close_objective(history.objective, decision("quarter over")))
    return history


def archived() -> History:
    history = created()
    history.record(decide.archive_objective(history.objective, decision("merged elsewhere")))
    return history


def kr_id(objective: Objective, index: int = 0) -> UUID:
    return objective.key_results[index].key_result_id


def located(error: QualityRejectedError) -> set[tuple[str, str]]:
    return {(issue.code, issue.field) for issue in error.report.problems}


# --- create -----------------------------------------------------------------------------------


def test_create_rejects_the_seeds_unmeasurable_key_results_listing_every_problem() -> None:
    with pytest.raises(QualityRejectedError) as raised:
        create([SALES, LEAD_GENERATION, CHURN_OBSTACLES], title="Grow")
    assert located(raised.value) == seed.unmeasurable_problems(1) | seed.unmeasurable_problems(2)


def test_create_reports_an_unreadable_relative_target_with_every_other_problem() -> None:
    vague = KeyResultSpec(title="Increase sales a lot", baseline=10.0, relative_target="lots")
    with pytest.raises(QualityRejectedError) as raised:
        create([vague], title="Grow")
    assert located(raised.value) == {
        ("invalid_relative_target", "key_results[0].relative_target"),
        ("missing_metric", "key_results[0].metric"),
        ("missing_deadline", "key_results[0].deadline"),
    }


def test_create_rejects_a_period_that_ends_before_it_starts() -> None:
    with pytest.raises(QualityRejectedError) as raised:
        create([NPS], title="Grow", period_start=Q3_END, period_end=Q3_START)
    assert ("invalid_period", "period_end") in located(raised.value)


def test_create_accepts_the_seeds_good_key_results_resolving_relative_targets() -> None:
    parent = uuid4()
    chosen = uuid4()
    events, report = create(
        GOOD_EXAMPLES, description="Q3 push", parent_id=parent, objective_id=chosen
    )
    assert report.problems == ()
    [event] = events
    assert isinstance(event, ObjectiveCreated)
    assert (event.originator_id, event.originator_version) == (chosen, 1)
    sales, churn, nps, path = (spec_of(kr) for kr in event.key_results)
    assert (sales.target, sales.relative_target) == (1300.0, "+30%")
    assert (churn.target, churn.relative_target) == (7.6, "-5%")
    assert nps == NPS
    assert path == PURCHASE_PATH
    assert len({kr.key_result_id for kr in event.key_results}) == 4

    objective = replay(events)
    assert objective is not None
    assert objective.status is ObjectiveStatus.DRAFT
    assert objective.parent_id == parent
    assert objective.description == "Q3 push"
    assert objective.score == 0.0
    assert [kr.current for kr in objective.key_results] == [None] * 4


def test_create_without_an_id_generates_a_fresh_one() -> None:
    first, second = created(NPS).objective, created(NPS).objective
    assert first.id != second.id


def test_create_fills_a_milestones_implicit_baseline_and_target() -> None:
    [milestone] = created(LAUNCH).objective.key_results
    assert (milestone.spec.baseline, milestone.spec.target) == (0.0, 1.0)


# --- revise and align ---------------------------------------------------------------------------


def test_revise_records_only_the_fields_that_change() -> None:
    history = created()
    before = history.objective
    events, _ = decide.revise_objective(
        before,
        decision(),
        okr.ObjectiveRevised(title=before.title, owner="bob", period_end=date(2025, 10, 15)),
    )
    [event] = events
    assert isinstance(event, ObjectiveRevised)
    assert (event.title, event.owner, event.period_end) == (None, "bob", date(2025, 10, 15))
    after = history.record(events)
    assert (after.title, after.owner, after.period_end) == (before.title, "bob", date(2025, 10, 15))
    assert after.version == before.version + 1


def test_revise_with_nothing_new_records_nothing() -> None:
    objective = created().objective
    events, _ = decide.revise_objective(
        objective, decision(), okr.ObjectiveRevised(title=objective.title, team="sales")
    )
    assert events == []


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"period_end": date(2025, 6, 1)}, ("invalid_period", "period_end")),
        ({"title": "   "}, ("missing_title", "title")),
    ],
)
def test_revise_is_linted_again(changes: dict[str, object], problem: tuple[str, str]) -> None:
    with pytest.raises(QualityRejectedError) as raised:
        decide.revise_objective(created().objective, decision(), okr.ObjectiveRevised(**changes))
    assert problem in located(raised.value)


@pytest.mark.parametrize("history", [closed, archived], ids=["closed", "archived"])
def test_a_finished_objective_cannot_be_revised_or_aligned(history: Callable[[], History]) -> None:
    objective = history().objective
    with pytest.raises(InvalidTransitionError):
        decide.revise_objective(objective, decision(), okr.ObjectiveRevised(title="New title"))
    with pytest.raises(InvalidTransitionError):
        decide.align_objective(objective, decision(), uuid4())


def test_align_refuses_the_objective_itself() -> None:
    objective = created().objective
    with pytest.raises(RuleViolationError):
        decide.align_objective(objective, decision(), objective.id)


def test_align_attaches_and_detaches_a_parent() -> None:
    history = created()
    parent = uuid4()
    events = decide.align_objective(history.objective, decision(), parent)
    assert [type(event) for event in events] == [ObjectiveAligned]
    assert history.record(events).parent_id == parent
    assert decide.align_objective(history.objective, decision(), parent) == []
    assert (
        history.record(decide.align_objective(history.objective, decision(), None)).parent_id
        is None
    )


# --- lifecycle ----------------------------------------------------------------------------------


def test_activate_moves_a_draft_to_active() -> None:
    history = created()
    events, _ = decide.activate_objective(history.objective, decision())
    assert [type(event) for event in events] == [ObjectiveActivated]
    assert history.record(events).status is ObjectiveStatus.ACTIVE


@pytest.mark.parametrize(
    "history", [activated, closed, archived], ids=["active", "closed", "archived"]
)
def test_activate_only_from_draft(history: Callable[[], History]) -> None:
    with pytest.raises(InvalidTransitionError):
        decide.activate_objective(history().objective, decision())


def test_activate_checks_quality_again() -> None:
    """A draft stored before the rules tightened (or by a bug) cannot go live unmeasurable."""
    legacy = ObjectiveCreated(
        **decision().header(uuid4(), 1),
        title="Grow",
        owner="alice",
        team="sales",
        period_start=Q3_START,
        period_end=Q3_END,
        key_results=[okr.KeyResult(key_result_id=uuid4(), **dict(definition_of(LEAD_GENERATION)))],
    )
    draft = evolve(legacy, None)
    with pytest.raises(QualityRejectedError) as raised:
        decide.activate_objective(draft, decision())
    assert located(raised.value) == seed.unmeasurable_problems(0)


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_close_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(ReasonRequiredError):
        decide.close_objective(activated().objective, decision(reason))


@pytest.mark.parametrize(
    "history", [created, closed, archived], ids=["draft", "closed", "archived"]
)
def test_close_only_when_active(history: Callable[[], History]) -> None:
    with pytest.raises(InvalidTransitionError):
        decide.close_objective(history().objective, decision("done"))


def test_close_freezes_the_final_score() -> None:
    history = activated(NPS, LAUNCH)
    nps_id, launch_id = kr_id(history.objective, 0), kr_id(history.objective, 1)
    history.record(decide.check_in(history.objective, decision(), nps_id, 71.0))
    history.record(decide.check_in(history.objective, decision(), launch_id, 1.0))
    assert history.objective.score == 75.0  # (50 + 100) / 2

    events = decide.close_objective(history.objective, decision("quarter over"), "Ship earlier")
    [event] = events
    assert isinstance(event, ObjectiveClosed)
    assert event.final_score == 75.0
    final = history.record(events)
    assert final.status is ObjectiveStatus.CLOSED
    assert (final.final_score, final.retrospective) == (75.0, "Ship earlier")

    with pytest.raises(InvalidTransitionError):
        decide.check_in(final, decision(), nps_id, 80.0)
    assert (
        decide.record_kpi_progress(
            final, decision(), nps_id, 80.0, observations=1, last_kpi_event_id="k1"
        )
        == []
    )


@pytest.mark.parametrize("reason", [None, " "])
def test_archive_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(ReasonRequiredError):
        decide.archive_objective(created().objective, decision(reason))


@pytest.mark.parametrize("history", [created, activated, closed], ids=["draft", "active", "closed"])
def test_archive_from_any_status_but_archived(history: Callable[[], History]) -> None:
    story = history()
    events = decide.archive_objective(story.objective, decision("obsolete"))
    assert [type(event) for event in events] == [ObjectiveArchived]
    archived_objective = story.record(events)
    assert archived_objective.status is ObjectiveStatus.ARCHIVED
    with pytest.raises(InvalidTransitionError):
        decide.archive_objective(archived_objective, decision("again"))


# --- key results ---------------------------------------------------------------------------------


def test_add_key_result_resolves_it_and_returns_its_id() -> None:
    history = created(NPS)
    events, report, new_id = decide.add_key_result(history.objective, decision(), SALES)
    assert report.problems == ()
    [event] = events
    assert isinstance(event, KeyResultAdded)
    assert event.key_result.key_result_id == new_id
    added = history.record(events).key_result(new_id)
    assert (added.spec.target, added.spec.relative_target) == (1300.0, "+30%")


def test_add_key_result_rejects_an_unmeasurable_one_at_its_index() -> None:
    with pytest.raises(QualityRejectedError) as raised:
        decide.add_key_result(created(NPS, SALES).objective, decision(), LEAD_GENERATION)
    assert located(raised.value) == seed.unmeasurable_problems(2)


@pytest.mark.parametrize("history", [closed, archived], ids=["closed", "archived"])
def test_key_results_of_a_finished_objective_are_frozen(history: Callable[[], History]) -> None:
    objective = history().objective
    first = kr_id(objective)
    with pytest.raises(InvalidTransitionError):
        decide.add_key_result(objective, decision(), NPS)
    with pytest.raises(InvalidTransitionError):
        decide.revise_key_result(objective, decision("why"), first, NPS)
    with pytest.raises(InvalidTransitionError):
        decide.remove_key_result(objective, decision("why"), first)
    with pytest.raises(InvalidTransitionError):
        decide.bind_kpi(objective, decision(), first, SALES_KPI)
    with pytest.raises(InvalidTransitionError):
        decide.unbind_kpi(objective, decision(), first)


def test_revise_key_result_target_change_needs_a_reason() -> None:
    history = created(NPS)
    nps_id = kr_id(history.objective)
    higher = NPS.model_copy(update={"target": 85.0})
    with pytest.raises(ReasonRequiredError):
        decide.revise_key_result(history.objective, decision(), nps_id, higher)
    events, _ = decide.revise_key_result(
        history.objective, decision("board asked for more"), nps_id, higher
    )
    [event] = events
    assert isinstance(event, KeyResultRevised)
    assert event.reason == "board asked for more"
    assert history.record(events).key_result(nps_id).spec.target == 85.0


def test_revise_key_result_without_target_change_needs_no_reason() -> None:
    history = created(SALES)
    sales_id = kr_id(history.objective)
    renamed = SALES.model_copy(update={"title": "Sell 30 % more of product X"})
    events, _ = decide.revise_key_result(history.objective, decision(), sales_id, renamed)
    revised = history.record(events).key_result(sales_id)
    assert revised.spec.title == "Sell 30 % more of product X"
    assert revised.spec.target == 1300.0


def test_revise_key_result_moving_the_baseline_of_a_relative_target_is_a_target_change() -> None:
    objective = created(SALES).objective
    rebased = SALES.model_copy(update={"baseline": 1200.0})  # "+30%" now means 1560
    with pytest.raises(ReasonRequiredError):
        decide.revise_key_result(objective, decision(), kr_id(objective), rebased)


def test_revise_key_result_to_the_same_definition_records_nothing() -> None:
    objective = created(SALES).objective
    events, _ = decide.revise_key_result(objective, decision(), kr_id(objective), SALES)
    assert events == []


def test_revise_key_result_is_linted_at_its_index() -> None:
    objective = created(NPS, SALES).objective
    with pytest.raises(QualityRejectedError) as raised:
        decide.revise_key_result(objective, decision("why"), kr_id(objective, 1), LEAD_GENERATION)
    assert located(raised.value) == seed.unmeasurable_problems(1)


def test_unknown_key_results_are_not_found() -> None:
    objective = activated(NPS, SALES).objective
    unknown = uuid4()
    with pytest.raises(KeyResultNotFoundError):
        decide.revise_key_result(objective, decision("why"), unknown, NPS)
    with pytest.raises(KeyResultNotFoundError):
        decide.remove_key_result(objective, decision("why"), unknown)
    with pytest.raises(KeyResultNotFoundError):
        decide.bind_kpi(objective, decision(), unknown, SALES_KPI)
    with pytest.raises(KeyResultNotFoundError):
        decide.check_in(objective, decision(), unknown, 1.0)


def test_remove_key_result_needs_a_reason_and_keeps_at_least_one() -> None:
    history = created(NPS, SALES)
    nps_id, sales_id = kr_id(history.objective, 0), kr_id(history.objective, 1)
    with pytest.raises(ReasonRequiredError):
        decide.remove_key_result(history.objective, decision(), nps_id)
    events = decide.remove_key_result(history.objective, decision("survey dropped"), nps_id)
    assert [type(event) for event in events] == [KeyResultRemoved]
    remaining = history.record(events)
    assert [kr.key_result_id for kr in remaining.key_results] == [sales_id]
    with pytest.raises(RuleViolationError):
        decide.remove_key_result(remaining, decision("empty it"), sales_id)


def test_bind_and_unbind_a_kpi() -> None:
    history = created(SALES)
    sales_id = kr_id(history.objective)
    events = decide.bind_kpi(history.objective, decision(), sales_id, SALES_KPI)
    assert [type(event) for event in events] == [KpiBound]
    assert history.record(events).key_result(sales_id).binding == SALES_KPI
    assert decide.bind_kpi(history.objective, decision(), sales_id, SALES_KPI) == []

    latest = KpiBinding(kpi_key="sales.product_x.units", aggregation=Aggregation.LATEST)
    rebound = history.record(decide.bind_kpi(history.objective, decision(), sales_id, latest))
    assert rebound.key_result(sales_id).binding == latest

    events = decide.unbind_kpi(history.objective, decision(), sales_id)
    assert [type(event) for event in events] == [KpiUnbound]
    assert history.record(events).key_result(sales_id).binding is None
    assert decide.unbind_kpi(history.objective, decision(), sales_id) == []


# --- comments ------------------------------------------------------------------------------------


@pytest.mark.parametrize("history", [created, activated], ids=["draft", "active"])
def test_a_comment_is_recorded_and_changes_nothing_but_the_version(
    history: Callable[[], History],
) -> None:
    before = history()
    objective = before.objective
    nps_id = kr_id(objective, 2)
    events = decide.comment_key_result(objective, decision(), nps_id, "Survey slips a week")
    [event] = events
    assert isinstance(event, okr.KeyResultCommented)
    assert (event.key_result_id, event.text, event.actor) == (
        nps_id,
        "Survey slips a week",
        "alice",
    )
    after = before.record(events)
    assert after.version == objective.version + 1
    assert after.model_copy(update={"version": objective.version, "chain_hash": ""}) == (
        objective.model_copy(update={"chain_hash": ""})
    )
    assert after.score == objective.score


@pytest.mark.parametrize("history", [closed, archived], ids=["closed", "archived"])
def test_a_finished_objective_takes_no_comment(history: Callable[[], History]) -> None:
    objective = history().objective
    with pytest.raises(InvalidTransitionError):
        decide.comment_key_result(objective, decision(), kr_id(objective), "too late")


def test_a_comment_needs_a_known_key_result_and_some_text() -> None:
    objective = activated(NPS).objective
    with pytest.raises(KeyResultNotFoundError):
        decide.comment_key_result(objective, decision(), uuid4(), "about what?")
    with pytest.raises(RuleViolationError, match="needs some text"):
        decide.comment_key_result(objective, decision(), kr_id(objective), " \n ")


# --- progress ------------------------------------------------------------------------------------


def test_check_in_moves_the_key_result_and_the_score() -> None:
    history = activated(NPS, SALES)
    nps_id = kr_id(history.objective)
    events = decide.check_in(
        history.objective, decision(), nps_id, 71.0, confidence=0.6, note="survey in"
    )
    [event] = events
    assert isinstance(event, ProgressCheckedIn)
    assert (event.value, event.confidence, event.note) == (71.0, 0.6, "survey in")
    objective = history.record(events)
    nps = objective.key_result(nps_id)
    assert (nps.current, nps.confidence, nps.last_update) == (71.0, 0.6, NOW)
    assert nps.score.score == 50.0
    assert objective.score == 25.0  # the sales key result has no value yet


@pytest.mark.parametrize(
    "history", [created, closed, archived], ids=["draft", "closed", "archived"]
)
def test_check_in_only_when_active(history: Callable[[], History]) -> None:
    objective = history().objective
    with pytest.raises(InvalidTransitionError):
        decide.check_in(objective, decision(), kr_id(objective), 1.0)


def test_check_in_is_refused_on_a_kpi_bound_key_result() -> None:
    history = activated(SALES)
    sales_id = kr_id(history.objective)
    history.record(decide.bind_kpi(history.objective, decision(), sales_id, SALES_KPI))
    with pytest.raises(RuleViolationError, match=r"sales\.product_x\.units"):
        decide.check_in(history.objective, decision(), sales_id, 1100.0)


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0])
def test_a_milestone_is_checked_in_as_0_or_1_only(value: float) -> None:
    objective = activated(LAUNCH).objective
    with pytest.raises(NotScorableError):
        decide.check_in(objective, decision(), kr_id(objective), value)


def test_a_done_milestone_scores_100() -> None:
    history = activated(LAUNCH)
    done = history.record(
        decide.check_in(history.objective, decision(), kr_id(history.objective), 1)
    )
    assert done.score == 100.0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_value_is_refused(value: float) -> None:
    objective = activated(NPS).objective
    with pytest.raises(NotScorableError):
        decide.check_in(objective, decision(), kr_id(objective), value)


def test_kpi_progress_moves_a_bound_key_result_naming_its_kpi_events() -> None:
    history = activated(SALES)
    sales_id = kr_id(history.objective)
    history.record(decide.bind_kpi(history.objective, decision(), sales_id, SALES_KPI))
    events = decide.record_kpi_progress(
        history.objective,
        decision(actor="scorer"),
        sales_id,
        1150.0,
        observations=3,
        last_kpi_event_id="kpi-42",
        last_offset=17,
    )
    [event] = events
    assert isinstance(event, KpiProgressRecorded)
    assert (event.kpi_key, event.observations, event.last_kpi_event_id, event.last_offset) == (
        "sales.product_x.units",
        3,
        "kpi-42",
        17,
    )
    objective = history.record(events)
    assert objective.key_result(sales_id).current == 1150.0
    assert objective.score == 50.0


def test_kpi_progress_is_a_no_op_when_nothing_would_change() -> None:
    def progress(history: History, kr: UUID, value: float = 1150.0) -> list[DomainEvent]:
        return decide.record_kpi_progress(
            history.objective, decision(), kr, value, observations=1, last_kpi_event_id="k"
        )

    unbound = activated(SALES)
    assert progress(unbound, kr_id(unbound.objective)) == []  # people check it in by hand

    bound = created(SALES)
    sales_id = kr_id(bound.objective)
    bound.record(decide.bind_kpi(bound.objective, decision(), sales_id, SALES_KPI))
    assert progress(bound, sales_id) == []  # a draft is not measured yet
    bound.record(decide.activate_objective(bound.objective, decision())[0])
    bound.record(progress(bound, sales_id))
    assert bound.objective.key_result(sales_id).current == 1150.0
    assert progress(bound, sales_id) == []  # same value again
    assert len(progress(bound, sales_id, 1200.0)) == 1
    bound.record(decide.close_objective(bound.objective, decision("done")))
    assert progress(bound, sales_id, 1200.0) == []  # closed: the final score is frozen


# --- the audit trail -----------------------------------------------------------------------------


def test_every_event_records_who_when_under_which_command_and_why() -> None:
    """One of each decision, each under its own command; the header of each event says so."""
    at = iter(NOW + timedelta(minutes=minute) for minute in range(100))
    history = History()
    expected: list[tuple[str, str, datetime, str | None]] = []

    def take(reason: str | None = None, actor: str = "alice") -> Decision:
        made = Decision(actor=actor, command_id=f"c{len(expected)}", now=next(at), reason=reason)
        expected.append((made.actor, made.command_id, made.now, made.reason))
        return made

    events, _ = create([NPS, SALES], made=take(), title="Win")
    objective = history.record(events)
    nps_id, sales_id = kr_id(objective, 0), kr_id(objective, 1)
    history.record(
        decide.revise_objective(
            history.objective, take(actor="bob"), okr.ObjectiveRevised(team="growth")
        )[0]
    )
    history.record(decide.align_objective(history.objective, take(), uuid4()))
    history.record(decide.add_key_result(history.objective, take(), LAUNCH)[0])
    higher = NPS.model_copy(update={"target": 85.0})
    history.record(decide.revise_key_result(history.objective, take("ambition"), nps_id, higher)[0])
    history.record(decide.bind_kpi(history.objective, take(), sales_id, SALES_KPI))
    history.record(decide.activate_objective(history.objective, take())[0])
    history.record(decide.check_in(history.objective, take("survey"), nps_id, 70.0))
    history.record(
        decide.record_kpi_progress(
            history.objective,
            take(actor="scorer"),
            sales_id,
            1100.0,
            observations=2,
            last_kpi_event_id="k2",
        )
    )
    history.record(decide.unbind_kpi(history.objective, take(), sales_id))
    history.record(decide.comment_key_result(history.objective, take(), nps_id, "on track"))
    launch_id = kr_id(history.objective, 2)
    history.record(decide.remove_key_result(history.objective, take("descoped"), launch_id))
    history.record(decide.close_objective(history.objective, take("quarter over")))
    history.record(decide.archive_objective(history.objective, take("reorg", actor="carol")))

    headers = [(e.actor, e.command_id, e.timestamp, e.reason) for e in history.events]
    assert headers == expected
    assert len({type(event) for event in history.events}) == len(history.events) == 14
    assert history.objective.modified_on == expected[-1][2]
    assert history.objective.created_on == expected[0][2]


def test_replay_rebuilds_the_state_the_decisions_saw() -> None:
    history = activated(*GOOD_EXAMPLES)
    nps_id = kr_id(history.objective, 2)
    for value in (62.0, 70.5, 75.0):
        history.record(decide.check_in(history.objective, decision(), nps_id, value))
    history.record(decide.close_objective(history.objective, decision("done")))
    versions = [event.originator_version for event in history.events]
    assert versions == list(range(1, len(history.events) + 1))
    assert replay(history.events) == history.objective
    for version, seen in enumerate(history.states, start=1):
        assert replay(history.events[:version]) == seen
        assert seen.version == version


def test_evolving_a_missing_objective_is_refused() -> None:
    event = ProgressCheckedIn(**decision().header(uuid4(), 2), key_result_id=uuid4(), value=1.0)
    with pytest.raises(ObjectiveNotFoundError):
        evolve(event, None)


# --- property: stored events rebuild exactly what the decisions saw -------------------------------

UPTIME = KeyResultSpec(
    title="Keep checkout uptime at 99.9 %",
    kind=KeyResultKind.AT_LEAST,
    metric="% uptime",
    baseline=99.0,
    target=99.9,
    deadline=Q3_END,
)
POOL = (SALES, CHURN, NPS, PURCHASE_PATH, LAUNCH, UPTIME)
KINDS_WITH_A_TARGET = (
    KeyResultKind.INCREASE,
    KeyResultKind.DECREASE,
    KeyResultKind.AT_LEAST,
    KeyResultKind.AT_MOST,
)
VALUES = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
ACTIONS = (
    "check_in",
    "check_in",
    "add",
    "remove",
    "revise_key_result",
    "revise",
    "bind",
    "kpi",
    "comment",
)


def random_step(data: st.DataObject, objective: Objective, made: Decision) -> list[DomainEvent]:
    """One valid decision on ``objective``, drawn at random; [] when the draw decides nothing."""
    action = data.draw(st.sampled_from(ACTIONS), label="action")
    index = data.draw(st.integers(0, len(objective.key_results) - 1), label="key result")
    key_result = objective.key_results[index]
    kr = key_result.key_result_id
    milestone = key_result.spec.kind is KeyResultKind.MILESTONE
    value = data.draw(st.sampled_from([0.0, 1.0]) if milestone else VALUES, label="value")
    if action == "check_in" and key_result.binding is None:
        confidence = data.draw(st.none() | st.floats(0, 1), label="confidence")
        return decide.check_in(objective, made, kr, value, confidence=confidence)
    if action == "kpi" and key_result.binding is not None:
        return decide.record_kpi_progress(
            objective,
            made,
            kr,
            value,
            observations=data.draw(st.integers(1, 50)),
            last_kpi_event_id=f"kpi-{made.command_id}",
        )
    if action == "add":
        spec = data.draw(st.sampled_from(POOL), label="added")
        return decide.add_key_result(objective, made, spec)[0]
    if action == "remove" and len(objective.key_results) > 1:
        return decide.remove_key_result(objective, made, kr)
    if action == "revise_key_result":
        update: dict[str, object] = {"weight": data.draw(st.floats(0.1, 10), label="weight")}
        spec = key_result.spec
        if spec.kind in KINDS_WITH_A_TARGET:
            update["target"] = data.draw(VALUES.filter(lambda t: t != spec.baseline), label="t")
        return decide.revise_key_result(objective, made, kr, spec.model_copy(update=update))[0]
    if action == "revise":
        description = data.draw(st.text(max_size=30), label="description")
        return decide.revise_objective(
            objective, made, okr.ObjectiveRevised(description=description)
        )[0]
    if action == "bind" and key_result.binding is None:
        return decide.bind_kpi(objective, made, kr, SALES_KPI)
    if action == "bind":
        return decide.unbind_kpi(objective, made, kr)
    if action == "comment":
        return decide.comment_key_result(
            objective, made, kr, data.draw(st.text(min_size=1).filter(str.strip))
        )
    return []


@settings(max_examples=75, deadline=None)
@given(data=st.data())
def test_replaying_stored_events_rebuilds_exactly_what_folding_saw(data: st.DataObject) -> None:
    initial = data.draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=4), label="initial")
    history = activated(*initial)
    for step in range(data.draw(st.integers(0, 25), label="steps")):
        made = Decision(
            actor=data.draw(st.sampled_from(["alice", "bob", "scorer"]), label="actor"),
            command_id=f"c{step}",
            now=NOW + timedelta(hours=step),
            reason="decided",
        )
        history.record(random_step(data, history.objective, made))
    if data.draw(st.booleans(), label="close"):
        history.record(decide.close_objective(history.objective, decision("quarter over")))

    mapper = PydanticMapper(transcoder=OrjsonTranscoder())
    stored = [mapper.to_stored_event(event) for event in history.events]
    reloaded = [cast(DomainEvent, mapper.to_domain_event(record)) for record in stored]
    rebuilt = replay(reloaded)

    assert reloaded == history.events
    assert rebuilt == history.objective
    assert rebuilt is not None
    assert rebuilt.score == history.objective.score
    assert [event.originator_version for event in reloaded] == list(range(1, len(reloaded) + 1))


def test_kpi_progress_computed_for_a_binding_since_replaced_is_not_recorded() -> None:
    history = activated(SALES)
    sales_id = kr_id(history.objective)
    rebound = KpiBinding(kpi_key="sales.product_x.orders", aggregation=Aggregation.COUNT)
    history.record(decide.bind_kpi(history.objective, decision(), sales_id, SALES_KPI))
    history.record(decide.bind_kpi(history.objective, decision(), sales_id, rebound))

    def progress(binding: KpiBinding) -> list[DomainEvent]:
        return decide.record_kpi_progress(
            history.objective,
            decision(),
            sales_id,
            1100.0,
            observations=1,
            last_kpi_event_id="e1",
            binding=binding,
        )

    assert progress(SALES_KPI) == []
    [recorded] = progress(rebound)
    assert isinstance(recorded, KpiProgressRecorded)
    assert recorded.kpi_key == "sales.product_x.orders"
