"""What the pages show, computed from read-model rows: pure functions, no I/O.

Periods as quarters, the alignment tree, chart points that say what moved each score, and the
words for a cause or a pace. The routes (`services.web.routes`) read the rows and hand them here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from domain.pace import PaceStatus
from projections.views import AuditRow, KeyResultRow, ObjectiveRow, TimelineRow
from services.web.charts import ChartPoint
from services.web.i18n import Translate

MAX_POINTS = 160
"""Markers per chart: a KPI moving a key result all quarter makes thousands of changes."""


# --- periods --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    key: str
    """"2026-Q3", or "all"."""
    start: date | None
    end: date | None

    @property
    def label(self) -> str:
        return self.key.replace("-", " ") if self.key != "all" else "all"


def quarter_of(day: date) -> Period:
    quarter = (day.month - 1) // 3 + 1
    start = date(day.year, 3 * quarter - 2, 1)
    end_month = 3 * quarter
    next_start = date(day.year + (end_month == 12), end_month % 12 + 1, 1)
    return Period(f"{day.year}-Q{quarter}", start, next_start - timedelta(days=1))


def parse_period(key: str | None, today: date) -> Period:
    """ "YYYY-Qn" or "all"; anything else (or nothing) is the current quarter."""
    if key == "all":
        return Period("all", None, None)
    if key and len(key) == 7 and key[4:6] == "-Q" and key[:4].isdigit() and key[6] in "1234":
        year, quarter = int(key[:4]), int(key[6])
        if 1900 <= year <= 9998:
            return quarter_of(date(year, 3 * quarter - 2, 1))
    return quarter_of(today)


def period_choices(today: date, around: int = 4) -> list[Period]:
    """The quarters from a year before to a year after today's, newest first, then "all"."""
    current = quarter_of(today)
    assert current.start is not None
    quarters = []
    for shift in range(around, -around - 1, -1):
        month_index = current.start.year * 12 + current.start.month - 1 + 3 * shift
        quarters.append(quarter_of(date(month_index // 12, month_index % 12 + 1, 1)))
    return [*quarters, Period("all", None, None)]


# --- the alignment tree ---------------------------------------------------------------------------


@dataclass
class TreeNode:
    objective: ObjectiveRow
    key_results: list[KeyResultRow]
    pace: PaceStatus
    kr_paces: dict[UUID, PaceStatus]
    final_score: float | None
    children: list[TreeNode] = field(default_factory=list)
    parent_elsewhere: bool = False
    """Aligned to an objective the filters leave out."""


def alignment_tree(nodes: Sequence[TreeNode]) -> list[TreeNode]:
    """Children under their parent when both are shown; the rest are roots, in the given order."""
    by_id = {node.objective.objective_id: node for node in nodes}
    roots: list[TreeNode] = []
    for node in nodes:
        parent_id = node.objective.parent_id
        parent = by_id.get(parent_id) if parent_id is not None else None
        if parent is not None and not _is_descendant(parent, node, by_id):
            parent.children.append(node)
        else:
            node.parent_elsewhere = parent_id is not None
            roots.append(node)
    return roots


def _is_descendant(candidate: TreeNode, of: TreeNode, by_id: dict[UUID, TreeNode]) -> bool:
    """Guards against a cycle (which alignment rules forbid, but a tree must never loop)."""
    seen: set[UUID] = set()
    current: TreeNode | None = candidate
    while current is not None and current.objective.objective_id not in seen:
        if current is of:
            return True
        seen.add(current.objective.objective_id)
        parent_id = current.objective.parent_id
        current = by_id.get(parent_id) if parent_id is not None else None
    return False


def pace_counts(nodes: Iterable[TreeNode]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.pace.value] = counts.get(node.pace.value, 0) + 1
    return counts


# --- numbers and words ----------------------------------------------------------------------------


def number(value: float | None, digits: int = 2, lang: str = "en") -> str:
    """A value as people read it: no needless decimals, thin spaces between thousands, and a
    decimal comma in French."""
    if value is None:
        return "–"
    if not math.isfinite(value):
        return "∞" if value > 0 else "−∞"
    if value == int(value) and abs(value) < 1e15:
        text = f"{int(value):,}"
    else:
        text = f"{value:,.{digits}f}".rstrip("0").rstrip(".")
    text = text.replace(",", "\u202f").replace("-", "−")
    return text.replace(".", ",") if lang == "fr" else text


def percent(value: float | None, lang: str = "en") -> str:
    if value is None:
        return "–"
    return f"{number(round(value, 1), 1, lang)} %"


def width_class(score: float | None) -> str:
    """A bar's width as a CSS class (w0..w100): no inline style, so the pages keep a strict CSP."""
    if score is None or not math.isfinite(score):
        return "w0"
    return f"w{min(max(round(score), 0), 100)}"


def target_text(kr: KeyResultRow) -> str:
    if kr.kind == "range":
        return f"{number(kr.target_low)}–{number(kr.target_high)}"
    if kr.kind == "milestone":
        return "done"
    text = number(kr.target)
    prefix = {"at_least": "≥ ", "at_most": "≤ "}.get(str(kr.kind), "")
    return prefix + text


def cause_label(row: TimelineRow, _: Translate, kr_title: str | None = None) -> str:
    """What moved a score, in a sentence: who checked in what, or which KPI batch. A cause with
    no sentence here says who, and what its detail holds."""
    what = f" — {kr_title}" if kr_title else ""
    if row.cause == "check_in":
        note = row.detail.get("note") or ""
        text = _("check-in by {actor}: {value}").format(actor=row.actor, value=number(row.value))
        return text + (f" ({note})" if note else "") + what
    if row.cause == "kpi":
        return (
            _("KPI {kpi}: {count} events, last {event}").format(
                kpi=row.detail.get("kpi_key", "?"),
                count=row.detail.get("observations", "?"),
                event=row.detail.get("last_kpi_event_id", "?"),
            )
            + f" → {number(row.value)}"
            + what
        )
    words = {
        "created": _("created by {actor}"),
        "key_result_added": _("key result added by {actor}"),
        "key_result_revised": _("key result revised by {actor}"),
        "key_result_removed": _("key result removed by {actor}"),
        "closed": _("closed by {actor}"),
    }
    if row.cause in words:
        return words[row.cause].format(actor=row.actor) + what
    said = " · ".join(str(v) for v in row.detail.values() if v not in (None, ""))
    return (f"{row.actor}: {said}" if said else row.actor) + what


def objective_points(
    rows: Sequence[TimelineRow], titles: dict[UUID, str], _: Translate
) -> list[ChartPoint]:
    points = [
        ChartPoint(
            at=row.occurred_at,
            value=row.objective_score,
            label=f"v{row.version} {_day_time(row.occurred_at)} · "
            f"{number(row.objective_score, 1)} · {cause_label(row, _, _title(row, titles))}",
            kind=row.cause,
        )
        for row in rows
    ]
    return thin(points)


def _title(row: TimelineRow, titles: dict[UUID, str]) -> str | None:
    return titles.get(row.key_result_id) if row.key_result_id else None


def key_result_points(
    rows: Sequence[TimelineRow], key_result_id: UUID, _: Translate
) -> list[ChartPoint]:
    points = [
        ChartPoint(
            at=row.occurred_at,
            value=row.kr_score if row.kr_score is not None else 0.0,
            label=f"v{row.version} {_day_time(row.occurred_at)} · "
            f"{number(row.kr_score, 1)} · {cause_label(row, _)}",
            kind=row.cause,
        )
        for row in rows
        if row.key_result_id == key_result_id or row.key_result_id is None
    ]
    return thin(points)


def thin(points: Sequence[ChartPoint], limit: int = MAX_POINTS) -> list[ChartPoint]:
    """At most `limit` markers, evenly over time: the last point of each slice, saying how
    many changes it stands for. The first and the last points are always kept."""
    if len(points) <= limit:
        return list(points)
    ordered = sorted(points, key=lambda p: p.at)
    first, last = ordered[0].at, ordered[-1].at
    span = (last - first).total_seconds() or 1.0
    slices: dict[int, list[ChartPoint]] = {}
    for point in ordered:
        index = min(int((point.at - first).total_seconds() / span * (limit - 1)), limit - 1)
        slices.setdefault(index, []).append(point)
    kept = [ordered[0]]
    for index in sorted(slices):
        members = slices[index]
        newest = members[-1]
        if newest is ordered[0]:
            continue
        if len(members) > 1:
            newest = ChartPoint(
                newest.at, newest.value, f"{newest.label} (+{len(members) - 1})", newest.kind
            )
        kept.append(newest)
    return kept


def _day_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def change_text(value: object) -> str:
    """A before/after value of the decision history, short and readable."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, (list, dict)):
        import json

        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 200 else text[:199] + "…"
    return str(value)


# --- the decision history -------------------------------------------------------------------------


@dataclass(frozen=True)
class KpiRun:
    """Consecutive `KpiProgressRecorded` events shown as one line: a KPI stream makes hundreds."""

    count: int
    first_version: int
    last_version: int
    first_at: datetime
    last_at: datetime


def group_history(rows: Sequence[AuditRow], kpi_event: str = "KpiProgressRecorded") -> list[Any]:
    """The decisions, newest first, each run of KPI progress events folded into a `KpiRun`."""
    grouped: list[Any] = []
    for row in rows:
        if row.event_type == kpi_event and grouped and isinstance(grouped[-1], (KpiRun, AuditRow)):
            last = grouped[-1]
            if isinstance(last, AuditRow) and last.event_type == kpi_event:
                grouped[-1] = _run([last, row])
                continue
            if isinstance(last, KpiRun):
                grouped[-1] = KpiRun(
                    last.count + 1,
                    min(last.first_version, row.version),
                    max(last.last_version, row.version),
                    min(last.first_at, row.occurred_at),
                    max(last.last_at, row.occurred_at),
                )
                continue
        grouped.append(row)
    return grouped


def _run(rows: Sequence[AuditRow]) -> KpiRun:
    return KpiRun(
        len(rows),
        min(r.version for r in rows),
        max(r.version for r in rows),
        min(r.occurred_at for r in rows),
        max(r.occurred_at for r in rows),
    )


def field_label(name: str, titles: dict[UUID, str]) -> str:
    """`key_results[<id>].target` as people read it: the key result's title, then the field."""
    if name.startswith("key_results[") and "]" in name:
        inside, _, rest = name[len("key_results[") :].partition("]")
        try:
            title = titles.get(UUID(inside))
        except ValueError:
            title = None
        if title is not None:
            short = title if len(title) <= 40 else title[:39] + "…"
            return f"“{short}”{rest}"
    return name


def chart_window(
    period: tuple[datetime, datetime], first_event: datetime | None, now: datetime, span: str
) -> tuple[datetime, datetime, bool]:
    """The time axis of a score chart and whether the expected-pace line belongs on it.

    `period` shows the whole period (with the pace line); `activity` runs from the first event
    to now, for an objective whose changes all happened in the last hours. `auto` picks the
    period once the activity covers more than a day.
    """
    start, end = period
    if span == "auto":
        span = (
            "activity"
            if first_event is not None and now - first_event < timedelta(days=1)
            else "period"
        )
    if span == "activity" and first_event is not None:
        lasted = max(now - first_event, timedelta(seconds=10))
        return first_event - lasted * 0.03, now + lasted * 0.03, False
    return start, end, True
