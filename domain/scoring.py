"""Key result and objective scores on the seed's 0-100 scale.

Arithmetic runs on exact fractions and is converted to float once at the end: finite inputs of any
magnitude can then never overflow into infinities or NaN, and monotonicity in the current value
holds exactly instead of up to rounding noise. A float is a binary fraction, so the fractions are
kept as integers over powers of two (`Fraction` gives the same floats, at several times the cost:
the projector scores every value a KPI stream brings); `key_result_scorer` checks a definition
once and scores any number of values against it.

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from domain.errors import InvalidRelativeTargetError, NotScorableError
from domain.measures import MILESTONE_DONE, KeyResultKind, KeyResultSpec

SCORE_MIN = 0.0
SCORE_MAX = 100.0

# Values are exact binary fractions: a finite float is `numerator / 2**shift`, and two of them
# brought to a common shift compare, add and subtract as integers. Progress, a ratio of two such
# differences, is kept as an integer pair (numerator, positive denominator) and turned into a
# float once, by integer true division, which rounds correctly: the nearest float to the exact
# rational, as `Fraction` arithmetic would give, at a fraction of its cost.

Exact = tuple[int, int]
"""A finite float as (numerator, shift): numerator / 2**shift."""
Progress = tuple[int, int]
"""(numerator, denominator > 0): 1 means achieved."""


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
    return key_result_scorer(spec)(current)


Scorer = Callable[[float | None], Score]
"""A key result's score as a function of its current value (`key_result_scorer`)."""


def key_result_scorer(spec: KeyResultSpec) -> Scorer:
    """``score_key_result`` with ``spec`` resolved and checked once: the projector scores every
    value a live KPI stream moves a key result to, against the same few definitions.

    Raises ``NotScorableError`` as ``score_key_result`` does, at once.
    """
    resolved = _resolve(spec)
    if resolved.kind is KeyResultKind.MILESTONE:
        return _score_milestone
    baseline = _exact(resolved.baseline, "baseline")
    if resolved.kind in (KeyResultKind.INCREASE, KeyResultKind.DECREASE):
        target = _exact(resolved.target, "target")
        _require_distinct(baseline, target)
        return _measured(_Linear(baseline, target))
    if resolved.kind is KeyResultKind.RANGE:
        low, high = _range_of(resolved)
        return _measured(_Range(baseline, low, high))
    threshold = _exact(resolved.target, "target (threshold)")
    at_least = resolved.kind is KeyResultKind.AT_LEAST
    if _holds(at_least, baseline, threshold):
        return _measured(_Held(at_least, threshold))
    return _measured(_Linear(baseline, threshold))


def objective_score(items: Iterable[tuple[float, float]]) -> float:
    """Weighted mean of ``(score, weight)`` pairs; an objective without key results scores 0.

    Exact arithmetic keeps the mean between the lowest and the highest score, so rounding can
    never push an objective above its best key result. Floats are binary fractions, so the sums
    are kept as integers over one power of two (what `Fraction` would do, without its cost: this
    runs for every projected event), and the mean is rounded once, by integer true division.
    """
    pairs = list(items)
    for score, weight in pairs:
        _check_score(score)
        _check_weight(weight)
    return WeightedMean([weight for _, weight in pairs])([score for score, _ in pairs])


TERM_SHIFT = 2 * 1074
"""Any finite float is an integer over 2**1074, so a score times a weight is one over 2**2148:
at that one shift, the sums of the mean are plain integer sums."""


class WeightedMean:
    """`objective_score` of key results with these weights, the weights read once.

    The projector takes a new mean for every score a KPI stream moves, the weights and the other
    scores unchanged: it keeps each key result's `term` and replaces the one that moved.
    """

    __slots__ = ("_total", "_weights")

    def __init__(self, weights: Sequence[float]) -> None:
        for weight in weights:
            _check_weight(weight)
        self._weights = [_dyadic(weight) for weight in weights]
        self._total = sum(numerator << (TERM_SHIFT - shift) for numerator, shift in self._weights)

    def __call__(self, scores: Sequence[float]) -> float:
        if len(scores) != len(self._weights):
            raise ValueError(f"{len(scores)} scores for {len(self._weights)} weights")
        return self.of_terms([self.term(position, score) for position, score in enumerate(scores)])

    def term(self, position: int, score: float) -> int:
        """The key result at `position`'s score times its weight, over 2**TERM_SHIFT."""
        _check_score(score)
        weight_numerator, weight_shift = self._weights[position]
        score_numerator, score_shift = _dyadic(score)
        return score_numerator * weight_numerator << (TERM_SHIFT - score_shift - weight_shift)

    def of_terms(self, terms: Sequence[int]) -> float:
        """The mean of the key results whose `term`s these are, rounded once."""
        if not terms:
            return SCORE_MIN
        return min(max(sum(terms) / self._total, SCORE_MIN), SCORE_MAX)


def _resolve(spec: KeyResultSpec) -> KeyResultSpec:
    try:
        return spec.resolved()
    except InvalidRelativeTargetError as error:
        raise NotScorableError(f"key result {spec.title!r}: {error}") from error


def _score_milestone(current: float | None) -> Score:
    if current is None:
        return Score(score=SCORE_MIN, attainment=None)
    _exact(current, "current value")  # refuses a value that is not finite
    value = SCORE_MAX if current >= MILESTONE_DONE else SCORE_MIN
    return Score(score=value, attainment=value)


