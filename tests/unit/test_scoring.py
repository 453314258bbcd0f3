"""Key result and objective scores: the formulas of DESIGN.md, and their invariants."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from domain.errors import NotScorableError, OkrError
from domain.measures import KeyResultKind, KeyResultSpec
from domain.scoring import Score, key_result_scorer, objective_score, score_key_result
from tests import seed

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
scores = st.floats(min_value=0.0, max_value=100.0)
weights = st.floats(min_value=0.0, exclude_min=True, allow_infinity=False)


def increase(baseline: float, target: float) -> KeyResultSpec:
    return KeyResultSpec(title="Raise it", metric="units", baseline=baseline, target=target)


def decrease(baseline: float, target: float) -> KeyResultSpec:
    return KeyResultSpec(
        title="Cut it", kind=KeyResultKind.DECREASE, metric="%", baseline=baseline, target=target
    )


def value_range(baseline: float, low: float, high: float) -> KeyResultSpec:
    return KeyResultSpec(
        title="Land it",
        kind=KeyResultKind.RANGE,
        metric="minutes",
        baseline=baseline,
        target_low=low,
        target_high=high,
    )


def threshold(kind: KeyResultKind, baseline: float, level: float) -> KeyResultSpec:
    return KeyResultSpec(title="Hold it", kind=kind, metric="pts", baseline=baseline, target=level)


MILESTONE = KeyResultSpec(title="Launch the new checkout", kind=KeyResultKind.MILESTONE)


# --- worked examples ---------------------------------------------------------------------------


def test_purchase_path_example_from_the_design() -> None:
    """Baseline 7 min, range 3-4 min, current 5 min: (7 - 5) / (7 - 4) = 66.7."""
    result = score_key_result(value_range(7.0, 3.0, 4.0), 5.0)
    assert result.score == pytest.approx(200 / 3)
    assert round(result.score, 1) == 66.7


def test_attainment_above_target_is_kept_unclamped() -> None:
    """Sales +30 % from 1000 units means 1300; selling 1375 is 125 % of the way."""
    spec = seed.SALES.as_spec()
    assert score_key_result(spec, 1375.0) == Score(score=100.0, attainment=125.0)


def test_increase_halfway() -> None:
    assert score_key_result(increase(60.0, 80.0), 70.0) == Score(score=50.0, attainment=50.0)


def test_increase_below_baseline_scores_zero_with_negative_attainment() -> None:
    assert score_key_result(increase(60.0, 80.0), 50.0) == Score(score=0.0, attainment=-50.0)


def test_decrease_churn_by_five_percent() -> None:
    spec = seed.CHURN.as_spec()
    result = score_key_result(spec, 7.8)
    assert result.score == pytest.approx(50.0)
    assert score_key_result(spec, 7.6).score == 100.0


@pytest.mark.parametrize(
    "spec",
    [
        increase(0.0, 10.0),
        decrease(10.0, 0.0),
        value_range(7.0, 3.0, 4.0),
        threshold(KeyResultKind.AT_LEAST, 60.0, 80.0),
        MILESTONE,
    ],
)
def test_no_current_value_scores_zero_with_unknown_attainment(spec: KeyResultSpec) -> None:
    assert score_key_result(spec, None) == Score(score=0.0, attainment=None)


@pytest.mark.parametrize("current", [3.0, 3.5, 4.0])
def test_range_inside_scores_full(current: float) -> None:
    assert score_key_result(value_range(7.0, 3.0, 4.0), current) == Score(100.0, 100.0)


def test_range_worse_than_baseline_scores_zero() -> None:
    assert score_key_result(value_range(7.0, 3.0, 4.0), 9.0).score == 0.0


def test_range_from_below_moves_toward_the_lower_bound() -> None:
    assert score_key_result(value_range(0.0, 10.0, 20.0), 5.0).score == 50.0


def test_range_overshoot_costs_as_much_as_falling_short_by_the_same_distance() -> None:
    spec = value_range(7.0, 3.0, 4.0)
    assert score_key_result(spec, 2.0).score == pytest.approx(score_key_result(spec, 5.0).score)


def test_range_held_from_the_start_and_lost_scores_zero() -> None:
    assert score_key_result(value_range(3.5, 3.0, 4.0), 5.0) == Score(0.0, 0.0)
    assert score_key_result(value_range(3.5, 3.0, 4.0), 3.9).score == 100.0


def test_at_least_holds_at_and_above_the_threshold() -> None:
    spec = threshold(KeyResultKind.AT_LEAST, 60.0, 80.0)
    assert score_key_result(spec, 80.0).score == 100.0
    assert score_key_result(spec, 90.0) == Score(score=100.0, attainment=150.0)


def test_at_least_below_threshold_moves_from_baseline() -> None:
    assert score_key_result(threshold(KeyResultKind.AT_LEAST, 60.0, 80.0), 70.0).score == 50.0


def test_at_least_held_from_the_start_and_lost_scores_zero() -> None:
    spec = threshold(KeyResultKind.AT_LEAST, 85.0, 80.0)
    assert score_key_result(spec, 82.0).score == 100.0
    assert score_key_result(spec, 79.0).score == 0.0


def test_at_most_mirrors_at_least() -> None:
    spec = threshold(KeyResultKind.AT_MOST, 10.0, 5.0)
    assert score_key_result(spec, 5.0).score == 100.0
    assert score_key_result(spec, 7.5).score == 50.0
    assert score_key_result(spec, 12.0).score == 0.0
    assert score_key_result(threshold(KeyResultKind.AT_MOST, 4.0, 5.0), 6.0).score == 0.0


@pytest.mark.parametrize(
    ("current", "expected"), [(0.0, 0.0), (0.99, 0.0), (1.0, 100.0), (3.0, 100.0), (-1.0, 0.0)]
)
def test_milestone_is_done_or_not(current: float, expected: float) -> None:
    assert score_key_result(MILESTONE, current) == Score(score=expected, attainment=expected)


# --- specs that cannot be scored ---------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        seed.LEAD_GENERATION.as_spec(),
        KeyResultSpec(title="No target", baseline=1.0),
        KeyResultSpec(title="No baseline", target=1.0),
        KeyResultSpec(title="Relative without baseline", relative_target="+30%"),
        KeyResultSpec(title="Unreadable", baseline=1.0, relative_target="more"),
        increase(5.0, 5.0),
        KeyResultSpec(title="Half range", kind=KeyResultKind.RANGE, baseline=7.0, target_low=3.0),
        value_range(7.0, 4.0, 3.0),
        KeyResultSpec(title="No threshold", kind=KeyResultKind.AT_MOST, baseline=7.0),
    ],
    ids=lambda spec: spec.title,
)
def test_unscorable_spec_is_refused_even_before_a_value_arrives(spec: KeyResultSpec) -> None:
    for current in (None, 1.0):
        with pytest.raises(NotScorableError) as raised:
            score_key_result(spec, current)
        assert isinstance(raised.value, OkrError)


@pytest.mark.parametrize("current", [math.nan, math.inf, -math.inf])
def test_non_finite_current_value_is_refused(current: float) -> None:
    with pytest.raises(NotScorableError):
        score_key_result(increase(0.0, 10.0), current)


# --- objective score ---------------------------------------------------------------------------


def test_objective_score_is_the_weighted_mean() -> None:
    assert objective_score([(100.0, 1.0), (40.0, 2.0)]) == 60.0


def test_objective_score_with_default_weights_is_the_mean() -> None:
    assert objective_score([(100.0, 1.0), (200 / 3, 1.0), (0.0, 1.0)]) == pytest.approx(
        (100 + 200 / 3) / 3
    )


def test_objective_without_key_results_scores_zero() -> None:
    assert objective_score([]) == 0.0


@pytest.mark.parametrize("item", [(50.0, 0.0), (50.0, -1.0), (50.0, math.nan), (50.0, math.inf)])
def test_objective_score_refuses_bad_weights(item: tuple[float, float]) -> None:
    with pytest.raises(NotScorableError):
        objective_score([item])


@pytest.mark.parametrize("item", [(-1.0, 1.0), (100.5, 1.0), (math.nan, 1.0)])
def test_objective_score_refuses_scores_off_the_scale(item: tuple[float, float]) -> None:
    with pytest.raises(NotScorableError):
        objective_score([item])


# --- properties --------------------------------------------------------------------------------


@st.composite
def scorable_specs(draw: st.DrawFn) -> KeyResultSpec:
    kind = draw(st.sampled_from(KeyResultKind))
    low, high = sorted((draw(finite_floats), draw(finite_floats)))
    spec = KeyResultSpec(
        title="Any",
        kind=kind,
        metric="units",
        baseline=draw(finite_floats),
        target=draw(finite_floats),
        target_low=low,
        target_high=high,
    )
    assume(kind is KeyResultKind.MILESTONE or kind is KeyResultKind.RANGE or _distinct(spec))
    return spec


def _distinct(spec: KeyResultSpec) -> bool:
    return spec.kind not in (KeyResultKind.INCREASE, KeyResultKind.DECREASE) or (
        spec.target != spec.baseline
    )


@given(spec=scorable_specs(), current=st.none() | finite_floats)
def test_score_is_always_on_the_0_to_100_scale(spec: KeyResultSpec, current: float | None) -> None:
    result = score_key_result(spec, current)
    assert 0.0 <= result.score <= 100.0
    assert result.attainment is None or not math.isnan(result.attainment)


@st.composite
def ordered_pair(draw: st.DrawFn, low: float = -math.inf, high: float = math.inf) -> list[float]:
    values = st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
    return sorted((draw(values), draw(values)))


@given(baseline=finite_floats, target=finite_floats, currents=ordered_pair())
def test_increase_score_never_drops_as_the_value_rises(
    baseline: float, target: float, currents: list[float]
) -> None:
    assume(baseline < target)
    lower, higher = (score_key_result(increase(baseline, target), c).score for c in currents)
    assert lower <= higher


@given(baseline=finite_floats, target=finite_floats, currents=ordered_pair())
def test_decrease_score_never_rises_as_the_value_rises(
    baseline: float, target: float, currents: list[float]
) -> None:
    assume(baseline > target)
    lower, higher = (score_key_result(decrease(baseline, target), c).score for c in currents)
    assert lower >= higher


@given(baseline=finite_floats, level=finite_floats, currents=ordered_pair())
def test_at_least_score_never_drops_as_the_value_rises(
    baseline: float, level: float, currents: list[float]
) -> None:
    spec = threshold(KeyResultKind.AT_LEAST, baseline, level)
    lower, higher = (score_key_result(spec, c).score for c in currents)
    assert lower <= higher


@given(baseline=finite_floats, level=finite_floats, currents=ordered_pair())
def test_at_most_score_never_rises_as_the_value_rises(
    baseline: float, level: float, currents: list[float]
) -> None:
    spec = threshold(KeyResultKind.AT_MOST, baseline, level)
    lower, higher = (score_key_result(spec, c).score for c in currents)
    assert lower >= higher


@given(data=st.data(), bounds=ordered_pair(), baseline=finite_floats)
def test_range_score_never_drops_while_approaching_from_the_baseline_side(
    data: st.DataObject, bounds: list[float], baseline: float
) -> None:
    low, high = bounds
    spec = value_range(baseline, low, high)
    if baseline > high:  # approaching from above: closer means lower values
        farther, closer = reversed(data.draw(ordered_pair(low=high)))
    else:
        assume(baseline < low)
        closer, farther = reversed(data.draw(ordered_pair(high=low)))
    assert score_key_result(spec, closer).score >= score_key_result(spec, farther).score


@given(items=st.lists(st.tuples(scores, weights), min_size=1))
def test_objective_score_lies_between_its_lowest_and_highest_key_result(
    items: list[tuple[float, float]],
) -> None:
    result = objective_score(items)
    assert min(s for s, _ in items) <= result <= max(s for s, _ in items)


@given(score=scores, weight=weights, count=st.integers(min_value=1, max_value=20))
def test_objective_of_equal_scores_has_that_score(score: float, weight: float, count: int) -> None:
    assert objective_score([(score, weight)] * count) == score


@settings(max_examples=500)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=100),
            st.floats(min_value=5e-324, max_value=1e308, exclude_min=False),
        ),
        max_size=8,
    )
)
def test_objective_score_is_the_exact_weighted_mean_rounded_once(
    items: list[tuple[float, float]],
) -> None:
    """The integer arithmetic gives the float nearest the exact rational mean, whatever the
    order, as `Fraction` arithmetic would (its cost is why it is not used)."""
    exact_sum = sum((Fraction(s) * Fraction(w) for s, w in items), Fraction(0))
    exact_weight = sum((Fraction(w) for _, w in items), Fraction(0))
    expected = float(exact_sum / exact_weight) if items else 0.0

    assert objective_score(items) == expected
    assert objective_score(list(reversed(items))) == expected
    if items:
        assert min(s for s, _ in items) <= objective_score(items) <= max(s for s, _ in items)


def fraction_score(spec: KeyResultSpec, current: float | None) -> Score:
    """The formulas of this module's docstring in `Fraction` arithmetic: the reference the
    integer arithmetic of `domain.scoring` must give the same floats as."""
    resolved = spec.resolved()
    if current is None:
        return Score(score=0.0, attainment=None)
    if resolved.kind is KeyResultKind.MILESTONE:
        done = 100.0 if current >= 1 else 0.0
        return Score(score=done, attainment=done)
    value, baseline = Fraction(current), Fraction(resolved.baseline or 0)
    if resolved.kind is KeyResultKind.RANGE:
        low, high = Fraction(resolved.target_low or 0), Fraction(resolved.target_high or 0)

        def distance(x: Fraction) -> Fraction:
            return low - x if x < low else x - high if x > high else Fraction(0)

        if distance(value) == 0:
            progress = Fraction(1)
        elif distance(baseline) == 0:
            progress = Fraction(0)
        else:
            progress = 1 - distance(value) / distance(baseline)
    else:
        target = Fraction(resolved.target or 0)
        holds = {KeyResultKind.AT_LEAST: target.__le__, KeyResultKind.AT_MOST: target.__ge__}
        held = holds.get(resolved.kind)
        if held is not None and held(baseline):
            progress = Fraction(int(held(value)))
        else:
            progress = (value - baseline) / (target - baseline)
    percent = progress * 100
    try:
        attainment = float(percent)
    except OverflowError:
        attainment = math.inf if percent > 0 else -math.inf
    return Score(score=float(min(max(percent, Fraction(0)), Fraction(100))), attainment=attainment)


@settings(max_examples=1000)
@given(spec=scorable_specs(), currents=st.lists(st.none() | finite_floats, max_size=5))
def test_scores_are_the_exact_fraction_formulas_rounded_once(
    spec: KeyResultSpec, currents: list[float | None]
) -> None:
    """One scorer per definition, any number of values: the floats `Fraction` gives."""
    scorer = key_result_scorer(spec)
    for current in currents:
        assert scorer(current) == score_key_result(spec, current) == fraction_score(spec, current)
