"""What the dashboard pages compute from read-model rows: periods, the tree, chart points."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from domain.objective import ObjectiveStatus
from domain.pace import PaceStatus
from projections.views import AuditRow, ObjectiveRow, TimelineRow
from services.web import views
from services.web.charts import ChartPoint
from services.web.i18n import translator

_ = translator("en")
MOMENT = datetime(2026, 7, 10, tzinfo=UTC)


def objective(title: str, parent: uuid.UUID | None = None) -> ObjectiveRow:
    return ObjectiveRow(
        objective_id=uuid.uuid4(),
        title=title,
        description="",
        owner="alice",
        team="sales",
        period_start=date(2026, 7, 1),
        period_end=date(2026, 9, 30),
        parent_id=parent,
        status=ObjectiveStatus.ACTIVE,
        score=50.0,
        version=1,
        created_at=MOMENT,
        updated_at=MOMENT,
    )


def node(row: ObjectiveRow) -> views.TreeNode:
    return views.TreeNode(row, [], PaceStatus.ON_TRACK, {}, None)


def test_quarters() -> None:
    q3 = views.quarter_of(date(2026, 8, 15))
    assert (q3.key, q3.start, q3.end) == ("2026-Q3", date(2026, 7, 1), date(2026, 9, 30))
    q4 = views.quarter_of(date(2026, 12, 31))
    assert (q4.start, q4.end) == (date(2026, 10, 1), date(2026, 12, 31))
    assert views.parse_period("2025-Q1", date(2026, 8, 1)).start == date(2025, 1, 1)
    assert views.parse_period("nonsense", date(2026, 8, 1)).key == "2026-Q3"
    assert views.parse_period("all", date(2026, 8, 1)).start is None
    choices = [p.key for p in views.period_choices(date(2026, 8, 1), around=1)]
    assert choices == ["2026-Q4", "2026-Q3", "2026-Q2", "all"]


def test_the_alignment_tree_nests_children_under_their_shown_parent() -> None:
    company = objective("Company")
    sales = objective("Sales", parent=company.objective_id)
    deals = objective("Deals", parent=sales.objective_id)
    orphan = objective("Aligned elsewhere", parent=uuid.uuid4())
    roots = views.alignment_tree([node(r) for r in (company, sales, deals, orphan)])
    assert [r.objective.title for r in roots] == ["Company", "Aligned elsewhere"]
    assert [c.objective.title for c in roots[0].children] == ["Sales"]
    assert [c.objective.title for c in roots[0].children[0].children] == ["Deals"]
    assert roots[1].parent_elsewhere


def test_numbers_and_bars() -> None:
    assert views.number(1300.0) == "1\u202f300"
    assert views.number(7.41) == "7.41"
    assert views.number(None) == "–"
    assert views.percent(108.5) == "108.5 %"
    assert views.width_class(66.66) == "w67"
    assert views.width_class(140) == "w100"
    assert views.width_class(None) == "w0"


def timeline_row(cause: str, **detail: object) -> TimelineRow:
    return TimelineRow(
        objective_id=uuid.uuid4(),
        version=3,
        occurred_at=MOMENT,
        key_result_id=uuid.uuid4(),
        value=1150.0,
        kr_score=50.0,
        kr_attainment=50.0,
        objective_score=25.0,
        cause=cause,
        actor="alice",
        detail=dict(detail),
    )


def test_a_point_says_who_checked_in_or_which_kpi_batch_moved_it() -> None:
    check_in = timeline_row("check_in", note="July promo", confidence=0.8)
    assert views.cause_label(check_in, _) == "check-in by alice: 1\u202f150 (July promo)"
    kpi = timeline_row("kpi", kpi_key="sales.units", observations=12, last_kpi_event_id="ev-99")
    assert views.cause_label(kpi, _) == "KPI sales.units: 12 events, last ev-99 → 1\u202f150"
    french = views.cause_label(kpi, translator("fr"))
    assert french.startswith("KPI sales.units : 12 événements, dernier ev-99")


def test_a_comment_says_who_said_what_in_any_language() -> None:
    comment = timeline_row("comment", text="Survey slips a week")
    assert views.cause_label(comment, _, "Raise NPS") == "alice: Survey slips a week — Raise NPS"
    assert views.cause_label(comment, translator("fr")) == "alice: Survey slips a week"


def test_thinning_keeps_the_ends_and_counts_what_it_folds() -> None:
    many = [ChartPoint(MOMENT + timedelta(seconds=i), float(i % 100), f"p{i}") for i in range(2000)]
    kept = views.thin(many, limit=100)
    assert len(kept) <= 101
    assert kept[0] is many[0] and kept[-1].at == many[-1].at
    assert any("(+" in point.label for point in kept)
    assert views.thin(many[:10], limit=100) == many[:10]


def audit(version: int, event_type: str) -> AuditRow:
    return AuditRow(
        objective_id=uuid.uuid4(),
        version=version,
        occurred_at=MOMENT + timedelta(seconds=version),
        event_type=event_type,
        actor="okr-scorer",
        command_id="c",
        reason=None,
        changes=(),
    )


def test_runs_of_kpi_progress_fold_into_one_line() -> None:
    rows = [audit(v, "KpiProgressRecorded") for v in (9, 8, 7)] + [
        audit(6, "KeyResultTargetChanged")
    ]
    rows += [audit(5, "KpiProgressRecorded"), audit(4, "ObjectiveActivated")]
    grouped = views.group_history(rows)
    assert isinstance(grouped[0], views.KpiRun)
    assert (grouped[0].count, grouped[0].first_version, grouped[0].last_version) == (3, 7, 9)
    assert [getattr(g, "version", None) for g in grouped[1:]] == [6, 5, 4]


def test_field_names_use_the_key_results_titles() -> None:
    kr = uuid.uuid4()
    assert views.field_label(f"key_results[{kr}].target", {kr: "Raise NPS to 80"}) == (
        "“Raise NPS to 80”.target"
    )
    assert views.field_label("title", {}) == "title"


def test_the_chart_window() -> None:
    period = (datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC))
    now = datetime(2026, 8, 1, tzinfo=UTC)
    assert views.chart_window(period, now - timedelta(days=20), now, "auto") == (*period, True)
    start, end, pace = views.chart_window(period, now - timedelta(minutes=5), now, "auto")
    assert start < now - timedelta(minutes=5) and end > now and not pace
    assert views.chart_window(period, now - timedelta(minutes=5), now, "period")[2]
