"""The seed's business scenario, as `okr demo` plays it: objectives, key results, KPI streams.

The seed (`seed-okr-fr.txt`) names the business: sales of product X up 30 % by the quarter's end,
total churn down 5 %, NPS to 80, a purchase path of 3 to 4 minutes, online funnels examined for
blockages, customer service improved. Here each of them gets what makes it measurable (a metric,
a baseline, a target, the KPI that moves it and how), and each KPI a way to make up plausible,
drifting values. Data only: `services.devtools.demo` does the talking.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from events.commands import Aggregation


@dataclass(frozen=True)
class DemoKpi:
    """A KPI stream and how the demo makes up its values.

    A `level` (a rate, a score, a duration) drifts from `start` to `end` over the run, with
    gaussian `noise`. A `count` event carries how many were sold since the last one: about
    `end` in all over the run, whatever its length.
    """

    key: str
    unit: str
    shape: Literal["level", "count"]
    start: float
    end: float
    noise: float
    lowest: float
    highest: float
    decimals: int = 1
    dimensions: tuple[tuple[str, Sequence[str]], ...] = ()
    """Labels picked at random per event, e.g. (("channel", ("web", "app")),)."""

    def value(self, progress: float, events_in_run: int, rng: random.Random) -> float:
        if self.shape == "count":
            mean = self.end / max(events_in_run, 1)
            return float(max(0, round(rng.gauss(mean, mean * 0.4))))
        drifted = self.start + (self.end - self.start) * progress + rng.gauss(0, self.noise)
        return round(min(max(drifted, self.lowest), self.highest), self.decimals)

    def labels(self, rng: random.Random) -> dict[str, str]:
        return {name: rng.choice(values) for name, values in self.dimensions}


@dataclass(frozen=True)
class DemoKeyResult:
    definition: dict[str, Any]
    """The key result as `POST /objectives` takes it, without its deadline."""
    kpi: DemoKpi
    aggregation: Aggregation


@dataclass(frozen=True)
class DemoObjective:
    title: str
    description: str
    team: str
    owner: str
    key_results: tuple[DemoKeyResult, ...]

    def body(self, period: tuple[date, date]) -> dict[str, Any]:
        start, end = period
        return {
            "title": self.title,
            "description": self.description,
            "owner": self.owner,
            "team": self.team,
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
            "key_results": [
                {**kr.definition, "deadline": end.isoformat()} for kr in self.key_results
            ],
        }


WEB_OR_APP = (("channel", ("web", "app")),)
REGIONS = (("region", ("emea", "amer", "apac")),)

SALES = DemoKpi(
    "sales.product_x.units", "units", "count", 0, 1430, 0, 0, 1e6, 0, WEB_OR_APP + REGIONS
)
CHURN = DemoKpi("churn.rate", "%", "level", 8.0, 7.4, 0.05, 0, 100, 2)
NPS = DemoKpi("nps", "NPS points", "level", 62, 84, 1.5, -100, 100, 1)
CHECKOUT = DemoKpi(
    "checkout.duration_minutes", "minutes", "level", 7.0, 3.5, 0.2, 0.5, 30, 2, WEB_OR_APP
)
DROP_OFF = DemoKpi("funnel.drop_off_rate", "%", "level", 40, 23, 1.0, 0, 100, 1, WEB_OR_APP)
CSAT = DemoKpi("support.csat", "%", "level", 82, 94, 1.0, 0, 100, 1)
FIRST_RESPONSE = DemoKpi("support.first_response_hours", "hours", "level", 12, 3, 0.4, 0.1, 72, 2)

SCENARIO: tuple[DemoObjective, ...] = (
    DemoObjective(
        title="Grow online sales of product X",
        description="The seed's well-defined OKRs: more sales of product X, less churn.",
        team="sales",
        owner="sales-lead",
        key_results=(
            DemoKeyResult(
                {
                    "title": "Increase sales of product X by 30 %: 1,300 units this quarter "
                    "(1,000 last quarter)",
                    "kind": "increase",
                    "metric": "units",
                    "baseline": 0,
                    "target": 1300,
                },
                SALES,
                "sum",
            ),
            DemoKeyResult(
                {
                    "title": "Reduce total churn by 5 %",
                    "kind": "decrease",
                    "metric": "%",
                    "baseline": 8.0,
                    "relative_target": "-5%",
                },
                CHURN,
                "latest",
            ),
        ),
    ),
    DemoObjective(
        title="Examine online sales funnels to spot blockages and obstacles",
        description="Where buyers give up, and a purchase path short enough not to lose them.",
        team="growth",
        owner="growth-lead",
        key_results=(
            DemoKeyResult(
                {
                    "title": "Keep cart-to-checkout drop-off at 25 % or less",
                    "kind": "at_most",
                    "metric": "%",
                    "baseline": 40,
                    "target": 25,
                },
                DROP_OFF,
                "latest",
            ),
            DemoKeyResult(
                {
                    "title": "Cut the purchase path to 3-4 minutes, sign-up optional, "
                    "customer data kept",
                    "kind": "range",
                    "metric": "minutes",
                    "baseline": 7,
                    "target_low": 3,
                    "target_high": 4,
                },
                CHECKOUT,
                "latest",
            ),
        ),
    ),
    DemoObjective(
        title="Improve overall customer service quality",
        description="Better service, proven by what customers say and how fast we answer.",
        team="support",
        owner="support-lead",
        key_results=(
            DemoKeyResult(
                {
                    "title": "Raise NPS to 80 to prove the better service",
                    "kind": "increase",
                    "metric": "NPS points",
                    "baseline": 62,
                    "target": 80,
                },
                NPS,
                "avg",
            ),
            DemoKeyResult(
                {
                    "title": "Keep customer satisfaction at 90 % or more",
                    "kind": "at_least",
                    "metric": "%",
                    "baseline": 82,
                    "target": 90,
                },
                CSAT,
                "avg",
            ),
            DemoKeyResult(
                {
                    "title": "Answer customers within 2 hours (12 today)",
                    "kind": "decrease",
                    "metric": "hours",
                    "baseline": 12,
                    "target": 2,
                },
                FIRST_RESPONSE,
                "latest",
            ),
        ),
    ),
)


def demo_kpis(scenario: Sequence[DemoObjective] = SCENARIO) -> list[DemoKpi]:
    """Every KPI the scenario binds, once, in order of appearance."""
    found: dict[str, DemoKpi] = {}
    for objective in scenario:
        for key_result in objective.key_results:
            found.setdefault(key_result.kpi.key, key_result.kpi)
    return list(found.values())


def current_quarter(today: date) -> tuple[date, date]:
    """The calendar quarter `today` falls in, first and last day."""
    quarter = (today.month - 1) // 3
    start = date(today.year, 3 * quarter + 1, 1)
    if quarter == 3:
        next_start = date(today.year + 1, 1, 1)
    else:
        next_start = date(today.year, 3 * quarter + 4, 1)
    return start, next_start - timedelta(days=1)
