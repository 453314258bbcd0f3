"""The OKR examples of the seed text (`seed-okr-fr.txt`), kept once for every layer's tests.

The seed's good key results are given the numbers that make them measurable; its bad ones stay as
vague as the seed wrote them, so that the quality rules have something to refuse. Each layer sends
them in its own form (a domain spec, a wire definition, a JSON body), built here from one record so
that the examples cannot drift apart between the unit, integration and end-to-end tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from domain.measures import KeyResultSpec
from events.commands import KeyResultDefinition

QUARTER_START = date(2026, 7, 1)
QUARTER_END = date(2026, 9, 30)
"""The seed's "by Q3": the period its key results are due in, unless a test picks another."""


@dataclass(frozen=True)
class SeedKeyResult:
    """One key result of the seed: its title in English, the seed's French words, its measure."""

    english: str
    french: str
    measure: Mapping[str, Any] = field(default_factory=dict)
    """Kind, metric, baseline and target as JSON values; empty for the unmeasurable examples."""

    def as_json(self, *, deadline: date = QUARTER_END, **changes: Any) -> dict[str, Any]:
        """The key result as an HTTP or Kafka body; a measurable one is due by `deadline`."""
        body: dict[str, Any] = {"title": self.english, **self.measure}
        if self.measure:
            body["deadline"] = deadline.isoformat()
        return body | changes

    def as_spec(self, *, deadline: date = QUARTER_END, **changes: Any) -> KeyResultSpec:
        """The key result as the domain holds it."""
        return KeyResultSpec.model_validate(self.as_json(deadline=deadline, **changes))

    def as_definition(self, *, deadline: date = QUARTER_END, **changes: Any) -> KeyResultDefinition:
        """The key result as a command carries it."""
        return KeyResultDefinition.model_validate(self.as_json(deadline=deadline, **changes))


SALES = SeedKeyResult(
    english="Increase sales of product X by 30 % by Q3",
    french="Augmentation des ventes du produit X de 30 % d\u2019ici le troisième trimestre",
    measure={"kind": "increase", "metric": "units", "baseline": 1000.0, "relative_target": "+30%"},
)
CHURN = SeedKeyResult(
    english="Reduce total churn by 5 %",
    french="Réduction du taux de désabonnement total de 5 %",
    measure={
        "kind": "decrease",
        "metric": "% monthly churn",
        "baseline": 8.0,
        "relative_target": "-5%",
    },
)
NPS = SeedKeyResult(
    english="Raise NPS to 80",
    french="Augmenter le score NPS à 80 pour prouver l\u2019amélioration du service client",
    measure={"kind": "increase", "metric": "NPS points", "baseline": 62.0, "target": 80.0},
)
PURCHASE_PATH = SeedKeyResult(
    english="Cut the purchase path to 3\u20134 minutes",  # en dash, as DESIGN.md writes it
    french="Réduire le chemin d\u2019achat à 3-4 minutes, en rendant l\u2019inscription de "
    "l\u2019utilisateur non obligatoire, tout en conservant les données des clients.",
    measure={
        "kind": "range",
        "metric": "minutes",
        "baseline": 7.0,
        "target_low": 3.0,
        "target_high": 4.0,
    },
)
GOOD = (SALES, CHURN, NPS, PURCHASE_PATH)
"""The seed's "correctly defined" key results and its business scenario's measurable ones."""

LEAD_GENERATION = SeedKeyResult(
    english="Increase lead generation",
    french="Augmentation de la génération de prospects",
)
CHURN_OBSTACLES = SeedKeyResult(
    english="Identify and eliminate obstacles contributing to churn",
    french="Identification et élimination des obstacles contribuant au désabonnement",
)
BAD = (LEAD_GENERATION, CHURN_OBSTACLES)
"""The seed's "not ideal" key results: no measurable target, no deadline."""

SCENARIO_ACTIVITIES = (
    "Examiner les entonnoirs de vente en ligne pour repérer les éventuels blocages et obstacles",
    "Améliorer la qualité globale du service client",
)
"""The seed's business scenario lines that are activities, not outcomes (in French only)."""


def unmeasurable_problems(index: int = 0) -> set[tuple[str, str]]:
    """(code, field) of what the quality rules find missing in a bad example at `index`."""
    where = f"key_results[{index}]"
    return {
        ("missing_target", f"{where}.target"),
        ("missing_metric", f"{where}.metric"),
        ("missing_baseline", f"{where}.baseline"),
        ("missing_deadline", f"{where}.deadline"),
    }
