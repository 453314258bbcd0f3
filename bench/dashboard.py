"""The dashboard's overview with 1,000 objectives x 5 key results: server time, next to the JSON
list endpoint in the same run, and what the page and its assets weigh.

    .venv/bin/python -m bench.dashboard [--objectives 1000] [--runs 50] [--json FILE]

The read store (SQLite, in a temporary folder) is filled directly through the projector's writer
(no Kafka needed); the app is `create_app`'s, called in-process through ASGI, so the times are
the server's: reading the read model, pace, the alignment tree, rendering, gzip. Targets (issue
15): overview p95 <= 200 ms; page and assets under 300 KB as sent (gzip, as browsers ask).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from domain.measures import KeyResultKind
from domain.objective import ObjectiveStatus
from projections.sqlite import SQLiteReadStore
from projections.views import KeyResultRow, ObjectiveRow, ProjectedObjective
from services.access.keys import hash_key
from services.access.principals import Role
from services.http.app import create_app
from services.settings import Settings
from services.web.views import quarter_of

KEY = "okr_bench_" + "k" * 40


def fill(store: SQLiteReadStore, objectives: int, key_results: int) -> None:
    now = datetime.now(UTC)
    quarter = quarter_of(now.date())
    assert quarter.start is not None and quarter.end is not None
    roots: list[uuid.UUID] = []
    batch: list[ProjectedObjective] = []
    for index in range(objectives):
        objective_id = uuid.uuid4()
        parent = roots[index % len(roots)] if index % 20 and roots else None
        if parent is None:
            roots.append(objective_id)
        created = now - timedelta(days=10, seconds=objectives - index)
        rows = tuple(
            KeyResultRow(
                objective_id=objective_id,
                key_result_id=uuid.uuid4(),
                position=position,
                title=f"Raise metric {position} of team {index % 40} to its quarterly target",
                kind=KeyResultKind.INCREASE,
                metric="units",
                baseline=0.0,
                target=100.0,
                target_low=None,
                target_high=None,
                relative_target=None,
                deadline=quarter.end,
                weight=1.0,
                current=float((index * 7 + position * 13) % 100),
                score=float((index * 7 + position * 13) % 100),
                attainment=float((index * 7 + position * 13) % 100),
                confidence=0.7,
                last_update=now - timedelta(days=position * 4),
            )
            for position in range(key_results)
        )
        score = sum(r.score for r in rows) / len(rows)
        batch.append(
            ProjectedObjective(
                objective=ObjectiveRow(
                    objective_id=objective_id,
                    title=f"Objective {index}: grow the business of team {index % 40}",
                    description="",
                    owner=f"owner-{index % 25}",
                    team=f"team-{index % 40}",
                    period_start=quarter.start,
                    period_end=quarter.end,
                    parent_id=parent,
                    status=ObjectiveStatus.ACTIVE,
                    score=score,
                    version=2 + key_results,
                    created_at=created,
                    updated_at=created,
                ),
                key_results=rows,
            )
        )
    with store.transaction() as writer:
        writer.save_many(batch)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def measure(settings: Settings, store: SQLiteReadStore, runs: int) -> dict[str, Any]:
    app = create_app(settings, read_store=store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        form = await client.get("/ui/login")
        token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
        signed = await client.post("/ui/login", data={"api_key": KEY, "csrf_token": token})
        assert signed.status_code == 303, signed.text

        async def timed(path: str, **headers: str) -> tuple[list[float], httpx.Response]:
            times, response = [], None
            for _ in range(runs):
                started = time.perf_counter()
                response = await client.get(path, headers=headers)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text[:500]
            assert response is not None
            return times, response

        started = time.perf_counter()
        await client.get("/ui/")  # the first render: nothing cached yet
        cold_ms = (time.perf_counter() - started) * 1000
        await timed("/ui/")  # warm up
        page_ms, page = await timed("/ui/", **{"Accept-Encoding": "gzip"})
        api = {"Authorization": f"Bearer {KEY}"}
        quarter = quarter_of(datetime.now(UTC).date())
        list_path = f"/objectives?limit=500&period_from={quarter.start}&period_to={quarter.end}"
        list_ms, _ = await timed(list_path, **api)
        asset_bytes = {}
        for asset in ("/ui/static/app.css", "/ui/static/app.js"):
            response = await client.get(asset)
            asset_bytes[asset] = len(response.content)
        raw = await client.get("/ui/", headers={"Accept-Encoding": "identity"})
    sent = int(page.headers.get("content-length", len(page.content)))
    return {
        "overview_first_ms": round(cold_ms, 1),
        "overview_ms": summary(page_ms),
        "json_list_500_ms": summary(list_ms),
        "json_list_note": "GET /objectives?limit=500: one page of the 500 max (1,000 objectives "
        "take two such calls and no key results, pace or tree)",
        "page_bytes_sent_gzip": sent,
        "page_bytes_uncompressed": len(raw.content),
        "assets_bytes": asset_bytes,
        "total_bytes_sent": sent + sum(asset_bytes.values()),
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 1),
        "p95": round(percentile(values, 0.95), 1),
        "max": round(max(values), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", type=int, default=1000)
    parser.add_argument("--key-results", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="okr-bench-ui-") as folder:
        workdir = Path(folder)
        settings = Settings(
            event_store_url=f"sqlite:///{workdir / 'events.sqlite'}",
            read_store_url=f"sqlite:///{workdir / 'read.sqlite'}",
            api_keys=f"bench:{Role.ADMIN.value}:{hash_key(KEY)}",
            api_keys_file=workdir / "api-keys.json",
        )
        store = SQLiteReadStore(workdir / "read.sqlite")
        try:
            fill(store, args.objectives, args.key_results)
            result = asyncio.run(measure(settings, store, args.runs))
        finally:
            store.close()
    result |= {
        "objectives": args.objectives,
        "key_results_each": args.key_results,
        "runs": args.runs,
    }
    print(f"overview, {args.objectives} objectives x {args.key_results} key results")
    for label, name in (
        ("/ui/ (server time)", "overview_ms"),
        ("GET /objectives?limit=500", "json_list_500_ms"),
    ):
        row = result[name]
        print(
            f"  {label:<27} p50 {row['p50']:7.1f} ms   p95 {row['p95']:7.1f} ms"
            f"   max {row['max']:7.1f} ms   ({args.runs} runs)"
        )
    print(f"  /ui/ first render (cold caches) {result['overview_first_ms']:.1f} ms")
    print(
        f"  page sent (gzip) {result['page_bytes_sent_gzip'] / 1024:.1f} KB "
        f"(uncompressed {result['page_bytes_uncompressed'] / 1024:.1f} KB), assets "
        f"{sum(result['assets_bytes'].values()) / 1024:.1f} KB, total "
        f"{result['total_bytes_sent'] / 1024:.1f} KB"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
