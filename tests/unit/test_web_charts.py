"""The dashboard's SVG charts: pure functions, readable without JavaScript."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from services.web.charts import ChartPoint, line_chart, nice_bounds, step_chart, time_format

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 7, 1, tzinfo=UTC)
END = datetime(2026, 10, 1, tzinfo=UTC)


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def points() -> list[ChartPoint]:
    return [
        ChartPoint(START + timedelta(days=10), 0.0, "created by alice", "created"),
        ChartPoint(START + timedelta(days=20), 50.0, "check-in by alice: 1150", "check_in"),
        ChartPoint(START + timedelta(days=40), 80.0, "KPI sales: 3 events, last e-3", "kpi"),
    ]


def test_every_point_says_what_moved_it() -> None:
    svg = parse(step_chart(points(), start=START, end=END, title="Score", description="d"))
    circles = svg.findall(f"{SVG}circle")
    assert [c.find(f"{SVG}title").text for c in circles] == [  # type: ignore[union-attr]
        "created by alice",
        "check-in by alice: 1150",
        "KPI sales: 3 events, last e-3",
    ]
    assert [c.get("class") for c in circles] == ["point created", "point check_in", "point kpi"]
    assert all(c.get("tabindex") == "0" for c in circles), "keyboard users reach each point"


def test_the_chart_is_an_accessible_image_with_a_title() -> None:
    svg = parse(step_chart(points(), start=START, end=END, title="Score of X", description="why"))
    assert svg.get("role") == "img"
    assert svg.get("aria-label") == "Score of X"
    assert svg.find(f"{SVG}title").text == "Score of X"  # type: ignore[union-attr]
    assert svg.find(f"{SVG}desc").text == "why"  # type: ignore[union-attr]


def test_scores_map_to_the_plot_and_hold_until_the_next_point() -> None:
    svg = parse(step_chart(points(), start=START, end=END, title="t", description="d"))
    ys = [float(c.get("cy", "nan")) for c in svg.findall(f"{SVG}circle")]
    assert ys[0] > ys[1] > ys[2], "a higher score is drawn higher"
    path = svg.find(f"{SVG}path")
    assert path is not None and path.get("d", "").startswith("M")
    assert "H" in path.get("d", "") and "V" in path.get("d", ""), "steps, not slopes"


def test_the_pace_line_and_now() -> None:
    now = START + timedelta(days=45)
    svg = parse(
        step_chart(
            points(), start=START, end=END, title="t", description="d", pace_line=True, now=now
        )
    )
    classes = [line.get("class") for line in svg.findall(f"{SVG}line")]
    assert "pace" in classes and "now" in classes


def test_text_is_escaped() -> None:
    hostile = [ChartPoint(START, 10.0, "<script>alert(1)</script> & co")]
    markup = str(step_chart(hostile, start=START, end=END, title="<b>", description="\"'"))
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    parse(markup)  # still well-formed XML


def test_no_points_says_so() -> None:
    svg = parse(step_chart([], start=START, end=END, title="t", description="d"))
    assert svg.find(f"{SVG}text[@class='empty']") is not None


def test_a_kpi_series_fits_its_values() -> None:
    series = [ChartPoint(START + timedelta(hours=i), 1000 + 37 * i, f"e-{i}") for i in range(10)]
    svg = parse(line_chart(series, title="sales", description="d"))
    polyline = svg.find(f"{SVG}polyline")
    assert polyline is not None and len(polyline.get("points", "").split()) == 10
    ys = [float(c.get("cy", "nan")) for c in svg.findall(f"{SVG}circle")]
    assert ys == sorted(ys, reverse=True), "rising values are drawn rising"


@pytest.mark.parametrize(
    ("values", "bounds"),
    [([0.0, 100.0], (0.0, 100.0)), ([1003.0, 1377.0], (1000.0, 1400.0)), ([5.0, 5.0], (4.5, 5.5))],
)
def test_nice_bounds(values: list[float], bounds: tuple[float, float]) -> None:
    assert nice_bounds(values) == pytest.approx(bounds)


def test_time_labels_follow_the_span() -> None:
    assert time_format(timedelta(days=90)) == "%Y-%m-%d"
    assert time_format(timedelta(hours=5)) == "%m-%d %H:%M"
    assert time_format(timedelta(minutes=3)) == "%H:%M:%S"


def test_the_markup_is_deterministic() -> None:
    first = step_chart(points(), start=START, end=END, title="t", description="d")
    assert first == step_chart(points(), start=START, end=END, title="t", description="d")
