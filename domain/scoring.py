"""Key result and objective scores on the seed's 0-100 scale.

Arithmetic runs on exact fractions and is converted to float once at the end: finite inputs of any
magnitude can then never overflow into infinities or NaN, and monotonicity in the current value
holds exactly instead of up to rounding noise.

Formulas, with ``s`` the baseline, ``t`` the target and ``c`` the current value:

* increase / decrease: ``clamp((c - s) / (t - s), 0, 1) * 100``; attainment keeps it unclamped.
* range [low, high]: 100 inside, otherwise
  ``clamp(1 - distance(c, range) / distance(s, range), 0, 1) * 100``. On the baseline's side
  this is exactly the increase/decrease formula toward the nearest bound (baseline 7, range 3-4,
  current 5 -> (7 - 5) / (7 - 4) = 66.7). Deliberate choices:

  - overshooting past the far bound (current 2 for range 3-4 from baseline 7) costs as much as
    falling short by the same distance: a range says both bounds matter, and the literal
    "toward the nearest bound" formula would clamp such a miss to a full 100;
  - when the baseline already lies inside the range there is no distance to scale progress by:
    being outside scores 0 (the level was held, and now it is not).
* at_least / at_most (threshold ``t``): 100 while the condition holds, otherwise the
  increase/decrease formula from ``s`` toward ``t``; attainment stays linear past ``t`` (150 %).
  A baseline that already meets the condition is a level to hold: losing it scores 0.
* milestone: 100 once the current value reaches 1 (done), else 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction

from domain.errors import InvalidRelativeTargetError, NotScorableError
from domain.measures import MILESTONE_DONE, KeyResultKind, KeyResultSpec

SCORE_MIN = 0.0
SCORE_MAX = 100.0
_ZERO = Fraction(0)
_ONE = Fraction(1)
_HUNDRED = Fraction(100)

_ProgressFunction = Callable[[Fraction], Fraction]
_Condition = Callable[[Fraction], bool]


@dataclass(frozen=True)
class Score:
    """A key result's score plus its unclamped attainment, worth showing when above 100 %."""

    score: float  # 0..100, clamped
    attainment: float | None  # unclamped percent, e.g. 125.0; None while no value was measured


def score_key_result(spec: KeyResultSpec, current: float | None) -> Score:
    """Score ``spec`` at ``current``; no value yet scores 0 with unknown attainment.

    Raises ``NotScorableError`` when the spec lacks what its formula needs (checked even without a
    current value, so a broken key result is noticed at once rather than at its first check-in).
    """
    resolved = _resolve(spec)
    if resolved.kind is KeyResultKind.MILESTONE:
        return _score_milestone(current)
    baseline = _exact(resolved.baseline, "baseline")
    if resolved.kind in (KeyResultKind.INCREASE, KeyResultKind.DECREASE):
        target = _exact(resolved.target, "target")
        _require_distinct(baseline, target)
        return _measured(current, lambda value: _progress(value, baseline, target))
    if resolved.kind is KeyResultKind.RANGE:
        low, high = _range_of(resolved)
        return _measured(current, lambda value: _range_progress(value, baseline, low, high))
    threshold = _exact(resolved.target, "target (threshold)")
    holds = _threshold_test(resolved.kind, threshold)
    return _measured(current, lambda value: _threshold_progress(value, baseline, threshold, holds))


def objective_score(items: Iterable[tuple[float, float]]) -> float:
    """Weighted mean of ``(score, weight)`` pairs; an objective without key results scores 0.

    Exact arithmetic keeps the mean between the lowest and the highest score, so rounding can
    never push an objective above its best key result. Floats are binary fractions, so the sums
    are kept as integers over a power of two (what `Fraction` would do, without its cost: this
    runs for every projected event), and the mean is rounded once, by integer true division.
    """
    products: list[tuple[int, int]] = []  # (numerator, log2 of denominator) of score * weight
    weights: list[tuple[int, int]] = []
    for score, weight in items:
        _check_score(score)
        _check_weight(weight)
        score_numerator, score_denominator = score.as_integer_ratio()
        weight_numerator, weight_denominator = weight.as_integer_ratio()
        score_shift = score_denominator.bit_length() - 1
        weight_shift = weight_denominator.bit_length() - 1
        products.append((score_numerator * weight_numerator, score_shift + weight_shift))
        weights.append((weight_numerator, weight_shift))
    if not weights:
        return SCORE_MIN
    weighted_sum, sum_shift = _sum_over_power_of_two(products)
    total_weight, weight_shift = _sum_over_power_of_two(weights)
    # mean = (weighted_sum / 2**sum_shift) / (total_weight / 2**weight_shift)
    numerator, denominator = weighted_sum, total_weight
    if weight_shift >= sum_shift:
        numerator <<= weight_shift - sum_shift
    else:
        denominator <<= sum_shift - weight_shift
    return min(max(numerator / denominator, SCORE_MIN), SCORE_MAX)


