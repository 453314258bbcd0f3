"""How a KPI's observations over an objective's period become a key result's value.

The scorer folds observations batch by batch, and a crash or a rebalance changes where batches
begin and end. The value must not depend on that: the same *set* of observations gives the same
value, whatever the batches or their order. So every part of the aggregate is order-free: the sum
is kept exactly (floating-point addition is not associative: 1e16 + 1 - 1e16 is 0 or 1 depending
on the order), `latest` is the greatest (observed_at, event_id), and min, max and count are.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from itertools import repeat
from operator import attrgetter
from typing import Any, Protocol

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


class PickledByFields:
    """Pickled as its class and its fields' values, in order. A frozen dataclass with slots
    otherwise pickles through a dictionary of its state per object, and the scorer's worker
    process sends thousands of these a batch (`services.scoring.worker`)."""

    __slots__ = ()

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        names: tuple[str, ...] = self.__slots__
        return (type(self), tuple(getattr(self, name) for name in names))


@dataclass(frozen=True, slots=True)
class Observation(PickledByFields):
    """One accepted KPI measurement, reduced to what aggregation needs."""

    event_id: str
    value: float
    observed_at_us: int

    @property
    def order_key(self) -> tuple[int, str]:
        """Total order of a series: by time, then event id (never equal: ids are unique)."""
        return (self.observed_at_us, self.event_id)


class Observed(Protocol):
    """Anything with an observation's three fields (the scorer folds its parsed records as is)."""

    @property
    def event_id(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def observed_at_us(self) -> int: ...


ORDER_KEY = attrgetter("observed_at_us", "event_id")
"""`Observation.order_key` of any `Observed`, without a Python call per item."""
VALUE = attrgetter("value")


@dataclass(frozen=True, slots=True)
class ExactSum(PickledByFields):
    """The exact sum of floats as `mantissa * 2**exponent` (integers: addition is exact)."""

    mantissa: int = 0
    exponent: int = 0

    @staticmethod
    def of(value: float) -> ExactSum:
        numerator, denominator = value.as_integer_ratio()
        return _canonical(numerator, 1 - denominator.bit_length())

    def plus(self, other: ExactSum) -> ExactSum:
        if other.mantissa == 0:
            return self
        if self.mantissa == 0:
            return other
        exponent = min(self.exponent, other.exponent)
        mantissa = (self.mantissa << (self.exponent - exponent)) + (
            other.mantissa << (other.exponent - exponent)
        )
        return _canonical(mantissa, exponent)

    @staticmethod
    def of_all(values: Sequence[float]) -> ExactSum:
        """The exact sum of many floats at once: every float is n / 2**k, so all of them are
        integers over the largest 2**k, and integer addition is exact.

        Scaling by a power of two is exact in floating point while nothing overflows, so when
        the values span less than float's range the integers come from `ldexp` and `int`, in
        C, in about half the time of one `as_integer_ratio` per value (the scorer sums every
        observation of a batch)."""
        if not values:
            return ExactSum()
        smallest = min(map(abs, values))
        if not smallest:  # zeros add nothing, and have no lowest bit
            values = [value for value in values if value]
            if not values:
                return ExactSum()
            smallest = min(map(abs, values))
        # A float's lowest bit is at most 52 places below its leading one, 2**exponent, so
        # scaled by 2**shift every value is an integer; the largest must stay below 2**1024.
        shift = 53 - math.frexp(smallest)[1]
        if math.frexp(max(map(abs, values)))[1] + shift > sys.float_info.max_exp:
            return ExactSum._of_ratios(values)
        return _canonical(sum(map(int, map(math.ldexp, values, repeat(shift)))), -shift)

    @staticmethod
    def _of_ratios(values: Sequence[float]) -> ExactSum:
        """`of_all` for values too far apart to be scaled together as floats."""
        ratios = [value.as_integer_ratio() for value in values]
        shift = max(denominator for _, denominator in ratios).bit_length() - 1
        mantissa = sum(
            numerator << (shift - denominator.bit_length() + 1) for numerator, denominator in ratios
        )
        return _canonical(mantissa, -shift)

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


def _canonical(mantissa: int, exponent: int) -> ExactSum:
    """One spelling per number (an odd mantissa, or 0p0), so equal sums compare equal however
    they were added up."""
    if mantissa == 0:
        return ExactSum()
    zeros = (mantissa & -mantissa).bit_length() - 1
    return ExactSum(mantissa >> zeros, exponent + zeros)


@dataclass(frozen=True, slots=True)
class SeriesAggregate(PickledByFields):
    """What is known of a set of observations, enough for every aggregation, merge-able."""

    count: int = 0
    total: ExactSum = field(default_factory=ExactSum)
    minimum: float | None = None
    maximum: float | None = None
    latest: Observation | None = None

    def plus(self, observations: Iterable[Observed]) -> SeriesAggregate:
        """This aggregate with more observations (each must be new to it: ids are deduplicated
        before, so a resent event is never counted twice). One pass per statistic, in C where
        it can be: the scorer adds tens of thousands of observations a batch."""
        added = list(observations)
        if not added:
            return self
        values = list(map(VALUE, added))
        newest = max(added, key=ORDER_KEY)
        latest = self.latest
        if latest is None or ORDER_KEY(newest) > latest.order_key:
            latest = (
                newest
                if isinstance(newest, Observation)
                else Observation(newest.event_id, newest.value, newest.observed_at_us)
            )
        return SeriesAggregate(
            self.count + len(added),
            self.total.plus(ExactSum.of_all(values)),
            _smaller(self.minimum, min(values) + 0.0),  # + 0.0: one spelling of zero
            _larger(self.maximum, max(values) + 0.0),
            latest,
        )

    def merge(self, other: SeriesAggregate) -> SeriesAggregate:
        """The aggregate of two disjoint sets of observations: the scorer adds a batch's
        aggregate (computed once per period, shared by the key results bound to the KPI) to each
        binding's. The property test (tests/unit/test_kpi_aggregation.py) merges per-batch
        aggregates to prove that how a stream is cut into batches never changes a value.
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


def aggregate(observations: Iterable[Observed]) -> SeriesAggregate:
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
