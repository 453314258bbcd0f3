"""Wire contracts of `okr.events`: every domain event has one, and it survives the round trip.

The relay translates stored domain events into envelopes (each is its payload model plus a header);
consumers read them back with `parse_okr_event`. The samples are `test_event_formats`', one event
of each type.
"""

from __future__ import annotations

import orjson
import pytest

from domain import objective_events as domain
from events import okr, upcasters
from events.commands import KeyResultDefinition
from services.relay.publisher import to_envelope
from tests import seed
from tests.unit.test_event_formats import KEY_RESULT_ID, SAMPLES

NPS = seed.NPS.as_definition()


def test_samples_cover_every_event_and_each_wire_payload_has_its_stored_class() -> None:
    assert {type(event).__name__ for event in SAMPLES} == set(okr.PAYLOADS) == set(domain.EVENTS)
    for name, stored in domain.EVENTS.items():
        assert stored.payload_model is okr.PAYLOADS[name]
        assert stored.class_version == okr.PAYLOADS[name].schema_version
        assert getattr(domain, name) is stored  # what a stored topic resolves to


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
    assert (
        KeyResultDefinition.model_validate(key_result.model_dump(exclude={"key_result_id"})) == NPS
    )


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
