"""Quality rules: the seed's good OKRs pass, its bad ones are rejected with every reason."""

from __future__ import annotations

import pickle
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import OkrError, QualityRejectedError
from domain.measures import KeyResultKind, KeyResultSpec
from domain.quality import (
    QualityIssue,
    QualityReport,
    lint_key_result,
    lint_objective,
    require_quality,
)
from domain.scoring import score_key_result
from tests import seed

Q3_START = date(2025, 7, 1)
Q3_END = date(2025, 9, 30)

GOOD_EXAMPLES = [example.as_spec(deadline=Q3_END) for example in seed.GOOD]
SALES, CHURN, NPS, PURCHASE_PATH = GOOD_EXAMPLES
LEAD_GENERATION, CHURN_OBSTACLES = (example.as_spec() for example in seed.BAD)
MISSING_EVERYTHING = seed.unmeasurable_problems()


def codes(issues: tuple[QualityIssue, ...]) -> set[str]:
    return {issue.code for issue in issues}


def located(issues: tuple[QualityIssue, ...]) -> set[tuple[str, str]]:
    return {(issue.code, issue.field) for issue in issues}


# --- the seed's examples -----------------------------------------------------------------------


@pytest.mark.parametrize("spec", GOOD_EXAMPLES, ids=lambda spec: spec.title)
def test_seed_good_examples_pass_without_warnings(spec: KeyResultSpec) -> None:
    report = lint_key_result(spec, 0, period_end=Q3_END)
    assert report == QualityReport(problems=(), warnings=())
    assert report.ok


def test_seed_good_examples_make_a_clean_objective() -> None:
    report = lint_objective("Grow a loyal customer base", Q3_START, Q3_END, GOOD_EXAMPLES)
    assert report.ok
    assert report.warnings == ()
    require_quality(report)  # does not raise


@pytest.mark.parametrize("spec", [LEAD_GENERATION, CHURN_OBSTACLES], ids=lambda spec: spec.title)
def test_seed_bad_examples_are_rejected_with_every_reason(spec: KeyResultSpec) -> None:
    report = lint_key_result(spec, 0)
    assert not report.ok
    assert located(report.problems) == MISSING_EVERYTHING
    assert all(issue.message.endswith(".") for issue in report.problems)


def test_only_the_activity_worded_bad_example_gets_the_activity_warning() -> None:
    assert codes(lint_key_result(CHURN_OBSTACLES, 0).warnings) == {"activity_wording"}
    assert codes(lint_key_result(LEAD_GENERATION, 0).warnings) == set()


def test_rejection_error_lists_every_problem() -> None:
    report = lint_key_result(LEAD_GENERATION, 0)
    with pytest.raises(QualityRejectedError) as raised:
        require_quality(report)
    error = raised.value
    assert isinstance(error, OkrError)
    assert isinstance(error, ValueError)
    assert error.report is report
    for _, field in MISSING_EVERYTHING:
        assert field in str(error)


def test_rejection_error_survives_pickling() -> None:
    error = QualityRejectedError(lint_key_result(LEAD_GENERATION, 0))
    copy = pickle.loads(pickle.dumps(error))
    assert copy.report == error.report
    assert str(copy) == str(error)


@pytest.mark.parametrize(
    "title",
    [
        seed.CHURN_OBSTACLES.french,
        *seed.SCENARIO_ACTIVITIES,
        "Review the onboarding funnel",
        "Help the support team with tickets",
        "Work on analyzing the checkout",
    ],
)
def test_activity_wording_without_a_number_is_a_smell(title: str) -> None:
    report = lint_key_result(KeyResultSpec(title=title), 0)
    assert "activity_wording" in codes(report.warnings)
    assert "activity_wording" not in codes(report.problems)


@pytest.mark.parametrize(
    "title",
    [
        seed.NPS.french,
        "Improve NPS from 62 to 80",
        "Reduce helpdesk tickets",  # "help" only as part of another word
        "Raise NPS to 80",
    ],
)
def test_outcomes_or_numbers_are_not_activity_wording(title: str) -> None:
    assert "activity_wording" not in codes(lint_key_result(KeyResultSpec(title=title), 0).warnings)


