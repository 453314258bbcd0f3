"""Quality rules for objectives and key results, from the seed's good and bad examples.

A key result that cannot be measured is rejected: "Increase lead generation" has no target, no
metric, no baseline and no deadline, so no one could ever say whether it was achieved. Every
problem is reported at once, so the owner fixes the key result in one pass. Smells, such as
activity wording ("Identify and eliminate obstacles...") or too many key results, are only
warnings: they make a weaker OKR, not an unmeasurable one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date

from domain.errors import InvalidRelativeTargetError, QualityRejectedError
from domain.measures import (
    KINDS_WITH_RELATIVE_TARGET,
    MILESTONE_BASELINE,
    MILESTONE_DONE,
    KeyResultKind,
    KeyResultSpec,
    resolve_relative_target,
)

MAX_KEY_RESULTS = 5

# Verbs (English and French, as in the seed) that describe doing something rather than the outcome
# it should produce. Inflections are matched so "Identification", "improving", "éliminer" count.
_ACTIVITY_PATTERNS = (
    r"identif\w*",
    r"examin\w*",
    r"review\w*",
    r"explor\w*",
    r"analy[sz]\w*",
    r"investigat\w*",
    r"look(?:s|ing)? into",
    r"work(?:s|ing)? on",
    r"help(?:s|ed|ing)?",
    r"support(?:s|ed|ing)?",
    r"assist\w*",
    r"[eé]limin\w*",
    r"improv\w*",
    r"enhanc\w*",
    r"optimi[sz]\w*",
    r"research\w*",
    r"stud(?:y|ies|ying)",
    r"assess\w*",
    r"[eé]valu\w*",
    r"monitor\w*",
    r"tr(?:y|ies|ying)",
    r"am[eé]lior\w*",
    r"[eé]tudi\w*",
    r"aider",
    r"soutenir",
    r"travaill\w* sur",
    r"revoir",
    r"surveill\w*",
)
_ACTIVITY_WORDING = re.compile(rf"\b(?:{'|'.join(_ACTIVITY_PATTERNS)})\b", re.IGNORECASE)
_ANY_NUMBER = re.compile(r"\d")


@dataclass(frozen=True)
class QualityIssue:
    """One finding, phrased so that the owner of the OKR knows what to fix."""

    code: str  # stable machine-readable reason, e.g. "missing_target"
    field: str  # where the issue is, e.g. "key_results[0].target"
    message: str  # a sentence a manager understands


@dataclass(frozen=True)
class QualityReport:
    """Problems block creation; warnings are advice shown next to an accepted OKR."""

    problems: tuple[QualityIssue, ...] = ()
    warnings: tuple[QualityIssue, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def merged_with(self, other: QualityReport) -> QualityReport:
        return QualityReport(
            problems=self.problems + other.problems, warnings=self.warnings + other.warnings
        )


def require_quality(report: QualityReport) -> None:
    """Raise ``QualityRejectedError`` listing every problem unless the report is clean of them."""
    if not report.ok:
        raise QualityRejectedError(report)


def lint_objective(
    title: str,
    period_start: date | None,
    period_end: date | None,
    key_results: Sequence[KeyResultSpec],
) -> QualityReport:
    """Check an objective and all its key results, reporting every issue found."""
    report = QualityReport(
        problems=tuple(_objective_problems(title, period_start, period_end, key_results)),
        warnings=tuple(_objective_warnings(period_start, period_end, key_results)),
    )
    for index, spec in enumerate(key_results):
        report = report.merged_with(lint_key_result(spec, index, period_end))
    return report


def lint_key_result(
    spec: KeyResultSpec, index: int, period_end: date | None = None
) -> QualityReport:
    """Check one key result; ``index`` locates it in its objective for the issue fields."""
    where = f"key_results[{index}]"
    return QualityReport(
        problems=tuple(_key_result_problems(spec, where)),
        warnings=tuple(_key_result_warnings(spec, where, period_end)),
    )


# --- objective ---------------------------------------------------------------------------------


def _objective_problems(
    title: str,
    period_start: date | None,
    period_end: date | None,
    key_results: Sequence[KeyResultSpec],
) -> Iterator[QualityIssue]:
    if not title.strip():
        yield QualityIssue("missing_title", "title", "The objective needs a title.")
    if period_start is None:
        yield QualityIssue(
            "missing_period", "period_start", "The objective needs a period start date."
        )
    if period_end is None:
        yield QualityIssue("missing_period", "period_end", "The objective needs a period end date.")
    if period_start is not None and period_end is not None and period_start >= period_end:
        yield QualityIssue(
            "invalid_period",
            "period_end",
            f"The period ends ({period_end}) before it starts ({period_start}), or on that day.",
        )
    if not key_results:
        yield QualityIssue(
            "no_key_results",
            "key_results",
            "The objective needs at least one key result saying how its success is measured.",
        )


def _objective_warnings(
    period_start: date | None, period_end: date | None, key_results: Sequence[KeyResultSpec]
) -> Iterator[QualityIssue]:
    if len(key_results) > MAX_KEY_RESULTS:
        yield QualityIssue(
            "too_many_key_results",
            "key_results",
            f"The objective has {len(key_results)} key results; more than {MAX_KEY_RESULTS} "
            "dilutes focus. Keep the few that matter most.",
        )
    if _longer_than_a_year(period_start, period_end):
        yield QualityIssue(
            "long_period",
            "period_end",
            "The period is longer than a year; OKRs work best over a quarter or so.",
        )


def _longer_than_a_year(period_start: date | None, period_end: date | None) -> bool:
    if period_start is None or period_end is None:
        return False
    return period_end > _one_year_after(period_start)


def _one_year_after(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28)


# --- key result: problems (not measurable) -----------------------------------------------------


def _key_result_problems(spec: KeyResultSpec, where: str) -> Iterator[QualityIssue]:
    if not spec.title.strip():
        yield QualityIssue("missing_title", f"{where}.title", "The key result needs a title.")
    yield from _target_problems(spec, where)
    if spec.kind is not KeyResultKind.MILESTONE:
        yield from _metric_and_baseline_problems(spec, where)
    if spec.deadline is None:
        yield QualityIssue(
            "missing_deadline",
            f"{where}.deadline",
            "The key result has no deadline: say by when the target must be reached.",
        )


def _target_problems(spec: KeyResultSpec, where: str) -> Iterator[QualityIssue]:
    if spec.kind is KeyResultKind.RANGE:
        yield from _range_problems(spec, where)
    elif spec.kind in KINDS_WITH_RELATIVE_TARGET:
        yield from _relative_target_problems(spec, where)
        if spec.target is None and spec.relative_target is None:
            yield _missing_target(where)
        elif spec.target is None and spec.baseline is None:
            yield QualityIssue(
                "missing_target",
                f"{where}.target",
                f"The relative target {spec.relative_target!r} only becomes a target once the "
                "baseline is known: give the starting value.",
            )
        yield from _no_change_problems(spec, where)


def _missing_target(where: str) -> QualityIssue:
    return QualityIssue(
        "missing_target",
        f"{where}.target",
        "The key result has no measurable target: say which value counts as success, "
        "e.g. '+30 %' or 'NPS 80'.",
    )


def _range_problems(spec: KeyResultSpec, where: str) -> Iterator[QualityIssue]:
    for bound, value in (("target_low", spec.target_low), ("target_high", spec.target_high)):
        if value is None:
            side = "lower" if bound == "target_low" else "upper"
            yield QualityIssue(
                "missing_target",
                f"{where}.{bound}",
                f"The range has no {side} bound: give both ends of the range to land in.",
            )
    low, high = spec.target_low, spec.target_high
    if low is not None and high is not None and low > high:
        yield QualityIssue(
            "invalid_range",
            f"{where}.target_low",
            f"The range's lower bound ({low:g}) is above its upper bound ({high:g}).",
        )


def _relative_target_problems(spec: KeyResultSpec, where: str) -> Iterator[QualityIssue]:
    if spec.relative_target is None:
        return
    try:
        resolve_relative_target(0.0, spec.relative_target)
    except InvalidRelativeTargetError:
        yield QualityIssue(
            "invalid_relative_target",
            f"{where}.relative_target",
            f"The relative target {spec.relative_target!r} cannot be read: write it like "
            "'+30%', '-5 %' or '+1200'.",
        )


def _no_change_problems(spec: KeyResultSpec, where: str) -> Iterator[QualityIssue]:
    if spec.kind not in (KeyResultKind.INCREASE, KeyResultKind.DECREASE):
        return  # holding a level the baseline already meets is a legitimate key result
    target = _resolved_target(spec)
    if target is not None and spec.baseline is not None and target == spec.baseline:
        yield QualityIssue(
            "target_equals_baseline",
            f"{where}.target",
            f"The target equals the baseline ({target:g}): reaching it would change nothing.",
        )


def _metric_and_baseline_problems(spec: KeyResultSpec, where: str) -> Iterator[QualityIssue]:
    if spec.metric is None or not spec.metric.strip():
        yield QualityIssue(
            "missing_metric",
            f"{where}.metric",
            "The key result has no metric or unit: say what is counted, e.g. 'units sold', "
            "'%', 'NPS points' or 'minutes'.",
        )
    if spec.baseline is None:
        yield QualityIssue(
            "missing_baseline",
            f"{where}.baseline",
            "The key result has no baseline: give the starting value progress is measured from.",
        )


def _resolved_target(spec: KeyResultSpec) -> float | None:
    try:
        return spec.resolved().target
    except InvalidRelativeTargetError:
        return None  # already reported as an unreadable relative target


# --- key result: warnings (smells) -------------------------------------------------------------


def _key_result_warnings(
    spec: KeyResultSpec, where: str, period_end: date | None
) -> Iterator[QualityIssue]:
    activity = _ACTIVITY_WORDING.search(spec.title)
    if activity is not None and _ANY_NUMBER.search(spec.title) is None:
        yield QualityIssue(
            "activity_wording",
            f"{where}.title",
            f"'{activity.group(0)}' describes an activity, not a result, and the title has no "
            "number: state the outcome and how much of it, e.g. 'Reduce churn by 5 %'.",
        )
    if period_end is not None and spec.deadline is not None and spec.deadline > period_end:
        yield QualityIssue(
            "deadline_after_period",
            f"{where}.deadline",
            f"The deadline ({spec.deadline}) falls after the objective's period ends "
            f"({period_end}).",
        )
    yield from _direction_warnings(spec, where)
    yield from _relative_mismatch_warnings(spec, where)
    yield from _milestone_warnings(spec, where)


def _direction_warnings(spec: KeyResultSpec, where: str) -> Iterator[QualityIssue]:
    target = _resolved_target(spec)
    if target is None or spec.baseline is None:
        return
    if spec.kind is KeyResultKind.INCREASE and target < spec.baseline:
        wrong_way = "an increase, but its target is below the baseline"
    elif spec.kind is KeyResultKind.DECREASE and target > spec.baseline:
        wrong_way = "a decrease, but its target is above the baseline"
    else:
        return
    yield QualityIssue(
        "direction_mismatch",
        f"{where}.kind",
        f"The key result is {wrong_way} ({target:g} vs {spec.baseline:g}).",
    )


def _relative_mismatch_warnings(spec: KeyResultSpec, where: str) -> Iterator[QualityIssue]:
    if spec.target is None or spec.baseline is None or spec.relative_target is None:
        return
    try:
        implied = resolve_relative_target(spec.baseline, spec.relative_target)
    except InvalidRelativeTargetError:
        return  # already reported as a problem
    if not math.isclose(implied, spec.target, rel_tol=1e-9, abs_tol=1e-12):
        yield QualityIssue(
            "relative_target_mismatch",
            f"{where}.relative_target",
            f"The relative target {spec.relative_target!r} means {implied:g}, but the target "
            f"says {spec.target:g}; the target wins, the displayed text is misleading.",
        )


def _milestone_warnings(spec: KeyResultSpec, where: str) -> Iterator[QualityIssue]:
    if spec.kind is not KeyResultKind.MILESTONE:
        return
    unusual_baseline = spec.baseline not in (None, MILESTONE_BASELINE)
    unusual_target = spec.target not in (None, MILESTONE_DONE)
    if unusual_baseline or unusual_target:
        yield QualityIssue(
            "milestone_values_ignored",
            f"{where}.target",
            "A milestone is simply done (1) or not (0); its baseline and target are ignored.",
        )
