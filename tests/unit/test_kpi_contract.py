"""The KPI event contract (`events.kpi.KpiEvent`) and how the scorer classifies what breaks it.

Other services publish plain JSON; these tests pin what is accepted and why the rest is refused
(the reason a dead letter carries), without a broker.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from events.kpi import KpiEvent
from services.scoring.decoding import NotAKpiEventError, decode_kpi_event


def message(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": "sales-2026-07-14-0001",
        "kpi_key": "sales.product_x.units",
        "value": 42,
        "observed_at": "2026-07-14T09:30:00+02:00",
        "source": "sales-service",
    }
    for name, value in changes.items():
        if value is ...:
            body.pop(name)
        else:
            body[name] = value
    return body


def encoded(**changes: Any) -> bytes:
    return orjson.dumps(message(**changes))


def test_a_minimal_event_is_read_with_its_defaults() -> None:
    event = KpiEvent.model_validate_json(encoded())
    assert event.schema_version == 1
    assert event.value == 42.0
    assert event.observed_at == datetime(2026, 7, 14, 7, 30, tzinfo=UTC)
    assert event.observed_at.utcoffset() == timedelta(hours=2)
    assert event.unit is None
    assert event.dimensions == {}


def test_unit_and_dimensions_round_trip() -> None:
    event = KpiEvent.model_validate_json(
        encoded(unit="units", dimensions={"region": "emea", "channel": "web"})
    )
    assert KpiEvent.model_validate_json(event.to_bytes()) == event
    assert event.key == b"sales.product_x.units"


def test_the_producer_example_of_the_readme_is_valid() -> None:
    example = KpiEvent(
        event_id="9b0c6f0e-2f4b-4a53-9a59-3c3d1f1e7a10",
        kpi_key="nps",
        value=71.5,
        observed_at=datetime(2026, 7, 14, 9, 30, tzinfo=timezone(timedelta(hours=2))),
        source="survey-service",
        unit="points",
    )
    assert KpiEvent.model_validate_json(example.to_bytes()) == example


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"{not json", "not_json"),
        (b"\xff\xfe\x00", "not_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"nps"', "not_an_object"),
        (encoded(schema_version=2), "unsupported_schema_version"),
        (encoded(event_id=...), "missing_id"),
        (encoded(event_id=""), "missing_id"),
        (encoded(kpi_key=...), "schema_violation"),
        (encoded(value=...), "schema_violation"),
        (encoded(observed_at=...), "schema_violation"),
        (encoded(source=...), "schema_violation"),
    ],
)
def test_what_is_not_a_kpi_event_is_refused_with_its_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(NotAKpiEventError) as refused:
        decode_kpi_event(raw)
    assert refused.value.reason == reason


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_values_are_refused(literal: bytes) -> None:
    raw = encoded(value=0).replace(b'"value":0', b'"value":' + literal)
    with pytest.raises(NotAKpiEventError) as refused:
        decode_kpi_event(raw)
    assert refused.value.reason == "schema_violation"
    assert "value" in refused.value.detail


@pytest.mark.parametrize("value", ["42", True, None, [42]])
def test_a_value_must_be_a_json_number(value: Any) -> None:
    with pytest.raises(ValidationError):
        KpiEvent.model_validate_json(encoded(value=value))


@pytest.mark.parametrize(
    "observed_at",
    [
        "2026-07-14T09:30:00",  # no zone: which 09:30?
        "2026-07-14",
        1784021400,  # a number: seconds or milliseconds?
        "not a time",
        "0001-01-01T00:00:00+01:00",  # before year 1 once in UTC
    ],
)
def test_timestamps_need_a_zone_and_a_representable_instant(observed_at: Any) -> None:
    with pytest.raises(NotAKpiEventError) as refused:
        decode_kpi_event(encoded(observed_at=observed_at))
    assert refused.value.reason == "schema_violation"


@pytest.mark.parametrize(
    "changes",
    [
        {"kpi_key": "sales product x"},  # spaces are not in a KPI key
        {"kpi_key": "x" * 201},
        {"event_id": "e" * 201},
        {"unexpected": "field"},
        {"dimensions": {"region": 1}},
        {"source": ""},
    ],
)
def test_other_contract_violations_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(NotAKpiEventError) as refused:
        decode_kpi_event(encoded(**changes))
    assert refused.value.reason in {"schema_violation", "missing_id"}


def test_the_event_is_immutable() -> None:
    event = KpiEvent.model_validate_json(encoded())
    with pytest.raises(ValidationError):
        event.value = 1.0  # type: ignore[misc]
