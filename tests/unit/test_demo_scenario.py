"""The demo's scenario: measurable as the quality rules see it, over the right quarter, and made-up
KPI values that stay plausible and drift the way the key results want."""

from __future__ import annotations

import random
from datetime import date

import pytest

from domain.measures import KeyResultSpec
from domain.quality import lint_objective
from services.devtools.demo_scenario import (
    SCENARIO,
    DemoKpi,
    DemoObjective,
    current_quarter,
    demo_kpis,
)


@pytest.mark.parametrize(
    ("today", "quarter"),
    [
        (date(2026, 1, 1), (date(2026, 1, 1), date(2026, 3, 31))),
        (date(2026, 3, 31), (date(2026, 1, 1), date(2026, 3, 31))),
        (date(2026, 4, 1), (date(2026, 4, 1), date(2026, 6, 30))),
        (date(2026, 8, 15), (date(2026, 7, 1), date(2026, 9, 30))),
        (date(2026, 12, 31), (date(2026, 10, 1), date(2026, 12, 31))),
        (date(2028, 2, 29), (date(2028, 1, 1), date(2028, 3, 31))),
    ],
)
def test_the_current_quarter_holds_today(today: date, quarter: tuple[date, date]) -> None:
    assert current_quarter(today) == quarter


@pytest.mark.parametrize("objective", SCENARIO, ids=lambda o: o.team)
def test_every_objective_of_the_scenario_passes_the_quality_rules_without_warnings(
    objective: DemoObjective,
) -> None:
    start, end = current_quarter(date(2026, 11, 26))
    specs = [KeyResultSpec(**kr.definition, deadline=end) for kr in objective.key_results]
    report = lint_objective(objective.title, start, end, specs)
    assert (report.problems, report.warnings) == ((), ())


def test_every_kpi_of_the_scenario_is_bound_and_the_keys_are_distinct() -> None:
    bound = [kr.kpi.key for objective in SCENARIO for kr in objective.key_results]
    assert sorted(bound) == sorted(kpi.key for kpi in demo_kpis())


@pytest.mark.parametrize("kpi", demo_kpis(), ids=lambda k: k.key)
def test_made_up_values_stay_within_bounds_and_drift_from_start_to_end(kpi: DemoKpi) -> None:
    rng = random.Random(7)
    events = 200
    values = [kpi.value(tick / (events - 1), events, rng) for tick in range(events)]
    assert all(kpi.lowest <= value <= kpi.highest for value in values)
    if kpi.shape == "count":
        assert sum(values) == pytest.approx(kpi.end, rel=0.1)
    else:
        first, last = values[:20], values[-20:]
        spread = abs(kpi.end - kpi.start) / 4
        assert sum(first) / 20 == pytest.approx(kpi.start, abs=spread)
        assert sum(last) / 20 == pytest.approx(kpi.end, abs=spread)
