"""Charts drawn on the server as SVG: pure functions of their points, so they read without
JavaScript, print, and are unit-tested like any other function.

Each point carries the sentence that explains it (`label`): it becomes the point's SVG `<title>`
(a tooltip, and what a screen reader announces), so a score chart says what moved each score.
Coordinates are rounded to one decimal: the markup stays small and deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 200
MARGIN_LEFT = 40
MARGIN_RIGHT = 12
MARGIN_TOP = 12
MARGIN_BOTTOM = 26


@dataclass(frozen=True)
class ChartPoint:
    at: datetime
    value: float
    label: str
    """What this point is, in words: "check-in by alice: 1150 units -> 50.0"."""
    kind: str = ""
    """A CSS class for the point's marker (e.g. the cause: check_in, kpi)."""


@dataclass(frozen=True)
class Frame:
    """Maps values and moments to the drawing area."""

    start: datetime
    end: datetime
    low: float
    high: float
    width: int = WIDTH
    height: int = HEIGHT

    def x(self, moment: datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        share = (moment - self.start).total_seconds() / span
        return MARGIN_LEFT + min(max(share, 0.0), 1.0) * self.plot_width

    def y(self, value: float) -> float:
        span = (self.high - self.low) or 1.0
        share = (value - self.low) / span
        return MARGIN_TOP + (1 - min(max(share, 0.0), 1.0)) * self.plot_height

    @property
    def plot_width(self) -> float:
        return self.width - MARGIN_LEFT - MARGIN_RIGHT

    @property
    def plot_height(self) -> float:
        return self.height - MARGIN_TOP - MARGIN_BOTTOM


def _n(value: float) -> str:
    """A coordinate: one decimal, no trailing zero."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def nice_bounds(values: Sequence[float]) -> tuple[float, float]:
    """A value axis that holds every value with some room, on round numbers."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if low == high:
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    span = high - low
    step = 10 ** math.floor(math.log10(span))
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= 5:
            step *= factor
            break
    return math.floor(low / step) * step, math.ceil(high / step) * step


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    return [low + (high - low) * i / count for i in range(count + 1)]


def _fmt(value: float) -> str:
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}".replace(",", "\u202f")
    return f"{value:.3g}"