def _sum_over_power_of_two(terms: list[tuple[int, int]]) -> tuple[int, int]:
    """The exact sum of `numerator / 2**shift` terms, as (numerator, shift)."""
    shift = max(term_shift for _, term_shift in terms)
    return sum(numerator << (shift - term_shift) for numerator, term_shift in terms), shift


def _resolve(spec: KeyResultSpec) -> KeyResultSpec:
    try:
        return spec.resolved()
    except InvalidRelativeTargetError as error:
        raise NotScorableError(f"key result {spec.title!r}: {error}") from error


def _score_milestone(current: float | None) -> Score:
    if current is None:
        return Score(score=SCORE_MIN, attainment=None)
    done = _exact(current, "current value") >= Fraction(MILESTONE_DONE)
    value = SCORE_MAX if done else SCORE_MIN
    return Score(score=value, attainment=value)


def _measured(current: float | None, progress_at: _ProgressFunction) -> Score:
    """Apply a progress function (1 = achieved) to ``current``, keeping the unclamped value."""
    if current is None:
        return Score(score=SCORE_MIN, attainment=None)
    progress = progress_at(_exact(current, "current value"))
    return Score(score=_clamped_percent(progress), attainment=_unclamped_percent(progress))


def _progress(current: Fraction, baseline: Fraction, target: Fraction) -> Fraction:
    return (current - baseline) / (target - baseline)


def _range_progress(
    current: Fraction, baseline: Fraction, low: Fraction, high: Fraction
) -> Fraction:
    current_distance = _distance_to_range(current, low, high)
    if current_distance == 0:
        return _ONE
    baseline_distance = _distance_to_range(baseline, low, high)
    if baseline_distance == 0:
        return _ZERO  # held from the start and now lost: there is no scale to measure it by
    return 1 - current_distance / baseline_distance


def _distance_to_range(value: Fraction, low: Fraction, high: Fraction) -> Fraction:
    if value < low:
        return low - value
    if value > high:
        return value - high
    return _ZERO


def _range_of(spec: KeyResultSpec) -> tuple[Fraction, Fraction]:
    low = _exact(spec.target_low, "target_low (range lower bound)")
    high = _exact(spec.target_high, "target_high (range upper bound)")
    if low > high:
        raise NotScorableError(
            f"range lower bound {spec.target_low} is above upper bound {spec.target_high}"
        )
    return low, high


def _threshold_test(kind: KeyResultKind, threshold: Fraction) -> _Condition:
    if kind is KeyResultKind.AT_LEAST:
        return lambda value: value >= threshold
    return lambda value: value <= threshold


def _threshold_progress(
    current: Fraction, baseline: Fraction, threshold: Fraction, holds: _Condition
) -> Fraction:
    if holds(baseline):
        return _ONE if holds(current) else _ZERO  # held from the start: kept or lost
    # From a baseline on the wrong side, progress is linear and reaches 1 exactly at the
    # threshold; beyond it the unclamped value shows by how much the level is exceeded.
    return _progress(current, baseline, threshold)


def _require_distinct(baseline: Fraction, target: Fraction) -> None:
    if baseline == target:
        raise NotScorableError(
            f"target {float(target)} equals the baseline: there is no progress to measure"
        )


def _exact(value: float | None, name: str) -> Fraction:
    if value is None:
        raise NotScorableError(f"the key result has no {name}, which its score needs")
    if not math.isfinite(value):
        raise NotScorableError(f"{name} must be a finite number, got {value!r}")
    return Fraction(value)


def _check_score(score: float) -> None:
    if not math.isfinite(score) or not SCORE_MIN <= score <= SCORE_MAX:
        raise NotScorableError(f"a key result score must lie in 0..100, got {score!r}")


def _check_weight(weight: float) -> None:
    if not math.isfinite(weight) or weight <= 0:
        raise NotScorableError(f"a key result weight must be a positive number, got {weight!r}")


def _clamped_percent(progress: Fraction) -> float:
    return float(min(max(progress, _ZERO), _ONE) * _HUNDRED)


def _unclamped_percent(progress: Fraction) -> float:
    percent = progress * _HUNDRED
    try:
        return float(percent)
    except OverflowError:
        return math.inf if percent > 0 else -math.inf
