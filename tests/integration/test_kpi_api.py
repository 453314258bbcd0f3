"""The KPI read API over what the real scorer stored, on both event stores (SQLite, PostgreSQL).

What a team publishing on `kpi.events` is promised: `GET /kpis` says, per KPI, how many of its
events were accepted and how many were duplicates, stale, outside every period or unbound, and
its latest value; `GET /kpis/{key}/series` pages through the observations in a time range in one
stable order, (observed_at, event_id), refusing naive times; `GET /kpis/{key}/key-results` names
the key results the KPI moves; a KPI never seen is a 404.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from domain.kpi_series import epoch_us
from events import commands as wire
from services.bootstrap import scorer_jobs
from services.commands.application import OkrApplication
from services.http.app import create_app
from services.kafka.admin import ensure_topics
from services.settings import Settings
from tests.auth_support import auth_headers
from tests.kafka_support import eventually
from tests.kpi_support import (
    PERIOD_END,
    PERIOD_START,
    as_message,
    at,
    create_bound_objective,
    kpi,
    kpi_event,
    last_offsets,
    produce,
    scored_up_to,
)


@dataclass
class KpiService:
    settings: Settings
    application: OkrApplication
    http: httpx.AsyncClient

    async def publish(self, events: list[dict[str, Any]]) -> None:
        """Publish on `kpi.events` and wait until the running scorer stored all of it."""
        written = await produce(self.settings, map(as_message, events))
        await scored_up_to(self.application, self.settings, last_offsets(written))

    async def bound(self, kpi_key: str, statuses: list[str]) -> None:
        """Until the bindings follower has the KPI's key results in these statuses (in key
        result order): events sent before would count as unbound."""

        async def done() -> bool:
            response = await self.http.get(f"/kpis/{kpi_key}/key-results")
            if response.status_code != 200:
                return False
            found = sorted(item["objective_status"] for item in response.json()["items"])
            return found == sorted(statuses)

        await eventually(done, f"the key results bound to {kpi_key} to be {statuses}")

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
async def service(store_settings: Settings) -> AsyncIterator[KpiService]:
    """The HTTP app with the KPI scorer and its bindings follower running, as in `okr serve`."""
    await ensure_topics(store_settings)
    application = await asyncio.to_thread(OkrApplication, store_settings)
    app = create_app(store_settings, application, background=scorer_jobs(store_settings))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://okr", headers=auth_headers("reader")
            ) as http:
                yield KpiService(store_settings, application, http)
    finally:
        application.close()


def by_key(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["kpi_key"]: item for item in listing["items"]}


async def test_kpis_lists_every_kpi_seen_with_its_counters_and_latest_value(
    service: KpiService,
) -> None:
    units, orphan = kpi("sales.units"), kpi("web.visits")
    create_bound_objective(service.application, [(units, "sum"), (units, "latest")])
    await service.bound(units, ["active", "active"])
    first = kpi_event(units, 5, observed_at=at(10))
    before_period = datetime.combine(PERIOD_START, datetime.min.time(), UTC) - timedelta(days=1)
    await service.publish(
        [
            first,
            kpi_event(units, 7, observed_at=at(20)),
            kpi_event(units, 2, observed_at=at(15)),  # older than the latest: stale
            {**first, "value": 99},  # the same event id again: a duplicate
            kpi_event(units, 1, observed_at=before_period),  # before the period, and stale
            kpi_event(orphan, 3, observed_at=at(1)),  # no key result follows it
        ]
    )

    kpis = by_key(await service.get("/kpis"))

    assert [key for key in kpis if key in (units, orphan)] == sorted([units, orphan])
    sales = kpis[units]
    assert {
        name: sales[name] for name in ("accepted", "duplicates", "stale", "outside_period")
    } == {
        "accepted": 4,
        "duplicates": 1,
        "stale": 2,
        "outside_period": 1,
    }
    assert (sales["unbound"], sales["key_results"], sales["latest_value"]) == (0, 2, 7)
    assert datetime.fromisoformat(sales["latest_observed_at"]) == at(20)
    assert sales["last_received_at"] is not None
    assert (kpis[orphan]["accepted"], kpis[orphan]["unbound"], kpis[orphan]["key_results"]) == (
        1,
        1,
        0,
    )
    one = await service.get(f"/kpis/{units}")
    assert one == sales


async def test_a_series_pages_through_a_time_range_in_one_stable_order(
    service: KpiService,
) -> None:
    # A key with a '/' and ids whose order differs between code points and dictionary collations.
    minutes = kpi("web/checkout.minutes")
    create_bound_objective(service.application, [(minutes, "latest")])
    await service.bound(minutes, ["active"])
    paris = timezone(timedelta(hours=2))
    sent = [
        kpi_event(minutes, 7.0, event_id="b", observed_at=at(30)),
        kpi_event(minutes, 6.5, event_id="C", observed_at=at(30)),
        kpi_event(minutes, 6.0, event_id="a", observed_at=at(30)),
        kpi_event(minutes, 5.5, event_id=f"x-{uuid.uuid4()}", observed_at=at(5)),
        kpi_event(minutes, 5.0, event_id=f"y-{uuid.uuid4()}", observed_at=at(50)),
        kpi_event(minutes, 4.5, event_id=f"z-{uuid.uuid4()}", observed_at=at(40).astimezone(paris)),
        kpi_event(minutes, 4.0, event_id=f"w-{uuid.uuid4()}", observed_at=at(60)),
    ]
    await service.publish(sent)
    in_order = sorted(
        sent, key=lambda e: (epoch_us(datetime.fromisoformat(e["observed_at"])), e["event_id"])
    )

    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = await service.get(f"/kpis/{minutes}/series", **params)
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(page["items"]) for page in pages] == [3, 3, 1]
    items = [item for page in pages for item in page["items"]]
    assert [item["event_id"] for item in items] == [event["event_id"] for event in in_order]
    assert [item["value"] for item in items] == [event["value"] for event in in_order]
    paris_item = next(item for item in items if item["event_id"].startswith("z-"))
    assert paris_item["observed_at"].endswith("+02:00")  # as the producer sent it
    assert {item["source"] for item in items} == {"sales-service"}

    # [at(30), at(50)) with bounds given in two offsets: the tie at 30 and the one at 40 (Paris).
    window = await service.get(
        f"/kpis/{minutes}/series",
        **{"from": at(30).isoformat(), "to": at(50).astimezone(paris).isoformat()},
    )
    assert [item["event_id"] for item in window["items"]] == ["C", "a", "b", sent[5]["event_id"]]
    assert window["next_cursor"] is None


async def test_a_series_refuses_naive_times_and_foreign_cursors(service: KpiService) -> None:
    minutes = kpi("checkout.minutes")
    await service.publish([kpi_event(minutes, 4.0, observed_at=at(1))])
    path = f"/kpis/{minutes}/series"

    for params in (
        {"from": "2026-08-01T00:00:00"},  # naive: which day it is depends on where one stands
        {"to": "2026-08-01T12:00:00"},
        {"from": "0001-01-01T00:30:00+01:00"},  # before the year 1 in UTC
    ):
        refused = await service.http.get(path, params=params)
        assert refused.status_code == 422, refused.text
        (problem,) = refused.json()["problems"]
        assert problem["field"] == f"query.{next(iter(params))}"
    backwards = await service.http.get(
        path, params={"from": at(10).isoformat(), "to": at(5).isoformat()}
    )
    assert (backwards.status_code, backwards.json()["error"]) == (422, "invalid_range")
    foreign = await service.http.get(path, params={"cursor": "not-a-cursor"})
    assert (foreign.status_code, foreign.json()["error"]) == (422, "invalid_cursor")


async def test_key_results_of_a_kpi_name_objective_aggregation_period_status_and_value(
    service: KpiService,
) -> None:
    nps = kpi("nps")
    active = create_bound_objective(service.application, [(nps, "avg"), (nps, "max")])
    draft = create_bound_objective(service.application, [(nps, "latest")], activate=False)
    await service.bound(nps, ["active", "active", "draft"])
    await service.publish(
        [kpi_event(nps, 60, observed_at=at(1)), kpi_event(nps, 70, observed_at=at(2))]
    )
    archived = service.application.handle(
        wire.Command(
            command_id=str(uuid.uuid4()),
            objective_id=draft.objective_id,
            actor="alice",
            reason="not this quarter",
            body=wire.ArchiveObjective(),
        )
    )
    assert archived.status == "accepted", archived
    await service.bound(nps, ["active", "active", "archived"])

    listing = await service.get(f"/kpis/{nps}/key-results")

    assert listing["kpi_key"] == nps
    expected = sorted(
        [
            (str(active.objective_id), str(active.key_results[0]), "avg", "active", 65.0),
            (str(active.objective_id), str(active.key_results[1]), "max", "active", 70.0),
            (str(draft.objective_id), str(draft.key_results[0]), "latest", "archived", 70.0),
        ]
    )
    assert [
        (
            item["objective_id"],
            item["key_result_id"],
            item["aggregation"],
            item["objective_status"],
            item["value"],
        )
        for item in listing["items"]
    ] == expected
    for item in listing["items"]:
        assert (item["period_start"], item["period_end"]) == (
            PERIOD_START.isoformat(),
            PERIOD_END.isoformat(),
        )
        assert item["observations"] == 2


async def test_an_unknown_kpi_is_not_found(service: KpiService) -> None:
    unknown = kpi("never.seen")
    for path in (f"/kpis/{unknown}", f"/kpis/{unknown}/series", f"/kpis/{unknown}/key-results"):
        response = await service.http.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "kpi_not_found"
    assert unknown not in by_key(await service.get("/kpis"))