# --- key result rules --------------------------------------------------------------------------


def test_issue_fields_use_the_key_result_index() -> None:
    report = lint_key_result(SALES.model_copy(update={"deadline": None}), 3)
    assert located(report.problems) == {("missing_deadline", "key_results[3].deadline")}


def test_relative_target_counts_only_once_the_baseline_exists() -> None:
    report = lint_key_result(SALES.model_copy(update={"baseline": None}), 0)
    assert located(report.problems) == {
        ("missing_target", "key_results[0].target"),
        ("missing_baseline", "key_results[0].baseline"),
    }
    assert "+30%" in next(i.message for i in report.problems if i.code == "missing_target")


def test_unreadable_relative_target_is_a_problem() -> None:
    report = lint_key_result(SALES.model_copy(update={"relative_target": "a lot"}), 0)
    assert located(report.problems) == {
        ("invalid_relative_target", "key_results[0].relative_target")
    }


@pytest.mark.parametrize(
    "changes", [{"target": 1000.0, "relative_target": None}, {"relative_target": "+0%"}]
)
def test_target_equal_to_baseline_is_a_problem(changes: dict[str, object]) -> None:
    report = lint_key_result(SALES.model_copy(update=changes), 0)
    assert codes(report.problems) == {"target_equals_baseline"}


@pytest.mark.parametrize("kind", [KeyResultKind.AT_LEAST, KeyResultKind.AT_MOST])
def test_holding_a_level_the_baseline_already_meets_is_fine(kind: KeyResultKind) -> None:
    spec = NPS.model_copy(update={"kind": kind, "baseline": 80.0})
    assert lint_key_result(spec, 0).ok


def test_metric_must_not_be_blank() -> None:
    report = lint_key_result(NPS.model_copy(update={"metric": "  "}), 0)
    assert codes(report.problems) == {"missing_metric"}


def test_range_needs_both_bounds() -> None:
    report = lint_key_result(PURCHASE_PATH.model_copy(update={"target_high": None}), 0)
    assert located(report.problems) == {("missing_target", "key_results[0].target_high")}


def test_range_bounds_must_be_ordered() -> None:
    spec = PURCHASE_PATH.model_copy(update={"target_low": 4.0, "target_high": 3.0})
    assert codes(lint_key_result(spec, 0).problems) == {"invalid_range"}


def test_milestone_needs_only_a_title_and_a_deadline() -> None:
    milestone = KeyResultSpec(title="Launch guest checkout", kind=KeyResultKind.MILESTONE)
    assert located(lint_key_result(milestone, 0).problems) == {
        ("missing_deadline", "key_results[0].deadline")
    }
    assert lint_key_result(milestone.model_copy(update={"deadline": Q3_END}), 0).ok


def test_milestone_with_custom_values_is_warned_they_are_ignored() -> None:
    spec = KeyResultSpec(title="Ship", kind=KeyResultKind.MILESTONE, target=5.0, deadline=Q3_END)
    assert codes(lint_key_result(spec, 0).warnings) == {"milestone_values_ignored"}


def test_empty_title_is_a_problem() -> None:
    report = lint_key_result(NPS.model_copy(update={"title": " "}), 0)
    assert located(report.problems) == {("missing_title", "key_results[0].title")}


def test_deadline_after_the_period_is_a_warning() -> None:
    late = NPS.model_copy(update={"deadline": date(2025, 10, 15)})
    report = lint_key_result(late, 1, period_end=Q3_END)
    assert report.ok
    assert located(report.warnings) == {("deadline_after_period", "key_results[1].deadline")}


@pytest.mark.parametrize(
    "spec",
    [
        NPS.model_copy(update={"target": 50.0}),
        CHURN.model_copy(update={"relative_target": "+5%"}),
    ],
)
def test_target_in_the_wrong_direction_is_a_warning(spec: KeyResultSpec) -> None:
    report = lint_key_result(spec, 0)
    assert report.ok
    assert codes(report.warnings) == {"direction_mismatch"}


