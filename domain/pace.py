"""Whether a key result is on pace: its score compared with the share of its period already spent.

The clock is always passed in (``now``), never read here, so a status can be recomputed for any
past moment, which is what an audit replay needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from domain.errors import (
    InvalidPaceSettingError,
    InvalidPeriodError,
    InvalidScoreError,
    NaiveDatetimeError,
)


class PaceStatus(StrEnum):
    """Where a key result stands against the time already spent."""

    NOT_STARTED = "not_started"  # the period has not begun: nothing can be expected yet
    ON_TRACK = "on_track"
    AT_RISK = "at_risk"
    OFF_TRACK = "off_track"
    STALE = "stale"  # no update for too long while the period runs: the score cannot be trusted
    ENDED = "ended"  # the period is over: there is no pace left to keep, only a final score


@dataclass(frozen=True)
class PaceThresholds:
    """Minimum ratio of score to expected progress for each status (0.7 = 70 % of the pace)."""

    on_track: float = 0.7
    at_risk: float = 0.5

    def __post_init__(self) -> None:
        finite = math.isfinite(self.on_track) and math.isfinite(self.at_risk)
        if not finite or not 0 <= self.at_risk <= self.on_track:
            raise InvalidPaceSettingError(
                "pace thresholds need 0 <= at_risk <= on_track, got "
                f"at_risk={self.at_risk!r}, on_track={self.on_track!r}"
            )


def expected_progress(start: datetime, end: datetime, now: datetime) -> float:
    """Fraction of the period elapsed at ``now``: 0 before the start, 1 from the end on."""
    _require_period(start, end)
    _require_aware(now, "now")
    fraction = (now - start) / (end - start)
    return min(max(fraction, 0.0), 1.0)


def pace_status(
    score: float,
    start: datetime,
    end: datetime,
    now: datetime,
    last_update: datetime | None,
    stale_after: timedelta,
    thresholds: PaceThresholds = PaceThresholds(),
) -> PaceStatus:
    """Status of a key result scoring ``score`` (0..100) at ``now``.

    Staleness wins over the score while the period runs: a figure nobody updated for longer than
    ``stale_after`` says nothing about the pace. Its clock starts at the period start at the
    earliest, so a key result defined before its quarter is not stale on the first day. From the
    end on the status is ``ENDED``: "on track" for a quarter that is over would promise a future
    it no longer has; the final score says how it went (``final_status`` judges it).
    """
    _require_score(score)
    if stale_after <= timedelta(0):
        raise InvalidPaceSettingError(f"stale_after must be positive, got {stale_after}")
    if last_update is not None:
        _require_aware(last_update, "last_update")
    expected = expected_progress(start, end, now)
    if now < start:
        return PaceStatus.NOT_STARTED
    if now >= end:
        return PaceStatus.ENDED
    if _is_stale(start, now, last_update, stale_after):
        return PaceStatus.STALE
    return _status_from_ratio(score / 100, expected, thresholds)


def final_status(score: float, thresholds: PaceThresholds = PaceThresholds()) -> PaceStatus:
    """How an ended period went: its final score judged against full progress (on track, at risk
    or off track), for a report that wants a verdict beside the score."""
    _require_score(score)
    return _status_from_ratio(score / 100, 1.0, thresholds)


def _is_stale(
    start: datetime, now: datetime, last_update: datetime | None, stale_after: timedelta
) -> bool:
    last_sign_of_life = start if last_update is None else max(last_update, start)
    return now - last_sign_of_life > stale_after


def _status_from_ratio(progress: float, expected: float, thresholds: PaceThresholds) -> PaceStatus:
    # progress / expected >= threshold, multiplied out so an expected progress of 0 (the very
    # first instant of the period) puts everyone on track instead of dividing by zero.
    if progress >= thresholds.on_track * expected:
        return PaceStatus.ON_TRACK
    if progress >= thresholds.at_risk * expected:
        return PaceStatus.AT_RISK
    return PaceStatus.OFF_TRACK


def _require_period(start: datetime, end: datetime) -> None:
    _require_aware(start, "start")
    _require_aware(end, "end")
    if end <= start:
        raise InvalidPeriodError(f"the period must end after it starts: {start} .. {end}")


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise NaiveDatetimeError(f"{name} must carry a timezone, got naive {moment.isoformat()}")


def _require_score(score: float) -> None:
    if not math.isfinite(score) or not 0 <= score <= 100:
        raise InvalidScoreError(f"score must lie in 0..100, got {score!r}")
