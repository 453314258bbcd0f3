"""`okr demo` against `okr serve`, both real processes: what a new user runs to see the point.

The promise: against a running service, the demo creates the seed's scenario over the current
quarter (every key result measurable, active, bound to a KPI), publishes KPI events, and within
seconds the read API shows scores above 0 and the demo's KPIs with what they counted.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from services.devtools.demo_scenario import SCENARIO, current_quarter, demo_kpis
from services.settings import Settings
from tests.auth_support import auth_headers
from tests.e2e.conftest import RunningService, environment_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEMO_TIMEOUT_S = 180.0
DEADLINE_S = 90.0
DEMO_KPIS = {kpi.key for kpi in demo_kpis()}


def read_api(http: httpx.Client) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every objective's full view, and every KPI by key, as the read API has them now."""
    listing = http.get("/objectives")
    assert listing.status_code == 200, listing.text
    views = []
    for row in listing.json()["items"]:
        view = http.get(f"/objectives/{row['objective_id']}")
        assert view.status_code == 200, view.text
        views.append(view.json())
    kpis = http.get("/kpis")
    assert kpis.status_code == 200, kpis.text
    return views, {item["kpi_key"]: item for item in kpis.json()["items"]}


def test_the_demo_moves_key_results_of_a_running_service(
    service: RunningService, settings: Settings
) -> None:
    port = urlsplit(service.url).port
    assert port is not None
    demo = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "demo", "--seconds", "5"],
        env=environment_for(settings, port),
        capture_output=True,
        timeout=DEMO_TIMEOUT_S,
    )
    output = demo.stdout.decode()
    assert demo.returncode == 0, f"{output}\n{demo.stderr.decode()}\n{service.log.read_text()}"

    deadline = time.monotonic() + DEADLINE_S
    with httpx.Client(base_url=service.url, timeout=10, headers=auth_headers("reader")) as http:
        while True:
            views, kpis = read_api(http)
            scores = [kr["score"] for view in views for kr in view["key_results"]]
            if any(score > 0 for score in scores) and kpis.keys() >= DEMO_KPIS:
                break
            assert time.monotonic() < deadline, f"no score moved: {scores}, KPIs {sorted(kpis)}"
            time.sleep(0.2)

    assert sorted(view["objective"]["title"] for view in views) == sorted(
        objective.title for objective in SCENARIO
    )
    quarter = current_quarter(datetime.now(UTC).date())
    for view in views:
        objective = view["objective"]
        assert objective["objective_id"] in output  # the demo says where to look
        assert objective["status"] == "active"
        assert (objective["period_start"], objective["period_end"]) == tuple(
            day.isoformat() for day in quarter
        )
        assert {kr["kpi_key"] for kr in view["key_results"]} <= DEMO_KPIS
    assert "editor key for okr-demo added" in output
    with httpx.Client(base_url=service.url, timeout=10, headers=auth_headers("reader")) as http:
        creators = {
            http.get(f"/objectives/{view['objective']['objective_id']}/history").json()[0]["actor"]
            for view in views
        }
    assert creators == {"okr-demo"}, "the demo writes with its own key"
    for key in DEMO_KPIS:
        assert kpis[key]["accepted"] > 0 and kpis[key]["key_results"] >= 1, kpis[key]
    assert "/kpis" in output