def test_relative_text_contradicting_the_target_is_a_warning() -> None:
    report = lint_key_result(SALES.model_copy(update={"target": 1500.0}), 0)
    assert report.ok
    assert codes(report.warnings) == {"relative_target_mismatch"}


# --- objective rules ---------------------------------------------------------------------------


def test_objective_problems_are_all_listed_together() -> None:
    report = lint_objective("  ", None, None, [])
    assert located(report.problems) == {
        ("missing_title", "title"),
        ("missing_period", "period_start"),
        ("missing_period", "period_end"),
        ("no_key_results", "key_results"),
    }


@pytest.mark.parametrize("end", [Q3_START, date(2025, 6, 1)])
def test_period_must_end_after_it_starts(end: date) -> None:
    report = lint_objective("Grow", Q3_START, end, [NPS])
    assert located(report.problems) == {("invalid_period", "period_end")}


def test_objective_collects_key_result_problems_with_their_positions() -> None:
    report = lint_objective("Grow", Q3_START, Q3_END, [NPS, LEAD_GENERATION, CHURN_OBSTACLES])
    fields = {issue.field for issue in report.problems}
    assert {field.split(".")[0] for field in fields} == {"key_results[1]", "key_results[2]"}
    assert len(report.problems) == 8
    assert located(report.warnings) == {("activity_wording", "key_results[2].title")}


def test_more_than_five_key_results_is_a_warning() -> None:
    assert lint_objective("Grow", Q3_START, Q3_END, [NPS] * 5).warnings == ()
    report = lint_objective("Grow", Q3_START, Q3_END, [NPS] * 6)
    assert report.ok
    assert codes(report.warnings) == {"too_many_key_results"}


@pytest.mark.parametrize(
    ("start", "end", "too_long"),
    [
        (date(2025, 1, 1), date(2026, 1, 1), False),
        (date(2025, 1, 1), date(2026, 1, 2), True),
        (date(2024, 2, 29), date(2025, 2, 28), False),
        (date(2024, 2, 29), date(2025, 3, 1), True),
    ],
)
def test_period_longer_than_a_year_is_a_warning(start: date, end: date, too_long: bool) -> None:
    spec = NPS.model_copy(update={"deadline": end})
    report = lint_objective("Grow", start, end, [spec])
    assert report.ok
    assert ("long_period" in codes(report.warnings)) is too_long


def test_key_result_deadline_is_checked_against_the_objective_period() -> None:
    late = NPS.model_copy(update={"deadline": date(2025, 12, 31)})
    report = lint_objective("Grow", Q3_START, Q3_END, [NPS, late])
    assert located(report.warnings) == {("deadline_after_period", "key_results[1].deadline")}


# --- properties --------------------------------------------------------------------------------

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
maybe_numbers = st.none() | finite_floats | st.sampled_from([0.0, 1.0, 3.0, 4.0, 7.0])
any_specs = st.builds(
    KeyResultSpec,
    title=st.text(max_size=40) | st.sampled_from([seed.LEAD_GENERATION.english, seed.NPS.english]),
    kind=st.sampled_from(KeyResultKind),
    metric=st.none() | st.text(max_size=10),
    baseline=maybe_numbers,
    target=maybe_numbers,
    target_low=maybe_numbers,
    target_high=maybe_numbers,
    relative_target=st.none() | st.sampled_from(["+30%", "-5 %", "+0", "lots"]) | st.text(),
    deadline=st.none() | st.dates(),
    weight=st.floats(min_value=0.0, exclude_min=True, allow_infinity=False),
)


@given(spec=any_specs, current=st.none() | finite_floats)
def test_an_accepted_key_result_can_always_be_scored(
    spec: KeyResultSpec, current: float | None
) -> None:
    if lint_key_result(spec, 0).ok:
        score_key_result(spec, current)  # must not raise NotScorableError
