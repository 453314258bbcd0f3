"""The read API's pace: a period that is over says `ended`, with the score it ended with."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest

from domain.objective import ObjectiveStatus
from domain.pace import PaceStatus
from projections.views import ObjectiveRow
from services.http.reads import final_score_of, objective_view
from services.settings import Settings

Q3 = (date(2026, 7, 1), date(2026, 9, 30))


def row(score: float, final: float | None = None, status: str = "active") -> ObjectiveRow:
    moment = datetime(2026, 7, 1, tzinfo=UTC)
    return ObjectiveRow(
        objective_id=uuid.uuid4(),
        title="Grow product X",
        description="",
        owner="alice",
        team="sales",
        period_start=Q3[0],
        period_end=Q3[1],
        parent_id=None,
        status=ObjectiveStatus(status),
        score=score,
        final_score=final,
        version=3,
        created_at=moment,
        updated_at=moment,
    )


def test_an_objective_whose_quarter_ended_no_longer_says_on_track() -> None:
    after = datetime(2026, 10, 2, tzinfo=UTC)
    view = objective_view(Settings(), row(80.0), [], [], after)
    assert view.pace is PaceStatus.ENDED
    assert view.final_score == 80.0


def test_the_last_day_of_the_period_still_runs() -> None:
    last_day = datetime(2026, 9, 30, 23, 0, tzinfo=UTC)
    view = objective_view(Settings(), row(95.0), [], [], last_day)
    assert view.pace is PaceStatus.STALE  # never updated: stale while it runs, not ended
    assert view.final_score is None


def test_a_closed_objective_shows_its_frozen_score() -> None:
    during = datetime(2026, 8, 15, tzinfo=UTC)
    closed = row(70.0, final=64.0, status="closed")
    assert objective_view(Settings(), closed, [], [], during).final_score == 64.0


@pytest.mark.parametrize(
    ("pace", "expected"), [(PaceStatus.ENDED, 42.0), (PaceStatus.ON_TRACK, None)]
)
def test_final_score_only_once_over(pace: PaceStatus, expected: float | None) -> None:
    assert final_score_of(row(42.0), pace) == expected
