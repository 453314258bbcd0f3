"""`GET /health`: 200 when Kafka and both stores answer, 503 naming whatever is down."""

from __future__ import annotations

import httpx

from services.api.app import create_app
from services.settings import Settings


async def get_health(settings: Settings) -> httpx.Response:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://okr") as client:
        return await client.get("/health")


async def test_health_is_ok_when_everything_answers(settings: Settings) -> None:
    response = await get_health(settings)
    assert response.status_code == 200, response.text
    assert response.json()["down"] == []


async def test_health_names_a_dead_broker_and_a_dead_database(settings: Settings) -> None:
    broken = settings.model_copy(
        update={
            "kafka_bootstrap_servers": "127.0.0.1:1",
            "read_store_url": "postgresql://nobody@127.0.0.1:1/none",
        }
    )
    response = await get_health(broken)
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["kafka", "read_store"]
    assert body["checks"]["event_store"]["ok"] is True
    assert "error" in body["checks"]["kafka"]


async def test_health_is_ok_on_postgresql_stores(
    settings: Settings, postgres_database: str
) -> None:
    on_postgres = settings.model_copy(
        update={"event_store_url": postgres_database, "read_store_url": postgres_database}
    )
    response = await get_health(on_postgres)
    assert response.status_code == 200, response.text
