"""Wire contracts of `okr.events`: every domain event has one, and it survives the round trip.

The relay translates stored domain events into envelopes; consumers read them back with
`parse_okr_event`. A domain event without a wire model, or a field the wire model does not carry,
would stall the relay in production; these tests catch it first.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import UUID, uuid4

import orjson
import pytest

from domain import objective_events as domain
from events import okr, upcasters
from events.commands import KeyResultDefinition
from services.relay.publisher import to_envelope
from tests import seed

OBJECTIVE_ID = UUID("0b7f6a52-0d0e-4a47-9d0b-4f3cbb0f1a10")
KEY_RESULT_ID = UUID("7d1c0a8b-5e9f-4c21-8a3b-2f6e4d9c8b71")
WHEN = datetime(2026, 7, 14, 9, 30, tzinfo=UTC)

NPS = seed.NPS.as_spec()
PURCHASE_PATH = seed.PURCHASE_PATH.as_spec(weight=2)


def header(version: int, reason: str | None = None) -> dict[str, object]:
    return {
        "originator_id": OBJECTIVE_ID,
        "originator_version": version,
        "timestamp": WHEN,
        "actor": "alice@example.com",
        "command_id": f"cmd-{version}",
        "reason": reason,
    }


SAMPLES: list[domain.DomainEvent] = [
    domain.ObjectiveCreated(
        **header(1),
        title="Win the mid-market",
        description="Sell where the big ones do not look.",
        owner="alice@example.com",
        team="growth",
        period_start=date(2026, 7, 1),
        period_end=date(2026, 9, 30),
        parent_id=uuid4(),
        key_results=(domain.NewKeyResult(key_result_id=KEY_RESULT_ID, spec=NPS),),
    ),
    domain.ObjectiveRevised(**header(2), title="Win the whole mid-market", team="sales"),
    domain.ObjectiveAligned(**header(3), parent_id=None),
    domain.KeyResultAdded(
        **header(4), key_result=domain.NewKeyResult(key_result_id=uuid4(), spec=PURCHASE_PATH)
    ),
    domain.ObjectiveActivated(**header(5)),
    domain.KeyResultRevised(
        **header(6, "board moved the bar"),
        key_result_id=KEY_RESULT_ID,
        spec=NPS.model_copy(update={"target": 85.0}),
    ),
    domain.KpiBound(
        **header(7),
        key_result_id=KEY_RESULT_ID,
        binding=domain.KpiBinding(kpi_key="nps", aggregation=domain.Aggregation.AVG),
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
    domain.KeyResultRemoved(**header(11, "merged into NPS"), key_result_id=uuid4()),
    domain.ObjectiveClosed(**header(12, "end of Q3"), final_score=66.7, retrospective="ok"),
    domain.ObjectiveArchived(**header(13, "reorganised")),
]


def domain_event_types() -> set[str]:
    found: set[str] = set()
    pending = [domain.DomainEvent]
    while pending:
        for subclass in pending.pop().__subclasses__():
            pending.append(subclass)
            if subclass.__module__ == domain.__name__:
                found.add(subclass.__name__)
    return found


def test_samples_cover_every_domain_event_and_every_wire_payload() -> None:
    sampled = {type(event).__name__ for event in SAMPLES}
    assert sampled == domain_event_types()
    assert set(okr.PAYLOADS) == domain_event_types()


@pytest.mark.parametrize("event", SAMPLES, ids=lambda event: type(event).__name__)
def test_domain_event_translates_to_an_envelope_that_round_trips(
    event: domain.DomainEvent,
) -> None:
    envelope = to_envelope(event)
    parsed, payload = okr.parse_okr_event(envelope.to_bytes())

    assert parsed == envelope
    assert type(payload) is okr.PAYLOADS[type(event).__name__]
    assert (parsed.type, parsed.schema_version) == (
        type(event).__name__,
        type(payload).schema_version,
    )
    assert (parsed.objective_id, parsed.version) == (event.originator_id, event.originator_version)
    assert parsed.event_id == okr.event_id_for(event.originator_id, event.originator_version)
    assert (parsed.occurred_at, parsed.actor, parsed.command_id, parsed.reason) == (
        event.timestamp,
        event.actor,
        event.command_id,
        event.reason,
    )
    assert payload.model_dump(mode="json") == envelope.payload


def test_key_results_travel_as_their_definition_plus_id() -> None:
    created = SAMPLES[0]
    assert isinstance(created, domain.ObjectiveCreated)
    _, payload = okr.parse_okr_event(to_envelope(created).to_bytes())
    assert isinstance(payload, okr.ObjectiveCreated)
    (key_result,) = payload.key_results
    assert key_result.key_result_id == KEY_RESULT_ID
    assert KeyResultDefinition.model_validate(
        key_result.model_dump(exclude={"key_result_id"})
    ) == KeyResultDefinition.model_validate(NPS.model_dump(mode="json"))


def test_kpi_binding_travels_flat_like_the_bind_command() -> None:
    bound = next(event for event in SAMPLES if isinstance(event, domain.KpiBound))
    _, payload = okr.parse_okr_event(to_envelope(bound).to_bytes())
    assert isinstance(payload, okr.KpiBound)
    assert (payload.kpi_key, payload.aggregation) == ("nps", "avg")


def test_a_republished_event_keeps_its_id_and_another_version_gets_another() -> None:
    first, again = to_envelope(SAMPLES[1]), to_envelope(SAMPLES[1])
    assert first.event_id == again.event_id
    assert first.event_id != to_envelope(SAMPLES[2]).event_id


def test_a_v1_check_in_without_confidence_is_read_as_v2_with_unknown_confidence() -> None:
    check_in = next(event for event in SAMPLES if isinstance(event, domain.ProgressCheckedIn))
    current = to_envelope(check_in).model_dump(mode="json")
    assert current["schema_version"] == 2
    del current["payload"]["confidence"]
    stored_as_v1 = orjson.dumps({**current, "schema_version": 1})

    envelope, payload = okr.parse_okr_event(stored_as_v1)

    assert envelope.schema_version == 2
    assert isinstance(payload, okr.ProgressCheckedIn)
    assert payload.confidence is None
    assert (payload.key_result_id, payload.value, payload.note) == (KEY_RESULT_ID, 74, "survey in")


def test_without_its_upcaster_a_v1_check_in_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The upcaster is what makes v1 readable: the current model reads v2 only."""
    monkeypatch.delitem(upcasters.UPCASTERS, ("ProgressCheckedIn", 1))
    check_in = next(event for event in SAMPLES if isinstance(event, domain.ProgressCheckedIn))
    stored_as_v1 = to_envelope(check_in).model_dump(mode="json") | {"schema_version": 1}
    with pytest.raises(okr.UnknownOkrEventError):
        okr.parse_okr_event(orjson.dumps(stored_as_v1))


def test_upcasters_chain_one_version_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(upcasters.UPCASTERS, ("Renamed", 1), lambda p: {"b": p["a"]})
    monkeypatch.setitem(upcasters.UPCASTERS, ("Renamed", 2), lambda p: {"c": p["b"] + 1})
    lifted = upcasters.upcast({"type": "Renamed", "schema_version": 1, "payload": {"a": 1}})
    assert lifted == {"type": "Renamed", "schema_version": 3, "payload": {"c": 2}}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"type": "ObjectiveTeleported"}, okr.UnknownOkrEventError),
        ({"schema_version": 3}, okr.UnknownOkrEventError),
        ({"occurred_at": "2026-07-14T09:30:00"}, ValueError),
        ({"surprise": 1}, ValueError),
    ],
    ids=["unknown type", "newer schema", "naive timestamp", "extra field"],
)
def test_unreadable_envelopes_raise_value_errors(
    change: dict[str, object], error: type[Exception]
) -> None:
    data = to_envelope(SAMPLES[4]).model_dump(mode="json") | change
    with pytest.raises(error):
        okr.parse_okr_event(orjson.dumps(data))


def test_not_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        okr.parse_okr_event(b"{not json")
