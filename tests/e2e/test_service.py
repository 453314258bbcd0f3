"""The service as a user runs it: `okr serve`, commands over HTTP and Kafka, events on Kafka."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from events import topics
from events.okr import parse_okr_event
from services.settings import Settings
from tests.e2e.conftest import RunningService

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OBJECTIVE = {
    "title": "Grow product X",
    "owner": "alice",
    "team": "sales",
    "period_start": "2026-07-01",
    "period_end": "2026-09-30",
    "key_results": [
        {
            "title": "Increase sales of product X by 30 % by Q3",
            "metric": "units",
            "baseline": 1000,
            "relative_target": "+30%",
            "deadline": "2026-09-30",
        }
    ],
}


async def read_until(
    settings: Settings, topic: str, done: object, timeout_s: float = 60
) -> list[tuple[bytes | None, bytes]]:
    """Read `topic` from the start until `done(records)` is true."""
    consumer = AIOKafkaConsumer(
        settings.topic(topic),
        **settings.kafka_client_options(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[tuple[bytes | None, bytes]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while not done(records):  # type: ignore[operator]
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    records.extend((m.key, m.value) for m in messages if m.value is not None)
    finally:
        await consumer.stop()
    return records


async def test_commands_over_http_and_kafka_become_ordered_events_on_kafka(
    service: RunningService, settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=service.url, headers={"X-Actor": "alice"}) as http:
        created = await http.post("/objectives", json=OBJECTIVE)
        assert created.status_code == 201, created.text
        objective_id = created.json()["objective_id"]
        activated = await http.post(
            f"/objectives/{objective_id}/activate", headers={"If-Match": '"1"'}
        )
        assert activated.status_code == 200, activated.text
        stale = await http.post(
            f"/objectives/{objective_id}/archive?reason=x", headers={"If-Match": '"1"'}
        )
        assert stale.status_code == 409
        invalid = await http.post(
            "/objectives",
            json={**OBJECTIVE, "key_results": [{"title": "Increase lead generation"}]},
        )
        assert invalid.status_code == 422
        assert len(invalid.json()["problems"]) >= 4
        assert (await http.get("/health")).json()["down"] == []

    producer = AIOKafkaProducer(**settings.kafka_client_options(), enable_idempotence=True)
    await producer.start()
    command_id = str(uuid.uuid4())
    try:
        # The key result id is only known from the stored objective: read it off okr.events.
        events = await read_until(settings, topics.EVENTS, lambda records: len(records) >= 2)
        _, created_payload = parse_okr_event(events[0][1])
        key_result_id = str(created_payload.key_results[0].key_result_id)  # type: ignore[attr-defined]
        command = {
            "command_id": command_id,
            "objective_id": objective_id,
            "expected_version": 2,
            "actor": "sales-service",
            "body": {"type": "check_in", "key_result_id": key_result_id, "value": 1150},
        }
        await producer.send_and_wait(
            settings.topic(topics.COMMANDS), orjson.dumps(command), key=objective_id.encode()
        )
        await producer.send_and_wait(
            settings.topic(topics.COMMANDS), b"{not json", key=objective_id.encode()
        )
    finally:
        await producer.stop()

    results = await read_until(settings, topics.COMMAND_RESULTS, lambda records: len(records) >= 1)
    result = orjson.loads(results[0][1])
    assert result["command_id"] == command_id
    assert result["status"] == "accepted" and result["version"] == 3

    dead = await read_until(settings, topics.DEAD_LETTERS, lambda records: len(records) >= 1)
    letter = orjson.loads(dead[0][1])
    assert letter["origin_topic"] == settings.topic(topics.COMMANDS)
    assert letter["value"]["data"] == "{not json"

    events = await read_until(settings, topics.EVENTS, lambda records: len(records) >= 3)
    versions: dict[bytes | None, list[int]] = defaultdict(list)
    for key, value in events:
        envelope, _ = parse_okr_event(value)
        versions[key].append(envelope.version)
    assert versions == {objective_id.encode(): [1, 2, 3]}
