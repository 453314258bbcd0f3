"""Aggregating a KPI's observations into a key result's value (`domain.kpi_series`).

The property the scorer's exactly-once promise rests on: the value depends on the SET of
observations only, never on how batches split it or in which order they came, for every
aggregation. Floating-point sums are not associative, so the sum is kept exactly.
"""

from __future__ import annotations

import math
import statistics
from datetime import UTC, date, datetime
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.kpi_series import (
    ExactSum,
    Observation,
    SeriesAggregate,
    aggregate,
    epoch_us,
    period_bounds_us,
)
from domain.objective_events import Aggregation

finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def observation_sets(
    draw: st.DrawFn, values: st.SearchStrategy[float] = finite
) -> list[Observation]:
    """Distinct event ids (the scorer deduplicates before aggregating), any values and times,
    with time ties so `latest` must break them by event id."""
    count = draw(st.integers(min_value=0, max_value=30))
    return [
        Observation(
            event_id=f"e{index:03d}",
            value=draw(values),
            observed_at_us=draw(st.integers(min_value=0, max_value=5)),
        )
        for index in range(count)
    ]


@st.composite
def splits(draw: st.DrawFn) -> tuple[list[Observation], list[list[Observation]]]:
    """A set of observations, shuffled, and cut into batches at arbitrary points."""
    observations = draw(observation_sets())
    shuffled = draw(st.permutations(observations))
    cuts = sorted(draw(st.lists(st.integers(0, len(shuffled)), max_size=6)))
    bounds = [0, *cuts, len(shuffled)]
    return observations, [shuffled[a:b] for a, b in pairwise(bounds)]


def same(a: float | None, b: float | None) -> bool:
    return a == b and (a is None or math.copysign(1, a) == math.copysign(1, b or 0.0))


@pytest.mark.parametrize("aggregation", list(Aggregation))
@given(case=splits())
def test_batches_added_one_by_one_give_the_value_of_one_batch(
    aggregation: Aggregation, case: tuple[list[Observation], list[list[Observation]]]
) -> None:
    observations, batches = case
    incremental = SeriesAggregate()
    for batch in batches:
        incremental = incremental.plus(batch)
    assert same(incremental.value(aggregation), aggregate(observations).value(aggregation))


@pytest.mark.parametrize("aggregation", list(Aggregation))
@given(case=splits())
def test_merging_batch_aggregates_gives_the_value_of_one_batch(
    aggregation: Aggregation, case: tuple[list[Observation], list[list[Observation]]]
) -> None:
    observations, batches = case
    merged = SeriesAggregate()
    for batch in batches:
        merged = merged.merge(aggregate(batch))
    assert same(merged.value(aggregation), aggregate(observations).value(aggregation))


@given(observations=observation_sets())
def test_every_aggregation_means_what_it_says(observations: list[Observation]) -> None:
    result = aggregate(observations)
    values = [o.value for o in observations]
    if not observations:
        assert all(result.value(a) is None for a in Aggregation)
        return
    exact = sum(Fraction(v) for v in values)
    assert result.value(Aggregation.COUNT) == len(values)
    assert result.value(Aggregation.MIN) == min(values)
    assert result.value(Aggregation.MAX) == max(values)
    latest = max(observations, key=lambda o: (o.observed_at_us, o.event_id))
    assert result.value(Aggregation.LATEST) == latest.value
    for aggregation, expected in ((Aggregation.SUM, exact), (Aggregation.AVG, exact / len(values))):
        try:
            correctly_rounded: float | None = float(expected)
        except OverflowError:
            correctly_rounded = None
        assert result.value(aggregation) == correctly_rounded


def test_the_sum_is_exact_where_floats_are_not() -> None:
    values = [1e16, 1.0, -1e16]
    assert sum(values) == 0.0  # left to right, the 1.0 is lost
    result = aggregate(Observation(f"e{i}", v, i) for i, v in enumerate(values))
    assert result.value(Aggregation.SUM) == 1.0
    assert result.value(Aggregation.AVG) == 1.0 / 3


def test_a_sum_beyond_float_range_has_no_value_rather_than_infinity() -> None:
    result = aggregate(Observation(f"e{i}", 1.7e308, i) for i in range(2))
    assert result.value(Aggregation.SUM) is None
    assert result.value(Aggregation.AVG) == 1.7e308
    assert result.value(Aggregation.MAX) == 1.7e308


def test_latest_breaks_time_ties_by_event_id_whatever_the_arrival_order() -> None:
    a, b = Observation("a", 1.0, 10), Observation("b", 2.0, 10)
    assert aggregate([a, b]).value(Aggregation.LATEST) == 2.0
    assert aggregate([b, a]).value(Aggregation.LATEST) == 2.0
    assert aggregate([Observation("c", 3.0, 9), b]).value(Aggregation.LATEST) == 2.0


def test_zero_has_one_sign() -> None:
    for order in ([0.0, -0.0], [-0.0, 0.0]):
        result = aggregate(Observation(f"e{i}", v, i) for i, v in enumerate(order))
        for aggregation in (Aggregation.MIN, Aggregation.MAX, Aggregation.LATEST):
            assert same(result.value(aggregation), 0.0)


@given(values=st.lists(finite, max_size=20))
def test_exact_sums_survive_storage(values: list[float]) -> None:
    total = ExactSum()
    for value in values:
        total = total.plus(ExactSum.of(value))
    assert ExactSum.decode(total.encode()) == total
    assert Fraction(total.mantissa) * Fraction(2) ** total.exponent == sum(map(Fraction, values))


def exact_value(total: ExactSum) -> Fraction:
    return Fraction(total.mantissa) * Fraction(2) ** total.exponent


extremes = st.sampled_from([5e-324, -5e-324, 1.7e308, 0.0, -0.0])


@given(values=st.lists(finite | extremes, max_size=40))
def test_a_sum_of_many_at_once_is_exact_and_spelled_as_one_by_one(values: list[float]) -> None:
    at_once = ExactSum.of_all(values)
    one_by_one = ExactSum()
    for value in values:
        one_by_one = one_by_one.plus(ExactSum.of(value))
    assert at_once == one_by_one
    assert exact_value(at_once) == sum(map(Fraction, values))


@pytest.mark.parametrize(
    "values",
    [
        [5e-324, 1.7e308],  # too far apart to scale together: summed by ratios
        [1e-300, 1e300, -1e300],
        [5e-324, 5e-324, -2.2250738585072014e-308],  # subnormals, scaled far up
        [2.0**1023, 2.0**1023, 1.0],
        [0.0, -0.0],
        [],
    ],
)
def test_a_sum_of_many_at_once_is_exact_at_float_range_limits(values: list[float]) -> None:
    assert exact_value(ExactSum.of_all(values)) == sum(map(Fraction, values))


def test_the_mean_is_correctly_rounded() -> None:
    values = [0.1, 0.2, 0.3]
    result = aggregate(Observation(f"e{i}", v, i) for i, v in enumerate(values))
    assert result.value(Aggregation.AVG) == float(sum(map(Fraction, values)) / 3)
    assert result.value(Aggregation.AVG) == pytest.approx(statistics.fmean(values))


def test_a_period_is_whole_utc_days_from_start_to_end_inclusive() -> None:
    start, end = period_bounds_us(date(2026, 7, 1), date(2026, 9, 30))
    assert start == epoch_us(datetime(2026, 7, 1, tzinfo=UTC))
    assert end == epoch_us(datetime(2026, 10, 1, tzinfo=UTC))
    assert epoch_us(datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == 1
