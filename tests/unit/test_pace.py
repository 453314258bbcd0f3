"""Pace: score against the elapsed share of the period, and staleness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import (
    InvalidPaceSettingError,
    InvalidPeriodError,
    InvalidScoreError,
    NaiveDatetimeError,
    OkrError,
)
from domain.pace import (
    PaceStatus,
    PaceThresholds,
    expected_progress,
    final_status,
    pace_status,
)

START = datetime(2025, 7, 1, tzinfo=UTC)
END = START + timedelta(days=10)
HALFWAY = START + timedelta(days=5)
WEEK = timedelta(days=7)


def status_at(
    score: float,
    now: datetime,
    last_update: datetime | None = None,
    stale_after: timedelta = WEEK,
    thresholds: PaceThresholds = PaceThresholds(),
) -> PaceStatus:
    return pace_status(score, START, END, now, last_update, stale_after, thresholds)


# --- expected progress -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (START - timedelta(days=1), 0.0),
        (START, 0.0),
        (START + timedelta(days=1), 0.1),
        (HALFWAY, 0.5),
        (END, 1.0),
        (END + timedelta(days=30), 1.0),
    ],
)
def test_expected_progress_is_the_elapsed_fraction(now: datetime, expected: float) -> None:
    assert expected_progress(START, END, now) == pytest.approx(expected)


def test_expected_progress_compares_instants_across_timezones() -> None:
    paris_summer = timezone(timedelta(hours=2))
    assert expected_progress(START, END, HALFWAY.astimezone(paris_summer)) == 0.5


@pytest.mark.parametrize("which", ["start", "end", "now"])
def test_naive_datetimes_are_rejected(which: str) -> None:
    moments = {"start": START, "end": END, "now": HALFWAY}
    moments[which] = moments[which].replace(tzinfo=None)
    with pytest.raises(NaiveDatetimeError) as raised:
        expected_progress(moments["start"], moments["end"], moments["now"])
    assert isinstance(raised.value, OkrError)
    assert which in str(raised.value)


@pytest.mark.parametrize("end", [START, START - timedelta(seconds=1)])
def test_period_must_end_after_it_starts(end: datetime) -> None:
    with pytest.raises(InvalidPeriodError):
        expected_progress(START, end, HALFWAY)


@given(offsets=st.lists(st.integers(min_value=-20 * 86400, max_value=20 * 86400), min_size=2))
def test_expected_progress_stays_in_0_1_and_never_goes_back(offsets: list[int]) -> None:
    moments = [START + timedelta(seconds=offset) for offset in sorted(offsets)]
    progress = [expected_progress(START, END, moment) for moment in moments]
    assert all(0.0 <= value <= 1.0 for value in progress)
    assert progress == sorted(progress)


# --- status ------------------------------------------------------------------------------------


def test_not_started_before_the_period() -> None:
    assert status_at(0.0, START - timedelta(hours=1)) is PaceStatus.NOT_STARTED


@pytest.mark.parametrize(
    ("score", "status"),
    [
        (50.0, PaceStatus.ON_TRACK),  # ratio 1.0
        (35.0, PaceStatus.ON_TRACK),  # ratio 0.7, the boundary counts as on track
        (30.0, PaceStatus.AT_RISK),  # ratio 0.6
        (25.0, PaceStatus.AT_RISK),  # ratio 0.5, the boundary counts as at risk
        (20.0, PaceStatus.OFF_TRACK),  # ratio 0.4
        (0.0, PaceStatus.OFF_TRACK),
    ],
)
def test_status_from_score_over_expected_progress(score: float, status: PaceStatus) -> None:
    assert status_at(score, HALFWAY, last_update=HALFWAY) is status


def test_at_the_first_instant_nothing_is_expected_yet() -> None:
    assert status_at(0.0, START) is PaceStatus.ON_TRACK


def test_custom_thresholds() -> None:
    strict = PaceThresholds(on_track=0.9, at_risk=0.8)
    assert status_at(40.0, HALFWAY, HALFWAY, thresholds=strict) is PaceStatus.AT_RISK
    assert status_at(35.0, HALFWAY, HALFWAY, thresholds=strict) is PaceStatus.OFF_TRACK


def test_stale_when_the_last_update_is_too_old() -> None:
    now = START + timedelta(days=9)
    assert status_at(100.0, now, last_update=START + timedelta(days=1)) is PaceStatus.STALE


def test_exactly_stale_after_is_not_yet_stale() -> None:
    now = START + timedelta(days=9)
    assert status_at(100.0, now, last_update=now - WEEK) is PaceStatus.ON_TRACK


def test_never_updated_goes_stale_from_the_period_start() -> None:
    assert status_at(100.0, START + timedelta(days=6)) is PaceStatus.ON_TRACK
    assert status_at(100.0, START + timedelta(days=8)) is PaceStatus.STALE


def test_an_update_before_the_period_counts_from_the_period_start() -> None:
    created_long_before = START - timedelta(days=60)
    assert status_at(0.0, START + timedelta(days=1), created_long_before) is PaceStatus.OFF_TRACK


@pytest.mark.parametrize("score", [0.0, 10.0, 60.0, 80.0, 100.0])
@pytest.mark.parametrize("after", [END, END + timedelta(seconds=1), END + timedelta(days=30)])
def test_from_the_period_end_on_the_pace_has_ended(score: float, after: datetime) -> None:
    """A quarter that is over is no longer on track, whatever its score or its last update."""
    assert status_at(score, after, last_update=START) is PaceStatus.ENDED
    assert status_at(score, after, last_update=None) is PaceStatus.ENDED


def test_the_last_instant_of_the_period_still_has_a_pace() -> None:
    assert status_at(80.0, END - timedelta(microseconds=1), last_update=HALFWAY) is (
        PaceStatus.ON_TRACK
    )


def test_the_final_score_is_judged_against_full_progress() -> None:
    assert final_status(80.0) is PaceStatus.ON_TRACK
    assert final_status(60.0) is PaceStatus.AT_RISK
    assert final_status(10.0) is PaceStatus.OFF_TRACK
    assert final_status(50.0, PaceThresholds(on_track=0.5, at_risk=0.2)) is PaceStatus.ON_TRACK
    with pytest.raises(InvalidScoreError):
        final_status(101.0)


@pytest.mark.parametrize("score", [-0.1, 100.1, float("nan"), float("inf")])
def test_score_off_the_scale_is_rejected(score: float) -> None:
    with pytest.raises(InvalidScoreError):
        status_at(score, HALFWAY)


@pytest.mark.parametrize("stale_after", [timedelta(0), -WEEK])
def test_stale_after_must_be_positive(stale_after: timedelta) -> None:
    with pytest.raises(InvalidPaceSettingError):
        status_at(50.0, HALFWAY, stale_after=stale_after)


@pytest.mark.parametrize(
    ("on_track", "at_risk"), [(0.5, 0.7), (0.7, -0.1), (float("nan"), 0.5), (float("inf"), 0.5)]
)
def test_thresholds_must_be_ordered(on_track: float, at_risk: float) -> None:
    with pytest.raises(InvalidPaceSettingError):
        PaceThresholds(on_track=on_track, at_risk=at_risk)


def test_naive_last_update_is_rejected() -> None:
    with pytest.raises(NaiveDatetimeError):
        status_at(50.0, HALFWAY, last_update=HALFWAY.replace(tzinfo=None))


_RANK = {
    PaceStatus.OFF_TRACK: 0,
    PaceStatus.AT_RISK: 1,
    PaceStatus.ON_TRACK: 2,
    PaceStatus.ENDED: 3,  # the same for every score: never worse for a higher one
}


@given(
    low=st.floats(min_value=0, max_value=100),
    high=st.floats(min_value=0, max_value=100),
    elapsed=st.integers(min_value=0, max_value=20 * 86400),
)
def test_a_higher_score_never_gets_a_worse_status(low: float, high: float, elapsed: int) -> None:
    low, high = sorted((low, high))
    now = START + timedelta(seconds=elapsed)
    statuses = [status_at(score, now, last_update=now) for score in (low, high)]
    assert _RANK[statuses[0]] <= _RANK[statuses[1]]
