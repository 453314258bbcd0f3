"""As-of queries over the event store, on SQLite and PostgreSQL: the exact past state and scores.

One objective is written under a fake clock, one decision per day: created with two key results
(NPS 62 -> 80, weight 1; sales 1000 -> +30 % = 1300, weight 2), activated, checked in, its sales
target moved to 1200, checked in again. Every expected score below is worked out by hand from the
formulas in `domain.scoring`. Snapshots every 2 versions and the aggregate cache are on, so an
as-of answer that came from a snapshot or from the cached present state would show.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

import services.audit.past_states
from domain.errors import NaiveDatetimeError
from events import commands as wire
from services.audit.past_states import ObjectiveAsOf, objective_as_of
from services.commands.application import OkrApplication
from services.commands.event_store import ObjectiveSnapshot
from services.http.app import create_app
from services.settings import Settings
from tests import seed
from tests.audit_support import DAY, START, FakeClock
from tests.auth_support import auth_headers

MOMENTS = [START + n * DAY for n in range(6)]
"""When versions 1..6 were written."""

NPS = seed.NPS.as_definition()
SALES = seed.SALES.as_definition(weight=2)
SALES_REVISED = SALES.model_copy(update={"relative_target": None, "target": 1200})


@dataclass(frozen=True)
class Expected:
    """What version N looked like: status, sales target, and per key result (score, attainment)."""

    status: str
    sales_target: float
    nps_current: float | None
    sales_current: float | None
    nps: tuple[float, float | None]
    sales: tuple[float, float | None]
    objective: float


EXPECTED = {
    # created: nothing measured yet, everything scores 0
    1: Expected("draft", 1300, None, None, (0, None), (0, None), 0),
    2: Expected("active", 1300, None, None, (0, None), (0, None), 0),
    # NPS 71: (71 - 62) / (80 - 62) = 50 %; objective (50 * 1 + 0 * 2) / 3
    3: Expected("active", 1300, 71, None, (50, 50), (0, None), 50 / 3),
    # sales 1150: (1150 - 1000) / (1300 - 1000) = 50 %; objective (50 + 50 * 2) / 3
    4: Expected("active", 1300, 71, 1150, (50, 50), (50, 50), 50),
    # target moved to 1200: 150 / 200 = 75 %; objective (50 + 75 * 2) / 3
    5: Expected("active", 1200, 71, 1150, (50, 50), (75, 75), 200 / 3),
    # NPS 89: 27 / 18 = 150 % attained, scored 100; objective (100 + 75 * 2) / 3
    6: Expected("active", 1200, 89, 1150, (100, 150), (75, 75), 250 / 3),
}
LAST = max(EXPECTED)


@dataclass(frozen=True)
class History:
    application: OkrApplication
    objective_id: UUID
    nps_id: UUID
    sales_id: UUID


@pytest.fixture
def history(store_settings: Settings) -> Iterator[History]:
    """On SQLite, then PostgreSQL, with snapshots every 2 versions."""
    clock = FakeClock()
    application = OkrApplication(
        store_settings.model_copy(update={"snapshot_interval": 2}), clock=clock
    )
    objective_id = uuid4()

    def run(moment: datetime, body: wire.CommandBody, reason: str | None = None) -> None:
        clock.now = moment
        result = application.handle(
            wire.Command(
                command_id=str(uuid4()),
                objective_id=objective_id,
                actor="alice",
                reason=reason,
                body=body,
            )
        )
        assert result.status == "accepted", result

    run(
        MOMENTS[0],
        wire.CreateObjective(
            title="Grow product X",
            owner="alice",
            team="sales",
            period_start=seed.QUARTER_START,
            period_end=seed.QUARTER_END,
            key_results=[NPS, SALES],
        ),
    )
    created = application.get_objective(objective_id)
    assert created is not None
    nps_id, sales_id = (kr.key_result_id for kr in created.key_results)
    run(MOMENTS[1], wire.ActivateObjective())
    run(MOMENTS[2], wire.CheckIn(key_result_id=nps_id, value=71))
    run(MOMENTS[3], wire.CheckIn(key_result_id=sales_id, value=1150))
    run(
        MOMENTS[4],
        wire.ReviseKeyResult(key_result_id=sales_id, key_result=SALES_REVISED),
        reason="Product X supply capped by the new factory's delay",
    )
    run(MOMENTS[5], wire.CheckIn(key_result_id=nps_id, value=89))
    snapshots = application.snapshots
    assert snapshots is not None
    assert [s.originator_version for s in snapshots.get(objective_id)] == [2, 4, 6]
    assert isinstance(next(iter(snapshots.get(objective_id))), ObjectiveSnapshot)
    yield History(application, objective_id, nps_id, sales_id)
    application.close()


def assert_state(found: ObjectiveAsOf | None, version: int, history: History) -> None:
    assert found is not None
    expected = EXPECTED[version]
    objective = found.objective
    assert (found.version, found.as_of) == (version, MOMENTS[version - 1])
    assert objective.status.value == expected.status
    nps, sales = found.key_results
    assert nps.key_result.key_result_id == history.nps_id
    assert sales.key_result.key_result_id == history.sales_id
    assert sales.key_result.spec.target == expected.sales_target
    assert (nps.key_result.current, sales.key_result.current) == (
        expected.nps_current,
        expected.sales_current,
    )
    assert (nps.score.score, nps.score.attainment) == expected.nps
    assert (sales.score.score, sales.score.attainment) == expected.sales
    assert found.score == expected.objective


# --- services.audit.past_states
# -----------------------------------------------------------------------------


def test_each_version_is_exactly_as_it_was(history: History) -> None:
    for version in EXPECTED:
        found = objective_as_of(history.application, history.objective_id, version=version)
        assert_state(found, version, history)


def test_a_version_that_never_existed_is_none(history: History) -> None:
    for version in (0, -1, LAST + 1, LAST + 100):
        assert objective_as_of(history.application, history.objective_id, version=version) is None
    assert objective_as_of(history.application, uuid4(), version=1) is None


def test_each_moment_gives_the_last_version_written_by_then(history: History) -> None:
    for version, moment in enumerate(MOMENTS, start=1):
        for at in (moment, moment + DAY / 2, moment + DAY - timedelta(microseconds=1)):
            found = objective_as_of(history.application, history.objective_id, at=at)
            assert_state(found, version, history)
    paris = timezone(timedelta(hours=2))
    in_paris = (MOMENTS[2] + timedelta(hours=1)).astimezone(paris)
    assert_state(
        objective_as_of(history.application, history.objective_id, at=in_paris), 3, history
    )
    far_future = MOMENTS[-1] + 1000 * DAY
    found = objective_as_of(history.application, history.objective_id, at=far_future)
    assert_state(found, LAST, history)


def test_reading_in_small_pages_changes_nothing(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.audit.past_states, "EVENTS_PAGE", 2)
    for version, moment in enumerate(MOMENTS, start=1):
        found = objective_as_of(history.application, history.objective_id, at=moment + DAY / 2)
        assert_state(found, version, history)


def test_before_creation_is_none(history: History) -> None:
    just_before = MOMENTS[0] - timedelta(microseconds=1)
    assert objective_as_of(history.application, history.objective_id, at=just_before) is None


def test_a_moment_must_be_aware_and_exactly_one_is_given(history: History) -> None:
    with pytest.raises(NaiveDatetimeError):
        objective_as_of(history.application, history.objective_id, at=datetime(2026, 7, 3, 12))
    with pytest.raises(TypeError):
        objective_as_of(history.application, history.objective_id)
    with pytest.raises(TypeError):
        objective_as_of(history.application, history.objective_id, at=MOMENTS[0], version=1)


# --- GET /objectives/{id}/as-of -------------------------------------------------------------------


async def get_as_of(history: History, params: dict[str, str]) -> httpx.Response:
    app = create_app(history.application.settings, history.application)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://okr", headers=auth_headers("reader")
    ) as client:
        return await client.get(f"/objectives/{history.objective_id}/as-of", params=params)


def assert_body(body: dict[str, Any], version: int, history: History) -> None:
    expected = EXPECTED[version]
    assert body["objective_id"] == str(history.objective_id)
    assert body["version"] == version
    assert datetime.fromisoformat(body["as_of"]) == MOMENTS[version - 1]
    assert body["status"] == expected.status
    assert body["title"] == "Grow product X"
    assert body["score"] == expected.objective
    nps, sales = body["key_results"]
    assert (nps["key_result_id"], sales["key_result_id"]) == (
        str(history.nps_id),
        str(history.sales_id),
    )
    assert sales["target"] == expected.sales_target
    assert (nps["current"], sales["current"]) == (expected.nps_current, expected.sales_current)
    assert (nps["score"], nps["attainment"]) == expected.nps
    assert (sales["score"], sales["attainment"]) == expected.sales


async def test_http_answers_each_version_and_moment(history: History) -> None:
    for version, moment in enumerate(MOMENTS, start=1):
        by_version = await get_as_of(history, {"version": str(version)})
        assert by_version.status_code == 200, by_version.text
        assert_body(by_version.json(), version, history)
        between = (moment + DAY / 2).isoformat()
        by_moment = await get_as_of(history, {"at": between})
        assert by_moment.status_code == 200, by_moment.text
        assert_body(by_moment.json(), version, history)


async def test_http_404_before_creation_and_beyond_the_last_version(history: History) -> None:
    before = (MOMENTS[0] - timedelta(seconds=1)).isoformat()
    for params in ({"at": before}, {"version": str(LAST + 1)}):
        response = await get_as_of(history, params)
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "objective_not_found"


async def test_http_422_unless_exactly_one_aware_moment_or_version(history: History) -> None:
    for params in (
        {},
        {"at": MOMENTS[2].isoformat(), "version": "3"},
        {"at": "2026-07-03T12:00:00"},
        {"at": "yesterday"},
        {"version": "0"},
    ):
        response = await get_as_of(history, params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["problems"], response.text


async def test_http_a_moment_without_a_time_zone_is_a_query_error_that_says_so(
    history: History,
) -> None:
    response = await get_as_of(history, {"at": "2026-08-01T12:00:00"})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_query"
    assert "`at`" in body["message"] and "time zone offset" in body["message"]
    [problem] = body["problems"]
    assert (problem["code"], problem["field"]) == ("timezone_aware", "query.at")
    assert "time zone offset" in problem["message"]
