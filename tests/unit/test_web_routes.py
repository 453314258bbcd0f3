"""The dashboard routes' pure helpers: redirects stay on the dashboard, forms become commands,
moments get the browser's zone, and the overview's cache is keyed by what cannot change."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from domain.measures import KeyResultKind
from domain.objective import ObjectiveStatus
from projections.views import KeyResultRow, ObjectiveRow
from services.web.routes import OverviewCache, _parse_moment, draft_of, safe_next


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ui/objectives/1", "/ui/objectives/1"),
        ("https://evil.example/", "/ui/"),
        ("//evil.example/ui/", "/ui/"),
        ("/objectives", "/ui/"),
        (None, "/ui/"),
    ],
)
def test_redirects_after_sign_in_stay_on_the_dashboard(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_a_moment_gets_the_browsers_time_zone() -> None:
    paris_summer = _parse_moment("2026-08-01T12:00:00", "-120")  # getTimezoneOffset() in Paris
    assert paris_summer == datetime(2026, 8, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert _parse_moment("2026-08-01T12:00", None) == datetime(2026, 8, 1, 12, tzinfo=UTC)
    assert _parse_moment("2026-08-01T12:00:00+00:00", "-120") == datetime(
        2026, 8, 1, 12, tzinfo=UTC
    )
    assert _parse_moment("", "0") is None
    with pytest.raises(ValueError):
        _parse_moment("yesterday", "0")


def test_a_form_becomes_a_create_command_body() -> None:
    form = {
        "title": " Grow product X ",
        "owner": "alice",
        "team": "sales",
        "period_start": "2026-07-01",
        "period_end": "2026-09-30",
        "kr-0-title": "Increase sales of product X by 30 % by Q3",
        "kr-0-kind": "increase",
        "kr-0-metric": "units",
        "kr-0-baseline": "1 000",
        "kr-0-relative_target": "+30%",
        "kr-0-deadline": "2026-09-30",
        "kr-1-kind": "increase",  # an empty block: left out
        "kr-2-title": "Raise NPS",
        "kr-2-target": "eighty",  # not a number: kept as text for validation to name
        "csrf_token": "x",
    }
    draft = draft_of(form)
    assert draft["title"] == "Grow product X"
    assert draft["key_results"][0]["baseline"] == 1000.0
    assert draft["key_results"][0]["relative_target"] == "+30%"
    assert len(draft["key_results"]) == 2
    assert draft["key_results"][1]["target"] == "eighty"
    assert "csrf_token" not in draft


def rows(objective_id: uuid.UUID, title: str) -> list[KeyResultRow]:
    return [
        KeyResultRow(
            objective_id=objective_id,
            key_result_id=uuid.uuid4(),
            position=0,
            title=title,
            kind=KeyResultKind.INCREASE,
            metric="u",
            baseline=0,
            target=1,
            target_low=None,
            target_high=None,
            relative_target=None,
            deadline=None,
            weight=1,
        )
    ]


class CountingStore:
    def __init__(self) -> None:
        self.reads = 0
        self.title = "first"

    def key_results(self, objective_id: uuid.UUID) -> list[KeyResultRow]:
        self.reads += 1
        return rows(objective_id, self.title)


def objective(objective_id: uuid.UUID, version: int) -> ObjectiveRow:
    moment = datetime(2026, 7, 1, tzinfo=UTC)
    return ObjectiveRow(
        objective_id=objective_id,
        title="t",
        description="",
        owner="o",
        team="t",
        period_start=date(2026, 7, 1),
        period_end=date(2026, 9, 30),
        parent_id=None,
        status=ObjectiveStatus.ACTIVE,
        score=0,
        version=version,
        created_at=moment,
        updated_at=moment,
    )


def test_the_overview_reads_an_objectives_rows_once_per_version() -> None:
    cache, store, oid = OverviewCache(size=10), CountingStore(), uuid.uuid4()
    first = cache.key_results(store, objective(oid, 3))  # type: ignore[arg-type]
    again = cache.key_results(store, objective(oid, 3))  # type: ignore[arg-type]
    assert first is again and store.reads == 1
    store.title = "second"
    newer = cache.key_results(store, objective(oid, 4))  # type: ignore[arg-type]
    assert newer[0].title == "second" and store.reads == 2


def test_the_overview_cache_is_bounded() -> None:
    cache, store = OverviewCache(size=3), CountingStore()
    for _ in range(10):
        cache.key_results(store, objective(uuid.uuid4(), 1))  # type: ignore[arg-type]
    made = [cache.fragment(("k", i), lambda: "x") for i in range(10)]  # type: ignore[arg-type, return-value]
    assert len(made) == 10
    assert len(cache._rows) == 3 and len(cache._fragments) == 3
