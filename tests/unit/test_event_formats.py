"""What is already stored and published stays readable, and is written byte for byte as before.

`event_formats.json` was recorded from the code as it was before each event was declared once
(docs/decisions/0019-one-declaration-per-event.md): for one event of each type, the topic and JSON
the event store writes, its chain hash, and the envelope the relay publishes on `okr.events`.
Stored events are never rewritten and other teams parse the topic, so these bytes never change:
a new event type adds a record (`python -m tests.unit.test_event_formats NewType` prints it), and
an existing record is never edited.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from domain import objective_events as domain
from domain.chain import GENESIS_HASH, seal
from events import okr
from services.commands.event_store import OrjsonTranscoder, PydanticMapper
from services.relay.publisher import to_envelope
from tests import seed

RECORDED = Path(__file__).with_name("event_formats.json")
OBJECTIVE_ID = UUID("0b7f6a52-0d0e-4a47-9d0b-4f3cbb0f1a10")
PARENT_ID = UUID("5a4e3f20-8c1b-4d7e-9f60-1b2c3d4e5f60")
KEY_RESULT_ID = UUID("7d1c0a8b-5e9f-4c21-8a3b-2f6e4d9c8b71")
ADDED_ID = UUID("c3b2a190-7f6e-4d5c-8b4a-392817160504")
WHEN = datetime(2026, 7, 14, 9, 30, tzinfo=UTC)
NPS = seed.NPS.as_definition()
PURCHASE_PATH = seed.PURCHASE_PATH.as_definition(weight=2)


def header(version: int, reason: str | None = None) -> dict[str, Any]:
    return {
        "originator_id": OBJECTIVE_ID,
        "originator_version": version,
        "timestamp": WHEN,
        "actor": "alice@example.com",
        "command_id": f"cmd-{version}",
        "reason": reason,
    }


def samples() -> list[domain.DomainEvent]:
    """One event of each type, as one objective's history (so their chain hashes link)."""
    unsealed: list[domain.DomainEvent] = [
        domain.ObjectiveCreated(
            **header(1),
            title="Win the mid-market",
            description="Sell where the big ones do not look.",
            owner="alice@example.com",
            team="growth",
            period_start=date(2026, 7, 1),
            period_end=date(2026, 9, 30),
            parent_id=PARENT_ID,
            key_results=[okr.KeyResult(key_result_id=KEY_RESULT_ID, **dict(NPS))],
        ),
        domain.ObjectiveRevised(**header(2), title="Win the whole mid-market", team="sales"),
        domain.ObjectiveAligned(**header(3), parent_id=None),
        domain.KeyResultAdded(
            **header(4), key_result=okr.KeyResult(key_result_id=ADDED_ID, **dict(PURCHASE_PATH))
        ),
        domain.ObjectiveActivated(**header(5)),
        domain.KeyResultRevised(
            **header(6, "board moved the bar"),
            key_result_id=KEY_RESULT_ID,
            key_result=NPS.model_copy(update={"target": 85.0}),
        ),
        domain.KpiBound(
            **header(7),
            key_result_id=KEY_RESULT_ID,
            kpi_key="nps",
            aggregation="avg",
        ),
        domain.KpiProgressRecorded(
            **header(8),
            key_result_id=KEY_RESULT_ID,
            value=71.5,
            kpi_key="nps",
            observations=3,
            last_kpi_event_id="kpi-42",
            last_offset=1041,
        ),
        domain.KpiUnbound(**header(9), key_result_id=KEY_RESULT_ID),
        domain.ProgressCheckedIn(
            **header(10), key_result_id=KEY_RESULT_ID, value=74, confidence=0.6, note="survey in"
        ),
        domain.KeyResultRemoved(**header(11, "merged into NPS"), key_result_id=ADDED_ID),
        domain.ObjectiveClosed(**header(12, "end of Q3"), final_score=66.7, retrospective="ok"),
        domain.ObjectiveArchived(**header(13, "reorganised")),
        domain.KeyResultCommented(**header(14), key_result_id=KEY_RESULT_ID, text="Survey slips"),
    ]
    return seal(GENESIS_HASH, unsealed)


MAPPER = PydanticMapper(transcoder=OrjsonTranscoder())


def formats(event: domain.DomainEvent) -> dict[str, Any]:
    """How `event` is written: in the event store, and on `okr.events`."""
    stored = MAPPER.to_stored_event(event)
    return {
        "type": type(event).__name__,
        "topic": stored.topic,
        "state": stored.state.decode(),
        "chain_hash": event.chain_hash,
        "envelope": to_envelope(event).to_bytes().decode(),
    }


def recorded() -> dict[str, dict[str, Any]]:
    return {record["type"]: record for record in json.loads(RECORDED.read_text())}


SAMPLES = samples()


def test_every_event_type_has_a_recorded_format() -> None:
    assert {type(event).__name__ for event in SAMPLES} <= set(okr.PAYLOADS)
    assert set(recorded()) == {type(event).__name__ for event in SAMPLES}


@pytest.mark.parametrize("event", SAMPLES, ids=lambda event: type(event).__name__)
def test_each_event_is_stored_hashed_and_published_as_before(event: domain.DomainEvent) -> None:
    assert formats(event) == recorded()[type(event).__name__]


@pytest.mark.parametrize("name", [type(event).__name__ for event in SAMPLES])
def test_recorded_events_load_and_publish_as_they_were_published(name: str) -> None:
    record = recorded()[name]
    envelope = json.loads(record["envelope"])
    stored = StoredEvent(
        originator_id=UUID(envelope["objective_id"]),
        originator_version=envelope["version"],
        topic=record["topic"],
        state=record["state"].encode(),
    )
    loaded = cast(domain.DomainEvent, MAPPER.to_domain_event(stored))
    assert type(loaded).__name__ == name
    assert loaded.chain_hash == record["chain_hash"]
    assert to_envelope(loaded).to_bytes().decode() == record["envelope"]
    parsed, payload = okr.parse_okr_event(record["envelope"].encode())
    assert parsed.to_bytes().decode() == record["envelope"]
    assert payload.model_dump(mode="json") == envelope["payload"]


def test_a_check_in_stored_before_confidence_loads_with_an_unknown_one() -> None:
    record = recorded()["ProgressCheckedIn"]
    state = json.loads(record["state"])
    del state["class_version"], state["confidence"]
    stored = StoredEvent(OBJECTIVE_ID, 10, record["topic"], json.dumps(state).encode())
    loaded = MAPPER.to_domain_event(stored)
    assert isinstance(loaded, domain.ProgressCheckedIn)
    assert (loaded.value, loaded.confidence, loaded.note) == (74, None, "survey in")


if __name__ == "__main__":
    wanted = set(sys.argv[1:])
    print(
        json.dumps(
            [formats(e) for e in SAMPLES if not wanted or type(e).__name__ in wanted],
            indent=1,
            ensure_ascii=False,
        )
    )