def step_chart(
    points: Sequence[ChartPoint],
    *,
    start: datetime,
    end: datetime,
    title: str,
    description: str,
    low: float = 0.0,
    high: float = 100.0,
    pace_line: bool = False,
    now: datetime | None = None,
    css_class: str = "chart",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Markup:
    """A value that holds until the next point (a score between two events), over a period.

    `pace_line` draws the expected progress, 0 at the start to 100 at the end, dashed; `now`
    marks today when it falls inside the period. Points outside [start, end] are drawn at the
    edge (a check-in after the quarter still shows), the axis says the period.
    """
    ordered = sorted(points, key=lambda p: p.at)
    if ordered:
        start = min(start, ordered[0].at)
        end = max(end, ordered[-1].at)
    if end <= start:
        end = start + timedelta(days=1)
    frame = Frame(start, end, low, high, width, height)
    parts = [_open(frame, title, description, css_class)]
    parts += _value_grid(frame, _ticks(low, high), suffix="")
    parts += _time_axis(frame)
    if pace_line:
        parts.append(
            f'<line class="pace" x1="{_n(frame.x(start))}" y1="{_n(frame.y(low))}" '
            f'x2="{_n(frame.x(end))}" y2="{_n(frame.y(high))}"><title>expected pace</title></line>'
        )
    if now is not None and start < now < end:
        x = _n(frame.x(now))
        parts.append(
            f'<line class="now" x1="{x}" y1="{MARGIN_TOP}" x2="{x}" '
            f'y2="{_n(MARGIN_TOP + frame.plot_height)}"><title>now</title></line>'
        )
    if ordered:
        path: list[str] = []
        previous_y: float | None = None
        for point in ordered:
            px, py = frame.x(point.at), frame.y(point.value)
            if previous_y is None:
                path.append(f"M{_n(px)} {_n(py)}")
            else:
                path.append(f"H{_n(px)}V{_n(py)}")
            previous_y = py
        last_x = frame.x(now) if now is not None and now < end else frame.x(end)
        path.append(f"H{_n(max(last_x, frame.x(ordered[-1].at)))}")
        parts.append(f'<path class="line" d="{"".join(path)}"/>')
        parts += [_marker(frame, point) for point in ordered]
    else:
        parts.append(_empty(frame))
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(
    points: Sequence[ChartPoint],
    *,
    title: str,
    description: str,
    css_class: str = "chart",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Markup:
    """Measurements joined point to point (a KPI's series), on an axis fitted to the values."""
    ordered = sorted(points, key=lambda p: p.at)
    if not ordered:
        frame = Frame(datetime(2000, 1, 1), datetime(2000, 1, 2), 0, 1, width, height)
        return Markup(_open(frame, title, description, css_class) + _empty(frame) + "</svg>")
    low, high = nice_bounds([p.value for p in ordered])
    start, end = ordered[0].at, ordered[-1].at
    if end <= start:
        end = start + timedelta(seconds=1)
    frame = Frame(start, end, low, high, width, height)
    parts = [_open(frame, title, description, css_class)]
    parts += _value_grid(frame, _ticks(low, high), suffix="")
    parts += _time_axis(frame)
    coordinates = " ".join(f"{_n(frame.x(p.at))},{_n(frame.y(p.value))}" for p in ordered)
    parts.append(f'<polyline class="line" points="{coordinates}"/>')
    parts += [_marker(frame, point) for point in ordered]
    parts.append("</svg>")
    return Markup("".join(parts))


def _open(frame: Frame, title: str, description: str, css_class: str) -> str:
    return (
        f'<svg class="{escape(css_class)}" viewBox="0 0 {frame.width} {frame.height}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title><desc>{escape(description)}</desc>"
    )


def _value_grid(frame: Frame, ticks: Sequence[float], suffix: str) -> list[str]:
    parts = []
    right = _n(frame.width - MARGIN_RIGHT)
    for value in ticks:
        y = _n(frame.y(value))
        parts.append(f'<line class="grid" x1="{MARGIN_LEFT}" y1="{y}" x2="{right}" y2="{y}"/>')
        parts.append(
            f'<text class="tick" x="{MARGIN_LEFT - 6}" y="{y}" text-anchor="end" '
            f'dominant-baseline="middle">{escape(_fmt(value))}{suffix}</text>'
        )
    return parts


def time_format(span: timedelta) -> str:
    """Days for a quarter, hours and minutes for a day, seconds for a demo's minute."""
    if span > timedelta(days=2):
        return "%Y-%m-%d"
    if span > timedelta(hours=1):
        return "%m-%d %H:%M"
    return "%H:%M:%S"


def _time_axis(frame: Frame) -> list[str]:
    y = _n(frame.height - 8)
    middle = frame.start + (frame.end - frame.start) / 2
    labels = [(frame.start, "start"), (middle, "middle"), (frame.end, "end")]
    shape = time_format(frame.end - frame.start)
    return [
        f'<text class="tick" x="{_n(frame.x(moment))}" y="{y}" '
        f'text-anchor="{where}">{moment.astimezone(UTC).strftime(shape)}</text>'
        for moment, where in labels
    ]


def _marker(frame: Frame, point: ChartPoint) -> str:
    kind = f" {escape(point.kind)}" if point.kind else ""
    return (
        f'<circle class="point{kind}" cx="{_n(frame.x(point.at))}" cy="{_n(frame.y(point.value))}"'
        f' r="4" tabindex="0"><title>{escape(point.label)}</title></circle>'
    )


def _empty(frame: Frame) -> str:
    return (
        f'<text class="empty" x="{_n(frame.width / 2)}" y="{_n(frame.height / 2)}" '
        'text-anchor="middle">no data yet</text>'
    )
