"""How a KPI's observations over an objective's period become a key result's value.

The scorer folds observations batch by batch, and a crash or a rebalance changes where batches
begin and end. The value must not depend on that: the same *set* of observations gives the same
value, whatever the batches or their order. So every part of the aggregate is order-free: the sum
is kept exactly (floating-point addition is not associative: 1e16 + 1 - 1e16 is 0 or 1 depending
on the order), `latest` is the greatest (observed_at, event_id), and min, max and count are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta

from domain.objective_events import Aggregation

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch: an exact, comparable integer for any aware datetime."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def period_bounds_us(period_start: date, period_end: date) -> tuple[int, int]:
    """An objective's period as [start, end) in epoch microseconds, UTC.

    The period's dates are whole UTC days: from period_start 00:00 to the end of period_end.
    """
    start = datetime.combine(period_start, time(), UTC)
    end = datetime.combine(period_end, time(), UTC) + timedelta(days=1)
    return epoch_us(start), epoch_us(end)


@dataclass(frozen=True, slots=True)
class Observation:
    """One accepted KPI measurement, reduced to what aggregation needs."""

    event_id: str
    value: float
    observed_at_us: int

    @property
    def order_key(self) -> tuple[int, str]:
        """Total order of a series: by time, then event id (never equal: ids are unique)."""
        return (self.observed_at_us, self.event_id)


@dataclass(frozen=True, slots=True)
class ExactSum:
    """The exact sum of floats as `mantissa * 2**exponent` (integers: addition is exact)."""

    mantissa: int = 0
    exponent: int = 0

    @staticmethod
    def of(value: float) -> ExactSum:
        numerator, denominator = value.as_integer_ratio()
        return ExactSum(numerator, 1 - denominator.bit_length())

    def plus(self, other: ExactSum) -> ExactSum:
        if other.mantissa == 0:
            return self
        if self.mantissa == 0:
            return other
        exponent = min(self.exponent, other.exponent)
        mantissa = (self.mantissa << (self.exponent - exponent)) + (
            other.mantissa << (other.exponent - exponent)
        )
        return ExactSum(mantissa, exponent)

    def divided_by(self, count: int) -> float | None:
        """The correctly rounded float of sum / count; None when it is beyond float range."""
        try:
            if self.exponent >= 0:
                return (self.mantissa << self.exponent) / count
            return self.mantissa / (count << -self.exponent)
        except OverflowError:
            return None

    def to_float(self) -> float | None:
        return self.divided_by(1)

    def encode(self) -> str:
        """Compact text for storage: hexadecimal mantissa, 'p', decimal exponent."""
        return f"{self.mantissa:x}p{self.exponent}"

    @staticmethod
    def decode(text: str) -> ExactSum:
        mantissa, _, exponent = text.partition("p")
        return ExactSum(int(mantissa, 16), int(exponent))


@dataclass(frozen=True, slots=True)
class SeriesAggregate:
    """What is known of a set of observations, enough for every aggregation, merge-able."""

    count: int = 0
    total: ExactSum = field(default_factory=ExactSum)
    minimum: float | None = None
    maximum: float | None = None
    latest: Observation | None = None

    def plus(self, observations: Iterable[Observation]) -> SeriesAggregate:
        """This aggregate with more observations (each must be new to it: ids are deduplicated
        before, so a resent event is never counted twice)."""
        count, total = self.count, self.total
        minimum, maximum, latest = self.minimum, self.maximum, self.latest
        for observation in observations:
            value = observation.value + 0.0  # -0.0 and 0.0 are one value: keep one spelling
            count += 1
            total = total.plus(ExactSum.of(value))
            minimum = value if minimum is None or value < minimum else minimum
            maximum = value if maximum is None or value > maximum else maximum
            if latest is None or observation.order_key > latest.order_key:
                latest = observation
        if count == self.count:
            return self
        return SeriesAggregate(count, total, minimum, maximum, latest)

    def merge(self, other: SeriesAggregate) -> SeriesAggregate:
        """The aggregate of two disjoint sets of observations.

        The scorer folds batches with `plus`; this stays because the property test
        (tests/unit/test_kpi_aggregation.py) merges per-batch aggregates to prove that how a
        stream is cut into batches never changes a value.
        """
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        latest = self.latest
        if other.latest is not None and (
            latest is None or other.latest.order_key > latest.order_key
        ):
            latest = other.latest
        return replace(
            self,
            count=self.count + other.count,
            total=self.total.plus(other.total),
            minimum=_smaller(self.minimum, other.minimum),
            maximum=_larger(self.maximum, other.maximum),
            latest=latest,
        )

    def value(self, aggregation: Aggregation) -> float | None:
        """The key result's value, or None when there is none (no observation, or beyond range).

        An empty set has no value for any aggregation, `count` and `sum` included: a key result
        keeps its last value rather than being reset to 0 by, say, a shortened period.
        """
        if self.count == 0:
            return None
        if aggregation is Aggregation.LATEST:
            assert self.latest is not None
            return self.latest.value + 0.0
        if aggregation is Aggregation.SUM:
            return _finite(self.total.to_float())
        if aggregation is Aggregation.COUNT:
            return float(self.count)
        if aggregation is Aggregation.AVG:
            return _finite(self.total.divided_by(self.count))
        if aggregation is Aggregation.MIN:
            return self.minimum
        if aggregation is Aggregation.MAX:
            return self.maximum
        raise AssertionError(f"unknown aggregation {aggregation!r}")  # pragma: no cover


def aggregate(observations: Iterable[Observation]) -> SeriesAggregate:
    return SeriesAggregate().plus(observations)


def _smaller(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _larger(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
