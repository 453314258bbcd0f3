"""`GET /health`: is every component this process depends on reachable right now."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from services.kafka_admin import probe_kafka
from services.lag import kafka_lag
from services.settings import Settings
from services.stores import probe_store

router = APIRouter(tags=["operations"])


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


@router.get("/health", summary="Connectivity of Kafka and both stores; 503 names what is down")
async def health(settings: SettingsDep) -> JSONResponse:
    kafka, event_store, read_store, lag = await asyncio.gather(
        probe_kafka(settings),
        asyncio.to_thread(probe_store, settings.event_store_url),
        asyncio.to_thread(probe_store, settings.read_store_url),
        kafka_lag(settings),
    )
    checks = {"kafka": kafka, "event_store": event_store, "read_store": read_store}
    down = sorted(name for name, problem in checks.items() if problem is not None)
    body = {
        "status": "ok" if not down else "degraded",
        "down": down,
        "checks": {
            name: {"ok": problem is None, **({"error": problem} if problem else {})}
            for name, problem in checks.items()
        },
        "lag": lag.to_json(),  # informative: a consumer behind is not a component down
    }
    return JSONResponse(body, status_code=503 if down else 200)