def _measured(progress_at: Callable[[Exact], Progress]) -> Scorer:
    """Apply a progress function (1 = achieved) to the current value, keeping the unclamped
    percent as attainment."""

    def score(current: float | None) -> Score:
        if current is None:
            return Score(score=SCORE_MIN, attainment=None)
        numerator, denominator = progress_at(_exact(current, "current value"))
        return Score(
            score=_clamped_percent(numerator, denominator),
            attainment=_unclamped_percent(numerator, denominator),
        )

    return score


def _aligned(*values: Exact) -> tuple[int, list[int]]:
    """The values as integers over one power of two: (shift, numerators)."""
    shift = max(value_shift for _, value_shift in values)
    return shift, [numerator << (shift - value_shift) for numerator, value_shift in values]


class _Linear:
    """(current - baseline) / (target - baseline), baseline != target."""

    def __init__(self, baseline: Exact, target: Exact) -> None:
        self.shift, (self.baseline, target_numerator) = _aligned(baseline, target)
        self.span = target_numerator - self.baseline

    def __call__(self, current: Exact) -> Progress:
        numerator, current_shift = current
        if current_shift <= self.shift:
            progress = (numerator << (self.shift - current_shift)) - self.baseline, self.span
        else:
            scale = current_shift - self.shift
            progress = numerator - (self.baseline << scale), self.span << scale
        return _positive(progress)


class _Range:
    """1 inside [low, high]; otherwise 1 - distance(current) / distance(baseline), and 0 when
    the baseline was inside (held from the start and now lost: no scale to measure it by)."""

    def __init__(self, baseline: Exact, low: Exact, high: Exact) -> None:
        self.shift, (self.baseline, self.low, self.high) = _aligned(baseline, low, high)
        self.baseline_distance = self._distance(self.baseline, self.low, self.high)

    @staticmethod
    def _distance(value: int, low: int, high: int) -> int:
        if value < low:
            return low - value
        if value > high:
            return value - high
        return 0

    def __call__(self, current: Exact) -> Progress:
        numerator, current_shift = current
        scale = max(current_shift - self.shift, 0)
        value = numerator << max(self.shift - current_shift, 0)
        distance = self._distance(value, self.low << scale, self.high << scale)
        if distance == 0:
            return 1, 1
        if self.baseline_distance == 0:
            return 0, 1
        baseline_distance = self.baseline_distance << scale
        return baseline_distance - distance, baseline_distance


class _Held:
    """A level the baseline already met: kept (1) or lost (0)."""

    def __init__(self, at_least: bool, threshold: Exact) -> None:
        self.at_least = at_least
        self.threshold = threshold

    def __call__(self, current: Exact) -> Progress:
        return (1, 1) if _holds(self.at_least, current, self.threshold) else (0, 1)


def _holds(at_least: bool, value: Exact, threshold: Exact) -> bool:
    order = _compare(value, threshold)
    return order >= 0 if at_least else order <= 0


def _compare(left: Exact, right: Exact) -> int:
    """-1, 0 or 1 as `left` is below, equal to or above `right`."""
    _, (left_numerator, right_numerator) = _aligned(left, right)
    return (left_numerator > right_numerator) - (left_numerator < right_numerator)


def _positive(progress: Progress) -> Progress:
    numerator, denominator = progress
    return (-numerator, -denominator) if denominator < 0 else progress


def _range_of(spec: KeyResultSpec) -> tuple[Exact, Exact]:
    low = _exact(spec.target_low, "target_low (range lower bound)")
    high = _exact(spec.target_high, "target_high (range upper bound)")
    if _compare(low, high) > 0:
        raise NotScorableError(
            f"range lower bound {spec.target_low} is above upper bound {spec.target_high}"
        )
    return low, high


def _require_distinct(baseline: Exact, target: Exact) -> None:
    if _compare(baseline, target) == 0:
        raise NotScorableError(
            f"target {_as_float(target)} equals the baseline: there is no progress to measure"
        )


def _exact(value: float | None, name: str) -> Exact:
    if value is None:
        raise NotScorableError(f"the key result has no {name}, which its score needs")
    if not math.isfinite(value):
        raise NotScorableError(f"{name} must be a finite number, got {value!r}")
    return _dyadic(value)


def _dyadic(value: float) -> Exact:
    """A finite float as (numerator, shift)."""
    numerator, denominator = value.as_integer_ratio()
    return numerator, denominator.bit_length() - 1


def _as_float(value: Exact) -> float:
    numerator, shift = value
    return numerator / (1 << shift)


def _check_score(score: float) -> None:
    if not math.isfinite(score) or not SCORE_MIN <= score <= SCORE_MAX:
        raise NotScorableError(f"a key result score must lie in 0..100, got {score!r}")


def _check_weight(weight: float) -> None:
    if not math.isfinite(weight) or weight <= 0:
        raise NotScorableError(f"a key result weight must be a positive number, got {weight!r}")


def _clamped_percent(numerator: int, denominator: int) -> float:
    if numerator <= 0:
        return SCORE_MIN
    if numerator >= denominator:
        return SCORE_MAX
    return 100 * numerator / denominator


def _unclamped_percent(numerator: int, denominator: int) -> float:
    try:
        return 100 * numerator / denominator
    except OverflowError:
        return math.inf if numerator > 0 else -math.inf
