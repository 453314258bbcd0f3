"""How a key result is measured: its kind, metric, baseline, target and deadline.

Every field but the title is optional on purpose: a vague key result ("Increase lead generation")
must be representable so that the quality rules can reject it with reasons, instead of failing on
construction with a parser error a manager cannot act on.
"""

from __future__ import annotations

import math
import re
from datetime import date
from enum import StrEnum
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field

from domain.errors import InvalidRelativeTargetError

MILESTONE_BASELINE = 0.0
MILESTONE_DONE = 1.0


class KeyResultKind(StrEnum):
    """What "achieved" means for a key result; decides the scoring formula."""

    INCREASE = "increase"
    DECREASE = "decrease"
    RANGE = "range"
    AT_LEAST = "at_least"
    AT_MOST = "at_most"
    MILESTONE = "milestone"


KINDS_WITH_RELATIVE_TARGET = frozenset(
    {KeyResultKind.INCREASE, KeyResultKind.DECREASE, KeyResultKind.AT_LEAST, KeyResultKind.AT_MOST}
)


class KeyResultSpec(BaseModel):
    """The measurable definition of a key result, as the owner declared it."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    title: str = Field(description="What the key result says, e.g. 'Raise NPS to 80'.")
    kind: KeyResultKind = Field(
        default=KeyResultKind.INCREASE,
        description="How achievement is judged: move toward a target, land in a range, "
        "hold a level, or reach a milestone.",
    )
    metric: str | None = Field(
        default=None,
        description="Unit or metric name of the values, e.g. 'units', '%', 'NPS points', "
        "'minutes'. Not needed for milestones.",
    )
    baseline: float | None = Field(
        default=None,
        description="Value at the start, from which progress is measured. Milestones start at 0.",
    )
    target: float | None = Field(
        default=None,
        description="Value to reach (increase/decrease) or threshold to hold (at_least/at_most).",
    )
    target_low: float | None = Field(
        default=None, description="Lower bound of the range to land in (range only)."
    )
    target_high: float | None = Field(
        default=None, description="Upper bound of the range to land in (range only)."
    )
    relative_target: str | None = Field(
        default=None,
        description="Target relative to the baseline as the owner wrote it, e.g. '+30%', '-5%', "
        "'+1200'; resolved to an absolute target and kept for display.",
    )
    deadline: date | None = Field(default=None, description="Date by which the target is due.")
    weight: float = Field(
        default=1.0, gt=0, description="Weight of this key result in its objective's score."
    )

    def resolved(self) -> KeyResultSpec:
        """Fill the implicit values so scoring and display work on absolute numbers only.

        A relative target becomes ``target`` once a baseline is known (``relative_target`` stays for
        display); a milestone gets its implicit baseline 0 and target 1. Raises
        ``InvalidRelativeTargetError`` when the relative target cannot be read.
        """
        if self.kind is KeyResultKind.MILESTONE:
            return self._with_milestone_defaults()
        baseline, relative = self.baseline, self.relative_target
        if (
            self.target is not None
            or baseline is None
            or relative is None
            or self.kind not in KINDS_WITH_RELATIVE_TARGET
        ):
            return self
        return self.model_copy(update={"target": resolve_relative_target(baseline, relative)})

    def _with_milestone_defaults(self) -> KeyResultSpec:
        updates: dict[str, float] = {}
        if self.baseline is None:
            updates["baseline"] = MILESTONE_BASELINE
        if self.target is None:
            updates["target"] = MILESTONE_DONE
        return self.model_copy(update=updates) if updates else self


# Sign, then either a plain integer or one grouped by (non-breaking) spaces as French writes
# "1 200", then an optional decimal part with "." or ",", then an optional percent sign.
_MINUS_SIGNS = "-\u2212\u2013"  # hyphen-minus, unicode minus, en dash (what word processors type)
_GROUP_SPACES = " \u00a0\u202f"
_RELATIVE_PATTERN = re.compile(
    rf"""
    ^\s*
    (?P<sign>[{_MINUS_SIGNS}+])?\s*
    (?P<integer>[0-9]{{1,3}}(?:[{_GROUP_SPACES}][0-9]{{3}})+|[0-9]+)
    (?:(?P<separator>[.,])(?P<decimals>[0-9]+))?
    \s*(?P<percent>%)?\s*$
    """,
    re.VERBOSE,
)


def resolve_relative_target(baseline: float, relative: str) -> float:
    """Turn "+30%" / "-5 %" / "+1200" into an absolute target from ``baseline``.

    Percentages apply to the baseline's magnitude so that "+" always means "up", even for a
    negative baseline. Arithmetic is exact (fractions), so "-5%" of 8 is exactly 7.6.
    """
    if not math.isfinite(baseline):
        raise InvalidRelativeTargetError(f"baseline must be a finite number, got {baseline!r}")
    change, is_percent = _parse_relative(relative)
    exact_baseline = Fraction(baseline)
    delta = abs(exact_baseline) * change / 100 if is_percent else change
    return _finite_float(exact_baseline + delta, relative)


def _parse_relative(relative: str) -> tuple[Fraction, bool]:
    match = _RELATIVE_PATTERN.match(relative)
    if match is None:
        raise InvalidRelativeTargetError(
            f"cannot read relative target {relative!r}: expected a signed number with an optional"
            " percent sign, e.g. '+30%', '-5 %' or '+1200'"
        )
    decimals = match["decimals"]
    if match["separator"] == "," and len(decimals) == 3:
        raise InvalidRelativeTargetError(
            f"relative target {relative!r} is ambiguous: is ',' a decimal or a thousands"
            " separator? Write '1.200' or '1200'."
        )
    integer = re.sub(rf"[{_GROUP_SPACES}]", "", match["integer"])
    magnitude = Fraction(f"{integer}.{decimals}" if decimals else integer)
    negative = match["sign"] is not None and match["sign"] in _MINUS_SIGNS
    return (-magnitude if negative else magnitude), match["percent"] is not None


def _finite_float(value: Fraction, relative: str) -> float:
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise InvalidRelativeTargetError(f"relative target {relative!r} gives a target too large")
    return result
