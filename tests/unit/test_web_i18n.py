"""English and French: every sentence of the pages has its French, and the quality rules speak
French about the seed's French examples, judging them as the seed does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from domain.quality import QualityIssue, lint_key_result, lint_objective
from services.web.french import FRENCH, QUALITY_FR
from services.web.i18n import negotiate, quality_message, translator
from services.web.routes import draft_of, lint_draft
from tests import seed

WEB = Path(__file__).resolve().parents[2] / "services" / "web"
CALL = re.compile(r'_\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+|\'(?:[^\'\\]|\\.)*\')\s*\)')


def sentences() -> set[str]:
    found = set()
    for path in [*WEB.glob("templates/*.html"), *WEB.glob("*.py")]:
        for match in CALL.finditer(path.read_text()):
            parts = re.findall(r'"((?:[^"\\]|\\.)*)"|\'((?:[^\'\\]|\\.)*)\'', match.group(1))
            text = "".join(a or b for a, b in parts)
            if text != "...":
                found.add(text.replace("\\'", "'"))
    return found


def test_every_sentence_of_the_pages_has_its_french() -> None:
    found = sentences()
    assert len(found) > 150
    assert sorted(found - FRENCH.keys()) == []


def test_placeholders_survive_translation() -> None:
    for english, french in FRENCH.items():
        assert set(re.findall(r"\{\w+\}", english)) == set(re.findall(r"\{\w+\}", french)), english


@pytest.mark.parametrize(
    ("header", "cookie", "expected"),
    [
        ("fr-FR,fr;q=0.9,en;q=0.8", None, "fr"),
        ("en-GB,en;q=0.9,fr;q=0.8", None, "en"),
        ("de-DE,de;q=0.9,fr;q=0.5", None, "fr"),
        ("de-DE", None, "en"),
        (None, None, "en"),
        ("fr;q=0, en;q=0.1", None, "en"),
        ("fr-FR", "en", "en"),
        ("en", "fr", "fr"),
        ("en", "xx", "en"),
    ],
)
def test_language_from_the_browser_or_the_switch(
    header: str | None, cookie: str | None, expected: str
) -> None:
    assert negotiate(header, cookie) == expected


def test_a_missing_translation_shows_the_english() -> None:
    assert translator("fr")("Not a sentence we know") == "Not a sentence we know"
    assert translator("en")("Overview") == "Overview"
    assert translator("fr")("Overview") == "Vue d’ensemble"


def issues_of_many_drafts() -> list[QualityIssue]:
    """Drafts that together raise every quality rule the domain has."""
    from datetime import date

    from domain.measures import KeyResultSpec

    q_start, q_end = date(2026, 7, 1), date(2026, 9, 30)
    specs = [
        KeyResultSpec(title=""),
        KeyResultSpec(title="Review the funnel", kind="increase", relative_target="+30%"),
        KeyResultSpec(title="Range", kind="range", metric="min", baseline=7, target_low=5),
        KeyResultSpec(title="Range", kind="range", metric="min", baseline=7, target_high=5),
        KeyResultSpec(
            title="Range", kind="range", metric="min", baseline=7, target_low=5, target_high=4
        ),
        KeyResultSpec(title="x", metric="u", baseline=1, relative_target="lots"),
        KeyResultSpec(title="x", metric="u", baseline=1, target=1, deadline=date(2027, 1, 1)),
        KeyResultSpec(title="x", metric="u", baseline=5, target=1),
        KeyResultSpec(title="x", kind="decrease", metric="u", baseline=1, target=5),
        KeyResultSpec(title="x", metric="u", baseline=100, target=200, relative_target="+50%"),
        KeyResultSpec(title="x", kind="milestone", baseline=3, target=9),
    ]
    report = lint_objective("", None, None, [])
    report = report.merged_with(lint_objective("t", q_end, q_start, specs))
    report = report.merged_with(lint_objective("t", q_start, date(2028, 1, 1), specs[:1]))
    return [*report.problems, *report.warnings]


def test_every_quality_rule_has_its_french() -> None:
    issues = issues_of_many_drafts()
    assert {i.code for i in issues} == set(QUALITY_FR), "a rule without a French message"
    untranslated = [
        i.message for i in issues if quality_message(i.code, i.message, "fr") == i.message
    ]
    assert untranslated == []


def french_draft(example: seed.SeedKeyResult) -> dict[str, str]:
    form = {
        "title": "Objectif du trimestre",
        "owner": "alice",
        "team": "ventes",
        "period_start": seed.QUARTER_START.isoformat(),
        "period_end": seed.QUARTER_END.isoformat(),
        "kr-0-title": example.french,
    }
    if example.measure:
        form["kr-0-deadline"] = seed.QUARTER_END.isoformat()
    for name, value in example.measure.items():
        form[f"kr-0-{name}"] = str(value)
    return form


async def lint_french(example: seed.SeedKeyResult) -> Any:
    return await lint_draft(draft_of(french_draft(example)), "fr")


@pytest.mark.parametrize("example", [seed.SALES, seed.CHURN], ids=lambda e: e.english)
async def test_the_seeds_well_defined_french_examples_pass_without_warnings(
    example: seed.SeedKeyResult,
) -> None:
    report = await lint_french(example)
    assert (report.ok, report.problems, report.warnings) == (True, [], [])


async def test_lead_generation_lacks_a_measurable_expectation_said_in_french() -> None:
    report = await lint_french(seed.LEAD_GENERATION)
    assert not report.ok
    by_code = {p["code"]: p for p in report.problems}
    assert set(by_code) == {
        "missing_target",
        "missing_metric",
        "missing_baseline",
        "missing_deadline",
    }
    assert by_code["missing_target"]["field"] == "key_results[0].target"
    assert "attente mesurable" in by_code["missing_target"]["message"]
    assert report.warnings == []


async def test_identifying_and_eliminating_obstacles_is_an_activity_said_in_french() -> None:
    report = await lint_french(seed.CHURN_OBSTACLES)
    assert [w["code"] for w in report.warnings] == ["activity_wording"]
    message = report.warnings[0]["message"]
    assert message.startswith("« Identification » décrit une activité, pas un résultat")


def test_the_domain_judges_the_french_examples_as_the_english_ones() -> None:
    for example in (seed.SALES, seed.CHURN):
        spec = example.as_spec(title=example.french)
        assert lint_key_result(spec, 0, seed.QUARTER_END).warnings == ()
    bad = lint_key_result(seed.CHURN_OBSTACLES.as_spec(title=seed.CHURN_OBSTACLES.french), 0)
    assert [w.code for w in bad.warnings] == ["activity_wording"]
