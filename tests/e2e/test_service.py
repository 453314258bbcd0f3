"""The service as a user runs it: `okr serve`, commands over HTTP and Kafka, events on Kafka."""

from __future__ import annotations

import uuid
from collections import defaultdict

import httpx
import orjson
import pytest

from events import topics
from events.okr import parse_okr_event
from services.settings import Settings
from tests import seed
from tests.auth_support import KAFKA_PRINCIPAL, PRINCIPALS, auth_headers, principal_headers
from tests.e2e.conftest import RunningService
from tests.kafka_support import produce, read_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OBJECTIVE = {
    "title": "Grow product X",
    "owner": "alice",
    "team": "sales",
    "period_start": seed.QUARTER_START.isoformat(),
    "period_end": seed.QUARTER_END.isoformat(),
    "key_results": [seed.SALES.as_json()],
}


async def test_commands_over_http_and_kafka_become_ordered_events_on_kafka(
    service: RunningService, settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=service.url, headers=auth_headers("editor")) as http:
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
            json={**OBJECTIVE, "key_results": [seed.LEAD_GENERATION.as_json()]},
        )
        assert invalid.status_code == 422
        assert len(invalid.json()["problems"]) >= 4
        assert (await http.get("/health")).json()["down"] == []

    command_id = str(uuid.uuid4())
    # The key result id is only known from the stored objective: read it off okr.events.
    events = await read_until(settings, topics.EVENTS, lambda records: len(records) >= 2)
    _, created_payload = parse_okr_event(events[0].value)
    key_result_id = str(created_payload.key_results[0].key_result_id)  # type: ignore[attr-defined]
    command = {
        "command_id": command_id,
        "objective_id": objective_id,
        "expected_version": 2,
        "body": {"type": "check_in", "key_result_id": key_result_id, "value": 1150},
    }
    key = objective_id.encode()
    await produce(
        settings,
        topics.COMMANDS,
        [(key, orjson.dumps(command), principal_headers()), (key, b"{not json", [])],
    )

    results = await read_until(settings, topics.COMMAND_RESULTS, lambda records: len(records) >= 1)
    result = orjson.loads(results[0].value)
    assert result["command_id"] == command_id
    assert result["status"] == "accepted" and result["version"] == 3

    dead = await read_until(settings, topics.DEAD_LETTERS, lambda records: len(records) >= 1)
    letter = orjson.loads(dead[0].value)
    assert letter["origin_topic"] == settings.topic(topics.COMMANDS)
    assert letter["value"]["data"] == "{not json"

    events = await read_until(settings, topics.EVENTS, lambda records: len(records) >= 3)
    versions: dict[bytes | None, list[int]] = defaultdict(list)
    actors = []
    for record in events:
        envelope, _ = parse_okr_event(record.value)
        versions[record.key].append(envelope.version)
        actors.append(envelope.actor)
    assert versions == {objective_id.encode(): [1, 2, 3]}
    assert actors == [PRINCIPALS["editor"], PRINCIPALS["editor"], KAFKA_PRINCIPAL]
