"""The read side through the real broker: HTTP writes, relay, okr.events, projector, HTTP reads.

Reads ask for the version their write returned (`min_version`), so no test sleeps or polls.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
import pytest

from services.http.app import create_app
from services.kafka.admin import ensure_topics
from services.projector_service import run_projector_job
from services.relay.publisher import run_relay
from services.settings import Settings
from tests import seed
from tests.auth_support import PRINCIPALS, auth_headers

SALES_KR = seed.SALES.as_json()
NPS_KR = seed.NPS.as_json()


def objective(title: str, **overrides: Any) -> dict[str, Any]:
    return {
        "title": title,
        "owner": "alice",
        "team": "sales",
        "period_start": seed.QUARTER_START.isoformat(),
        "period_end": seed.QUARTER_END.isoformat(),
        "key_results": [SALES_KR, NPS_KR],
        **overrides,
    }


@pytest.fixture
async def api(store_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP app with the relay and the projector running, as `okr serve` has them."""
    await ensure_topics(store_settings)
    app = create_app(
        store_settings,
        background=[partial(run_relay, store_settings), partial(run_projector_job, store_settings)],
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://okr", headers=auth_headers("editor")
        ) as client:
            yield client


async def write(api: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    response = await api.request(method, path, **kwargs)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def read_at(api: httpx.AsyncClient, objective_id: str, version: int) -> dict[str, Any]:
    response = await api.get(f"/objectives/{objective_id}", params={"min_version": version})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def active_objective(api: httpx.AsyncClient, title: str) -> dict[str, Any]:
    """Created (the answer is returned) and activated: at version 2."""
    created = await write(api, "POST", "/objectives", json=objective(title))
    await write(api, "POST", f"/objectives/{created['objective_id']}/activate")
    return created


async def test_writes_are_readable_at_their_version_with_scores_and_pace(
    api: httpx.AsyncClient,
) -> None:
    created = await active_objective(api, "Grow product X")
    objective_id = created["objective_id"]
    view = await read_at(api, objective_id, 2)
    sales, nps = view["key_results"]
    checked = await write(
        api,
        "POST",
        f"/objectives/{objective_id}/key-results/{sales['key_result_id']}/check-ins",
        json={"value": 1150, "confidence": 0.8, "note": "good July"},
    )

    view = await read_at(api, objective_id, checked["version"])
    assert view["objective"]["status"] == "active"
    assert view["objective"]["version"] == 3
    sales, nps = view["key_results"]
    assert sales["target"] == 1300 and sales["relative_target"] == "+30%"
    assert sales["current"] == 1150 and sales["score"] == pytest.approx(50.0)
    assert sales["confidence"] == 0.8
    assert nps["score"] == 0.0
    assert view["objective"]["score"] == pytest.approx(25.0)
    assert view["pace"] in {"not_started", "on_track", "at_risk", "off_track", "stale", "ended"}
    assert (view["final_score"] is not None) == (view["pace"] == "ended")
    assert view["children"] == []


async def test_a_read_ahead_of_the_projection_says_so_instead_of_returning_old_data(
    store_settings: Settings,
) -> None:
    """No projector runs here, so the projection stays behind the event store."""
    app = create_app(store_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://okr", headers=auth_headers("editor")
        ) as unprojected:
            created = await write(
                unprojected, "POST", "/objectives", json=objective("Grow product X")
            )
            response = await unprojected.get(
                f"/objectives/{created['objective_id']}", params={"min_version": 1, "wait": 0.2}
            )
    assert response.status_code == 503
    assert response.json()["error"] == "projection_behind"
    assert response.headers["Retry-After"] == "1"


async def test_a_version_never_written_is_not_found_instead_of_retried(
    api: httpx.AsyncClient,
) -> None:
    """Found by the fuzz run: it used to wait, then answer 503 "retry", forever."""
    created = await write(api, "POST", "/objectives", json=objective("Grow product X"))
    response = await api.get(
        f"/objectives/{created['objective_id']}", params={"min_version": 99, "wait": 30}
    )
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "version_not_found"
    assert body["problems"][0]["field"] == "min_version"
    assert "at version 1" in body["message"]
    unknown = await api.get(f"/objectives/{uuid.uuid4()}", params={"min_version": 1, "wait": 30})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "objective_not_found"


async def test_history_says_who_changed_what_when_and_why(api: httpx.AsyncClient) -> None:
    created = await write(api, "POST", "/objectives", json=objective("Grow product X"))
    objective_id = created["objective_id"]
    view = await read_at(api, objective_id, 1)
    sales_id = view["key_results"][0]["key_result_id"]
    revised = await write(
        api,
        "PUT",
        f"/objectives/{objective_id}/key-results/{sales_id}",
        json={**SALES_KR, "relative_target": None, "target": 1200},
        # Another key, another actor; the X-Actor header of old clients is ignored.
        headers={"X-Reason": "the market shrank", "X-Actor": "bob", **auth_headers("admin")},
    )
    await read_at(api, objective_id, revised["version"])

    history = (await api.get(f"/objectives/{objective_id}/history")).json()
    assert [entry["event_type"] for entry in history] == ["ObjectiveCreated", "KeyResultRevised"]
    assert history[0]["actor"] == PRINCIPALS["editor"]
    revision = history[1]
    assert revision["actor"] == PRINCIPALS["admin"]
    assert revision["reason"] == "the market shrank"
    changes = {change["field"]: change for change in revision["changes"]}
    target = changes[f"key_results[{sales_id}].target"]
    assert (target["before"], target["after"]) == (1300, 1200)

    timeline = (await api.get(f"/objectives/{objective_id}/timeline")).json()
    assert [row["cause"] for row in timeline] == ["created", "key_result_revised"]


async def test_a_comment_is_on_the_timeline_and_in_the_history_and_moves_no_score(
    api: httpx.AsyncClient,
) -> None:
    created = await active_objective(api, "Grow product X")
    objective_id = created["objective_id"]
    nps_id = created["key_result_ids"][1]
    checked_in = await write(
        api,
        "POST",
        f"/objectives/{objective_id}/key-results/{nps_id}/check-ins",
        json={"value": 71},
    )
    text = "Survey slips a week <script>"
    commented = await write(
        api,
        "POST",
        f"/objectives/{objective_id}/key-results/{nps_id}/comments",
        json={"text": text},
    )
    view = await read_at(api, objective_id, commented["version"])
    before = await api.get(f"/objectives/{objective_id}/as-of", params={"version": 3})
    assert view["objective"]["score"] == before.json()["score"] == 25

    timeline = (await api.get(f"/objectives/{objective_id}/timeline")).json()
    assert [row["cause"] for row in timeline] == ["created", "check_in", "comment"]
    comment = timeline[-1]
    assert (comment["version"], comment["key_result_id"], comment["detail"]) == (
        commented["version"],
        nps_id,
        {"text": text},
    )
    assert (comment["value"], comment["objective_score"]) == (71, 25)
    assert comment["actor"] == PRINCIPALS["editor"]
    history = (await api.get(f"/objectives/{objective_id}/history")).json()
    assert history[-1]["event_type"] == "KeyResultCommented"
    assert history[-1]["changes"] == [
        {"field": f"key_results[{nps_id}].comment", "before": None, "after": text}
    ]
    assert checked_in["version"] + 1 == commented["version"]


async def test_lists_filter_and_page_in_a_stable_order(api: httpx.AsyncClient) -> None:
    parent = await write(api, "POST", "/objectives", json=objective("Company goal", team="exec"))
    children = []
    for number in range(5):
        child = await write(
            api,
            "POST",
            "/objectives",
            json=objective(f"Team goal {number}", parent_id=parent["objective_id"]),
        )
        children.append(child["objective_id"])
    await read_at(api, children[-1], 1)

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"team": "sales", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/objectives", params=params)).json()
        seen.extend(item["objective_id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == children, "every child once, in creation order"

    by_parent = (await api.get("/objectives", params={"parent_id": parent["objective_id"]})).json()
    assert len(by_parent["items"]) == 5
    parent_view = await read_at(api, parent["objective_id"], 1)
    assert sorted(c["objective_id"] for c in parent_view["children"]) == sorted(children)
    assert (await api.get("/objectives", params={"cursor": "garbage"})).status_code == 422
    assert (await api.get("/objectives", params={"status": "active"})).json()["items"] == []


async def test_a_read_with_a_bad_parameter_names_it_as_a_query_error(
    api: httpx.AsyncClient,
) -> None:
    """A read is not a command: its refusal says which parameter of the query is wrong."""
    somewhere = uuid.uuid4()
    cases: list[tuple[str, dict[str, str], dict[str, str], set[str]]] = [
        ("/objectives", {"limit": "0", "period_from": "July"}, {}, {"limit", "period_from"}),
        ("/objectives/not-an-id", {}, {}, {"objective_id"}),
        (f"/objectives/{somewhere}", {"wait": "forever"}, {}, {"wait"}),
        (f"/objectives/{somewhere}/as-of", {"at": "2026-08-01T12:00"}, {}, {"at"}),
        ("/kpis/sales.units/series", {"from": "2026-08-01T00:00:00"}, {}, {"from"}),
        (
            f"/audit/objectives/{somewhere}/history",
            {"as_of": "2026-08-01"},
            auth_headers("admin"),
            {"as_of"},
        ),
    ]
    for path, params, headers, names in cases:
        response = await api.get(path, params=params, headers=headers)
        assert response.status_code == 422, (path, response.text)
        body = response.json()
        assert body["error"] == "invalid_query", (path, body)
        assert {problem["field"].split(".")[-1] for problem in body["problems"]} == names
        for name in names:
            assert f"`{name}`" in body["message"], (path, body["message"])
